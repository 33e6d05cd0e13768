"""A database failover costs latency, not errors (issue 11, items 10 and 11): after the service's
PostgreSQL backends are terminated, broken connections are discarded and what is safe to retry is
retried, so the next requests succeed, transfers included."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from tests.helpers import assert_projection_matches_events, balance_cents


async def terminate_service_backends(db: asyncpg.Connection) -> int:
    """Terminate every backend of this test database except ``db``'s own (the service's pool)."""
    return int(
        await db.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    )


async def test_requests_after_backends_are_terminated_succeed(client, db):
    wallets = [f"fo-{uuid.uuid4().hex[:10]}" for _ in range(4)]
    for wallet in wallets:  # warm the pool and the actors
        response = await client.post(f"/v1/wallet/{wallet}/deposit", json={"amount": 100})
        assert response.status == 200
    for _ in range(3):
        assert await terminate_service_backends(db) > 0
        await asyncio.sleep(0.05)  # the server has closed them; the pool has not used them yet
        statuses = await asyncio.gather(
            *(client.post(f"/v1/wallet/{w}/deposit", json={"amount": 1}) for w in wallets),
            *(client.post(f"/v1/wallet/{w}/withdraw", json={"amount": 1}) for w in wallets),
            *(client.get(f"/v1/wallet/{w}/history") for w in wallets),
            client.post(
                f"/v1/wallet/{wallets[0]}/transfer",
                json={"toWalletId": wallets[1], "amount": 5},
                headers={"X-Request-ID": str(uuid.uuid4())},
            ),
        )
        bodies = [(r.status, await r.text()) for r in statuses]
        assert all(status == 200 for status, _ in bodies), [b for b in bodies if b[0] != 200]
    assert await balance_cents(db, wallets[0]) == 10000 - 3 * 500
    for wallet in wallets:
        await assert_projection_matches_events(db, wallet)


async def test_backends_terminated_while_requests_are_in_flight(client, db):
    wallets = [f"fo-{uuid.uuid4().hex[:10]}" for _ in range(6)]
    for wallet in wallets:
        assert (await client.post(f"/v1/wallet/{wallet}/deposit", json={"amount": 100})).status == 200
    for round_ in range(5):
        requests = asyncio.gather(
            *(client.post(f"/v1/wallet/{w}/deposit", json={"amount": 1}) for w in wallets),
            *(client.get(f"/v1/wallet/{w}/history") for w in wallets),
            *(
                client.post(
                    f"/v1/wallet/{w}/transfer",
                    json={"toWalletId": wallets[(i + 1) % len(wallets)], "amount": 1},
                    headers={"X-Request-ID": str(uuid.uuid4())},
                )
                for i, w in enumerate(wallets)
            ),
        )
        await asyncio.sleep(0.002 * round_)  # cut at different points of the requests' work
        await terminate_service_backends(db)
        bodies = [(r.status, await r.text()) for r in await requests]
        assert all(status == 200 for status, _ in bodies), [b for b in bodies if b[0] != 200]
    total = await db.fetchval("SELECT sum(balance) FROM wallets WHERE id = ANY($1::text[])", wallets)
    assert total == len(wallets) * (10000 + 5 * 100)  # transfers moved money around, nothing more
    for wallet in wallets:
        await assert_projection_matches_events(db, wallet)
