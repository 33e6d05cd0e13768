"""X-Request-ID: one effect per key, whatever the concurrency or retries (invariant 4)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

from tests.helpers import balance_cents, post


def key() -> str:
    return f"k-{uuid.uuid4()}"


async def test_duplicate_gives_one_effect_and_the_same_body(client, db, wallet_id):
    k = key()
    first = await client.post(
        f"/v1/wallet/{wallet_id}/deposit", json={"amount": 5}, headers={"X-Request-ID": k}
    )
    second = await client.post(
        f"/wallet/{wallet_id}/deposit", json={"amount": "5.00"}, headers={"X-Request-ID": k}
    )
    assert first.status == second.status == 200
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    assert await first.json() == await second.json()
    assert await balance_cents(db, wallet_id) == 500


async def test_50_concurrent_requests_with_one_key_have_one_effect(client, db, wallet_id):
    k = key()
    results = await asyncio.gather(
        *(
            post(client, f"/v1/wallet/{wallet_id}/deposit", {"amount": 1}, **{"X-Request-ID": k})
            for _ in range(50)
        )
    )
    assert Counter(status for status, _ in results) == {200: 50}
    assert {body["balance"] for _, body in results} == {1}
    assert await balance_cents(db, wallet_id) == 100
    assert await db.fetchval("SELECT count(*) FROM wallet_events WHERE wallet_id = $1", wallet_id) == 2


async def test_same_key_other_body_or_route_or_wallet_is_422(client, db, wallet_id):
    k = key()
    assert (await post(client, f"/v1/wallet/{wallet_id}/deposit", {"amount": 5}, **{"X-Request-ID": k}))[
        0
    ] == 200
    for path, body in [
        (f"/v1/wallet/{wallet_id}/deposit", {"amount": 6}),
        (f"/v1/wallet/{wallet_id}/withdraw", {"amount": 5}),
        (f"/v1/wallet/{wallet_id}-other/deposit", {"amount": 5}),
    ]:
        status, error = await post(client, path, body, **{"X-Request-ID": k})
        assert (status, error["error"]) == (422, "IdempotencyKeyReuseError")
    assert await balance_cents(db, wallet_id) == 500
    assert await db.fetchval("SELECT count(*) FROM wallets WHERE id = $1", f"{wallet_id}-other") == 0


async def test_a_rejected_request_replays_its_422(client, db, wallet_id):
    await post(client, f"/v1/wallet/{wallet_id}/deposit", {"amount": 1})
    k = key()
    first = await client.post(
        f"/v1/wallet/{wallet_id}/withdraw", json={"amount": 2}, headers={"X-Request-ID": k}
    )
    assert first.status == 422
    await post(client, f"/v1/wallet/{wallet_id}/deposit", {"amount": 10})  # now it would succeed
    again = await client.post(
        f"/v1/wallet/{wallet_id}/withdraw", json={"amount": 2}, headers={"X-Request-ID": k}
    )
    assert again.status == 422
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await again.json() == await first.json()
    assert await balance_cents(db, wallet_id) == 1100


async def test_record_is_written_with_the_effect(client, db, wallet_id):
    k = key()
    await post(client, f"/v1/wallet/{wallet_id}/deposit", {"amount": 3}, **{"X-Request-ID": k})
    row = await db.fetchrow("SELECT status_code, response FROM idempotency_keys WHERE key = $1", k)
    assert row["status_code"] == 200
