"""``wallet worker`` as a real process: consumes, raises alerts, exits cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import time
import uuid

from tests.integration.fraud_processes import (
    kill_worker,
    start_worker,
    stop_worker,
    wait_consuming,
    worker_env,
)
from tests.integration.test_fraud_worker import encode, publish, withdrawal
from wallet.messaging.topology import fraud_topology


async def test_wallet_worker_consumes_and_stops_on_sigterm(fraud_settings, db, amqp):
    s = fraud_settings
    channel = await amqp.channel()
    process = start_worker(worker_env(s, FRAUD_HIGH_VALUE_THRESHOLD="500.50"))
    try:
        await wait_consuming(amqp, fraud_topology(s).queue, 1, [process])
        wallet = f"fp-{uuid.uuid4().hex[:10]}"
        event = withdrawal(wallet, "500.51")  # above the threshold given by the environment
        await publish(channel, s, encode(event), "wallet.funds_withdrawn", event["eventId"])
        deadline = time.monotonic() + 20
        while not await db.fetchval("SELECT count(*) FROM fraud_alerts WHERE wallet_id = $1", wallet):
            assert time.monotonic() < deadline, "no alert"
            await asyncio.sleep(0.05)
        assert await stop_worker(process) == 0
    finally:
        kill_worker(process)
