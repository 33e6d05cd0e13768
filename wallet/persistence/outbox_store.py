"""The outbox table: what a relay reads, marks, measures and purges.

Rows are inserted by the flush function (``wallet_apply_batches``), which notifies
``NOTIFY_CHANNEL`` at commit. A relay round is one transaction that holds the leader's
transaction-level advisory lock (``leader_round``): one relay publishes at a time, which is what
keeps per-wallet order with several relays (with ``SKIP LOCKED`` alone, a second relay could
publish a wallet's later rows while the first still holds its earlier ones).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from wallet.persistence.db import pooled

NOTIFY_CHANNEL = "wallet_outbox"
LEADER_LOCK_KEY = 0x77A11E8  # arbitrary, fixed: "wallet outbox relay leader"
PURGE_BATCH = 5000

_FETCH = """
SELECT id, event_id, wallet_id, routing_key, payload::text AS body, payload->>'eventType' AS event_type,
       extract(epoch FROM clock_timestamp() - created_at)::float8 AS age
  FROM outbox
 WHERE published_at IS NULL
 ORDER BY id
 LIMIT $1
   FOR UPDATE SKIP LOCKED
"""
_MARK = "UPDATE outbox SET published_at = clock_timestamp() WHERE id = ANY($1::bigint[])"
_OLDEST = """
SELECT extract(epoch FROM clock_timestamp() - created_at)::float8
  FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT 1
"""
_PURGE = """
WITH gone AS (
    DELETE FROM outbox WHERE id IN (
        SELECT id FROM outbox
         WHERE published_at < clock_timestamp() - make_interval(secs => $1)
         ORDER BY id LIMIT $2)
    RETURNING 1)
SELECT count(*) FROM gone
"""


class LeaderRound:
    """A relay round's transaction, held as the leader."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def fetch(self, limit: int) -> list[asyncpg.Record]:
        """The oldest unpublished rows, in commit order per wallet, locked for this round."""
        return list(await self._conn.fetch(_FETCH, limit))

    async def mark_published(self, ids: list[int]) -> None:
        await self._conn.execute(_MARK, ids)


class OutboxStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def leader_round(self) -> AsyncIterator[LeaderRound | None]:
        """A transaction as the relay leader, or None while another relay holds the lock."""
        async with pooled(self._pool) as conn, conn.transaction():  # a broken connection is discarded
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", LEADER_LOCK_KEY):
                yield None
                return
            yield LeaderRound(conn)

    async def oldest_age(self) -> float | None:
        """Age in seconds of the oldest unpublished row, None when there is none."""
        async with self._pool.acquire() as conn:
            age: float | None = await conn.fetchval(_OLDEST)
            return age

    async def purge(self, retention_seconds: float) -> int:
        """Delete published rows older than the retention period, in batches; return how many."""
        total = 0
        async with self._pool.acquire() as conn:
            while True:
                count = int(await conn.fetchval(_PURGE, float(retention_seconds), PURGE_BATCH))
                total += count
                if count < PURGE_BATCH:
                    break
        return total
