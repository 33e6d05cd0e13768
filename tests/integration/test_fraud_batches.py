"""The fraud worker in batches, against the real PostgreSQL and RabbitMQ: a redelivered batch, a
crash between the commit and the ack, poison messages inside a batch, two worker processes on one
queue, and the lag seen by the worker's /health and /metrics."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from tests.integration.edges import TcpProxy, free_port, through
from tests.integration.fraud_processes import (
    kill_worker,
    start_worker,
    stop_worker,
    wait_consuming,
    worker_env,
)
from tests.integration.test_fraud_worker import (  # noqa: F401 (fixtures)
    alert_events,
    channel,
    encode,
    publish,
    wait_for,
)
from wallet.auth.issue import issue_key
from wallet.auth.principal import OPS_READ
from wallet.bootstrap import build_worker
from wallet.fraud.messages import parse_wallet_event
from wallet.fraud.rules import Movement, RuleConfig, rapid_withdrawals
from wallet.fraud.store import WALLET_LOCK_CLASS, FraudStore
from wallet.fraud.worker import rule_config
from wallet.messaging.topology import fraud_topology
from wallet.persistence.api_key_store import ApiKeyStore
from wallet.persistence.db import create_pool

T0 = datetime.now(UTC) - timedelta(seconds=30)


def event(
    wallet: str, version: int, *, seconds: float, amount: str = "1", kind: str = "FUNDS_WITHDRAWN"
) -> dict[str, Any]:
    return {
        "eventId": str(uuid.uuid4()),
        "eventType": kind,
        "walletId": wallet,
        "amount": amount,
        "currency": "USD",
        "version": version,
        "metadata": {},
        "occurredAt": (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z"),
    }


def routing_key(e: dict[str, Any]) -> str:
    return "wallet." + str(e["eventType"]).lower()


def expected_alerts(events: list[dict[str, Any]], config: RuleConfig) -> set[tuple[str, str]]:
    """(event id, rule) of every alert the events must raise, by brute force over each wallet."""
    movements = [parse_wallet_event(encode(e)).movement() for e in events]
    expected = set()
    for m in movements:
        assert m is not None
        if m.event_type in ("FUNDS_WITHDRAWN", "TRANSFER_DEBITED") and m.amount > config.high_value_threshold:
            expected.add((m.event_id, "HIGH_VALUE_TRANSACTION"))
        same: list[Movement] = [x for x in movements if x is not None and x.wallet_id == m.wallet_id]
        expected |= {(a.event.event_id, a.rule.value) for a in rapid_withdrawals(m, same, config)}
    return expected


async def alert_keys(db: Any, wallets: list[str]) -> list[tuple[str, str]]:
    rows = await db.fetch(
        "SELECT event_id, rule FROM fraud_alerts WHERE wallet_id = ANY($1::text[])", wallets
    )
    return [(str(r["event_id"]), r["rule"]) for r in rows]


def workload(prefix: str, wallets: int, per_wallet: int) -> list[dict[str, Any]]:
    """Withdrawals of many wallets, interleaved as a stream of several wallets would be; every
    wallet's 4th and later withdrawals are rapid; one in seven is also high-value."""
    events = []
    for k in range(per_wallet):
        for w in range(wallets):
            amount = "10000.01" if (w + k) % 7 == 0 else "1"
            events.append(event(f"{prefix}-{w}", k + 2, seconds=k + w / 1000, amount=amount))
    return events


async def test_a_redelivered_batch_changes_nothing(settings, db):
    pool = await create_pool(settings.database_url, min_size=1, max_size=2, application_name="test")
    try:
        store = FraudStore(pool)
        config = rule_config(settings)
        prefix = f"fb-{uuid.uuid4().hex[:8]}"
        raw = workload(prefix, 3, 5)
        events = [parse_wallet_event(encode(e)) for e in raw]
        first = await store.process_batch(events, config)
        assert len(first.fresh) == 15 and not first.duplicates
        wallets = [f"{prefix}-{w}" for w in range(3)]
        before = sorted(await alert_keys(db, wallets))
        assert before == sorted(expected_alerts(raw, config))
        assert len(before) == len(first.alerts) == 3 * 2 + 1  # 4th and 5th of each; one high value

        again = await store.process_batch(events + events[:4], config)
        assert not again.fresh and len(again.duplicates) == 15 and again.alerts == ()
        assert sorted(await alert_keys(db, wallets)) == before
        assert (
            await db.fetchval(
                "SELECT count(*) FROM fraud_activity WHERE wallet_id = ANY($1::text[])", wallets
            )
            == 15
        )
    finally:
        await pool.close()


async def test_a_crash_between_commit_and_ack_raises_no_duplicate_alert(
    fraud_settings,
    db,
    amqp,
    alert_events,  # noqa: F811 (the fixture imported above)
):
    """A worker process killed right after its batch committed (alerts stored, not published, batch
    not acked): the batch goes to the next worker, which changes nothing in the database and
    publishes the stored alerts."""
    s = fraud_settings
    publisher = await amqp.channel()
    crashing = start_worker(worker_env(s, WALLET_FAULT_CRASH_AFTER_FRAUD_COMMIT="1"))
    try:
        await wait_consuming(amqp, fraud_topology(s).queue, 1, [crashing])
        prefix = f"fc-{uuid.uuid4().hex[:8]}"
        events = workload(prefix, 4, 5)
        for e in events:
            await publish(publisher, s, encode(e), routing_key(e), e["eventId"])
        code = await asyncio.get_running_loop().run_in_executor(None, crashing.wait, 20)
        assert code == -9  # killed after its first commit
    finally:
        kill_worker(crashing)
    wallets = [f"{prefix}-{w}" for w in range(4)]
    committed = await db.fetchval(
        "SELECT count(*) FROM fraud_processed_events WHERE wallet_id = ANY($1::text[])", wallets
    )
    assert committed >= 1
    assert (
        await db.fetchval(
            "SELECT count(*) FROM fraud_alerts"
            " WHERE wallet_id = ANY($1::text[]) AND published_at IS NOT NULL",
            wallets,
        )
        == 0
    )

    worker = build_worker(s, name="test-after-crash")
    await worker.start()
    try:

        async def all_processed() -> bool:
            n = await db.fetchval(
                "SELECT count(*) FROM fraud_processed_events WHERE wallet_id = ANY($1::text[])", wallets
            )
            return int(n) == len(events)

        await wait_for(all_processed)
        expected = expected_alerts(events, rule_config(s))
        stored = await alert_keys(db, wallets)
        assert sorted(stored) == sorted(expected)  # each once
        assert worker.stats.duplicates >= committed  # the redelivered, committed ones changed nothing

        async def all_published() -> bool:
            return {(a["eventId"], a["rule"]) for a in alert_events} == expected

        await wait_for(all_published)
    finally:
        await worker.stop()


async def test_poison_messages_in_a_batch_go_to_the_dlq_and_the_rest_commits(fraud_settings, db, amqp):
    """One body that is not JSON and one whose amount no column can hold, in the same delivery
    burst as good events: the good ones are processed, the two end in the DLQ."""
    s = fraud_settings
    publisher = await amqp.channel()
    prefix = f"fp-{uuid.uuid4().hex[:8]}"
    good = workload(prefix, 3, 2)
    huge = event(f"{prefix}-huge", 2, seconds=1, amount="1" + "0" * 20)  # beyond bigint cents
    worker = build_worker(s, name="test-poison")
    await worker.start()  # declares the queue; the burst below arrives as one or few batches
    try:
        bodies = [(encode(e), routing_key(e), e["eventId"]) for e in good[:3]]
        bodies += [
            (b"{not json", "wallet.funds_withdrawn", "poison-1"),
            (encode(huge), "wallet.funds_withdrawn", "poison-2"),
        ]
        bodies += [(encode(e), routing_key(e), e["eventId"]) for e in good[3:]]
        for body, key, message_id in bodies:
            await publish(publisher, s, body, key, message_id)

        wallets = [f"{prefix}-{w}" for w in range(3)]

        async def good_processed() -> bool:
            n = await db.fetchval(
                "SELECT count(*) FROM fraud_processed_events WHERE wallet_id = ANY($1::text[])", wallets
            )
            return int(n) == len(good)

        await wait_for(good_processed)
        dlq = await publisher.declare_queue(fraud_topology(s).dead_letter_queue, passive=True)
        dead: list[str] = []

        async def both_dead() -> bool:
            message = await dlq.get(no_ack=True, fail=False)
            if message is not None:
                dead.append(str(message.message_id))
            return len(dead) == 2

        await wait_for(both_dead, 10)
        assert sorted(dead) == ["poison-1", "poison-2"]
        assert worker.consumer.stats.dead_lettered == 2
        assert not await db.fetchval(
            "SELECT count(*) FROM fraud_processed_events WHERE wallet_id = $1", huge["walletId"]
        )
    finally:
        await worker.stop()


async def metrics_of(session: aiohttp.ClientSession, port: int, token: str | None = None) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.get(f"http://127.0.0.1:{port}/metrics", headers=headers) as response:
        assert response.status == 200, await response.text()
        text = await response.text()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def test_two_worker_processes_on_one_queue_raise_the_same_alerts_as_one(fraud_settings, db, amqp):
    """Two `wallet worker` processes consume one queue; each wallet's withdrawals are split
    between them (round-robin deliveries), yet the alerts are exactly the brute-force ones: none
    twice, none missed. Both processed part of the stream (their /metrics say how much, to an
    ``ops:read`` key: the processes run with authentication on)."""
    s = fraud_settings
    publisher = await amqp.channel()
    pool = await create_pool(s.database_url, min_size=1, max_size=1, application_name="test-keys")
    try:
        _record, ops_key = await issue_key(ApiKeyStore(pool), "metrics scraper", [OPS_READ], ["*"], None)
    finally:
        await pool.close()
    ports = [free_port(), free_port()]
    workers = [
        start_worker(worker_env(s, FRAUD_WORKER_PORT=str(port), FRAUD_BATCH_SIZE="20", FRAUD_PREFETCH="40"))
        for port in ports
    ]
    try:
        await wait_consuming(amqp, fraud_topology(s).queue, 2, workers)
        prefix = f"f2-{uuid.uuid4().hex[:8]}"
        events = workload(prefix, 40, 6)
        for e in events:
            await publish(publisher, s, encode(e), routing_key(e), e["eventId"])
        wallets = [f"{prefix}-{w}" for w in range(40)]

        async def all_processed() -> bool:
            n = await db.fetchval(
                "SELECT count(*) FROM fraud_processed_events WHERE wallet_id = ANY($1::text[])", wallets
            )
            return int(n) == len(events)

        await wait_for(all_processed, 30)
        expected = expected_alerts(events, rule_config(s))
        assert len(expected) == 40 * 3 + len([e for e in events if e["amount"] != "1"])
        assert sorted(await alert_keys(db, wallets)) == sorted(expected)

        async with aiohttp.ClientSession() as session:
            shares = [
                (await metrics_of(session, port, ops_key)).get(
                    'wallet_fraud_events_total{outcome="processed"}', 0.0
                )
                for port in ports
            ]
        assert sum(shares) == len(events) and min(shares) > 0, shares
        for worker in workers:
            assert await stop_worker(worker) == 0
    finally:
        for worker in workers:
            kill_worker(worker)


async def test_the_worker_health_says_lagging_above_the_threshold(fraud_settings, db, amqp):
    """A withdrawal whose wallet is held (its advisory lock taken here) cannot be processed: the
    lag grows past FRAUD_LAG_THRESHOLD_SECONDS and /health answers 503 "lagging", /metrics
    shows it; released, the event is processed and /health is 200 again."""
    port = free_port()
    s = replace(fraud_settings, fraud_worker_port=port, fraud_lag_threshold_seconds=0.3, host="127.0.0.1")
    publisher = await amqp.channel()
    worker = build_worker(s, name="test-lag")
    await worker.start()
    wallet = f"fl-{uuid.uuid4().hex[:8]}"
    try:
        async with aiohttp.ClientSession() as session:

            async def health() -> tuple[int, dict[str, Any]]:
                async with session.get(f"http://127.0.0.1:{port}/health") as response:
                    return response.status, await response.json()

            assert (await health())[0] == 200
            await db.execute("SELECT pg_advisory_lock($1, hashtext($2))", WALLET_LOCK_CLASS, wallet)
            e = event(wallet, 2, seconds=0) | {"occurredAt": datetime.now(UTC).isoformat()}
            await publish(publisher, s, encode(e), routing_key(e), e["eventId"])
            started = time.monotonic()
            status, body = await health()
            while status == 200:
                assert time.monotonic() - started < 10, body
                await asyncio.sleep(0.05)
                status, body = await health()
            assert status == 503 and body["status"] == "lagging" and body["lagSeconds"] > 0.3
            assert body["lagThresholdSeconds"] == 0.3
            assert (await metrics_of(session, port))["wallet_fraud_lag_seconds"] > 0.3

            await db.execute("SELECT pg_advisory_unlock($1, hashtext($2))", WALLET_LOCK_CLASS, wallet)

            async def healthy() -> bool:
                return (await health())[0] == 200

            await wait_for(healthy)
            metrics = await metrics_of(session, port)
            assert metrics['wallet_fraud_events_total{outcome="processed"}'] >= 1
            assert metrics["wallet_fraud_batch_size_count"] >= 1
            assert metrics["wallet_fraud_batch_seconds_sum"] > 0.3  # the batch waited on the lock
            async with session.get(f"http://127.0.0.1:{port}/health/live") as response:
                assert response.status == 200
    finally:
        await db.execute("SELECT pg_advisory_unlock_all()")
        await worker.stop()


async def test_the_worker_consumes_again_after_its_broker_connection_is_cut(fraud_settings, db, amqp):
    """A network blip between the worker and RabbitMQ: its robust connection comes back, the
    consumer subscribes again, and what was published meanwhile raises its alerts, each once."""
    target = urlsplit(fraud_settings.rabbitmq_url)
    proxy = await TcpProxy(target.hostname or "127.0.0.1", target.port or 5672).start()
    relayed = replace(fraud_settings, rabbitmq_url=through(fraud_settings.rabbitmq_url, proxy.port))
    worker = build_worker(relayed, name="test-worker-cut")
    await worker.start()
    prefix = f"cut-{uuid.uuid4().hex[:8]}"
    wallets = [f"{prefix}-{n}" for n in range(12)]
    high = [event(w, 2, seconds=n, amount="10000.01") for n, w in enumerate(wallets)]

    async def alerts_of(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return await alert_keys(db, [e["walletId"] for e in events])

    direct = await amqp.channel()  # the test's own publishes do not go through the proxy

    async def send(events: list[dict[str, Any]]) -> None:
        for e in events:
            await publish(direct, fraud_settings, encode(e), routing_key(e), e["eventId"])

    try:
        await send(high[:2])
        await wait_for(lambda: _has(alerts_of(high[:2]), 2))
        proxy.abort_open()  # the worker's connection drops; new connections still go through
        await send(high[2:])  # published directly: they wait in the queue
        await wait_for(lambda: _has(alerts_of(high), len(high)), timeout=30)
        await asyncio.sleep(0.5)  # anything redelivered meanwhile would have raised a second alert
        keys = await alerts_of(high)
        assert sorted(keys) == sorted({(e["eventId"], "HIGH_VALUE_TRANSACTION") for e in high})
    finally:
        await worker.stop()
        await proxy.cut()
        await direct.close()


async def _has(alerts: Any, n: int) -> bool:
    return len(await alerts) >= n
