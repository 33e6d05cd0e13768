"""``wallet worker`` processes for the fraud tests: environment, start, wait until consuming."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Any

import aio_pika

from wallet.config import Settings


def worker_env(s: Settings, **extra: str) -> dict[str, str]:
    return os.environ | {
        "DATABASE_URL": s.database_url,
        "RABBITMQ_URL": s.rabbitmq_url,
        "RABBITMQ_EXCHANGE": s.rabbitmq_exchange,
        "FRAUD_QUEUE": s.fraud_queue,
        "FRAUD_MAX_RETRIES": str(s.fraud_max_retries),
        "FRAUD_RETRY_BASE_SECONDS": str(s.fraud_retry_base_seconds),
        "LOG_LEVEL": "warning",
        **extra,
    }


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "wallet", "worker"], env=env)


async def wait_consuming(amqp: Any, queue_name: str, consumers: int, processes: list[Any]) -> None:
    """Until the queue has ``consumers`` consumers (the workers started: seconds on a busy
    machine, most of it importing the composition root)."""
    deadline = time.monotonic() + 60
    while True:
        assert all(p.poll() is None for p in processes), "a worker exited during start-up"
        assert time.monotonic() < deadline, "the workers did not start consuming"
        probe = await amqp.channel()  # a failed passive declare closes its channel
        try:
            queue = await probe.declare_queue(queue_name, passive=True)
            if queue.declaration_result.consumer_count >= consumers:
                return
        except aio_pika.exceptions.ChannelClosed:
            pass
        finally:
            if not probe.is_closed:
                await probe.close()
        await asyncio.sleep(0.1)


async def stop_worker(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    return await asyncio.get_running_loop().run_in_executor(None, process.wait, 15)


def kill_worker(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()
