"""The bench run: ceiling first, then the service against a fresh database, one row per workload."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

import aiohttp
import asyncpg

from wallet.bench.services import (
    CpuMeter,
    CpuUse,
    Server,
    create_database,
    drop_database,
    spawn,
    wait_ready,
    with_database,
)
from wallet.bench.wrk import WrkResult, finish_wrk, start_wrk
from wallet.config import Settings

WORKLOADS = ("ceiling", "hot", "spread", "reads", "transfers")
WARMUP_S = 2.0
CENT = Decimal("0.01")
JSON_HEADERS = {"Content-Type": "application/json"}
DEPOSIT_CENT = '{"amount": 0.01}'
TRANSFER_WALLETS = 100
TRANSFER_FUNDING = Decimal(1000)

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
    # The ceiling (same kind) measured just before this workload; the ratio is against it.
    ceiling_rps: float | None = None

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
    opts: Options, server: Server, url: str, script: str, args: dict[str, str], active_s: float
) -> tuple[WrkResult, CpuUse]:
    """One wrk run, and the CPU used while it sends (sampled at the start and end of that window)."""
    wrk = start_wrk(url, script, args, active_s=active_s, connections=opts.connections, threads=opts.threads)
    try:
        meter = CpuMeter(server.proc.pid, wrk.pid)
        await asyncio.sleep(active_s)
        used = meter.stop()
        return await asyncio.to_thread(finish_wrk, wrk), used
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()


async def measure(
    opts: Options, name: str, kind: Kind, server: Server, url: str, script: str, args: dict[str, str]
) -> Row:
    """A warm-up run (counted for the checks, not for the figures), then the measured run."""
    progress(f"{name}: {WARMUP_S:g}s warm-up + {opts.duration:g}s")
    warmup, _ = await wrk_run(opts, server, url, script, args, WARMUP_S)
    run, cpu = await wrk_run(opts, server, url, script, args, opts.duration)
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
    before each service workload. This shared machine's speed drifts (the ceiling moved by up to
    45% between runs minutes apart), so each ratio compares two measurements a few seconds apart."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        port = opts.port_base
        self.server = spawn("ceiling", ["-m", "wallet.bench.ceiling", "--port", str(port)], port)

    async def start(self) -> None:
        await wait_ready(self.server, ["/wallet/x"])

    def stop(self) -> None:
        self.server.stop()

    async def measure(self, kind: Kind, name: str | None = None) -> Row:
        base = self.server.base_url
        if kind == "post":
            args = {"method": "POST", "body": '{"amount": 1}'}
            return await measure(
                self.opts, name or "ceiling", kind, self.server, f"{base}/wallet/w/deposit", "fixed.lua", args
            )
        return await measure(
            self.opts, name or "ceiling-get", kind, self.server, f"{base}/wallet/w", "fixed.lua", {}
        )


class ServiceBench:
    """The service's workloads, sharing one running service, database and client session."""

    def __init__(self, opts: Options, server: Server, session: aiohttp.ClientSession, db_url: str):
        self.opts = opts
        self.server = server
        self.session = session
        self.db_url = db_url
        self.runid = secrets.token_hex(4)
        self.spread_prefix = f"s-{self.runid}-"
        self.spread_funded = False
        self.transfer_prefix = f"t-{self.runid}-"
        self.transfer_wallets = [f"{self.transfer_prefix}{k}" for k in range(TRANSFER_WALLETS)]
        self.transfers_funded = False

    async def prepare(self, name: str) -> None:
        """What a workload needs before it is measured (funding)."""
        if name in ("spread", "reads"):
            await self.fund_spread()
        elif name == "transfers":
            await self.fund_transfers()

    async def run(self, name: str) -> Row:
        workloads = {
            "hot": self.hot,
            "spread": self.spread,
            "reads": self.reads,
            "transfers": self.transfers,
        }
        return await workloads[name]()

    def measure(
        self, name: str, kind: Kind, script: str, args: dict[str, str], path: str = "/"
    ) -> Awaitable[Row]:
        return measure(self.opts, name, kind, self.server, self.server.base_url + path, script, args)

    async def hot(self) -> Row:
        wallet = f"hot-{self.runid}"
        args = {"method": "POST", "body": DEPOSIT_CENT}
        row = await self.measure("hot", "post", "fixed.lua", args, f"/v1/wallet/{wallet}/deposit")
        row.check = await settle(lambda: self.balance(wallet), row.acknowledged * CENT, "balance")
        return row

    async def spread(self) -> Row:
        await self.fund_spread()
        args = {
            "method": "POST",
            "prefix": f"/v1/wallet/{self.spread_prefix}",
            "suffix": "/deposit",
            "n": str(self.opts.wallets),
            "body": DEPOSIT_CENT,
        }
        before = await self.spread_sum()  # the funding
        row = await self.measure("spread", "post", "random_wallet.lua", args)
        expected = before + row.acknowledged * CENT
        row.check = await settle(self.spread_sum, expected, "sum of balances (SQL)")
        return row

    async def reads(self) -> Row:
        await self.fund_spread()
        args = {"method": "GET", "prefix": f"/v1/wallet/{self.spread_prefix}", "n": str(self.opts.wallets)}
        return await self.measure("reads", "get", "random_wallet.lua", args)

    async def fund_transfers(self) -> None:
        if not self.transfers_funded:
            progress(f"transfers: funding {len(self.transfer_wallets)} wallets")
            await self.deposit_all(self.transfer_wallets, TRANSFER_FUNDING)
            self.transfers_funded = True

    async def transfers(self) -> Row:
        await self.fund_transfers()
        name, wallets = self.transfer_prefix, self.transfer_wallets
        args = {"prefix": "/v1/wallet/", "name": name, "n": str(len(wallets)), "amount": "0.01"}
        row = await self.measure("transfers", "post", "transfer.lua", args)

        async def total() -> Decimal:
            return sum(await asyncio.gather(*map(self.balance, wallets)), Decimal(0))

        row.check = await settle(total, TRANSFER_FUNDING * len(wallets), "sum of balances")
        return row

    async def fund_spread(self) -> None:
        if not self.spread_funded:
            progress(f"funding {self.opts.wallets} spread wallets")
            started = time.monotonic()
            await self.deposit_all([f"{self.spread_prefix}{k}" for k in range(self.opts.wallets)], Decimal(1))
            progress(f"funded in {time.monotonic() - started:.1f}s")
            self.spread_funded = True

    async def deposit_all(self, wallets: list[str], amount: Decimal) -> None:
        limit = asyncio.Semaphore(self.opts.connections)
        body = f'{{"amount": {amount}}}'

        async def deposit(wallet: str) -> None:
            url = f"{self.server.base_url}/v1/wallet/{wallet}/deposit"
            async with limit, self.session.post(url, data=body, headers=JSON_HEADERS) as resp:
                if resp.status != 200:
                    raise BenchError(f"funding {wallet}: HTTP {resp.status} {await resp.text()}")

        await asyncio.gather(*map(deposit, wallets))

    async def balance(self, wallet: str) -> Decimal:
        async with self.session.get(f"{self.server.base_url}/v1/wallet/{wallet}") as resp:
            text = await resp.text()
            if resp.status != 200:
                raise BenchError(f"reading {wallet}: HTTP {resp.status} {text}")
        return Decimal(str(json.loads(text, parse_float=Decimal)["balance"]))

    async def spread_sum(self) -> Decimal:
        """Sum of the spread wallets' balances, read from PostgreSQL (BIGINT minor units)."""
        conn = await asyncpg.connect(self.db_url)
        try:
            cents = await conn.fetchval(
                "SELECT coalesce(sum(balance), 0) FROM wallets WHERE id LIKE $1", self.spread_prefix + "%"
            )
        finally:
            await conn.close()
        return Decimal(cents) * CENT


async def run_service(opts: Options, names: list[str], ceiling: Ceiling | None) -> list[Row]:
    db_name = time.strftime("wallet_bench_%Y%m%d_%H%M%S")
    db_url = with_database(opts.database_url, db_name)
    port = opts.port_base + 1
    env = {
        "DATABASE_URL": db_url,
        # Set explicitly: unset, `wallet serve` would embed Redis and the event bus (wallet/embedded.py).
        "REDIS_URL": os.environ.get("REDIS_URL") or Settings.redis_url,
        "RABBITMQ_URL": os.environ.get("RABBITMQ_URL") or Settings.rabbitmq_url,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "RATE_LIMIT_ENABLED": "false",
        "LOG_LEVEL": "warning",
        **opts.service_env,
    }
    await create_database(opts.database_url, db_name)
    try:
        server = spawn("service", ["-m", "wallet", "serve"], port, env)
        try:
            progress(f"starting the service on port {port}, database {db_name}")
            await wait_ready(server, ["/health/live", "/v1/wallet/x"])
            async with aiohttp.ClientSession() as session:
                bench = ServiceBench(opts, server, session, db_url)
                rows = []
                for name in names:
                    adjacent = None
                    if ceiling is not None:
                        await bench.prepare(name)  # funding first: the two measurements stay adjacent
                        adjacent = await ceiling.measure(WORKLOAD_KINDS[name], f"ceiling before {name}")
                    row = await bench.run(name)
                    row.ceiling_rps = None if adjacent is None else adjacent.run.rps
                    rows.append(row)
                return rows
        finally:
            server.stop()
    finally:
        await drop_database(opts.database_url, db_name)


def set_ratios(rows: list[Row]) -> None:
    """Each service workload against the ceiling measured just before it, else the first one."""
    ceilings = {"post": "ceiling", "get": "ceiling-get"}
    rps = {row.name: row.run.rps for row in rows}
    for row in rows:
        ceiling = row.ceiling_rps if row.ceiling_rps is not None else rps.get(ceilings[row.kind], 0.0)
        row.ratio = row.run.rps / ceiling if ceiling > 0 else None


async def run(opts: Options) -> list[Row]:
    rows: list[Row] = []
    ceiling = Ceiling(opts) if "ceiling" in opts.workloads else None
    try:
        if ceiling is not None:
            await ceiling.start()
            rows += [await ceiling.measure("post"), await ceiling.measure("get")]
        service = [name for name in opts.workloads if name != "ceiling"]
        if service:
            rows += await run_service(opts, service, ceiling)
    finally:
        if ceiling is not None:
            ceiling.stop()
    set_ratios(rows)
    return rows
