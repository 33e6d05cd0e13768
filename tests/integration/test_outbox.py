"""The outbox relay against the real PostgreSQL and RabbitMQ: every event once, in order per wallet.

The ``collector`` fixture (conftest) is a queue bound to ``wallet.#`` on the run's exchange.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace
from decimal import Decimal
from typing import Any

import asyncpg

from tests.helpers import post
from wallet.bootstrap import start_api, start_relay, start_service


async def events_of(db: asyncpg.Connection, wallet_ids: Iterable[str]) -> dict[str, list[str]]:
    """Event ids per wallet in version order, from the database."""
    rows = await db.fetch(
        "SELECT wallet_id, id FROM wallet_events WHERE wallet_id = ANY($1::text[])"
        " ORDER BY wallet_id, version",
        list(wallet_ids),
    )
    out: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        out[r["wallet_id"]].append(str(r["id"]))
    return out


def first_occurrences(received: list[Any]) -> dict[str, list[str]]:
    """Per wallet, the event ids in the order they first arrived (duplicates dropped)."""
    seen: set[str] = set()
    out: dict[str, list[str]] = defaultdict(list)
    for r in received:
        if r.message_id not in seen:
            seen.add(r.message_id)
            out[r.body["walletId"]].append(r.message_id)
    return out


def versions_in_arrival_order(received: list[Any]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for r in received:
        out[r.body["walletId"]].append(r.body["version"])
    return out


def new_wallets(n: int) -> list[str]:
    return [f"ob-{uuid.uuid4().hex[:12]}" for _ in range(n)]


async def operations(client: Any, wallet_id: str, n: int) -> None:
    """One deposit that creates the wallet, then ``n - 1`` concurrent withdrawals and deposits."""
    assert (await post(client, f"/v1/wallet/{wallet_id}/deposit", {"amount": 1000}))[0] == 200
    ops = [
        post(client, f"/v1/wallet/{wallet_id}/{'withdraw' if i % 2 else 'deposit'}", {"amount": "1.01"})
        for i in range(n - 1)
    ]
    results = await asyncio.gather(*ops)
    assert {status for status, _ in results} == {200}


async def test_n_operations_give_exactly_their_events_on_the_exchange_in_order(client, db, collector):
    wallets = new_wallets(4)
    await asyncio.gather(*(operations(client, w, 25) for w in wallets))
    expected = await events_of(db, wallets)
    total = sum(len(ids) for ids in expected.values())
    assert total == 4 * 26  # WALLET_CREATED + 25 money events per wallet

    await collector.wait_until(lambda: len(collector.of(wallets)) >= total)
    await asyncio.sleep(0.3)  # anything extra would show up now
    received = collector.of(wallets)

    assert len(received) == total, "exactly one message per event"
    assert sorted(r.message_id for r in received) == sorted(i for ids in expected.values() for i in ids)
    # Per-wallet order: the arrival order is the version order.
    assert first_occurrences(received) == expected
    for wallet_id, versions in versions_in_arrival_order(received).items():
        assert versions == list(range(1, len(expected[wallet_id]) + 1))
    for r in received:
        assert r.message_id == r.body["eventId"]
        assert r.routing_key == "wallet." + r.body["eventType"].lower()
        assert r.persistent and r.content_type == "application/json"
        assert set(r.body) == {
            "eventId",
            "eventType",
            "walletId",
            "amount",
            "currency",
            "version",
            "metadata",
            "occurredAt",
        }
    amounts = {r.body["amount"] for r in received if r.body["eventType"] == "FUNDS_WITHDRAWN"}
    assert amounts == {Decimal("1.01")}  # exact decimals on the wire


async def test_two_relays_on_one_database_publish_each_event_once_in_order(
    aiohttp_client, settings, db, collector
):
    a = await start_api(settings, name="relay-a", run_migrations=False)
    b = await start_api(settings, name="relay-b", run_migrations=False)
    try:
        client_a = await aiohttp_client(a.app)
        client_b = await aiohttp_client(b.app)
        wallets = new_wallets(3)
        for w in wallets:
            assert (await post(client_a, f"/v1/wallet/{w}/deposit", {"amount": 100}))[0] == 200
        ops = [
            post(client, f"/v1/wallet/{w}/deposit", {"amount": 1})
            for _ in range(20)
            for w in wallets
            for client in (client_a, client_b)
        ]
        assert {status for status, _ in await asyncio.gather(*ops)} == {200}
        expected = await events_of(db, wallets)
        total = sum(len(ids) for ids in expected.values())
        await collector.wait_until(lambda: len(collector.of(wallets)) >= total)
        await asyncio.sleep(0.3)
        received = collector.of(wallets)
        assert len(received) == total
        assert first_occurrences(received) == expected
        # Both relays ran; the leader lock let one publish at a time.
        assert a.service.outbox.stats.rounds > 0 and b.service.outbox.stats.rounds > 0
    finally:
        await a.stop()
        await b.stop()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def test_commit_to_publish_latency_under_light_load(client, service, collector, capsys):
    """Light load: one request at a time, ~100/s. Two measures of the same thing:

    - relay: from the outbox row's insert (just before COMMIT; database clock) to the broker's
      publisher confirm, as the relay records it (an upper bound of commit-to-publish);
    - client: from the HTTP 200 (sent after COMMIT) to the message reaching a consumer.
    """
    wallet = new_wallets(1)[0]
    assert (await post(client, f"/v1/wallet/{wallet}/deposit", {"amount": 100}))[0] == 200
    await collector.wait_until(lambda: len(collector.of([wallet])) >= 2)
    service.outbox.latencies.clear()
    answered: dict[int, float] = {}
    for i in range(150):
        status, _ = await post(client, f"/v1/wallet/{wallet}/deposit", {"amount": 1})
        assert status == 200
        answered[i + 3] = time.monotonic()  # version of the FUNDS_DEPOSITED
        await asyncio.sleep(0.01)
    await collector.wait_until(lambda: len(collector.of([wallet])) >= 152)
    relay_ms = [s * 1000 for s in service.outbox.latencies]
    client_ms = [max(0.0, (r.at - answered[r.body["version"]]) * 1000) for r in collector.of([wallet])[2:]]
    assert len(relay_ms) >= 150 and len(client_ms) == 150
    report = (
        f"commit-to-publish latency over {len(relay_ms)} events:"
        f" relay p50 {statistics.median(relay_ms):.1f} ms,"
        f" p99 {percentile(relay_ms, 99):.1f} ms; client-observed p50 {statistics.median(client_ms):.1f} ms,"
        f" p99 {percentile(client_ms, 99):.1f} ms"
    )
    with capsys.disabled():
        print("\n" + report)
    assert statistics.median(relay_ms) < 50, report


async def test_published_rows_are_purged_after_the_retention_and_the_lag_is_zero(
    client, db, settings, collector
):
    svc = await start_service(
        replace(settings, outbox_retention_seconds=0.2), name="purger", run_migrations=False
    )
    try:
        wallet = new_wallets(1)[0]
        await operations(client, wallet, 3)
        await collector.wait_until(lambda: len(collector.of([wallet])) >= 4)
        await asyncio.sleep(0.3)
        assert await svc.outbox.purge() >= 4
        assert await db.fetchval("SELECT count(*) FROM outbox WHERE wallet_id = $1", wallet) == 0
        assert await svc.outbox.measure_lag() < 1.0
    finally:
        await svc.stop()


async def test_the_service_starts_and_serves_with_the_broker_unreachable(aiohttp_client, settings, db):
    dead = replace(settings, rabbitmq_url="amqp://guest:guest@127.0.0.1:1/", health_timeout_seconds=1.0)
    started = time.monotonic()
    svc = await start_api(dead, name="no-broker", run_migrations=False)
    try:
        assert time.monotonic() - started < 2.0
        client = await aiohttp_client(svc.app)
        wallet = new_wallets(1)[0]
        for _ in range(3):
            assert (await post(client, f"/v1/wallet/{wallet}/deposit", {"amount": 5}))[0] == 200
        response = await client.get("/health/ready")
        body = await response.json()
        assert response.status == 503
        assert body["error"]["rabbitmq"]["status"] == "down"
        assert body["info"]["database"]["status"] == "up"
        await asyncio.sleep(0.3)
        assert await svc.service.outbox.measure_lag() > 0.2
        assert not svc.service.outbox.broker_connected
        unpublished = await db.fetchval(
            "SELECT count(*) FROM outbox WHERE wallet_id = $1 AND published_at IS NULL", wallet
        )
        assert unpublished == 4
    finally:
        await svc.stop()


async def test_health_reports_rabbitmq_up(client):
    response = await client.get("/health/ready")
    body = await response.json()
    assert body["details"]["rabbitmq"]["status"] == "up"
    assert "responseTime" in body["details"]["rabbitmq"]


async def test_a_separate_relay_process_publishes_for_api_instances_with_the_relay_off(
    aiohttp_client, settings, collector
):
    api = await start_api(
        replace(settings, outbox_relay_enabled=False), name="api-only", run_migrations=False
    )
    try:
        client = await aiohttp_client(api.app)
        wallet = new_wallets(1)[0]
        await operations(client, wallet, 5)
        await asyncio.sleep(0.5)
        assert collector.of([wallet]) == []  # nothing publishes in the API instance ...
        assert await api.service.outbox.measure_lag() > 0.3  # ... which still measures the lag
        assert (await client.get("/health/ready")).status == 200

        # What `wallet relay` runs:
        relay = await start_relay(settings, name="standalone", run_migrations=False)
        try:
            await collector.wait_until(lambda: len(collector.of([wallet])) >= 6)
            assert {r.app_id for r in collector.of([wallet])} == {"standalone"}
        finally:
            await relay.stop()
    finally:
        await api.stop()


async def test_one_relay_leads_across_rounds_and_another_takes_over_when_it_is_cut_off_or_stops(
    aiohttp_client, settings, db, collector
):
    """The leader's lock lives on its own connection: it publishes round after round while a
    second relay stands by; when its connection is killed, or it stops, the lock goes with the
    session and the relays go on from there. Every event arrives, first arrivals in order."""
    api = await start_api(
        replace(settings, outbox_relay_enabled=False), name="api-only", run_migrations=False
    )
    relays = {}
    try:
        client = await aiohttp_client(api.app)
        relays["leader-a"] = await start_relay(settings, name="leader-a", run_migrations=False)
        wallets = new_wallets(2)
        await operations(client, wallets[0], 5)
        await collector.wait_until(lambda: len(collector.of(wallets)) >= 5)
        relays["standby-b"] = await start_relay(settings, name="standby-b", run_migrations=False)
        for _ in range(3):  # several rounds, the second relay polling beside them
            await operations(client, wallets[1], 4)
            await asyncio.sleep(0.3)
        await collector.wait_until(lambda: len(collector.of(wallets)) >= 17)
        assert {r.app_id for r in collector.of(wallets)} == {"leader-a"}
        assert relays["standby-b"].relay.stats.standby_rounds > 0

        # The leader's connection killed: its lock is gone with it.
        killed = await db.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'leader-a-outbox-leader'"
        )
        assert killed == 1
        await operations(client, wallets[0], 6)
        await collector.wait_until(lambda: len(collector.of(wallets)) >= 23)

        # The leader, whichever it now is, stops: the other takes over.
        leader = "leader-a" if collector.of(wallets)[-1].app_id == "leader-a" else "standby-b"
        await relays.pop(leader).stop()
        await operations(client, wallets[1], 3)
        expected = await events_of(db, wallets)
        total = sum(len(ids) for ids in expected.values())
        await collector.wait_until(lambda: len({r.message_id for r in collector.of(wallets)}) >= total)
        assert first_occurrences(collector.of(wallets)) == expected
        assert collector.of(wallets)[-1].app_id != leader
    finally:
        for relay in relays.values():
            await relay.stop()
        await api.stop()
