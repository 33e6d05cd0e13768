"""The ``worker`` workload: a backlog of real events drained by one, then two fraud workers.

With no worker consuming, the service takes ``events`` keyed writes (a unique ``X-Request-ID``
each): transfers between random transfer wallets and withdrawals from the spread wallets in
turn, alternately.
Their events go through the outbox to the run's own exchange and queue (``fraud_detection.bench_
<run>``), where they wait. Then ``wallet worker`` processes are started and timed until every
event is processed (``fraud_processed_events``), start-up included; the steady rate counts from
the first processed event. Their CPU is read from /proc. Then a second backlog for two workers.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal

import aio_pika
import asyncpg

from wallet.bench.services import proc_cpu_seconds, spawn
from wallet.client import WalletClient, WalletError
from wallet.config import Settings
from wallet.messaging.topology import declare_queue, delete_topology, fraud_topology

CENT = Decimal("0.01")
DRAIN_TIMEOUT_S = 300.0
POLL_S = 0.05  # a count of the processed events: often enough, not a load of its own


class DrainError(RuntimeError):
    """The backlog could not be made, or was not drained."""


@dataclass(frozen=True)
class DrainRow:
    workers: int
    events: int
    seconds: float  # from the workers' start to the last event processed
    steady_seconds: float  # from the first event processed to the last
    steady_events: int  # processed after the first poll that saw one
    steady_cpu_s: float  # the workers' CPU over those
    alerts: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_rate(self) -> float:
        return self.events / self.steady_seconds if self.steady_seconds > 0 else 0.0

    @property
    def cpu_us_per_event(self) -> float:
        return self.steady_cpu_s / self.steady_events * 1e6 if self.steady_events else 0.0


def stream_settings(run_id: str) -> Settings:
    """The run's own exchange and queue (never another run's ``fraud_detection``)."""
    return replace(
        Settings(),
        rabbitmq_url=os.environ.get("RABBITMQ_URL") or Settings.rabbitmq_url,
        rabbitmq_exchange=f"wallet_events.bench_{run_id}",
        fraud_queue=f"fraud_detection.bench_{run_id}",
    )


def worker_env(settings: Settings, db_url: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a bench's ``wallet worker`` on the run's own database, exchange and queue."""
    return {
        **(extra or {}),
        "DATABASE_URL": db_url,
        "RABBITMQ_URL": settings.rabbitmq_url,
        "RABBITMQ_EXCHANGE": settings.rabbitmq_exchange,
        "FRAUD_QUEUE": settings.fraud_queue,
        "LOG_LEVEL": "warning",
    }


class WorkerDrain:
    def __init__(
        self,
        settings: Settings,
        client: WalletClient,
        db_url: str,
        *,
        spread: list[str],
        transfer: list[str],
        connections: int,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.env = env  # the service's extra environment (EVENT_LOOP, ...), the workers' too
        self.client = client  # keyed writes, retried with their key as a careful client does
        self.db_url = db_url
        self.spread = spread
        self.transfer = transfer
        self.connections = connections
        self.withdrawals = 0

    async def declare(self) -> None:
        async with await aio_pika.connect(self.settings.rabbitmq_url, timeout=10) as connection:
            await declare_queue(await connection.channel(), fraud_topology(self.settings))

    async def delete(self) -> None:
        async with await aio_pika.connect(self.settings.rabbitmq_url, timeout=10) as connection:
            channel = await connection.channel()
            await delete_topology(channel, fraud_topology(self.settings))
            await channel.exchange_delete(self.settings.rabbitmq_exchange)

    async def queue_depth(self) -> int:
        async with await aio_pika.connect(self.settings.rabbitmq_url, timeout=10) as connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(self.settings.fraud_queue, passive=True)
            return int(queue.declaration_result.message_count or 0)

    async def fill(self, events: int) -> None:
        """``events`` keyed writes (half transfers, half withdrawals), then wait until the outbox
        has published them all to the queue."""
        limit = asyncio.Semaphore(self.connections)
        rng = random.Random(events)

        async def write(n: int) -> None:
            try:
                async with limit:
                    if n % 2:
                        a, b = rng.sample(self.transfer, 2)
                        await self.client.transfer(a, b, CENT)
                    else:  # each spread wallet in turn: a few withdrawals each, rarely a rapid alert
                        self.withdrawals += 1
                        await self.client.withdraw(self.spread[self.withdrawals % len(self.spread)], CENT)
            except WalletError as exc:
                raise DrainError(f"backlog write: {exc!r}") from exc

        before = await self.queue_depth()
        await asyncio.gather(*map(write, range(events)))
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while await self.queue_depth() < before + events:
            if time.monotonic() > deadline:
                raise DrainError(
                    f"the outbox did not publish the backlog ({await self.queue_depth()} queued)"
                )
            await asyncio.sleep(0.2)

    async def drain(self, workers: int, events: int) -> DrainRow:
        """Start ``workers`` worker processes and time them until ``events`` more are processed."""
        conn = await asyncpg.connect(self.db_url)
        try:
            processed_before = await conn.fetchval("SELECT count(*) FROM fraud_processed_events")
            alerts_before = await conn.fetchval("SELECT count(*) FROM fraud_alerts")
            env = worker_env(self.settings, self.db_url, self.env)
            started = time.monotonic()
            procs = [
                spawn(f"worker{k}", ["-m", "wallet", "worker"], 0, env, listens=False) for k in range(workers)
            ]
            first: tuple[float, int, float] | None = None  # when, how many done, CPU so far
            try:
                while True:
                    count = await conn.fetchval("SELECT count(*) FROM fraud_processed_events")
                    done, now = int(count) - processed_before, time.monotonic()
                    cpu = sum(proc_cpu_seconds(p.proc.pid) for p in procs)
                    if first is None and done > 0:
                        first = (now, done, cpu)
                    if done >= events:
                        break
                    if now - started > DRAIN_TIMEOUT_S or any(p.proc.poll() is not None for p in procs):
                        raise DrainError(f"{workers} worker(s) processed {done} of {events} events")
                    await asyncio.sleep(POLL_S)
                ended = time.monotonic()
            finally:
                for p in procs:
                    p.stop()
            alerts = int(await conn.fetchval("SELECT count(*) FROM fraud_alerts")) - alerts_before
        finally:
            await conn.close()
        assert first is not None
        return DrainRow(
            workers=workers,
            events=events,
            seconds=ended - started,
            steady_seconds=ended - first[0],
            steady_events=events - first[1],
            steady_cpu_s=cpu - first[2],
            alerts=alerts,
        )
