"""``wallet worker`` as a real process: consumes, raises alerts, exits cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid

import aio_pika

from tests.integration.test_fraud_worker import encode, publish, withdrawal
from wallet.messaging.topology import fraud_topology


async def test_wallet_worker_consumes_and_stops_on_sigterm(fraud_settings, db, amqp):
    s = fraud_settings
    channel = await amqp.channel()
    env = os.environ | {
        "DATABASE_URL": s.database_url,
        "RABBITMQ_URL": s.rabbitmq_url,
        "RABBITMQ_EXCHANGE": s.rabbitmq_exchange,
        "FRAUD_QUEUE": s.fraud_queue,
        "FRAUD_MAX_RETRIES": str(s.fraud_max_retries),
        "FRAUD_RETRY_BASE_SECONDS": str(s.fraud_retry_base_seconds),
        "FRAUD_HIGH_VALUE_THRESHOLD": "500.50",
        "LOG_LEVEL": "warning",
    }
    process = subprocess.Popen([sys.executable, "-m", "wallet", "worker"], env=env)
    try:
        queue_name = fraud_topology(s).queue
        deadline = time.monotonic() + 15
        while True:  # until the worker consumes its queue
            assert process.poll() is None, "worker exited during start-up"
            assert time.monotonic() < deadline, "worker did not start consuming"
            probe = await amqp.channel()  # a failed passive declare closes its channel
            try:
                queue = await probe.declare_queue(queue_name, passive=True)
                if queue.declaration_result.consumer_count:
                    break
            except aio_pika.exceptions.ChannelClosed:
                pass
            finally:
                if not probe.is_closed:
                    await probe.close()
            await asyncio.sleep(0.1)

        wallet = f"fp-{uuid.uuid4().hex[:10]}"
        event = withdrawal(wallet, "500.51")  # above the threshold given by the environment
        await publish(channel, s, encode(event), "wallet.funds_withdrawn", event["eventId"])
        while not await db.fetchval("SELECT count(*) FROM fraud_alerts WHERE wallet_id = $1", wallet):
            assert time.monotonic() < deadline + 10, "no alert"
            await asyncio.sleep(0.05)

        process.send_signal(signal.SIGTERM)
        code = await asyncio.get_running_loop().run_in_executor(None, process.wait, 10)
        assert code == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
