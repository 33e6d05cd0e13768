"""The flush writer: lives on the event loop and gathers many wallets' batches into one transaction.

Wallet actors hand it their batches (thread-safely) and do not wait. Each worker takes every batch
queued so far, applies them in one round trip, then answers the HTTP futures of the committed ones
directly on the loop and tells each actor how its batch ended. That is group commit across wallets:
the more load, the more wallets per transaction.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from wallet.actors.messages import Flushed, FlushRequest, FlushResult
from wallet.persistence.records import WalletBatch

log = logging.getLogger(__name__)

ApplyBatches = Callable[[Sequence[WalletBatch]], Awaitable[set[int]]]


@dataclass(slots=True)
class WriterStats:
    transactions: int = 0
    wallet_batches: int = 0
    commands: int = 0
    version_conflicts: int = 0
    failures: int = 0


class FlushWriter:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        apply: ApplyBatches,
        *,
        concurrency: int,
        max_wallets: int,
        after_commit: Callable[[WalletBatch], None] | None = None,
    ) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()  # made on the loop it serves
        self._apply = apply
        self._concurrency = concurrency
        self._max_wallets = max_wallets
        self._after_commit = after_commit
        self._queue: asyncio.Queue[FlushRequest] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self.stats = WriterStats()

    def submit(self, request: FlushRequest) -> None:
        """Queue a batch; callable from any thread."""
        if threading.get_ident() == self._loop_thread:
            self._queue.put_nowait(request)
        else:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, request)

    def start(self) -> None:
        self._workers = [
            self._loop.create_task(self._work(), name=f"flush-writer-{i}") for i in range(self._concurrency)
        ]

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        await self._queue.join()
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def _work(self) -> None:
        while True:
            requests = [await self._queue.get()]
            while len(requests) < self._max_wallets and not self._queue.empty():
                requests.append(self._queue.get_nowait())
            try:
                await self._write(requests)
            finally:
                for _ in requests:
                    self._queue.task_done()

    async def _write(self, requests: list[FlushRequest]) -> None:
        try:
            conflicts = await self._apply([r.batch for r in requests])
        except asyncio.CancelledError:
            for request in requests:
                request.actor.tell(Flushed(FlushResult.FAILED, RuntimeError("writer stopped")))
            raise
        except Exception as exc:  # the transaction did not commit, or we cannot know
            log.warning("flush of %d wallet batches failed: %r", len(requests), exc)
            self.stats.failures += 1
            for request in requests:
                request.actor.tell(Flushed(FlushResult.FAILED, exc))
            return
        stats = self.stats
        stats.transactions += 1
        stats.wallet_batches += len(requests)
        stats.version_conflicts += len(conflicts)
        for position, request in enumerate(requests):
            if position in conflicts:
                request.actor.tell(Flushed(FlushResult.CONFLICT))
                continue
            stats.commands += len(request.answers)
            for envelope, reply in request.answers:
                envelope.answer_on_loop(reply)
            request.actor.tell(Flushed(FlushResult.COMMITTED))
            if self._after_commit is not None:
                try:
                    self._after_commit(request.batch)
                except Exception:
                    log.exception("after-commit hook failed")
