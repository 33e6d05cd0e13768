"""The bench run: ceiling first, then the service against a fresh database, one row per workload."""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Literal

import aiohttp
import asyncpg
import jwt

from wallet.auth.issue import issue_key
from wallet.bench.alert_latency import (
    AlertProbe,
    AlertRow,
    Worker,
    latencies,
    sample_amount,
    sample_count,
)
from wallet.bench.key_cost import KeyCostRow, Window, paired_windows
from wallet.bench.router import Router
from wallet.bench.services import (
    CpuMeter,
    CpuUse,
    Server,
    Target,
    create_database,
    delete_exchange,
    drop_database,
    spawn,
    wait_ready,
    with_database,
)
from wallet.bench.worker_drain import DrainRow, WorkerDrain, stream_settings
from wallet.bench.wrk import WrkResult, finish_wrk, start_wrk
from wallet.client import RetryPolicy, WalletClient, WalletError
from wallet.config import Settings
from wallet.persistence.api_key_store import ApiKeyStore

WORKLOADS = ("ceiling", "hot", "spread", "reads", "transfers", "worker", "alerts")
# Workloads with a fraud worker on the run's own exchange and queue; not wrk rows of their own.
STREAM_WORKLOADS = ("alerts", "worker")
WRITES = ("hot", "spread", "transfers")  # sent with a unique X-Request-ID each, unless keys are off
KEYS = ("on", "off", "both")  # both: the write workloads keyed, then again key-less (Options.sessions)
RELAYS = ("in-process", "separate")  # where the events are published during the measurement
NO_KEY = " (no key)"  # the name suffix of a key-less write workload
# Ports above --port-base: the ceiling is at +0, the single service at +1.
CLUSTER_PORT = 2  # the instances of --instances N: +2 .. +N+1
ROUTER_PORT = 10  # their router, and its metrics at +11
ROUTED_CEILING_PORT = 12  # the router in front of the ceiling, and its metrics at +13
WARMUP_S = 2.0
CENT = Decimal("0.01")
DEPOSIT_CENT = '{"amount": 0.01}'
TRANSFER_WALLETS = 100
TRANSFER_FUNDING = Decimal(1000)
OUTBOX_EMPTY_S = 120.0  # the alerts workload waits this long for the earlier workloads' events
# Funding and checks: a loaded service may answer 503 for a moment; a minute covers it.
CLIENT_RETRY = RetryPolicy(deadline=60.0, attempt_timeout=20.0)

Kind = Literal["post", "get"]
# Which ceiling each service workload is compared with.
WORKLOAD_KINDS: dict[str, Kind] = {"hot": "post", "spread": "post", "reads": "get", "transfers": "post"}


class BenchError(RuntimeError):
    """The bench could not run a workload (as opposed to a workload failing its check)."""


@dataclass(frozen=True)
class Options:
    duration: float = 10.0
    connections: int = 64
    threads: int = 1
    workloads: tuple[str, ...] = ("ceiling", "hot", "spread", "reads", "transfers")
    wallets: int = 10_000
    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    port_base: int = 18080
    markdown: bool = False
    service_env: dict[str, str] = field(default_factory=dict)
    # Above 1: the same workloads also run through HAProxy (deploy/haproxy.cfg) in front of this
    # many instances, side by side with the single instance, and the ceiling through the router.
    instances: int = 1
    # How the bench authenticates: "key" (an API key it issues), "jwt" (an HS256 token, the
    # service given the secret) or "off" (AUTH_ENABLED=false: the figures without authentication).
    auth: str = "key"
    events: int = 20_000  # the backlog of the worker workload
    keys: str = "on"
    relay: str = "in-process"
    # Above 0: after the rows, each write workload keyed and key-less in turn on the same service,
    # this many pairs of windows (key_cost.py): the key's cost, without the machine's swings.
    key_pairs: int = 0

    def keyed(self, name: str) -> bool:
        """Whether workload ``name`` sends a unique X-Request-ID on every request (reads never do)."""
        return name in WRITES and self.keys != "off"

    def sessions(self, names: list[str]) -> list[tuple[Options, list[str]]]:
        """The service sessions of a run, each with a database and a service of its own: the
        workloads in ``names`` with these options, and with keys "both" the write workloads again
        key-less in a second session, so that neither variant runs on what the other left behind
        (a grown database, its autovacuum and checkpoints, which slowed whichever ran second)."""
        if self.keys != "both":
            return [(self, names)]
        keyless = [n for n in names if n in WRITES]
        first = (replace(self, keys="on"), names)  # the key's cost (key_pairs) is measured here alone
        return [first, (replace(self, keys="off", key_pairs=0), keyless)] if keyless else [first]


@dataclass(frozen=True)
class Check:
    ok: bool
    text: str


@dataclass
class Row:
    name: str
    kind: Kind  # which ceiling the ratio is against
    run: WrkResult
    warmup: WrkResult
    cpu: CpuUse  # used during the run's sending window
    check: Check | None = None
    ratio: float | None = None
    # The ceiling (same kind) measured just before this workload, and just after it.
    ceiling_rps: float | None = None
    ceiling_after_rps: float | None = None

    @property
    def adjacent_ceiling(self) -> float | None:
        """What the ratio is against: the mean of the ceilings measured on either side, which a
        steady drift of the machine's speed during the run moves least (else the one before)."""
        if self.ceiling_rps is None or self.ceiling_after_rps is None:
            return self.ceiling_rps
        return (self.ceiling_rps + self.ceiling_after_rps) / 2

    @property
    def ceiling_drift(self) -> float | None:
        """How much the ceiling moved across the run (after ÷ before - 1), if measured twice."""
        if not self.ceiling_rps or self.ceiling_after_rps is None:
            return None
        return self.ceiling_after_rps / self.ceiling_rps - 1

    @property
    def acknowledged(self) -> int:
        """200 responses, warm-up included: what the balances must show."""
        return self.run.ok + self.warmup.ok

    @property
    def errors(self) -> int:
        return self.run.errors + self.warmup.errors

    @property
    def failed(self) -> bool:
        return self.errors > 0 or (self.check is not None and not self.check.ok)


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


async def wrk_run(
    opts: Options, target: Target, url: str, script: str, args: dict[str, str], active_s: float
) -> tuple[WrkResult, CpuUse]:
    """One wrk run, and the CPU used while it sends (sampled at the start and end of that window)."""
    wrk = start_wrk(url, script, args, active_s=active_s, connections=opts.connections, threads=opts.threads)
    try:
        meter = CpuMeter(target.server_pids, wrk.pid, target.router_pids)
        await asyncio.sleep(active_s)
        used = meter.stop()
        return await asyncio.to_thread(finish_wrk, wrk), used
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()


def phase(args: dict[str, str], tag: str) -> dict[str, str]:
    """The args of one wrk run of a workload: its keys apart from the other run's (each wrk
    process counts its keys from 1)."""
    return args | {"keys": f"{args['keys']}-{tag}"} if "keys" in args else args


async def measure(
    opts: Options, name: str, kind: Kind, target: Target, url: str, script: str, args: dict[str, str]
) -> Row:
    """A warm-up run (counted for the checks, not for the figures), then the measured run."""
    progress(f"{name}: {WARMUP_S:g}s warm-up + {opts.duration:g}s")
    warmup, _ = await wrk_run(opts, target, url, script, phase(args, "w"), WARMUP_S)
    run, cpu = await wrk_run(opts, target, url, script, phase(args, "r"), opts.duration)
    return Row(name, kind, run, warmup, cpu)


async def settle(
    read: Callable[[], Awaitable[Decimal]], expected: Decimal, what: str, pause_s: float = 0.5
) -> Check:
    """Compare a read with its expected value; re-read a few times (a cache may lag a commit)."""
    for attempt in range(4):
        got = await read()
        if got == expected:
            late = f" (after {attempt} re-reads)" if attempt else ""
            return Check(True, f"ok{late}")
        await asyncio.sleep(pause_s)
    return Check(False, f"MISMATCH {what} {got} != expected {expected} (diff {got - expected})")


class Ceiling:
    """The bare aiohttp server, running for the whole bench: measured first, and again right
    before and right after each service workload. A shared machine's speed drifts within minutes
    (DESIGN.md §8), so each ratio is against the ceilings on either side of it."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        port = opts.port_base
        # On the service's event loop: EVENT_LOOP from the service's environment.
        self.server = spawn(
            "ceiling", ["-m", "wallet.bench.ceiling", "--port", str(port)], port, opts.service_env
        )
        self.router: Router | None = None

    async def start(self) -> None:
        await wait_ready(self.server, ["/wallet/x"])

    async def start_router(self) -> None:
        """The router in front of the ceiling alone: the same server with one hop more, so the
        difference is the hop's cost."""
        port = self.opts.port_base + ROUTED_CEILING_PORT
        self.router = Router(port, port + 1, [f"127.0.0.1:{self.opts.port_base}"]).start()
        await self.router.wait_all_up()

    def stop(self) -> None:
        if self.router is not None:
            self.router.stop()
        self.server.stop()

    async def measure(
        self, kind: Kind, name: str | None = None, routed: bool = False, *, keyed: bool = False
    ) -> Row:
        """``keyed``: the POSTs carry an X-Request-ID like the service workload they stand beside."""
        target = self.server.target
        if routed:
            assert self.router is not None
            target = Target(self.router.base_url, target.server_pids, (self.router.pid,))
        base = target.base_url
        if kind == "post":
            args = {"method": "POST", "body": '{"amount": 1}'} | ({"keys": "ceiling"} if keyed else {})
            return await measure(
                self.opts, name or "ceiling", kind, target, f"{base}/wallet/w/deposit", "fixed.lua", args
            )
        return await measure(
            self.opts, name or "ceiling-get", kind, target, f"{base}/wallet/w", "fixed.lua", {}
        )


class ServiceBench:
    """The service's workloads, sharing one running service, database and client session."""

    def __init__(
        self,
        opts: Options,
        target: Target,
        session: aiohttp.ClientSession,
        db_url: str,
        credential: str | None,
    ):
        self.opts = opts
        self.target = target
        self.auth_args = {"auth": credential} if credential else {}
        # Funding and checks go through the package's client (retries with the same key, exact
        # Decimal amounts); the measured load is wrk's.
        self.wallets = WalletClient(target.base_url, api_key=credential, session=session, retry=CLIENT_RETRY)
        self.db_url = db_url
        self.runid = secrets.token_hex(4)
        self.spread_prefix = f"s-{self.runid}-"
        self.spread_funded = False
        self.transfer_prefix = f"t-{self.runid}-"
        self.transfer_wallets = [f"{self.transfer_prefix}{k}" for k in range(TRANSFER_WALLETS)]
        self.transfers_funded = False
        self.windows = itertools.count()  # each measured window's keys and hot wallet are its own

    async def prepare(self, name: str) -> None:
        """What a workload needs before it is measured (funding)."""
        if name in ("spread", "reads"):
            await self.fund_spread()
        elif name == "transfers":
            await self.fund_transfers()

    async def run(self, name: str, keyed: bool) -> Row:
        workloads = {
            "hot": self.hot,
            "spread": self.spread,
            "reads": self.reads,
            "transfers": self.transfers,
        }
        row = await workloads[name](keyed)
        if name in WRITES:
            row.check = await self.with_backlog(row.check)
        return row

    def measure(
        self,
        name: str,
        kind: Kind,
        script: str,
        args: dict[str, str],
        path: str = "/",
        *,
        keyed: bool = False,
    ) -> Awaitable[Row]:
        """``keyed``: every request gets a unique X-Request-ID (unique per window and bench run)."""
        if keyed:
            args = args | {"keys": f"{name}-{self.runid}-{next(self.windows)}"}
        else:
            name += NO_KEY if name in WRITES else ""
        url = self.target.base_url + path
        return measure(self.opts, name, kind, self.target, url, script, args | self.auth_args)

    async def hot(self, keyed: bool) -> Row:
        wallet = f"hot-{self.runid}-{next(self.windows)}"  # each window checks a wallet of its own
        args = {"method": "POST", "body": DEPOSIT_CENT}
        path = f"/v1/wallet/{wallet}/deposit"
        row = await self.measure("hot", "post", "fixed.lua", args, path, keyed=keyed)
        row.check = await settle(lambda: self.balance(wallet), row.acknowledged * CENT, "balance")
        return row

    async def spread(self, keyed: bool) -> Row:
        await self.fund_spread()
        args = {
            "method": "POST",
            "prefix": f"/v1/wallet/{self.spread_prefix}",
            "suffix": "/deposit",
            "n": str(self.opts.wallets),
            "body": DEPOSIT_CENT,
        }
        before = await self.spread_sum()  # the funding, and any earlier variant's deposits
        row = await self.measure("spread", "post", "random_wallet.lua", args, keyed=keyed)
        expected = before + row.acknowledged * CENT
        row.check = await settle(self.spread_sum, expected, "sum of balances (SQL)")
        return row

    async def reads(self, keyed: bool) -> Row:
        await self.fund_spread()
        args = {"method": "GET", "prefix": f"/v1/wallet/{self.spread_prefix}", "n": str(self.opts.wallets)}
        return await self.measure("reads", "get", "random_wallet.lua", args)

    async def fund_transfers(self) -> None:
        if not self.transfers_funded:
            progress(f"transfers: funding {len(self.transfer_wallets)} wallets")
            await self.deposit_all(self.transfer_wallets, TRANSFER_FUNDING)
            self.transfers_funded = True

    async def transfers(self, keyed: bool) -> Row:
        await self.fund_transfers()
        name, wallets = self.transfer_prefix, self.transfer_wallets
        args = {"prefix": "/v1/wallet/", "name": name, "n": str(len(wallets)), "amount": "0.01"}
        row = await self.measure("transfers", "post", "transfer.lua", args, keyed=keyed)
        row.check = await settle(self.transfer_total, TRANSFER_FUNDING * len(wallets), "sum of balances")
        return row

    async def key_cost(self, name: str) -> KeyCostRow:
        """Write workload ``name`` keyed and key-less in turn on this service (key_cost.py)."""

        async def window(keyed: bool) -> Window:
            row = await self.run(name, keyed)
            books_ok = row.check is None or row.check.ok
            return Window(keyed, row.run.rps, row.run.p99_ms, row.errors, books_ok)

        await self.prepare(name)
        return await paired_windows(name, self.opts.key_pairs, window)

    async def worker(self, stream: Settings) -> list[DrainRow]:
        """The worker workload: a backlog drained by one worker, another by two."""
        await self.fund_spread()
        await self.fund_transfers()
        spread = [f"{self.spread_prefix}{k}" for k in range(self.opts.wallets)]
        drain = WorkerDrain(
            stream,
            self.wallets,
            self.db_url,
            spread=spread,
            transfer=self.transfer_wallets,
            connections=self.opts.connections,
            env=self.opts.service_env,
        )
        await drain.declare()
        try:
            rows = []
            for workers in (1, 2):
                progress(f"worker: a backlog of {self.opts.events} events")
                await drain.fill(self.opts.events)
                progress(f"worker: {workers} worker(s) draining it")
                rows.append(await drain.drain(workers, self.opts.events))
            return rows
        finally:
            await drain.delete()

    async def alerts(self, stream: Settings) -> list[AlertRow]:
        """The alerts workload (wallet/bench/alert_latency.py): one worker on the run's queue, then
        the keyed hot-wallet load and the keyed transfer load, each with its samples."""
        await self.fund_transfers()
        env = {**os.environ, **self.opts.service_env}
        amount = sample_amount(Settings.from_env(env).fraud_high_value_threshold)
        count = sample_count(self.opts.duration)
        loads = ("hot", "transfers")
        wallets = {load: [f"a-{self.runid}-{load}-{k}" for k in range(count)] for load in loads}
        progress(f"alerts: funding {count * len(loads)} sample wallets with {amount} each")
        await self.deposit_all([w for ws in wallets.values() for w in ws], amount)
        # The earlier workloads' events would be a backlog for the worker: published before its
        # queue exists, they go nowhere.
        backlog = await self.outbox_drained(OUTBOX_EMPTY_S)
        worker = Worker(stream, self.db_url, self.opts.service_env)
        probe = AlertProbe(self.wallets, self.db_url, amount)
        progress("alerts: starting a worker")
        try:
            await worker.start()
            rows = []
            for load in loads:
                progress(f"alerts: {count} samples during the keyed {load} load, {self.opts.duration:g}s")
                row = await self.alert_phase(load, wallets[load], probe, worker)
                if backlog:
                    row = replace(
                        row, check=f"{row.check}; {backlog} earlier events unpublished at the start"
                    )
                rows.append(row)
            return rows
        finally:
            await worker.stop()

    async def alert_phase(self, load: str, wallets: list[str], probe: AlertProbe, worker: Worker) -> AlertRow:
        if load == "hot":
            hot = f"hot-{self.runid}-alerts"
            path, script = f"/v1/wallet/{hot}/deposit", "fixed.lua"
            args = {"method": "POST", "body": DEPOSIT_CENT}
        else:
            path, script = "/", "transfer.lua"
            n = str(len(self.transfer_wallets))
            args = {"prefix": "/v1/wallet/", "name": self.transfer_prefix, "n": n, "amount": "0.01"}
        args |= {"keys": f"alerts-{load}-{self.runid}"} | self.auth_args
        url = self.target.base_url + path
        cpu_before, started = worker.cpu_seconds(), time.monotonic()
        (run, _), samples = await probe.during(
            wallets, wrk_run(self.opts, self.target, url, script, args, self.opts.duration)
        )
        # The CPU over the load and the wait for the last alerts: what the worker needed for both.
        cpu, wall = worker.cpu_seconds() - cpu_before, time.monotonic() - started
        if load == "hot":
            check = await settle(lambda: self.balance(hot), run.ok * CENT, "balance")
        else:
            total = TRANSFER_FUNDING * len(self.transfer_wallets)
            check = await settle(self.transfer_total, total, "sum of balances")
        if not worker.alive():
            check = Check(False, f"the worker died; {check.text}")
        for error in samples.errors[:5]:
            progress(f"alerts: a sample failed: {error}")
        created = await probe.created(sorted(samples.acknowledged))
        found = {w: t for w, t in samples.listed.items() if w in samples.acknowledged}
        return AlertRow(
            name=f"alerts: {load}",
            load=run,
            samples=len(wallets),
            acknowledged=len(samples.acknowledged),
            latencies=tuple(latencies(found, created)),
            worker_cpu_s=cpu,
            load_s=wall,
            check_ok=check.ok,
            check=check.text,
            polls=samples.polls,
            poll_errors=samples.poll_errors,
        )

    async def transfer_total(self) -> Decimal:
        return sum(await asyncio.gather(*map(self.balance, self.transfer_wallets)), Decimal(0))

    async def outbox_drained(self, within_s: float) -> int:
        """Wait until every event is published (or ``within_s``); the events still unpublished."""
        deadline = time.monotonic() + within_s
        while True:
            backlog = await self.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            if backlog == 0 or time.monotonic() > deadline:
                return backlog
            await asyncio.sleep(0.5)

    async def fund_spread(self) -> None:
        if not self.spread_funded:
            progress(f"funding {self.opts.wallets} spread wallets")
            started = time.monotonic()
            await self.deposit_all([f"{self.spread_prefix}{k}" for k in range(self.opts.wallets)], Decimal(1))
            progress(f"funded in {time.monotonic() - started:.1f}s")
            self.spread_funded = True

    async def deposit_all(self, wallets: list[str], amount: Decimal) -> None:
        limit = asyncio.Semaphore(self.opts.connections)

        async def deposit(wallet: str) -> None:
            async with limit:
                try:  # one key per wallet and run: funding twice cannot fund twice
                    await self.wallets.deposit(wallet, amount, request_id=f"fund-{wallet}")
                except WalletError as exc:
                    raise BenchError(f"funding {wallet}: {exc}") from exc

        await asyncio.gather(*map(deposit, wallets))

    async def balance(self, wallet: str) -> Decimal:
        try:
            return await self.wallets.balance(wallet)
        except WalletError as exc:
            raise BenchError(f"reading {wallet}: {exc}") from exc

    async def spread_sum(self) -> Decimal:
        """Sum of the spread wallets' balances, read from PostgreSQL (BIGINT minor units)."""
        cents = await self.fetchval(
            "SELECT coalesce(sum(balance), 0) FROM wallets WHERE id LIKE $1", self.spread_prefix + "%"
        )
        return Decimal(cents) * CENT

    async def with_backlog(self, check: Check | None) -> Check | None:
        """The check's text, plus the events not yet published when the workload ended: the relay
        publishes during the measurement, and this says whether it kept up."""
        backlog = await self.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        text = f"{backlog} events unpublished at the end"
        return Check(True, text) if check is None else Check(check.ok, f"{check.text}; {text}")

    async def fetchval(self, query: str, *args: object) -> int:
        conn = await asyncpg.connect(self.db_url)
        try:
            return int(await conn.fetchval(query, *args))
        finally:
            await conn.close()


@dataclass
class System:
    """One deployment under test: its instances, the router if several. Both deployments of a run
    share the bench database (their workloads use wallets of their own)."""

    label: str  # appended to the workload names in the report
    db_url: str
    servers: list[Server] = field(default_factory=list)
    router: Router | None = None
    relay: Server | None = None  # `wallet relay`, with --relay separate
    # This system's own exchange, deleted at the end (events are published during the run).
    exchange: str = field(default_factory=lambda: f"wallet_events.bench_{secrets.token_hex(4)}")

    @property
    def target(self) -> Target:
        pids = tuple(s.proc.pid for s in self.servers)
        if self.router is None:
            return Target(self.servers[0].base_url, pids)
        return Target(self.router.base_url, pids, (self.router.pid,))

    async def start(self, opts: Options, instances: int, first_port: int, auth: dict[str, str]) -> None:
        for k in range(instances):
            port = first_port + k
            env = {
                "DATABASE_URL": self.db_url,
                # Set explicitly: unset, `wallet serve` would embed Redis and the event bus.
                "REDIS_URL": os.environ.get("REDIS_URL") or Settings.redis_url,
                "RABBITMQ_URL": os.environ.get("RABBITMQ_URL") or Settings.rabbitmq_url,
                "PORT": str(port),
                "HOST": "127.0.0.1",
                "RATE_LIMIT_ENABLED": "false",
                "LOG_LEVEL": "warning",
                "RABBITMQ_EXCHANGE": self.exchange,
                # The events are published while the workloads run: by the API process itself (as
                # a bare `wallet serve` does), or by `wallet relay` alone (as compose deploys it).
                "OUTBOX_RELAY_ENABLED": "true" if opts.relay == "in-process" else "false",
                **auth,
                **opts.service_env,
            }
            where = f"port {port}, authentication {opts.auth}, relay {opts.relay}"
            progress(f"starting the service{self.label} on {where}")
            self.servers.append(spawn(f"service{self.label}-{k + 1}", ["-m", "wallet", "serve"], port, env))
            if opts.relay == "separate" and self.relay is None:
                relay_env = env | {"OUTBOX_RELAY_ENABLED": "true"}
                self.relay = spawn(
                    f"relay{self.label}", ["-m", "wallet", "relay"], port, relay_env, listens=False
                )
        for server in self.servers:  # started together: the first applies the migrations
            await wait_ready(server, ["/health/live", "/v1/wallet/x"])
        if instances > 1:
            port = opts.port_base + ROUTER_PORT
            addresses = [f"127.0.0.1:{first_port + k}" for k in range(instances)]
            self.router = Router(port, port + 1, addresses).start()
            progress(f"router on port {port} in front of {', '.join(addresses)}")
            await self.router.wait_all_up()

    def stop(self) -> None:
        if self.router is not None:
            self.router.stop()
        for server in self.servers:
            server.stop()
        if self.relay is not None:
            self.relay.stop()


async def run_service(
    opts: Options,
    names: list[str],
    ceiling: Ceiling | None,
    drains: list[DrainRow],
    alerts: list[AlertRow],
    costs: list[KeyCostRow],
) -> list[Row]:
    """The service workloads in ``names`` (rows returned), then the key's cost on the write
    workloads if asked (``opts.key_pairs``), the alerts and the worker workloads if named, on the
    single instance (their rows appended to ``costs``, ``alerts`` and ``drains``)."""
    db_name = time.strftime("wallet_bench_%Y%m%d_%H%M%S")
    db_url = with_database(opts.database_url, db_name)
    stream = stream_settings(secrets.token_hex(4))
    if any(n in STREAM_WORKLOADS for n in names):  # the service publishes to the run's own exchange
        opts = replace(opts, service_env={"RABBITMQ_EXCHANGE": stream.rabbitmq_exchange, **opts.service_env})
    systems = [System("", db_url)]
    if opts.instances > 1:
        systems.append(System(f" x{opts.instances}", db_url))
    progress(f"database {db_name}")
    await create_database(opts.database_url, db_name)
    auth = auth_env(opts.auth)  # one JWT secret for every instance
    try:
        await systems[0].start(opts, 1, opts.port_base + 1, auth)
        if len(systems) > 1:
            await systems[1].start(opts, opts.instances, opts.port_base + CLUSTER_PORT, auth)
        credential = await bench_credential(opts.auth, db_url, auth)  # the deployments share the database
        async with aiohttp.ClientSession() as session:
            benches = [
                (s.label, ServiceBench(opts, s.target, session, s.db_url, credential)) for s in systems
            ]
            rows = []
            for name in (n for n in names if n not in STREAM_WORKLOADS):
                keyed = opts.keyed(name)
                adjacent = None
                if ceiling is not None:
                    for _, bench in benches:  # funding first: the measurements stay adjacent
                        await bench.prepare(name)
                    adjacent = await ceiling.measure(
                        WORKLOAD_KINDS[name], f"ceiling before {name}", keyed=keyed
                    )
                measured = []
                for label, bench in benches:
                    row = await bench.run(name, keyed)
                    row.name += label
                    row.ceiling_rps = None if adjacent is None else adjacent.run.rps
                    measured.append(row)
                if ceiling is not None:
                    after = await ceiling.measure(WORKLOAD_KINDS[name], f"ceiling after {name}", keyed=keyed)
                    for row in measured:
                        row.ceiling_after_rps = after.run.rps
                rows += measured
            if opts.key_pairs > 0:
                for name in (n for n in names if n in WRITES):
                    costs.append(await benches[0][1].key_cost(name))
            if "alerts" in names:  # before the worker workload, which deletes the run's exchange
                alerts += await benches[0][1].alerts(stream)
            if "worker" in names:
                drains += await benches[0][1].worker(stream)
            return rows
    finally:
        for system in systems:
            system.stop()
        await drop_database(opts.database_url, db_name)
        rabbitmq_url = os.environ.get("RABBITMQ_URL") or Settings.rabbitmq_url
        for exchange in {*(s.exchange for s in systems), stream.rabbitmq_exchange}:
            await delete_exchange(rabbitmq_url, exchange)


AUTH_MODES = ("key", "jwt", "off")
BENCH_ISSUER = "wallet-bench"
BENCH_AUDIENCE = "wallet"


def auth_env(mode: str) -> dict[str, str]:
    """The service's authentication settings for a bench mode."""
    if mode == "off":
        return {"AUTH_ENABLED": "false"}
    if mode == "jwt":
        secret = secrets.token_urlsafe(32)
        return {
            "AUTH_JWT_SECRET": secret,
            "AUTH_JWT_ISSUER": BENCH_ISSUER,
            "AUTH_JWT_AUDIENCE": BENCH_AUDIENCE,
        }
    return {}


async def bench_credential(mode: str, db_url: str, env: dict[str, str]) -> str | None:
    """An API key issued in the bench database (the service has migrated it), or a JWT signed
    with the secret the service was given; None with authentication off."""
    if mode == "off":
        return None
    if mode == "jwt":
        claims = {
            "iss": BENCH_ISSUER,
            "aud": BENCH_AUDIENCE,
            "sub": "bench",
            "exp": int(time.time()) + 24 * 3600,
            "scope": "*",
            "wallets": ["*"],
        }
        return jwt.encode(claims, env["AUTH_JWT_SECRET"], algorithm="HS256")
    conn = await asyncpg.connect(db_url)
    try:
        _, token = await issue_key(ApiKeyStore(conn), "bench", ["*"], ["*"])
    finally:
        await conn.close()
    return token


def beside_keyed(rows: list[Row], keyless: list[Row]) -> list[Row]:
    """``rows`` with each row of ``keyless`` placed after the keyed row of its workload (at the
    end if there is none)."""
    merged = list(rows)
    for row in keyless:
        twin = row.name.replace(NO_KEY, "")
        at = next((i + 1 for i, r in enumerate(merged) if r.name == twin), len(merged))
        merged.insert(at, row)
    return merged


def set_ratios(rows: list[Row]) -> None:
    """Each service workload against the ceilings measured on either side of it (else just
    before it, else the first one)."""
    ceilings = {"post": "ceiling", "get": "ceiling-get"}
    rps = {row.name: row.run.rps for row in rows}
    for row in rows:
        adjacent = row.adjacent_ceiling
        ceiling = adjacent if adjacent is not None else rps.get(ceilings[row.kind], 0.0)
        row.ratio = row.run.rps / ceiling if ceiling > 0 else None


async def run(
    opts: Options,
    drains: list[DrainRow] | None = None,
    alerts: list[AlertRow] | None = None,
    costs: list[KeyCostRow] | None = None,
) -> list[Row]:
    """Every workload of ``opts``: the wrk rows returned, the worker workload's rows appended to
    ``drains``, the alerts workload's to ``alerts``, the key's cost to ``costs``."""
    rows: list[Row] = []
    ceiling = Ceiling(opts) if "ceiling" in opts.workloads else None
    try:
        if ceiling is not None:
            await ceiling.start()
            direct = [await ceiling.measure("post"), await ceiling.measure("get")]
            rows += direct
            if opts.instances > 1:
                await ceiling.start_router()
                for row in direct:
                    routed = await ceiling.measure(row.kind, f"{row.name} via router", routed=True)
                    routed.ceiling_rps = row.run.rps  # its ratio: what the hop leaves of the ceiling
                    rows.append(routed)
        service = [name for name in opts.workloads if name != "ceiling"]
        drains = [] if drains is None else drains
        alerts = [] if alerts is None else alerts
        costs = [] if costs is None else costs
        measured: list[Row] = []
        for session_opts, names in opts.sessions(service) if service else []:
            session = await run_service(session_opts, names, ceiling, drains, alerts, costs)
            measured = beside_keyed(measured, session)
        rows += measured
    finally:
        if ceiling is not None:
            ceiling.stop()
    set_ratios(rows)
    return rows
