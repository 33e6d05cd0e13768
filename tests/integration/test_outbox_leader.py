"""The relay leader's lock (``OutboxStore.leader_round``) against the real PostgreSQL: held across
rounds, given up with the connection whenever that connection's state is unknown, never taken again
after ``close``."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.conftest import _create_database, _database_url, _drop_database
from wallet.persistence import outbox_store
from wallet.persistence.migrations import migrate
from wallet.persistence.outbox_store import OutboxStore


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def stores(pool: asyncpg.Pool, database_url: str) -> AsyncIterator[list[OutboxStore]]:
    """Two relays' stores on one database."""

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(database_url)

    made = [OutboxStore(pool, connect), OutboxStore(pool, connect)]
    try:
        yield made
    finally:
        for store in made:
            await store.close()


async def leads(store: OutboxStore) -> bool:
    async with store.leader_round() as leader:
        return leader is not None


async def test_the_leader_keeps_the_lock_across_rounds_and_close_frees_it_for_good(stores) -> None:
    a, b = stores
    assert await leads(a)
    assert not await leads(b)
    assert await leads(a)  # its next round: still the leader
    await a.close()
    assert await leads(b)  # free at once
    await b.close()
    assert not await leads(a)  # the lock is free, but a closed store never connects again


async def test_a_round_ended_by_a_timeout_gives_up_the_lead(stores) -> None:
    """A timeout (or a lost connection, or a cancellation) leaves the connection's state unknown:
    it is terminated, and the lock goes with it."""
    a, b = stores
    with pytest.raises(TimeoutError):
        async with a.leader_round() as leader:
            assert leader is not None
            raise TimeoutError
    assert await leads(b)


async def test_an_error_the_server_answered_keeps_the_lead(stores) -> None:
    a, b = stores
    with pytest.raises(asyncpg.PostgresError):
        async with a.leader_round() as leader:
            assert leader is not None
            await leader.fetch(-1)  # the server refuses a negative LIMIT
    assert not await leads(b)
    assert await leads(a)


async def test_a_row_written_before_the_event_type_column_is_published_with_its_type(stores, pool) -> None:
    """Between migration 0006 and the new flush function (two transactions of one ``migrate``),
    the function of before writes rows without ``event_type``: their type comes from the body."""
    event_id = str(uuid.uuid4())
    body = {"eventId": event_id, "eventType": "FUNDS_DEPOSITED", "walletId": "w-old-function"}
    async with pool.acquire() as conn:
        row_id = await conn.fetchval(
            "INSERT INTO outbox (event_id, wallet_id, routing_key, payload)"
            " VALUES ($1::uuid, 'w-old-function', 'wallet.funds_deposited', $2::jsonb) RETURNING id",
            event_id,
            json.dumps(body),
        )
    try:
        async with stores[0].leader_round() as leader:
            assert leader is not None
            rows = [r for r in await leader.fetch(100_000) if r["id"] == row_id]
        assert [(r["event_type"], json.loads(r["body"])) for r in rows] == [("FUNDS_DEPOSITED", body)]
    finally:
        async with pool.acquire() as conn:
            await conn.execute("DELETE FROM outbox WHERE id = $1", row_id)


async def test_the_purge_takes_old_published_rows_from_the_front_and_leaves_unpublished_ones(
    run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows past retention go, oldest first, a batch of the first rows by id at a time (so a
    pass never reads more than its batches, whatever the table holds); an unpublished row stays,
    and the rows after it still go. A database of its own: the run's shared one holds other
    tests' rows."""
    monkeypatch.setattr(outbox_store, "PURGE_BATCH", 3)
    name = f"wallet_test_{run_id}_purge"
    await _create_database(name)
    dsn = _database_url(name)
    try:
        await migrate(dsn)
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        store = OutboxStore(pool, lambda: asyncpg.connect(dsn))
        try:
            ids = []
            ages = (3600.0, 3600.0, None, 3600.0, 1.0, 3600.0, 3600.0)  # published that long ago
            for age in ages:
                ids.append(
                    await pool.fetchval(
                        "INSERT INTO outbox (event_id, wallet_id, routing_key, event_type, body,"
                        " published_at) VALUES ($1, 'w-purge', 'wallet.funds_deposited',"
                        " 'FUNDS_DEPOSITED', '{}', clock_timestamp() - make_interval(secs => $2::float8))"
                        " RETURNING id",
                        uuid.uuid4(),
                        age,
                    )
                )
            # Batches of the first three rows: 1, 2 (3 is unpublished); then 3, 4, 5 -> 4 (5 is
            # recent); then 3, 5, 6 -> 6; then 3, 5, 7 -> 7; then 3, 5 -> none: done.
            assert await store.purge(60) == 5
            left = [r["id"] for r in await pool.fetch("SELECT id FROM outbox ORDER BY id")]
            assert left == [ids[2], ids[4]]
            await pool.execute("UPDATE outbox SET published_at = clock_timestamp() WHERE id = $1", ids[2])
            assert await store.purge(0) == 2
            assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
        finally:
            await store.close()
            await pool.close()
    finally:
        await _drop_database(name)
