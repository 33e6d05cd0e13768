"""The ``alerts`` workload: commit-to-alert latency while the API takes a keyed load (issue 15).

One ``wallet worker`` consumes the run's own queue (``fraud_detection.bench_<run>``). While wrk
sends the keyed hot-wallet load, and then the keyed transfer load, the bench makes a high-value
withdrawal (just above the fraud threshold) every ``SAMPLE_EVERY_S`` from a fresh pre-funded
wallet, keyed, and polls ``GET /v1/fraud/alerts`` every ``POLL_EVERY_S``, noting when each
sample's alert is first listed. A sample's latency is that moment minus its withdrawal event's
``created_at`` in ``wallet_events`` (its flush transaction's start, a little before the commit:
an upper bound), as tests/integration/test_fraud_latency.py measures it. A sample whose alert is
not listed within ``GRACE_S`` after the load and the withdrawals end is a miss.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TypeVar

import aio_pika
import asyncpg

from wallet.bench.services import Server, proc_cpu_seconds, spawn
from wallet.bench.worker_drain import worker_env
from wallet.bench.wrk import WrkResult
from wallet.client import WalletClient, WalletError
from wallet.config import Settings
from wallet.messaging.topology import declare_queue, delete_topology, fraud_topology

SAMPLE_EVERY_S = 0.1
POLL_EVERY_S = 0.02
GRACE_S = 30.0  # after the load: an alert not listed by then is a miss
PAGE = 100  # alerts per poll (newest first); a full page never seen before is re-read with FULL_PAGE
FULL_PAGE = 1000
TARGET_P99_S = 1.0  # issue 15, point 3
WORKER_START_S = 120.0  # the worker's start-up took 5-15 s on this loaded machine
HIGH_VALUE_RULE = "HIGH_VALUE_TRANSACTION"
CENT = Decimal("0.01")

T = TypeVar("T")


class AlertLatencyError(RuntimeError):
    """The worker did not start, or the workload could not be set up."""


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted ``values`` (the test's definition); 0 when empty."""
    if not values:
        return 0.0
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def latencies(listed: Mapping[str, float], created: Mapping[str, float]) -> list[float]:
    """Sorted seconds from each sample's event ``created_at`` to its alert's first listing (epoch
    seconds both), for the samples that have both."""
    return sorted(listed[w] - created[w] for w in listed.keys() & created.keys())


def sample_count(duration_s: float) -> int:
    """Samples in a load of ``duration_s``: one every SAMPLE_EVERY_S, the last inside the load."""
    return max(1, math.ceil(round(duration_s / SAMPLE_EVERY_S, 6)))


def sample_amount(threshold: Decimal) -> Decimal:
    """A withdrawal just above the high-value threshold (strictly above alerts)."""
    return threshold + CENT


@dataclass(frozen=True)
class AlertRow:
    """One load and the samples made during it."""

    name: str  # "alerts: hot", "alerts: transfers"
    load: WrkResult  # wrk's load that ran meanwhile
    samples: int  # high-value withdrawals sent
    acknowledged: int  # of which answered 200
    latencies: tuple[float, ...]  # seconds, sorted: one per alert found
    worker_cpu_s: float  # the worker's CPU during the load and the wait for the last alerts
    load_s: float  # that wall-clock time (the CPU's denominator)
    check_ok: bool = True  # the load's own exactness check
    check: str = "-"
    polls: int = 0
    poll_errors: int = 0

    @property
    def found(self) -> int:
        return len(self.latencies)

    @property
    def missed(self) -> int:
        """Acknowledged samples whose alert was not listed in time."""
        return self.acknowledged - self.found

    @property
    def sample_errors(self) -> int:
        return self.samples - self.acknowledged

    def quantile(self, q: float) -> float:
        return percentile(list(self.latencies), q)

    @property
    def worker_cpu_share(self) -> float:
        return self.worker_cpu_s / self.load_s if self.load_s > 0 else 0.0

    @property
    def within_target(self) -> bool:
        return self.found > 0 and self.missed == 0 and self.quantile(0.99) <= TARGET_P99_S

    @property
    def failed(self) -> bool:
        """A miss, a failed sample or load request, or a failed check: the bench's exit code 1. (A
        p99 above the target is a figure, not a failure of the run.)"""
        return bool(self.missed or self.sample_errors or self.load.errors or not self.check_ok)


@dataclass
class Samples:
    wallets: list[str]
    acknowledged: set[str] = field(default_factory=set)
    listed: dict[str, float] = field(default_factory=dict)  # wallet -> first listed (epoch seconds)
    errors: list[str] = field(default_factory=list)
    polls: int = 0
    poll_errors: int = 0


class AlertProbe:
    """High-value withdrawals and the poller of the alerts, for one load at a time."""

    def __init__(self, client: WalletClient, db_url: str, amount: Decimal) -> None:
        self.client = client  # keyed writes, retried with their key; the bench's credential
        self.db_url = db_url
        self.amount = amount

    async def during(self, wallets: list[str], load: Awaitable[T]) -> tuple[T, Samples]:
        """Withdraw ``amount`` from each of ``wallets`` (pre-funded), one every SAMPLE_EVERY_S,
        while ``load`` runs; poll the alerts until each acknowledged sample's is listed, or
        GRACE_S after the load and the withdrawals ended."""
        samples = Samples(wallets)
        loaded = asyncio.Event()
        poller = asyncio.create_task(self.poll(samples, loaded))
        try:
            result, _ = await asyncio.gather(load, self.withdraw_all(samples))
        except BaseException:
            poller.cancel()
            raise
        loaded.set()
        await poller
        return result, samples

    async def withdraw_all(self, samples: Samples) -> None:
        started = time.monotonic()

        async def withdraw(wallet: str) -> None:
            try:
                await self.client.withdraw(wallet, self.amount, request_id=f"alert-{wallet}")
            except WalletError as exc:
                samples.errors.append(f"{wallet}: {exc!r}")
            else:
                samples.acknowledged.add(wallet)

        tasks = []
        for i, wallet in enumerate(samples.wallets):
            await asyncio.sleep(max(0.0, started + i * SAMPLE_EVERY_S - time.monotonic()))
            tasks.append(asyncio.create_task(withdraw(wallet)))
        await asyncio.gather(*tasks)

    async def poll(self, samples: Samples, loaded: asyncio.Event) -> None:
        """Until ``loaded`` is set and every acknowledged sample is listed, or GRACE_S after it."""
        wanted = set(samples.wallets)  # listed before its 200 arrives counts too
        seen: set[str] = set()  # alert ids
        grace_end: float | None = None
        while True:
            if loaded.is_set():
                grace_end = grace_end or time.monotonic() + GRACE_S
                if not samples.acknowledged - samples.listed.keys() or time.monotonic() > grace_end:
                    return
            try:
                page = await self.client.fraud_alerts(limit=PAGE, deadline=5.0)
                if len(page) == PAGE and page[-1].id not in seen:  # more may be new than a page
                    page = await self.client.fraud_alerts(limit=FULL_PAGE, deadline=5.0)
            except WalletError:
                samples.poll_errors += 1
            else:
                now = time.time()
                samples.polls += 1
                for alert in page:
                    seen.add(alert.id)
                    wallet = alert.wallet_id
                    if wallet in wanted and alert.rule == HIGH_VALUE_RULE and wallet not in samples.listed:
                        samples.listed[wallet] = now
            await asyncio.sleep(POLL_EVERY_S)

    async def created(self, wallets: list[str]) -> dict[str, float]:
        """Each sample wallet's withdrawal event ``created_at`` (epoch seconds)."""
        conn = await asyncpg.connect(self.db_url)
        try:
            rows = await conn.fetch(
                "SELECT wallet_id, created_at FROM wallet_events"
                " WHERE wallet_id = ANY($1::text[]) AND event_type = 'FUNDS_WITHDRAWN'",
                wallets,
            )
        finally:
            await conn.close()
        return {r["wallet_id"]: r["created_at"].timestamp() for r in rows}


class Worker:
    """One ``wallet worker`` on the run's own queue, started once it is declared."""

    def __init__(self, settings: Settings, db_url: str, env: Mapping[str, str]) -> None:
        self.settings = settings
        self.db_url = db_url
        self.env = env  # the service's extra environment (fraud thresholds, ...)
        self.server: Server | None = None

    async def start(self) -> None:
        """Declare the queue, start the worker and wait until it consumes the queue."""
        async with await aio_pika.connect(self.settings.rabbitmq_url, timeout=10) as connection:
            await declare_queue(await connection.channel(), fraud_topology(self.settings))
        env = worker_env(self.settings, self.db_url, self.env)
        self.server = spawn("alerts-worker", ["-m", "wallet", "worker"], 0, env, listens=False)
        deadline = time.monotonic() + WORKER_START_S
        while await self.consumers() < 1:
            if self.server.proc.poll() is not None:
                raise AlertLatencyError(f"the worker exited with {self.server.proc.returncode}")
            if time.monotonic() > deadline:
                raise AlertLatencyError(f"the worker did not consume within {WORKER_START_S:.0f}s")
            await asyncio.sleep(0.2)

    def cpu_seconds(self) -> float:
        return 0.0 if self.server is None else proc_cpu_seconds(self.server.proc.pid)

    def alive(self) -> bool:
        return self.server is not None and self.server.proc.poll() is None

    async def consumers(self) -> int:
        async with await aio_pika.connect(self.settings.rabbitmq_url, timeout=10) as connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(self.settings.fraud_queue, passive=True)
            return int(queue.declaration_result.consumer_count or 0)

    async def stop(self) -> None:
        """Stop the worker and delete its queues (not the run's exchange: the service publishes to
        it, and the worker workload may follow)."""
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)
        async with await aio_pika.connect(self.settings.rabbitmq_url, timeout=10) as connection:
            await delete_topology(await connection.channel(), fraud_topology(self.settings))
