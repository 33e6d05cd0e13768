"""The broker goes away while writes go on: the API keeps accepting them, the backlog drains when
the broker is back, no event is missing, and duplicates (at least once) are harmless to the worker.

The relay reaches RabbitMQ through a TCP proxy the test cuts (every connection aborted, the port
closed: connection refused) and restores, so the real broker and the other clients of it (the
collector, the fraud worker) stay up.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from urllib.parse import urlsplit

import pytest

from tests.helpers import post
from tests.integration.edges import TcpProxy, through
from tests.integration.test_outbox import events_of, first_occurrences, new_wallets
from wallet.bootstrap import start_api


@pytest.fixture
async def proxy(settings):
    target = urlsplit(settings.rabbitmq_url)
    proxy = await TcpProxy(target.hostname or "127.0.0.1", target.port or 5672).start()
    yield proxy
    if proxy._server is not None:
        await proxy.cut()


async def test_writes_go_on_while_the_broker_is_away_and_the_backlog_drains(
    aiohttp_client, settings, fraud_settings, db, collector, fraud_worker, proxy
):
    relayed = replace(fraud_settings, rabbitmq_url=through(settings.rabbitmq_url, proxy.port))
    api = await start_api(relayed, name="outage", run_migrations=False)
    try:
        client = await aiohttp_client(api.app)
        wallets = new_wallets(3)
        rapid = wallets[0]  # four withdrawals, across the outage: one RAPID_WITHDRAWALS alert
        for w in wallets:
            assert (await post(client, f"/v1/wallet/{w}/deposit", {"amount": 1000}))[0] == 200
        assert (await post(client, f"/v1/wallet/{rapid}/withdraw", {"amount": 1}))[0] == 200
        await collector.wait_until(lambda: len(collector.of(wallets)) >= 7)

        # The broker goes away; writes go on, concurrently, and are all accepted.
        await proxy.cut()
        statuses = await asyncio.gather(
            *(post(client, f"/v1/wallet/{w}/deposit", {"amount": "0.5"}) for w in wallets for _ in range(15)),
            *(post(client, f"/v1/wallet/{rapid}/withdraw", {"amount": 1}) for _ in range(2)),
        )
        assert {status for status, _ in statuses} == {200}
        await asyncio.sleep(0.5)
        received_during_outage = len(collector.of(wallets))
        assert received_during_outage == 7
        assert await api.service.outbox.measure_lag() > 0.3
        assert not api.service.outbox.broker_connected
        ready = await client.get("/health/ready")
        assert ready.status == 503 and (await ready.json())["error"]["rabbitmq"]["status"] == "down"

        # Back: the backlog drains by itself (back-off retries, no new write needed) ...
        await proxy.start()
        expected = await events_of(db, wallets)
        total = sum(len(ids) for ids in expected.values())
        await collector.wait_until(lambda: len({r.message_id for r in collector.of(wallets)}) >= total, 10)
        lag = [await api.service.outbox.measure_lag()]  # messages may arrive before the marks commit
        while lag[-1] > 0.5 and len(lag) < 50:
            await asyncio.sleep(0.02)
            lag.append(await api.service.outbox.measure_lag())
        assert lag[-1] <= 0.5, lag
        # ... and writes go on.
        assert (await post(client, f"/v1/wallet/{rapid}/withdraw", {"amount": 1}))[0] == 200
        await collector.wait_until(lambda: len({r.message_id for r in collector.of(wallets)}) >= total + 1)

        # At least once: replay some published rows as a relay that crashed after the confirm
        # but before marking them would. Duplicates arrive; the worker ignores them.
        replayed = await db.fetchval(
            "WITH r AS (UPDATE outbox SET published_at = NULL WHERE wallet_id = $1"
            " AND event_type = 'FUNDS_WITHDRAWN' RETURNING 1) SELECT count(*) FROM r",
            rapid,
        )
        assert replayed == 4
        api.service.outbox.wake()

        expected = await events_of(db, wallets)
        total = sum(len(ids) for ids in expected.values())
        await collector.wait_until(lambda: len(collector.of(wallets)) >= total + replayed, 10)
        received = collector.of(wallets)
        assert {r.message_id for r in received} == {i for ids in expected.values() for i in ids}, (
            "none missing"
        )
        assert first_occurrences(received) == expected, "first deliveries in commit order per wallet"
        duplicates = Counter(r.message_id for r in received) - Counter({r.message_id: 1 for r in received})
        assert sum(duplicates.values()) >= replayed

        # The worker saw the four withdrawals at least twice each: still exactly one alert, for
        # the fourth.
        withdrawals = await db.fetch(
            "SELECT id FROM wallet_events WHERE wallet_id = $1 AND event_type = 'FUNDS_WITHDRAWN'"
            " ORDER BY version",
            rapid,
        )
        assert len(withdrawals) == 4
        await collector.wait_until(
            lambda: fraud_worker.stats.processed >= 4 and fraud_worker.stats.duplicates >= 4, 10
        )
        alerts = await db.fetch("SELECT rule, event_id FROM fraud_alerts WHERE wallet_id = $1", rapid)
        assert [(a["rule"], a["event_id"]) for a in alerts] == [("RAPID_WITHDRAWALS", withdrawals[3]["id"])]
    finally:
        await api.stop()
