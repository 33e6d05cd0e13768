"""asyncpg pools, and retrying what is safe to retry when their connections fail."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import asyncpg

T = TypeVar("T")


class PooledConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pool connection released without asyncpg's reset round trip.

    asyncpg resets a connection on every release with ``SELECT pg_advisory_unlock_all(); CLOSE
    ALL; UNLISTEN *; RESET ALL`` — one more query, and a tenth of the service's CPU in a py-spy
    profile of transfers. Nothing this service runs on a pool connection leaves session state
    behind: no session advisory locks (only ``pg_advisory_xact_lock``), no SET, no cursors
    outside a transaction, no LISTEN (the outbox listener has its own connection). An open
    transaction is still rolled back on release (asyncpg does that before the reset query).
    """

    def get_reset_query(self) -> str:
        return ""


async def create_pool(
    dsn: str, *, min_size: int, max_size: int, application_name: str, statement_cache_size: int = 100
) -> asyncpg.Pool:
    """``statement_cache_size=0`` behind PgBouncer in transaction mode: a named prepared statement
    lives on one server connection, and the next transaction may get another."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={"application_name": application_name},
        command_timeout=30,
        connection_class=PooledConnection,
        statement_cache_size=statement_cache_size,
    )
    assert pool is not None
    return pool


# What a lost or killed connection raises (asyncpg reports it several ways): class 08, the
# server's "terminating connection" (57P01-57P03), a proxy released under us when the connection
# closed, the protocol left in a broken state ("cannot switch to state ..."), socket errors.
CONNECTION_FAILURES: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    ConnectionError,
    OSError,
)
RETRY_DELAYS_SECONDS = (0.0, 0.05, 0.2, 0.5)


def is_connection_failure(exc: BaseException | None) -> bool:
    """Did this fail for want of a working connection (rather than for what was sent, or for
    taking too long)?"""
    return isinstance(exc, CONNECTION_FAILURES) and not isinstance(
        exc, (asyncpg.exceptions.DataError, TimeoutError)
    )


def is_lost_to_a_deadlock(exc: BaseException | None) -> bool:
    """Was this transaction ended by PostgreSQL's deadlock detector? It rolled back for certain,
    and nothing in what it sent was wrong: writing it again is safe."""
    return isinstance(exc, asyncpg.exceptions.DeadlockDetectedError)


def discard(conn: asyncpg.Connection) -> None:
    """Close a connection whose state is unknown instead of giving it back: after a terminated
    server process asyncpg may hold a connection whose protocol is out of step ("cannot switch
    to state ...") but not yet closed; the pool would hand it out again. Terminated, it is
    replaced by a new one on the next acquire."""
    with contextlib.suppress(Exception):  # already closed and taken back by asyncpg
        conn.terminate()


@contextlib.asynccontextmanager
async def pooled(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """``pool.acquire()``, discarding the connection if what ran on it failed for want of a
    working connection (rather than giving it back for the next caller to trip on)."""
    async with pool.acquire() as conn:
        try:
            yield conn
        except Exception as exc:
            if is_connection_failure(exc):
                discard(conn)
            raise


async def retrying(pool: asyncpg.Pool, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """``work`` on a pool connection, again on a fresh one while the connection fails (a failover,
    terminated backends): for reads and for writes that are safe to repeat. A broken connection is
    discarded, and replaced by the pool; ~0.75 s of retries in all, then the error."""
    for delay in RETRY_DELAYS_SECONDS:
        if delay:
            await asyncio.sleep(delay)
        try:
            async with pooled(pool) as conn:
                return await work(conn)
        except Exception as exc:
            if not is_connection_failure(exc) or delay == RETRY_DELAYS_SECONDS[-1]:
                raise
    raise AssertionError("unreachable")
