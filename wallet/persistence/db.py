"""asyncpg pools."""

from __future__ import annotations

import asyncpg


async def create_pool(dsn: str, *, min_size: int, max_size: int, application_name: str) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={"application_name": application_name},
        command_timeout=30,
    )
    assert pool is not None
    return pool
