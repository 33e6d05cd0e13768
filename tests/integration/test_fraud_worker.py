"""The fraud worker against the real PostgreSQL and RabbitMQ: once per event, retries, DLQ, rules
end to end through the outbox, the alerts endpoint, auto-freeze."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest

from tests.helpers import post
from wallet.bootstrap import start_api
from wallet.fraud.messages import AlertMessage
from wallet.messaging.consumer import RETRIES_HEADER
from wallet.messaging.topology import declare_exchange, fraud_topology


async def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.03)


def withdrawal(
    wallet_id: str, amount: str, *, version: int = 2, event_id: str | None = None
) -> dict[str, Any]:
    return {
        "eventId": event_id or str(uuid.uuid4()),
        "eventType": "FUNDS_WITHDRAWN",
        "walletId": wallet_id,
        "amount": amount,  # spliced into the JSON as a number below
        "currency": "USD",
        "version": version,
        "metadata": {},
        "occurredAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }


def encode(event: dict[str, Any]) -> bytes:
    """The event as the outbox sends it: the amount a JSON decimal number, not a string."""
    text = json.dumps({**event, "amount": "__AMOUNT__"})
    return text.replace('"__AMOUNT__"', str(event["amount"])).encode()


async def publish(channel: Any, settings: Any, body: bytes, routing_key: str, message_id: str) -> None:
    exchange = await declare_exchange(channel, settings.rabbitmq_exchange)
    message = aio_pika.Message(
        body,
        message_id=message_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        content_type="application/json",
    )
    await exchange.publish(message, routing_key=routing_key)


@pytest.fixture
async def channel(amqp):
    channel = await amqp.channel()
    yield channel
    await channel.close()


@pytest.fixture
async def alert_events(channel, fraud_settings):
    """Alert events the worker publishes (``fraud.alert.#``), as parsed bodies."""
    received: list[dict[str, Any]] = []
    exchange = await declare_exchange(channel, fraud_settings.rabbitmq_exchange)
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(exchange, routing_key="fraud.alert.#")

    async def on_message(message: Any) -> None:
        received.append(json.loads(message.body))

    await queue.consume(on_message, no_ack=True)
    return received


async def test_duplicate_delivery_of_a_withdrawal_gives_one_alert(
    fraud_worker, fraud_settings, channel, db, alert_events
):
    wallet = f"fw-{uuid.uuid4().hex[:10]}"
    event = withdrawal(wallet, "10000.01")
    for _ in range(3):
        await publish(channel, fraud_settings, encode(event), "wallet.funds_withdrawn", event["eventId"])

    async def all_handled() -> bool:
        return fraud_worker.stats.processed + fraud_worker.stats.duplicates >= 3

    await wait_for(all_handled)
    assert (fraud_worker.stats.processed, fraud_worker.stats.duplicates) == (1, 2)
    alerts = await db.fetch(
        "SELECT rule, severity, amount, event_id FROM fraud_alerts WHERE wallet_id = $1", wallet
    )
    assert [(a["rule"], a["severity"], a["amount"], str(a["event_id"])) for a in alerts] == [
        ("HIGH_VALUE_TRANSACTION", "HIGH", 1_000_001, event["eventId"])
    ]
    assert await db.fetchval("SELECT count(*) FROM fraud_processed_events WHERE wallet_id = $1", wallet) == 1
    await asyncio.sleep(0.2)
    assert [(e["rule"], e["walletId"], e["amount"]) for e in alert_events] == [
        ("HIGH_VALUE_TRANSACTION", wallet, 10000.01)
    ]


async def test_a_poison_message_goes_to_the_dlq_after_the_retries_and_the_worker_goes_on(
    fraud_worker, fraud_settings, channel, db
):
    wallet = f"fw-{uuid.uuid4().hex[:10]}"
    poison_id = f"poison-{uuid.uuid4().hex[:8]}"
    await publish(channel, fraud_settings, b"{not json", "wallet.funds_withdrawn", poison_id)
    good = withdrawal(wallet, "20000")
    await publish(channel, fraud_settings, encode(good), "wallet.funds_withdrawn", good["eventId"])

    async def good_processed() -> bool:
        return bool(await db.fetchval("SELECT count(*) FROM fraud_alerts WHERE wallet_id = $1", wallet))

    await wait_for(good_processed)  # not stuck behind the poison

    dlq = await channel.declare_queue(fraud_topology(fraud_settings).dead_letter_queue, passive=True)
    dead: list[Any] = []

    async def dead_lettered() -> bool:
        message = await dlq.get(no_ack=True, fail=False)
        if message is not None:
            dead.append(message)
        return bool(dead)

    await wait_for(dead_lettered, 5)
    message = dead[0]
    assert message.message_id == poison_id
    assert message.body == b"{not json"
    retries = fraud_settings.fraud_max_retries
    assert message.headers[RETRIES_HEADER] == retries
    assert "MalformedMessageError" in str(message.headers["x-wallet-last-error"])
    assert message.headers["x-death"]  # dead-lettered by RabbitMQ, from the worker's queue
    assert fraud_worker.consumer.stats.retried == retries
    assert fraud_worker.consumer.stats.dead_lettered == 1

    # And it keeps consuming afterwards.
    later = withdrawal(f"fw-{uuid.uuid4().hex[:10]}", "30000")
    await publish(channel, fraud_settings, encode(later), "wallet.funds_withdrawn", later["eventId"])

    async def later_processed() -> bool:
        return bool(
            await db.fetchval("SELECT count(*) FROM fraud_alerts WHERE wallet_id = $1", later["walletId"])
        )

    await wait_for(later_processed)


async def test_rapid_withdrawals_and_a_high_value_one_end_to_end_and_listed(client, fraud_worker, db):
    rapid, big, edge = (f"fw-{uuid.uuid4().hex[:10]}" for _ in range(3))
    assert (await post(client, f"/v1/wallet/{rapid}/deposit", {"amount": 100}))[0] == 200
    for _ in range(4):
        assert (await post(client, f"/v1/wallet/{rapid}/withdraw", {"amount": 1}))[0] == 200
    for wallet, amount in ((big, "10000.01"), (edge, "10000")):
        assert (await post(client, f"/v1/wallet/{wallet}/deposit", {"amount": 20000}))[0] == 200
        assert (await post(client, f"/v1/wallet/{wallet}/withdraw", {"amount": amount}))[0] == 200

    async def processed() -> bool:
        n = await db.fetchval(
            "SELECT count(*) FROM fraud_processed_events WHERE wallet_id = ANY($1::text[])",
            [rapid, big, edge],
        )
        return int(n) == 6

    await wait_for(processed)
    withdrawals = await db.fetch(
        "SELECT id FROM wallet_events WHERE wallet_id = $1 AND event_type = 'FUNDS_WITHDRAWN'"
        " ORDER BY version",
        rapid,
    )

    response = await client.get(f"/v1/fraud/alerts?walletId={rapid}")
    assert response.status == 200
    listed = await response.json()
    assert [(a["rule"], a["severity"], a["eventId"], a["amount"]) for a in listed] == [
        ("RAPID_WITHDRAWALS", "CRITICAL", str(withdrawals[3]["id"]), 1)
    ]
    assert listed[0]["details"]["count"] == 4

    response = await client.get(f"/fraud/alerts?walletId={big}&limit=10")
    listed = await response.json()
    assert [(a["rule"], a["severity"], a["amount"], a["currency"]) for a in listed] == [
        ("HIGH_VALUE_TRANSACTION", "HIGH", 10000.01, "USD")
    ]
    assert set(listed[0]) == {
        "id",
        "walletId",
        "rule",
        "severity",
        "eventId",
        "amount",
        "currency",
        "reason",
        "details",
        "occurredAt",
        "createdAt",
    }
    assert await (await client.get(f"/v1/fraud/alerts?walletId={edge}")).json() == []

    everything = await (await client.get("/v1/fraud/alerts?limit=1000")).json()
    assert {(a["walletId"], a["rule"]) for a in everything} >= {
        (rapid, "RAPID_WITHDRAWALS"),
        (big, "HIGH_VALUE_TRANSACTION"),
    }
    assert len(await (await client.get("/v1/fraud/alerts?limit=1")).json()) == 1
    for bad in ("limit=0", "limit=1001", "limit=x", "walletId=no%20spaces"):
        response = await client.get(f"/v1/fraud/alerts?{bad}")
        assert response.status == 400
        assert (await response.json())["error"] == "ValidationError"


async def test_auto_freeze_freezes_the_wallet_on_a_critical_alert(
    aiohttp_client, fraud_settings, fraud_worker, db, channel
):
    api = await start_api(
        replace(fraud_settings, fraud_auto_freeze=True), name="auto-freeze", run_migrations=False
    )
    try:
        assert api.auto_freeze is not None
        await asyncio.wait_for(api.auto_freeze.ready.wait(), 10)
        client = await aiohttp_client(api.app)
        wallet = f"fw-{uuid.uuid4().hex[:10]}"
        assert (await post(client, f"/v1/wallet/{wallet}/deposit", {"amount": 100}))[0] == 200
        for _ in range(4):
            assert (await post(client, f"/v1/wallet/{wallet}/withdraw", {"amount": 1}))[0] == 200

        async def frozen() -> bool:
            response = await client.get(f"/v1/wallet/{wallet}")
            return bool((await response.json())["status"] == "FROZEN")

        await wait_for(frozen)
        status, body = await post(client, f"/v1/wallet/{wallet}/withdraw", {"amount": 1})
        assert status == 422 and body["error"] == "WalletNotActiveError"

        # A redelivered alert replays the first freeze (same idempotency key): no second event,
        # even after an operator unfroze the wallet.
        assert (await post(client, f"/v1/wallet/{wallet}/unfreeze", {"reason": "checked"}))[0] == 200
        row = await db.fetchrow("SELECT * FROM fraud_alerts WHERE wallet_id = $1", wallet)
        alert = AlertMessage(
            row["id"], row["rule"], row["severity"], wallet, row["event_id"], row["amount"], "USD",
            row["reason"], row["occurred_at"],
        )  # fmt: skip
        await publish(channel, fraud_settings, alert.to_json(), "fraud.alert.critical", str(alert.alert_id))

        async def handled_twice() -> bool:
            assert api.auto_freeze is not None and api.auto_freeze._consumer is not None
            return api.auto_freeze._consumer.stats.handled >= 2

        await wait_for(handled_twice)
        frozen_events = await db.fetchval(
            "SELECT count(*) FROM wallet_events WHERE wallet_id = $1 AND event_type = 'WALLET_FROZEN'", wallet
        )
        assert frozen_events == 1
        assert api.auto_freeze.frozen == 1
        # The freeze was the fraud worker's, a system actor (issue 10's audit trail).
        metadata = json.loads(
            await db.fetchval(
                "SELECT metadata FROM wallet_events WHERE wallet_id = $1 AND event_type = 'WALLET_FROZEN'",
                wallet,
            )
        )
        assert metadata["actor"] == {
            "type": "system",
            "id": "fraud-auto-freeze",
            "name": "fraud worker auto-freeze",
        }
        assert metadata["requestId"] == f"fraud-alert:{row['id']}"
        assert (await post(client, f"/v1/wallet/{wallet}/withdraw", {"amount": 1}))[0] == 200
    finally:
        await api.stop()


async def test_auto_freeze_is_off_by_default(client, api, fraud_worker, db):
    assert api.auto_freeze is None
    wallet = f"fw-{uuid.uuid4().hex[:10]}"
    assert (await post(client, f"/v1/wallet/{wallet}/deposit", {"amount": 100}))[0] == 200
    for _ in range(4):
        assert (await post(client, f"/v1/wallet/{wallet}/withdraw", {"amount": 1}))[0] == 200

    async def alerted() -> bool:
        return bool(await db.fetchval("SELECT count(*) FROM fraud_alerts WHERE wallet_id = $1", wallet))

    await wait_for(alerted)
    assert (await post(client, f"/v1/wallet/{wallet}/withdraw", {"amount": 1}))[0] == 200


async def test_a_large_transfer_alerts_once_on_its_debit(client, fraud_worker, db):
    source, target = (f"fw-{uuid.uuid4().hex[:10]}" for _ in range(2))
    assert (await post(client, f"/v1/wallet/{source}/deposit", {"amount": 50000}))[0] == 200
    status, body = await post(
        client, f"/v1/wallet/{source}/transfer", {"toWalletId": target, "amount": "12000.5"}
    )
    assert status == 200, body

    async def alerted() -> bool:
        return bool(await db.fetchval("SELECT count(*) FROM fraud_alerts WHERE wallet_id = $1", source))

    await wait_for(alerted)
    await asyncio.sleep(0.2)
    alerts = await db.fetch(
        "SELECT wallet_id, rule, amount FROM fraud_alerts WHERE wallet_id = ANY($1::text[])", [source, target]
    )
    assert [(a["wallet_id"], a["rule"], a["amount"]) for a in alerts] == [
        (source, "HIGH_VALUE_TRANSACTION", 1_200_050)
    ]
