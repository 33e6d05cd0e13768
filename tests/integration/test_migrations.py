"""The migration runner: numbered migrations once, repeatable function files whenever they change.

Each test migrates databases of its own (created and dropped here), never the run's shared one.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import ADMIN_URL, _database_url
from tests.integration.test_flush_guard import batch_on
from wallet.persistence import migrations
from wallet.persistence.event_store import EventStore
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


async def fetch_outbox(dsn: str) -> list[asyncpg.Record]:
    """The unpublished rows as the relay leader fetches them."""

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(dsn, server_settings=LEADER_SERVER_SETTINGS)

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    store = OutboxStore(pool, connect)
    try:
        async with store.leader_round() as leader:
            assert leader is not None
            return await leader.fetch(100)
    finally:
        await store.close()
        await pool.close()


async def test_migration_0006_keeps_the_outbox_in_place_and_its_waiting_rows_publishable(
    new_database: NewDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An existing deployment with unpublished rows (jsonb bodies, no event type) migrated by
    0006: the table is not rewritten (same file on disk, so no lock held for a copy of it), and
    the relay's fetch gives each row its body and its type from that body."""
    dsn = await new_database()
    before = [(name, sql) for name, sql in migration_files() if name < "0006"]
    monkeypatch.setattr(migrations, "migration_files", lambda: before)
    monkeypatch.setattr(migrations, "repeatable_files", lambda: [])
    await migrate(dsn)  # the deployment as it was (0004's copy of the flush function)
    monkeypatch.undo()
    body = {"eventId": str(uuid.uuid4()), "eventType": "FUNDS_WITHDRAWN", "amount": 12.5, "version": 3}
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO outbox (event_id, wallet_id, routing_key, payload)"
            " VALUES ($1::uuid, 'w-upgrade', 'wallet.funds_withdrawn', $2::jsonb)",
            body["eventId"],
            json.dumps(body),
        )
        file_before = await conn.fetchval("SELECT pg_relation_filenode('outbox')")
        assert "0006_outbox_body" in await migrate(dsn)
        assert await conn.fetchval("SELECT pg_relation_filenode('outbox')") == file_before
    finally:
        await conn.close()
    rows = await fetch_outbox(dsn)
    assert [(r["event_type"], r["routing_key"], json.loads(r["body"])) for r in rows] == [
        ("FUNDS_WITHDRAWN", "wallet.funds_withdrawn", body)
    ]


# The last commit before migration 0006: the flush function file of the version before this one.
PREVIOUS_VERSION = "aae2c0909fc74b535b07a550e3866ec1edd58c85"


def previous_flush_file() -> str:
    try:
        shown = subprocess.run(
            ["git", "show", f"{PREVIOUS_VERSION}:wallet/persistence/sql/wallet_apply_batches.sql"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:  # a checkout without its history
        pytest.skip(f"the previous version's flush file is not in this checkout: {exc}")
    return shown.stdout


async def test_the_previous_version_migrating_after_this_one_still_flushes_and_publishes(
    new_database: NewDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rolling deploy or a rollback: an instance of the previous version starts after this one
    migrated, and its ``migrate`` applies its own flush file (with the jsonb body builder). It must
    apply, its flushes must commit rows the relay publishes, and this version migrating again
    after it must take over as cleanly."""
    dsn = await new_database()
    await migrate(dsn)
    previous = previous_flush_file()
    monkeypatch.setattr(migrations, "repeatable_files", lambda: [("wallet_apply_batches", previous)])
    assert await migrate(dsn) == ["wallet_apply_batches"]
    monkeypatch.undo()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    store = EventStore(pool)
    try:
        first = batch_on("w-rollback", None, None, 100)  # through the previous function
        assert await store.apply([first]) == {}
        assert await migrate(dsn) == ["wallet_apply_batches"]
        second = batch_on("w-rollback", first.state, first.last_event_id, 5)  # through this one
        assert await store.apply([second]) == {}
        columns = await pool.fetch(
            "SELECT body IS NULL AS old, event_type IS NULL AS untyped FROM outbox ORDER BY id"
        )
    finally:
        await store.release_held()
        await pool.close()
    assert [(c["old"], c["untyped"]) for c in columns] == [(True, True), (True, True), (False, False)]
    rows = await fetch_outbox(dsn)
    bodies = [json.loads(r["body"]) for r in rows]
    assert [r["event_type"] for r in rows] == [b["eventType"] for b in bodies]
    assert [(b["walletId"], b["version"]) for b in bodies] == [
        ("w-rollback", 1),
        ("w-rollback", 2),
        ("w-rollback", 3),
    ]
    assert [str(r["event_id"]) for r in rows] == [b["eventId"] for b in bodies]
