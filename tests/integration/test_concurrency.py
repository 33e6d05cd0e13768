"""Many clients, one wallet, the real database: no lost update, no overdraft, exact sums."""

from __future__ import annotations

import asyncio
from collections import Counter

from tests.helpers import assert_projection_matches_events, balance_cents, post, versions


async def test_200_concurrent_withdrawals_of_1_from_100(client, db, wallet_id):
    assert (await post(client, f"/v1/wallet/{wallet_id}/deposit", {"amount": 100}))[0] == 200

    results = await asyncio.gather(
        *(post(client, f"/v1/wallet/{wallet_id}/withdraw", {"amount": 1}) for _ in range(200))
    )

    statuses = Counter(status for status, _ in results)
    assert statuses == {200: 100, 422: 100}
    assert all(body["error"] == "InsufficientFundsError" for status, body in results if status == 422)
    assert await balance_cents(db, wallet_id) == 0
    await assert_projection_matches_events(db, wallet_id)


async def test_1000_concurrent_deposits_of_a_cent_on_a_new_wallet(client, db, wallet_id):
    results = await asyncio.gather(
        *(post(client, f"/v1/wallet/{wallet_id}/deposit", {"amount": 0.01}) for _ in range(1000))
    )

    assert {status for status, _ in results} == {200}
    balances = sorted(body["balance"] for _, body in results)
    assert balances[-1] == 10  # 10.00 exactly, rendered as a whole number
    assert await balance_cents(db, wallet_id) == 1000
    assert await versions(db, wallet_id) == list(range(1, 1002))  # WALLET_CREATED + 1000 deposits
    await assert_projection_matches_events(db, wallet_id)


async def test_pipelined_flushes_keep_a_hot_wallet_exact(aiohttp_client, settings, db, wallet_id):
    """Two batches in flight per wallet (FLUSH_PIPELINE_DEPTH=2): same guarantees."""
    from dataclasses import replace

    from wallet.bootstrap import start_api

    api = await start_api(replace(settings, flush_pipeline_depth=2), name="pipelined", run_migrations=False)
    try:
        client = await aiohttp_client(api.app)
        await post(client, f"/v1/wallet/{wallet_id}/deposit", {"amount": 100})
        results = await asyncio.gather(
            *(post(client, f"/v1/wallet/{wallet_id}/withdraw", {"amount": 1}) for _ in range(150)),
            *(post(client, f"/v1/wallet/{wallet_id}/deposit", {"amount": 0.01}) for _ in range(300)),
        )
        withdrawn = sum(1 for status, body in results[:150] if status == 200)
        assert {status for status, _ in results[150:]} == {200}
        assert await balance_cents(db, wallet_id) == 10000 - withdrawn * 100 + 300
        await assert_projection_matches_events(db, wallet_id)
    finally:
        await api.stop()
