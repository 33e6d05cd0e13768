"""Read replicas: balance misses and history are read from a replica, writes and the actors' loads
from the primary. Proven twice: by the application names PostgreSQL reports for the connections
that ran each query, and by a "replica" whose data differs from the primary's."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import replace

import asyncpg
import pytest

from tests.conftest import ADMIN_URL, _create_database, _database_url, _drop_database
from tests.helpers import post
from tests.integration.edges import closed_port_url, serving

WALLET_READ = "SELECT balance, currency, status, version, daily_withdrawal_limit FROM wallets"
HISTORY_READ = "SELECT id, event_type, amount, metadata, created_at FROM wallet_events"


@pytest.fixture(scope="module")
def divergent_replica_url(run_id: str) -> Iterator[str]:
    """A second database standing in for a replica that holds different data than the primary."""
    assert ADMIN_URL
    name = f"wallet_test_{run_id}_replica"
    asyncio.run(_create_database(name))
    yield _database_url(name)
    asyncio.run(_drop_database(name))


async def _record_queries(pool: asyncpg.Pool, size: int) -> list[str]:
    """Every statement the pool's connections run from now on (the pool holds ``size``)."""
    statements: list[str] = []
    held = [await pool.acquire() for _ in range(size)]
    for conn in held:
        conn.add_query_logger(lambda record: statements.append(record.query))
    for conn in held:
        await pool.release(conn)
    return statements


async def test_reads_go_to_the_replica_writes_and_loads_to_the_primary(settings, wallet_id):
    name = f"rep-{uuid.uuid4().hex[:8]}"
    # The "replica" is the test database itself, reached through a second pool: only the
    # application name tells the pools apart. The cache is off so every balance read misses.
    own = replace(
        settings,
        database_replica_urls=(settings.database_url,),
        balance_cache_enabled=False,
        db_pool_min=2,
        db_pool_max=2,
    )
    async with serving(own, name) as (service, client):
        replica_pool = service.read_side.router.replicas[0].pool
        # Which server-side session each pool is: the application names PostgreSQL reports.
        assert await replica_pool.fetchval("SELECT current_setting('application_name')") == f"{name}-replica"
        assert await service.pool.fetchval("SELECT current_setting('application_name')") == f"{name}-primary"
        on_primary = await _record_queries(service.pool, 2)
        on_replica = await _record_queries(replica_pool, 2)

        url = f"/v1/wallet/{wallet_id}"
        assert (await post(client, f"{url}/deposit", {"amount": 5}))[0] == 200
        assert (await post(client, f"{url}/withdraw", {"amount": 1}))[0] == 200
        assert (await (await client.get(url)).json())["balance"] == 4
        history = await client.get(f"{url}/history")
        assert [e["eventType"] for e in await history.json()] == [
            "WALLET_CREATED",
            "FUNDS_DEPOSITED",
            "FUNDS_WITHDRAWN",
        ]

        # Reads on the replica only; the flush (writes) and the actor's load on the primary only.
        assert [q for q in on_replica if q.startswith(WALLET_READ)], on_replica
        assert [q for q in on_replica if q.startswith(HISTORY_READ)], on_replica
        assert not [q for q in on_primary if q.startswith((WALLET_READ, HISTORY_READ))], on_primary
        assert [q for q in on_primary if "wallet_apply_batches" in q], on_primary
        load = "FROM wallets x WHERE x.id = wanted.id"  # the actor's load
        assert [q for q in on_primary if load in q], on_primary
        assert not [q for q in on_replica if "wallet_apply_batches" in q or load in q], on_replica
        assert all(q.lstrip().upper().startswith(("SELECT", "CLOSE", "RESET")) for q in on_replica), (
            on_replica
        )
        assert service.read_side.router.served == {"replica": 2}


async def test_a_divergent_replica_shows_where_each_query_goes(settings, divergent_replica_url, wallet_id):
    replica = await asyncpg.connect(divergent_replica_url)
    try:  # the replica alone knows this wallet, with 42.00 and one deposit event
        await replica.execute(
            "INSERT INTO wallets (id, currency, balance, version, status)"
            " VALUES ($1, 'USD', 4200, 2, 'ACTIVE')",
            wallet_id,
        )
        await replica.execute(
            "INSERT INTO wallet_events"
            " (id, wallet_id, version, event_type, amount, balance_after, created_at)"
            " VALUES ($1, $2, 1, 'WALLET_CREATED', NULL, 0, now()),"
            " ($3, $2, 2, 'FUNDS_DEPOSITED', 4200, 4200, now())",
            uuid.uuid4(),
            wallet_id,
            uuid.uuid4(),
        )
    finally:
        await replica.close()
    own = replace(settings, database_replica_urls=(divergent_replica_url,), balance_cache_enabled=False)
    async with serving(own, "rep-div") as (service, client):
        url = f"/v1/wallet/{wallet_id}"
        # Reads: from the replica.
        assert (await (await client.get(url)).json())["balance"] == 42
        assert len(await (await client.get(f"{url}/history")).json()) == 2
        # A write: its actor loads from the primary, where the wallet is new.
        status, body = await post(client, f"{url}/deposit", {"amount": 1})
        assert (status, body["balance"]) == (200, 1)
        # Withdrawing more than the primary holds is refused, whatever the replica says.
        status, body = await post(client, f"{url}/withdraw", {"amount": 10})
        assert (status, body["error"]) == (422, "InsufficientFundsError")

        # A wallet the replica does not have (yet): the primary answers instead of a false 404.
        other = f"{wallet_id}-p"
        assert (await post(client, f"/v1/wallet/{other}/deposit", {"amount": 3}))[0] == 200
        response = await client.get(f"/v1/wallet/{other}")
        assert (response.status, (await response.json())["balance"]) == (200, 3)
        assert len(await (await client.get(f"/v1/wallet/{other}/history")).json()) == 2
        assert (await client.get("/v1/wallet/w-nowhere")).status == 404
        assert service.read_side.router.served["replica"] == 5


async def test_a_replica_that_is_down_falls_back_to_the_primary(settings, wallet_id):
    own = replace(
        settings,
        database_replica_urls=(closed_port_url("postgresql"),),
        balance_cache_enabled=False,
    )
    async with serving(own, "rep-down") as (service, client):
        url = f"/v1/wallet/{wallet_id}"
        assert (await post(client, f"{url}/deposit", {"amount": 2}))[0] == 200
        for _ in range(3):
            assert (await (await client.get(url)).json())["balance"] == 2
            assert (await client.get(f"{url}/history")).status == 200
        router = service.read_side.router
        assert router.served["primary"] == 6
        assert not router.replicas[0].breaker.closed()
