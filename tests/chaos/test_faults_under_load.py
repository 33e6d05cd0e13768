"""Fault injection under load (issue 11): a keyed mixed workload of careful clients runs while, one
at a time, the API is SIGKILLed and restarted, its PostgreSQL backends are terminated, Redis is
paused, RabbitMQ goes away and comes back, and the API gets SIGTERM.

Only private or owned things are hurt: the service's own Redis (a redis-server started here,
SIGSTOPped), the service's path to the shared RabbitMQ (a TCP proxy cut and restored), and the
server processes of this run's database opened by the service. Afterwards: every acknowledged
operation took effect once (each client's model of its wallets matches the database and the API),
reads showed each client its own writes, money is conserved, `wallet verify` passes, every event
reached RabbitMQ, and no operation waited more than 10 s for a definite answer outside the SIGKILL
outage. The longest wait per fault is printed (run with -s to see it).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp
import asyncpg

from tests.chaos.workload import Client, Phases
from tests.e2e.service_process import ServiceProcess
from tests.integration.edges import TcpProxy, redis_process, through

CLIENTS = 6
WALLETS_PER_CLIENT = 3
MAX_WAIT_SECONDS = 10.0
# Faults the clients must not see as errors (no 5xx answer), only as latency.
QUIET_FAULTS = ("pg_terminate_backend", "redis_paused", "rabbitmq_stopped")


async def terminate_service_backends(admin: asyncpg.Connection) -> int:
    """End the server processes the service opened on this run's database (pool and listener)."""
    return int(
        await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND application_name LIKE 'wallet-%'"
        )
    )


async def test_faults_under_load(settings, collector):
    rabbit = urlsplit(settings.rabbitmq_url)
    broker = await TcpProxy(rabbit.hostname or "127.0.0.1", rabbit.port or 5672).start()
    admin = await asyncpg.connect(settings.database_url)
    phases = Phases()
    async with redis_process() as redis:
        service = ServiceProcess(
            settings,
            REDIS_URL=redis.url,
            RABBITMQ_URL=through(settings.rabbitmq_url, broker.port),
            AUTH_ENABLED="false",
            OUTBOX_POLL_SECONDS="0.2",
            OUTBOX_BACKOFF_INITIAL_SECONDS="0.05",
            OUTBOX_BACKOFF_MAX_SECONDS="0.5",
            OUTBOX_PUBLISH_TIMEOUT_SECONDS="2",
            SHUTDOWN_TIMEOUT_SECONDS="4",
        )
        await service.start()
        run = uuid.uuid4().hex[:8]
        stop = asyncio.Event()
        async with aiohttp.ClientSession() as session:
            clients = [
                Client(
                    service.base,
                    session,
                    [f"chaos-{run}-{c}-{w}" for w in range(WALLETS_PER_CLIENT)],
                    phases,
                )
                for c in range(CLIENTS)
            ]
            workers = [asyncio.ensure_future(c.run(stop)) for c in clients]
            try:
                await _phases(phases, service, admin, redis, broker, workers)
            finally:
                stop.set()
                await asyncio.wait_for(asyncio.gather(*workers, return_exceptions=True), 120)
            results = [w.result() for w in workers if not w.cancelled() and w.exception() is None]
            errors = [w.exception() for w in workers if not w.cancelled() and w.exception() is not None]
            assert not errors, errors
            assert len(results) == CLIENTS
            try:
                await _check_everything(settings, admin, clients, phases, collector)
            finally:
                assert service.process is not None
                service.process.send_signal(signal.SIGTERM)
                await service.wait(15)
                service.kill()
    await admin.close()
    await broker.cut()


async def _phases(
    phases: Phases,
    service: ServiceProcess,
    admin: asyncpg.Connection,
    redis,
    broker: TcpProxy,
    workers: list[asyncio.Future[None]],
) -> None:
    async def load_for(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            done = [w for w in workers if w.done()]
            for w in done:
                w.result()  # a client that failed: stop now, with its error
            await asyncio.sleep(0.1)

    async def phase(name: str, inject: Callable[[], Awaitable[None]], settle: float = 2.0) -> None:
        phases.current = name
        await inject()
        await load_for(settle)

    await load_for(2.0)

    async def sigkill() -> None:
        await load_for(0.5)
        assert service.process is not None
        down = time.monotonic()
        service.process.kill()
        await service.wait()
        await service.start()
        phases.outages.append((down, time.monotonic()))

    async def terminate_backends() -> None:
        for _ in range(3):
            await load_for(0.5)
            await terminate_service_backends(admin)

    async def pause_redis() -> None:
        await load_for(0.5)
        redis.freeze()
        try:
            await load_for(3.0)
        finally:
            redis.thaw()

    async def stop_broker() -> None:
        await load_for(0.5)
        await broker.cut()
        try:
            await load_for(3.0)
        finally:
            await broker.start()

    async def sigterm() -> None:
        await load_for(0.5)
        assert service.process is not None
        service.process.send_signal(signal.SIGTERM)
        assert await service.wait(15) == 0
        await service.start()

    await phase("sigkill", sigkill, settle=3.0)
    await phase("pg_terminate_backend", terminate_backends)
    await phase("redis_paused", pause_redis)
    await phase("rabbitmq_stopped", stop_broker)
    await phase("sigterm", sigterm, settle=3.0)


async def _check_everything(
    settings, admin: asyncpg.Connection, clients: list[Client], phases: Phases, collector
) -> None:
    ops = [op for c in clients for op in c.ops]
    by_phase: dict[str, list[float]] = {}
    for op in ops:
        by_phase.setdefault(op.phase, []).append(op.waited)
    for c in clients:
        for phase, started, answered in c.reads:
            by_phase.setdefault(phase, []).append(answered - started)
    errors: dict[str, int] = {}
    for op in ops:
        errors[op.phase] = errors.get(op.phase, 0) + sum(1 for status in op.retried if status >= 500)
    print("\nlongest wait for a definite answer per fault (operations and reads), 5xx answers retried:")
    for phase, waits in by_phase.items():
        print(f"  {phase:>22}: {max(waits):6.2f} s over {len(waits)} requests, {errors.get(phase, 0)} 5xx")
    slow = [
        (op.phase, op.kind, round(op.waited, 2), op.attempts)
        for op in ops
        if op.waited > MAX_WAIT_SECONDS and not phases.overlaps_outage(op.started, op.answered)
    ]
    slow += [
        (phase, "read", round(answered - started, 2), 0)
        for c in clients
        for phase, started, answered in c.reads
        if answered - started > MAX_WAIT_SECONDS and not phases.overlaps_outage(started, answered)
    ]
    # A failover of the database, Redis or the broker costs latency, not errors.
    assert all(errors.get(phase, 0) == 0 for phase in QUIET_FAULTS), errors
    problems = [p for c in clients for p in c.problems]
    assert not problems, "\n".join(f"{p.what} -- {p.op}" for p in problems[:10])
    assert not slow, slow

    # Every acknowledged operation took effect once: the database holds each client's model.
    wallets = [w for c in clients for w in c.wallets]
    rows = await admin.fetch("SELECT id, balance FROM wallets WHERE id = ANY($1::text[])", wallets)
    stored = {r["id"]: r["balance"] for r in rows}
    expected = {w: c.model[w] * 100 for c in clients for w in c.wallets}
    assert stored == expected

    # Money is conserved: no transfer in flight, balances = deposits - withdrawals.
    in_flight = await admin.fetchval(
        "SELECT count(*) FROM transfer_sagas WHERE from_wallet_id = ANY($1::text[])"
        " AND state NOT IN ('COMPLETED', 'FAILED', 'COMPENSATED')",
        wallets,
    )
    assert in_flight == 0
    moved = await admin.fetchrow(
        "SELECT coalesce(sum(amount) FILTER (WHERE event_type = 'FUNDS_DEPOSITED'), 0) AS deposits,"
        " coalesce(sum(amount) FILTER (WHERE event_type = 'FUNDS_WITHDRAWN'), 0) AS withdrawals"
        " FROM wallet_events WHERE wallet_id = ANY($1::text[])",
        wallets,
    )
    assert sum(stored.values()) == moved["deposits"] - moved["withdrawals"]

    verify = subprocess.run(
        [sys.executable, "-m", "wallet", "verify"],
        env=os.environ | {"DATABASE_URL": settings.database_url, "LOG_LEVEL": "warning"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # Every event reached RabbitMQ (at least once).
    event_ids = {
        str(r["id"])
        for r in await admin.fetch("SELECT id FROM wallet_events WHERE wallet_id = ANY($1::text[])", wallets)
    }
    await collector.wait_until(lambda: event_ids <= {r.message_id for r in collector.received}, timeout=30.0)
