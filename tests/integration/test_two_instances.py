"""Two service instances (two actor systems, two pools) on one database, one hot wallet."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace

import pytest

from tests.helpers import assert_projection_matches_events, balance_cents, post
from wallet.bootstrap import start_api


@pytest.mark.parametrize(("depth", "writers"), [(1, 1), (2, 2)])
async def test_no_lost_update_across_instances(aiohttp_client, settings, db, wallet_id, depth, writers):
    # depth 2: two batches in flight per wallet; writers 2: two flush transactions at once
    settings = replace(settings, flush_pipeline_depth=depth, writer_concurrency=writers)
    a = await start_api(settings, name="inst-a", run_migrations=False)
    b = await start_api(settings, name="inst-b", run_migrations=False)
    try:
        client_a = await aiohttp_client(a.app)
        client_b = await aiohttp_client(b.app)
        await post(client_a, f"/v1/wallet/{wallet_id}/deposit", {"amount": 1000})

        async def hammer(client, n, kind):
            return await asyncio.gather(
                *(post(client, f"/v1/wallet/{wallet_id}/{kind}", {"amount": 1}) for _ in range(n))
            )

        results = await asyncio.gather(
            hammer(client_a, 300, "deposit"),
            hammer(client_b, 300, "deposit"),
            hammer(client_a, 200, "withdraw"),
            hammer(client_b, 200, "withdraw"),
        )
        statuses = Counter(status for batch in results for status, _ in batch)
        assert statuses == {200: 1000}, statuses
        assert await balance_cents(db, wallet_id) == (1000 + 600 - 400) * 100
        await assert_projection_matches_events(db, wallet_id)
        conflicts = a.service.writer.stats.version_conflicts + b.service.writer.stats.version_conflicts
        assert conflicts > 0, "the version-conflict path was not exercised"
    finally:
        await a.stop()
        await b.stop()
