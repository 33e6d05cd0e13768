"""Idle wallet actors are passivated, live actors are capped, and nothing is lost either way."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from tests.helpers import balance_cents, post
from wallet.bootstrap import start_api


async def test_cap_and_idle_passivation_lose_nothing(aiohttp_client, settings, db, wallet_id):
    api = await start_api(
        replace(settings, max_live_actors=5, actor_idle_seconds=0.3), name="passivate", run_migrations=False
    )
    try:
        client = await aiohttp_client(api.app)
        wallets = [f"{wallet_id}-{i}" for i in range(12)]
        results = await asyncio.gather(
            *(post(client, f"/v1/wallet/{w}/deposit", {"amount": 1}) for w in wallets for _ in range(5))
        )
        assert {status for status, _ in results} == {200}
        assert len(api.service.directory) <= 5  # the cap held while 12 wallets were busy
        assert api.service.directory.passivated >= 7

        for _ in range(50):  # idle actors go after ~0.3 s
            if len(api.service.directory) == 0:
                break
            await asyncio.sleep(0.1)
        assert len(api.service.directory) == 0

        # A passivated wallet comes back with its state.
        status, body = await post(client, f"/v1/wallet/{wallets[0]}/withdraw", {"amount": 2})
        assert (status, body["balance"]) == (200, 3)
        for w in wallets:
            assert await balance_cents(db, w) == (300 if w == wallets[0] else 500)
    finally:
        await api.stop()
