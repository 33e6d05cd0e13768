"""The outbox table: what a relay reads, marks, measures and purges.

Rows are inserted by the flush function (``wallet_apply_batches``), which notifies
``NOTIFY_CHANNEL`` at commit. One relay publishes at a time, which is what keeps per-wallet order
with several relays (two could otherwise publish a wallet's later rows while one still holds its
earlier ones): the leader holds a session-level advisory lock on a connection of its own
(``leader_round``) for as long as that connection lives, so a round is two statements, a fetch and
a mark, with no BEGIN, lock or COMMIT of its own (DESIGN.md §6).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg

from wallet.persistence.db import discard, is_connection_failure

NOTIFY_CHANNEL = "wallet_outbox"
# The leader's connection runs two statements for its whole life, each a few rows by key; a plan
# cached while the table was small (a fresh one) would otherwise stay a sequential
# scan of a table that grows with the backlog (DESIGN.md §8, tests/integration/test_query_plans.py).
LEADER_SERVER_SETTINGS = {"enable_seqscan": "off"}
LEADER_LOCK_KEY = 0x77A11E8  # arbitrary, fixed: "wallet outbox relay leader"
PURGE_BATCH = 5000

_FETCH = """
SELECT id, event_id, wallet_id, routing_key, coalesce(body::text, payload::text) AS body,
       coalesce(event_type, payload->>'eventType') AS event_type,
       extract(epoch FROM clock_timestamp() - created_at)::float8 AS age
  FROM outbox
 WHERE published_at IS NULL
 ORDER BY id
 LIMIT $1
"""
_MARK = "UPDATE outbox SET published_at = clock_timestamp() WHERE id = ANY($1::bigint[])"
_OLDEST = """
SELECT extract(epoch FROM clock_timestamp() - created_at)::float8
  FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT 1
"""
# Of the oldest rows (the first ``$2`` by id: the rows past retention are at the front), those
# published before the retention period; deleted by id. It reads ``$2`` rows whatever the table
# holds: filtering during the walk would read every newer row whenever too few are old enough, as
# at the end of every pass. A row left unpublished stays, and the rows after it still go. Run with
# sequential scans off (``purge``): the generic plan made while the table was small deleted
# through a scan of all of it (test_query_plans.py).
_PURGE = """
WITH gone AS (
    DELETE FROM outbox WHERE id = ANY(ARRAY(
        SELECT id FROM (SELECT id, published_at FROM outbox ORDER BY id LIMIT $2) AS oldest
         WHERE published_at < clock_timestamp() - make_interval(secs => $1)))
    RETURNING 1)
SELECT count(*) FROM gone
"""


class LeaderRound:
    """A relay round's statements, on the leader's connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def fetch(self, limit: int) -> list[asyncpg.Record]:
        """The oldest unpublished rows, in commit order per wallet (only the leader reads them)."""
        return list(await self._conn.fetch(_FETCH, limit))

    async def mark_published(self, ids: list[int]) -> None:
        await self._conn.execute(_MARK, ids)


# Opens a direct connection to PostgreSQL for the relay leader.
Connect = Callable[[], Awaitable[asyncpg.Connection]]


class OutboxStore:
    """The outbox's queries, and the relay leader's connection, which holds the leader's lock.

    ``connect`` opens a direct connection: never through PgBouncer in transaction mode (the lock
    lives on the session) and never a pool's (it would go back to the pool with the lock held).
    """

    def __init__(self, pool: asyncpg.Pool, connect: Connect) -> None:
        self._pool = pool
        self._connect = connect
        self._conn: asyncpg.Connection | None = None
        self._leading = False
        self._closed = False

    @asynccontextmanager
    async def leader_round(self) -> AsyncIterator[LeaderRound | None]:
        """A round as the relay leader, or None while another relay leads (or after ``close``).
        A relay becomes the leader by taking the lock on its connection and stays it until that
        connection closes (``close``, or lost: the lock goes with the session, and the next round
        connects again). A round that loses its connection after publishing leaves its rows
        unmarked: the next leader publishes them again, after them in each wallet's order."""
        conn = await self._leader_connection()
        if conn is None:
            yield None
            return
        try:
            yield LeaderRound(conn)
        except BaseException as exc:
            self._drop_after(conn, exc)
            raise

    async def _leader_connection(self) -> asyncpg.Connection | None:
        """This relay's connection if it holds the leader's lock (taking it if free), else None."""
        if self._closed:
            return None
        conn = self._conn
        if conn is not None and conn.is_closed():
            self._drop(conn)
            conn = None
        if conn is None:
            conn = self._conn = await self._connect()
        if not self._leading:
            try:
                self._leading = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK_KEY))
            except BaseException as exc:
                self._drop_after(conn, exc)
                raise
        return conn if self._leading else None

    def _drop_after(self, conn: asyncpg.Connection, exc: BaseException) -> None:
        """After a statement on the leader's connection failed: keep the connection (and the lock)
        only if the server answered with an error; on a lost connection, a timeout or a
        cancellation its state is unknown, and a fresh one is cheap and always safe."""
        if not isinstance(exc, asyncpg.PostgresError) or is_connection_failure(exc):
            self._drop(conn)

    def _drop(self, conn: asyncpg.Connection) -> None:
        """Terminate ``conn`` (the lock goes with it) if it is still the leader's."""
        if self._conn is conn:
            self._conn, self._leading = None, False
        discard(conn)

    async def close(self) -> None:
        """Close the leader's connection, so its lock is free for another relay at once; later
        rounds stand by."""
        self._closed = True
        conn, self._conn, self._leading = self._conn, None, False
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 2.0)
            except Exception:
                discard(conn)
            except BaseException:  # cancelled: still never left open with the lock
                discard(conn)
                raise

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
                async with conn.transaction():
                    await conn.execute("SET LOCAL enable_seqscan = off")
                    count = int(await conn.fetchval(_PURGE, float(retention_seconds), PURGE_BATCH))
                total += count
                if count == 0:  # the first rows are all recent or unpublished
                    break
        return total
