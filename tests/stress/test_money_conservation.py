"""A storm of deposits, withdrawals and transfers among a few wallets from many concurrent clients.

Invariant 2: Σ balances + Σ in-flight saga amounts = Σ deposits - Σ withdrawals, checked both from
the clients' acknowledged answers and from the event log; and every wallet equals its event fold.
"""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from tests.helpers import assert_projection_matches_events

pytestmark = pytest.mark.stress


@pytest.mark.parametrize("seed", [1, 2])
async def test_random_storm_conserves_money(client, db, seed):
    rng = random.Random(seed)
    prefix = f"storm-{uuid.uuid4().hex[:8]}"
    wallets = [f"{prefix}-{i}" for i in range(5)]
    deposited = withdrawn = 0
    semaphore = asyncio.Semaphore(64)

    for w in wallets:
        response = await client.post(f"/v1/wallet/{w}/deposit", json={"amount": 50})
        assert response.status == 200
    deposited += 5 * 5000

    async def one(op: str, a: str, b: str, cents: int) -> tuple[str, int, int]:
        amount = f"{cents // 100}.{cents % 100:02d}"
        async with semaphore:
            if op == "transfer":
                response = await client.post(
                    f"/v1/wallet/{a}/transfer", json={"toWalletId": b, "amount": amount}
                )
            else:
                response = await client.post(f"/v1/wallet/{a}/{op}", json={"amount": amount})
            await response.read()
            return op, response.status, cents

    ops = []
    for _ in range(600):
        op = rng.choice(["deposit", "withdraw", "transfer", "transfer"])
        a, b = rng.sample(wallets, 2)
        ops.append(one(op, a, b, rng.randint(1, 3000)))
    results = await asyncio.gather(*ops)

    for op, status, cents in results:
        assert status in (200, 422), (op, status)
        if status == 200 and op == "deposit":
            deposited += cents
        elif status == 200 and op == "withdraw":
            withdrawn += cents

    balances = await db.fetchval("SELECT sum(balance) FROM wallets WHERE id LIKE $1", f"{prefix}-%")
    in_flight = await db.fetchval(
        "SELECT coalesce(sum(amount), 0) FROM transfer_sagas"
        " WHERE state = 'DEBITED' AND from_wallet_id LIKE $1",
        f"{prefix}-%",
    )
    assert balances + in_flight == deposited - withdrawn
    by_events = await db.fetchval(
        "SELECT sum(CASE WHEN event_type = 'FUNDS_DEPOSITED' THEN amount ELSE -amount END)"
        " FROM wallet_events WHERE wallet_id LIKE $1"
        " AND event_type IN ('FUNDS_DEPOSITED', 'FUNDS_WITHDRAWN')",
        f"{prefix}-%",
    )
    assert by_events == deposited - withdrawn
    for w in wallets:
        await assert_projection_matches_events(db, w)
    assert any(op == "transfer" and status == 200 for op, status, _ in results)


async def test_wallet_verify_passes_after_the_storms(client, database_url):
    """The audit over this run's whole database (every test's wallets) after the storms above."""
    from wallet.audit import verify

    report = await verify(database_url)
    assert report.ok, "\n".join(report.lines())
    assert report.events > 0
