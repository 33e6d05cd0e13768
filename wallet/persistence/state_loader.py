"""Loads stored wallets for actors, many per query: concurrent first touches share one round trip."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from wallet.persistence.records import StoredWallet

LoadMany = Callable[[Sequence[str]], Awaitable[dict[str, StoredWallet]]]


class BatchedStateLoader:
    """On the event loop: ``load`` queues a wallet id; one worker answers all queued ids per query."""

    def __init__(self, load_many: LoadMany, *, max_batch: int = 500) -> None:
        self._load_many = load_many
        self._max_batch = max_batch
        self._waiting: dict[str, list[asyncio.Future[StoredWallet | None]]] = {}
        self._worker: asyncio.Task[None] | None = None

    async def load(self, wallet_id: str) -> StoredWallet | None:
        future: asyncio.Future[StoredWallet | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(wallet_id, []).append(future)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            ids = list(self._waiting)[: self._max_batch]
            futures = {wallet_id: self._waiting.pop(wallet_id) for wallet_id in ids}
            try:
                states = await self._load_many(ids)
            except Exception as exc:
                for waiting in futures.values():
                    for future in waiting:
                        if not future.done():
                            future.set_exception(exc)
                continue
            for wallet_id, waiting in futures.items():
                for future in waiting:
                    if not future.done():
                        future.set_result(states.get(wallet_id))
