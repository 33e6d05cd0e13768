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


async def test_the_purge_takes_old_published_rows_up_to_the_oldest_unpublished_one(run_id: str) -> None:
    """Rows past retention go, oldest first; the walk stops at the oldest unpublished row (so it
    never reads the whole table when nothing is old enough), and the rows after it go once it is
    published. A database of its own: the run's shared one holds other tests' unpublished rows."""
    name = f"wallet_test_{run_id}_purge"
    await _create_database(name)
    dsn = _database_url(name)
    try:
        await migrate(dsn)
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        store = OutboxStore(pool, lambda: asyncpg.connect(dsn))
        try:
            ids = []
            for published in (True, True, False, True):
                ids.append(
                    await pool.fetchval(
                        "INSERT INTO outbox (event_id, wallet_id, routing_key, event_type, body,"
                        " published_at) VALUES ($1, 'w-purge', 'wallet.funds_deposited',"
                        " 'FUNDS_DEPOSITED', '{}',"
                        " CASE WHEN $2 THEN clock_timestamp() - interval '1 hour' END) RETURNING id",
                        uuid.uuid4(),
                        published,
                    )
                )
            assert await store.purge(60) == 2  # the two before the unpublished row
            left = [r["id"] for r in await pool.fetch("SELECT id FROM outbox ORDER BY id")]
            assert left == ids[2:]
            await pool.execute("UPDATE outbox SET published_at = clock_timestamp() WHERE id = $1", ids[2])
            assert await store.purge(60) == 1  # the last one; the one just published is not old yet
            assert await store.purge(0) == 1
            assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
        finally:
            await store.close()
            await pool.close()
    finally:
        await _drop_database(name)
