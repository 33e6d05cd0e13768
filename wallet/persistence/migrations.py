"""A migration runner small enough to be obviously right.

Files ``migrations/NNNN_name.sql`` are applied in name order, each in its own transaction, and
recorded in ``schema_migrations``. Then the repeatable files ``sql/NAME.sql`` (each one function's
current definition, ``CREATE OR REPLACE``) are applied whenever their SHA-256 differs from the one
recorded beside ``NAME`` in ``schema_migrations``, so a change to a function is a one-file diff and
an unchanged file is never re-applied.

Each file's transaction first takes a transaction-level advisory lock and checks whether the file
is recorded, so concurrent starts are safe (the second instance waits, then finds nothing left to
do) and nothing outlives a transaction: the runner works through PgBouncer in transaction mode,
where consecutive transactions may use different server connections (a session lock could be
taken on one and released on another, or never).
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
    conn = await asyncpg.connect(dsn, statement_cache_size=0)  # no statement outlives a transaction
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            # Repeatable files record their hash; numbered migrations leave it NULL.
            await conn.execute("ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text")
        applied: list[str] = []
        for name, sql in migration_files():
            if await _apply_once(conn, name, sql, None):
                applied.append(name)
        for name, sql in repeatable_files():
            if await _apply_once(conn, name, sql, checksum(sql)):
                applied.append(name)
        return applied
    finally:
        await conn.close()


async def _apply_once(conn: asyncpg.Connection, name: str, sql: str, digest: str | None) -> bool:
    """Apply ``sql`` in one transaction under the lock unless it is recorded already (a numbered
    migration: under its name; a repeatable file: with this ``digest``). Whether it was applied."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        row = await conn.fetchrow("SELECT checksum FROM schema_migrations WHERE version = $1", name)
        if row is not None and (digest is None or row["checksum"] == digest):
            return False
        await conn.execute(sql)
        await conn.execute(
            "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)"
            " ON CONFLICT (version) DO UPDATE SET checksum = $2, applied_at = now()",
            name,
            digest,
        )
        return True
