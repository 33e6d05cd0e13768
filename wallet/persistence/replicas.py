"""Read replicas: which pool serves a read.

Balance misses and history go to a replica when one is configured (``DATABASE_REPLICA_URLS``),
round robin; writes and the actors' loads always use the primary (they never come here). A replica
that fails is skipped for a while (the breaker) and the read is answered by the primary; a wallet
a replica does not know yet (replication lag after its creation) is looked up on the primary
before answering 404. ``served`` counts the reads each pool answered, for tests and metrics.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import asyncpg

from wallet.persistence.balance_cache import Breaker
from wallet.persistence.db import create_pool
from wallet.persistence.read_model import HistoryEntry, WalletReadModel, WalletView

log = logging.getLogger(__name__)

T = TypeVar("T")

PRIMARY = "primary"
REPLICA = "replica"
REPLICA_TIMEOUT_SECONDS = 2.0


@dataclass
class Replica:
    url: str
    pool: asyncpg.Pool
    model: WalletReadModel
    breaker: Breaker


async def open_replicas(
    urls: Sequence[str], *, name: str, min_size: int, max_size: int, statement_cache_size: int = 100
) -> list[Replica]:
    """One pool per replica URL, application_name ``<name>-replica``. A replica that does not
    answer at start-up gets a lazy pool (it connects on first use) rather than failing the start."""
    replicas = []
    for url in urls:
        application_name = f"{name}-{REPLICA}"
        try:
            pool = await asyncio.wait_for(
                create_pool(
                    url,
                    min_size=min_size,
                    max_size=max_size,
                    application_name=application_name,
                    statement_cache_size=statement_cache_size,
                ),
                REPLICA_TIMEOUT_SECONDS * 2,
            )
        except Exception as exc:
            log.warning("read replica %s unavailable at start-up (%r); connecting lazily", _safe(url), exc)
            pool = await create_pool(
                url,
                min_size=0,
                max_size=max_size,
                application_name=application_name,
                statement_cache_size=statement_cache_size,
            )
        replicas.append(Replica(url, pool, WalletReadModel(pool), Breaker(f"read replica {_safe(url)}")))
    return replicas


def _safe(url: str) -> str:
    """The URL without its password, for logs."""
    head, sep, tail = url.rpartition("@")
    if not sep:
        return url
    scheme, _, credentials = head.partition("://")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}@{tail}"


class ReadRouter:
    def __init__(self, primary: WalletReadModel, replicas: Sequence[Replica] = ()) -> None:
        self._primary = primary
        self.replicas = list(replicas)
        self._next = itertools.cycle(self.replicas) if self.replicas else None
        self.served: Counter[str] = Counter()

    def _pick(self) -> Replica | None:
        if self._next is None:
            return None
        for _ in range(len(self.replicas)):
            replica = next(self._next)
            if replica.breaker.closed():
                return replica
        return None

    async def _read(self, query: Callable[[WalletReadModel], Awaitable[T | None]]) -> T | None:
        replica = self._pick()
        if replica is not None:
            try:
                async with asyncio.timeout(REPLICA_TIMEOUT_SECONDS):
                    result = await query(replica.model)
            except Exception as exc:
                replica.breaker.failed(exc)
            else:
                replica.breaker.succeeded()
                self.served[REPLICA] += 1
                if result is not None:
                    return result
                # Not on the replica (yet?): the primary has the last word on a 404.
        self.served[PRIMARY] += 1
        return await query(self._primary)

    async def wallet(self, wallet_id: str) -> WalletView | None:
        return await self._read(lambda model: model.wallet(wallet_id))

    async def history(self, wallet_id: str, limit: int, offset: int) -> list[HistoryEntry] | None:
        return await self._read(lambda model: model.history(wallet_id, limit, offset))

    async def close(self) -> None:
        await asyncio.gather(*(r.pool.close() for r in self.replicas), return_exceptions=True)
