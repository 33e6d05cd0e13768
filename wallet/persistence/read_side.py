"""The read side of one service instance: Redis client, balance cache, replica pools, and the reads
that use them. A wallet's view: committed here and not yet cached → Redis → replica → primary."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
from redis.asyncio import Redis

from wallet.config import Settings
from wallet.persistence.balance_cache import BalanceCache, create_redis, view_json
from wallet.persistence.read_model import HistoryEntry, WalletReadModel
from wallet.persistence.records import WalletBatch
from wallet.persistence.replicas import ReadRouter, open_replicas


class ReadSide:
    def __init__(self, redis: Redis, cache: BalanceCache | None, router: ReadRouter) -> None:
        self.redis = redis
        self.cache = cache
        self.router = router

    @property
    def after_commit(self) -> Callable[[WalletBatch], None] | None:
        """The flush writer's hook (None when the cache is off)."""
        return None if self.cache is None else self.cache.after_commit

    @property
    def before_commit(self) -> Callable[[Sequence[WalletBatch]], Awaitable[None]] | None:
        """The flush writer's hook before each transaction: the cache's fences (None when off)."""
        return None if self.cache is None else self.cache.fence

    async def wallet_json(self, wallet_id: str) -> bytes | None:
        """The body of ``GET /v1/wallet/{id}``, or None if the wallet does not exist."""
        cache = self.cache
        if cache is not None:
            body = cache.fresh(wallet_id)
            if body is None:
                body = await cache.get(wallet_id)
            if body is not None:
                return body
        view = await self.router.wallet(wallet_id)
        if view is None:
            return None
        if cache is not None:
            cache.fill(view)
        return view_json(view)

    async def history(self, wallet_id: str, limit: int, offset: int) -> list[HistoryEntry] | None:
        return await self.router.history(wallet_id, limit, offset)

    async def close(self) -> None:
        if self.cache is not None:
            await self.cache.close()
        await self.router.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.redis.aclose(close_connection_pool=True), 2.0)


async def open_read_side(settings: Settings, name: str, primary: asyncpg.Pool) -> ReadSide:
    s = settings
    redis = create_redis(s.redis_url, timeout_seconds=s.redis_timeout_seconds)
    cache = None
    if s.balance_cache_enabled:
        cache = BalanceCache(
            redis,
            asyncio.get_running_loop(),
            prefix=s.redis_key_prefix,
            ttl_seconds=s.balance_cache_ttl_seconds,
            url=s.redis_url,
            timeout_seconds=s.redis_timeout_seconds,
        )
    replicas = await open_replicas(
        s.database_replica_urls,
        name=name,
        min_size=s.db_pool_min,
        max_size=s.db_pool_max,
        statement_cache_size=s.db_statement_cache_size,
    )
    return ReadSide(redis, cache, ReadRouter(WalletReadModel(primary), replicas))
