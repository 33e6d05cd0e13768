"""A migration runner small enough to be obviously right.

Files ``migrations/NNNN_name.sql`` are applied in name order, each in its own transaction, and
recorded in ``schema_migrations``. A PostgreSQL advisory lock makes concurrent starts safe: the
second instance waits, then finds nothing left to do.
"""

from __future__ import annotations

from importlib import resources

import asyncpg

_LOCK_KEY = 0x77A11E7  # arbitrary, fixed: "wallet migrations"


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("wallet.persistence") / "migrations"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), (folder / name).read_text(encoding="utf-8")) for name in names]


async def migrate(dsn: str) -> list[str]:
    """Apply the pending migrations; return the names applied."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            applied: list[str] = []
            for name, sql in migration_files():
                if name in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", name)
                applied.append(name)
            return applied
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    finally:
        await conn.close()
