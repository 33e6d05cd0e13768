"""asyncpg pools."""

from __future__ import annotations

import asyncpg


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
