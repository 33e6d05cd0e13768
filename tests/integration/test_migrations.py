"""The migration runner: numbered migrations once, repeatable function files whenever they change.

Each test migrates databases of its own (created and dropped here), never the run's shared one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from tests.conftest import ADMIN_URL, _database_url
from wallet.persistence import migrations
from wallet.persistence.migrations import migrate, migration_files, repeatable_files
from wallet.persistence.outbox_store import LEADER_SERVER_SETTINGS, OutboxStore

FUNCTION_DEF = "SELECT pg_get_functiondef('wallet_apply_batches'::regproc)"
PROC_ROW = "SELECT xmin::text FROM pg_proc WHERE proname = 'wallet_apply_batches'"

NewDatabase = Callable[[], Awaitable[str]]


@pytest.fixture
async def new_database() -> AsyncIterator[NewDatabase]:
    names: list[str] = []
    admin = await asyncpg.connect(ADMIN_URL)

    async def create() -> str:
        name = f"wallet_migrations_{uuid.uuid4().hex[:12]}"
        await admin.execute(f'CREATE DATABASE "{name}"')
        names.append(name)
        return _database_url(name)

    try:
        yield create
    finally:
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def fetchval(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def test_the_flush_function_has_one_repeatable_file() -> None:
    assert [name for name, _ in repeatable_files()] == ["wallet_apply_batches"]
    assert (
        "CREATE OR REPLACE FUNCTION wallet_apply_batches" in dict(repeatable_files())["wallet_apply_batches"]
    )


async def test_a_fresh_database_ends_with_the_function_an_upgraded_one_gets(
    new_database: NewDatabase,
) -> None:
    """A database built by the numbered files alone (what ``migrate`` ran before the repeatable
    file existed: the function returning integer[]) then given the repeatable file, and a fresh
    ``migrate``, end with the same function, byte for byte (its return type changed since)."""
    history = await new_database()
    conn = await asyncpg.connect(history)
    try:
        for _, sql in migration_files():
            await conn.execute(sql)
        for _, sql in repeatable_files():
            await conn.execute(sql)
        upgraded = await conn.fetchval(FUNCTION_DEF)
    finally:
        await conn.close()
    fresh = await new_database()
    applied = await migrate(fresh)
    assert applied == [name for name, _ in migration_files()] + ["wallet_apply_batches"]
    assert await fetchval(fresh, FUNCTION_DEF) == upgraded
    assert "RETURNS jsonb" in upgraded


async def test_migrating_again_changes_nothing(new_database: NewDatabase) -> None:
    dsn = await new_database()
    await migrate(dsn)
    row = await fetchval(dsn, PROC_ROW)
    assert await migrate(dsn) == []
    assert await fetchval(dsn, PROC_ROW) == row  # the function was not even replaced


async def test_a_changed_function_file_is_applied_again(
    new_database: NewDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    dsn = await new_database()
    await migrate(dsn)
    original = dict(repeatable_files())["wallet_apply_batches"]
    changed = original.replace(
        "RETURN wallet_apply_batches_one_by_one(batches);",
        "RETURN wallet_apply_batches_one_by_one(batches);  -- changed",
    )
    assert changed != original
    monkeypatch.setattr(migrations, "repeatable_files", lambda: [("wallet_apply_batches", changed)])
    assert await migrate(dsn) == ["wallet_apply_batches"]
    assert "-- changed" in str(await fetchval(dsn, FUNCTION_DEF))
    assert await migrate(dsn) == []
    monkeypatch.undo()
    assert await migrate(dsn) == ["wallet_apply_batches"]  # back to the file as shipped
    assert "-- changed" not in str(await fetchval(dsn, FUNCTION_DEF))
    recorded = await fetchval(
        dsn, "SELECT checksum FROM schema_migrations WHERE version = 'wallet_apply_batches'"
    )
    assert recorded == migrations.checksum(original)


async def test_a_database_migrated_before_the_repeatable_file_takes_it_once(
    new_database: NewDatabase,
) -> None:
    """An existing deployment: its numbered migrations recorded, no hash yet."""
    dsn = await new_database()
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DELETE FROM schema_migrations WHERE version = 'wallet_apply_batches'")
        await conn.execute("ALTER TABLE schema_migrations DROP COLUMN checksum")
    finally:
        await conn.close()
    assert await migrate(dsn) == ["wallet_apply_batches"]
    assert await migrate(dsn) == []


async def test_the_outbox_rewrite_keeps_waiting_rows_publishable(
    new_database: NewDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An existing deployment with unpublished rows (jsonb bodies, no event type) migrated by
    0006: each row keeps its body, and the relay's fetch gives it its type from that body."""
    dsn = await new_database()
    before = [(name, sql) for name, sql in migration_files() if name < "0006"]
    monkeypatch.setattr(migrations, "migration_files", lambda: before)
    monkeypatch.setattr(migrations, "repeatable_files", lambda: [])
    await migrate(dsn)  # the deployment as it was (0004's copy of the flush function)
    monkeypatch.undo()
    conn = await asyncpg.connect(dsn)
    try:
        body = {"eventId": str(uuid.uuid4()), "eventType": "FUNDS_WITHDRAWN", "amount": 12.5, "version": 3}
        await conn.execute(
            "INSERT INTO outbox (event_id, wallet_id, routing_key, payload)"
            " VALUES ($1::uuid, 'w-upgrade', 'wallet.funds_withdrawn', $2::jsonb)",
            body["eventId"],
            json.dumps(body),
        )
    finally:
        await conn.close()
    assert "0006_outbox_lean" in await migrate(dsn)

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(dsn, server_settings=LEADER_SERVER_SETTINGS)

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    store = OutboxStore(pool, connect)
    try:
        async with store.leader_round() as leader:
            assert leader is not None
            rows = await leader.fetch(10)
    finally:
        await store.close()
        await pool.close()
    assert [(r["event_type"], r["routing_key"], json.loads(r["body"])) for r in rows] == [
        ("FUNDS_WITHDRAWN", "wallet.funds_withdrawn", body)
    ]
