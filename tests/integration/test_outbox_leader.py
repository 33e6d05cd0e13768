"""The relay leader's lock (``OutboxStore.leader_round``) against the real PostgreSQL: held across
rounds, given up with the connection whenever that connection's state is unknown, never taken again
after ``close``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

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
