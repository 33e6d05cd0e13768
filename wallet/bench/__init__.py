"""Benchmark of the wallet service against a bare aiohttp ceiling, with wrk; of the fraud
worker draining a backlog (``--workloads worker``); and of the commit-to-alert latency under the
keyed load (``--workloads alerts``).

``python -m wallet.bench --help`` (or ``wallet bench``). Exit code 0 when every workload ran without
an error and passed its exactness check, 1 when one did not, 2 when the bench could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import aiohttp
import asyncpg

from wallet.bench.alert_latency import AlertLatencyError, AlertRow
from wallet.bench.key_cost import KeyCostRow
from wallet.bench.report import (
    alert_markdown,
    alert_table,
    drain_markdown,
    drain_table,
    key_cost_markdown,
    key_cost_table,
    markdown,
    text_table,
)
from wallet.bench.router import MAX_INSTANCES, RouterError
from wallet.bench.runner import AUTH_MODES, KEYS, RELAYS, WORKLOADS, BenchError, Options, run
from wallet.bench.services import StartError
from wallet.bench.worker_drain import DrainError, DrainRow
from wallet.bench.wrk import WrkError

DEFAULTS = Options()
T = TypeVar("T")
TERMINATED = 128 + signal.SIGTERM  # the exit code of a bench stopped by SIGTERM, as a shell reports it


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="wallet bench", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=DEFAULTS.duration, help="seconds per workload")
    parser.add_argument("--connections", type=int, default=DEFAULTS.connections)
    parser.add_argument("--threads", type=int, default=DEFAULTS.threads, help="wrk threads")
    parser.add_argument(
        "--workloads",
        default=",".join(DEFAULTS.workloads),
        help=f"comma-separated, from {','.join(WORKLOADS)} (ceiling runs both the POST and the GET ceiling)",
    )
    parser.add_argument(
        "--wallets", type=int, default=DEFAULTS.wallets, help="wallets of the spread/reads workloads"
    )
    parser.add_argument(
        "--database-url", default=DEFAULTS.database_url, help="admin URL; a fresh database is made"
    )
    parser.add_argument(
        "--port-base", type=int, default=DEFAULTS.port_base, help="ceiling port; service on +1"
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=DEFAULTS.instances,
        help=f"above 1, also run each workload through HAProxy (deploy/haproxy.cfg) in front of this "
        f"many instances (at most {MAX_INSTANCES}), side by side with one instance",
    )
    parser.add_argument(
        "--events", type=int, default=DEFAULTS.events, help="backlog of the worker workload (events)"
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown (for README.md)")
    parser.add_argument(
        "--service-env", action="append", default=[], metavar="KEY=VALUE", help="extra service environment"
    )
    parser.add_argument(
        "--auth",
        choices=AUTH_MODES,
        default=DEFAULTS.auth,
        help="credential the load sends: an API key the bench issues (default), a JWT, or none with"
        " AUTH_ENABLED=false",
    )
    parser.add_argument(
        "--keys",
        choices=KEYS,
        default=DEFAULTS.keys,
        help="a unique X-Request-ID on every write (on, as real clients send), none (off), or each "
        "write workload both ways in the same run (both)",
    )
    parser.add_argument(
        "--relay",
        choices=RELAYS,
        default=DEFAULTS.relay,
        help="who publishes the events during the run: the API process (in-process, as a bare "
        "`wallet serve`) or `wallet relay` in its own process (separate, as compose deploys)",
    )
    parser.add_argument(
        "--key-pairs",
        type=int,
        default=DEFAULTS.key_pairs,
        help="after the rows, each write workload keyed and key-less in turn on the same service, "
        "this many pairs of windows (ABBA): the key's cost without the machine's swings",
    )
    args = parser.parse_args(argv)

    workloads = tuple(w.strip() for w in args.workloads.split(",") if w.strip())
    unknown = sorted(set(workloads) - set(WORKLOADS))
    if unknown or not workloads:
        parser.error(f"unknown workloads {unknown}; choose from {','.join(WORKLOADS)}")
    if any("=" not in kv for kv in args.service_env):
        parser.error("--service-env takes KEY=VALUE")
    if not 1 <= args.instances <= MAX_INSTANCES:
        parser.error(f"--instances takes 1 to {MAX_INSTANCES}")
    if args.duration <= 0 or args.wallets < 1 or args.connections < args.threads or args.threads < 1:
        parser.error("need duration > 0, wallets >= 1, connections >= threads >= 1")
    if args.events < 1 or args.key_pairs < 0:
        parser.error("need events >= 1 and key pairs >= 0")
    return Options(
        duration=args.duration,
        connections=args.connections,
        threads=args.threads,
        workloads=tuple(dict.fromkeys(workloads)),
        wallets=args.wallets,
        database_url=args.database_url,
        port_base=args.port_base,
        markdown=args.markdown,
        service_env=dict(kv.split("=", 1) for kv in args.service_env),
        instances=args.instances,
        auth=args.auth,
        events=args.events,
        keys=args.keys,
        relay=args.relay,
        key_pairs=args.key_pairs,
    )


async def cancelled_on_sigterm(work: Coroutine[Any, Any, T]) -> T:
    """``work``, cancelled by SIGTERM as by Ctrl-C, so that its ``finally`` blocks stop the servers
    it started and drop its database; left running, they would answer on the next run's ports."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await work
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.workloads != ("worker",) and shutil.which("wrk") is None:
        print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    drains: list[DrainRow] = []
    alerts: list[AlertRow] = []
    costs: list[KeyCostRow] = []
    try:
        rows = asyncio.run(cancelled_on_sigterm(run(opts, drains, alerts, costs)))
    except asyncio.CancelledError:
        print("bench: terminated; the servers it started are stopped, its database dropped", file=sys.stderr)
        return TERMINATED
    except (
        BenchError,
        StartError,
        WrkError,
        RouterError,
        DrainError,
        AlertLatencyError,
        OSError,
        aiohttp.ClientError,
        asyncpg.PostgresError,
    ) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    tables = []
    if rows:
        tables.append(markdown(rows, opts) if opts.markdown else text_table(rows))
    if costs:
        tables.append(key_cost_markdown(costs, opts) if opts.markdown else key_cost_table(costs))
    if alerts:  # in the order they ran
        tables.append(alert_markdown(alerts, opts) if opts.markdown else alert_table(alerts))
    if drains:
        tables.append(drain_markdown(drains, opts) if opts.markdown else drain_table(drains))
    if tables:
        print("\n\n".join(tables))  # a blank line between tables: each stays its own in Markdown
    failed = any(r.failed for r in rows) or any(r.failed for r in alerts) or any(r.failed for r in costs)
    return 1 if failed else 0
