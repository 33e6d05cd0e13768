"""A migration runner small enough to be obviously right.

Files ``migrations/NNNN_name.sql`` are applied in name order, each in its own transaction, and
recorded in ``schema_migrations``. Then the repeatable files ``sql/NAME.sql`` (each one function's
current definition, ``CREATE OR REPLACE``) are applied whenever their SHA-256 differs from the one
recorded beside ``NAME`` in ``schema_migrations``, so a change to a function is a one-file diff and
an unchanged file is never re-applied. A PostgreSQL advisory lock makes concurrent starts safe: the
second instance waits, then finds nothing left to do.
"""

from __future__ import annotations

import hashlib
from importlib import resources

import asyncpg

_LOCK_KEY = 0x77A11E7  # arbitrary, fixed: "wallet migrations"


def _sql_files(folder_name: str) -> list[tuple[str, str]]:
    folder = resources.files("wallet.persistence") / folder_name
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), (folder / name).read_text(encoding="utf-8")) for name in names]


def migration_files() -> list[tuple[str, str]]:
    """The numbered migrations (tables and data; history, never edited once released)."""
    return _sql_files("migrations")


def repeatable_files() -> list[tuple[str, str]]:
    """The repeatable definitions, applied after the numbered migrations whenever they change."""
    return _sql_files("sql")


def checksum(sql: str) -> str:
    return hashlib.sha256(sql.encode("utf-8")).hexdigest()


async def migrate(dsn: str) -> list[str]:
    """Apply the pending migrations and the changed repeatable files; return the names applied."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            # Repeatable files record their hash; numbered migrations leave it NULL.
            await conn.execute("ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text")
            recorded = {
                r["version"]: r["checksum"] for r in await conn.fetch("SELECT * FROM schema_migrations")
            }
            applied: list[str] = []
            for name, sql in migration_files():
                if name in recorded:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", name)
                applied.append(name)
            for name, sql in repeatable_files():
                digest = checksum(sql)
                if recorded.get(name) == digest:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)"
                        " ON CONFLICT (version) DO UPDATE SET checksum = $2, applied_at = now()",
                        name,
                        digest,
                    )
                applied.append(name)
            return applied
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    finally:
        await conn.close()
