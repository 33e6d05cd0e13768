"""The result table: plain text for the terminal, Markdown for README.md."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

from wallet.bench.alert_latency import GRACE_S, POLL_EVERY_S, SAMPLE_EVERY_S, TARGET_P99_S, AlertRow
from wallet.bench.key_cost import KeyCostRow
from wallet.bench.runner import WARMUP_S, Options, Row
from wallet.bench.worker_drain import DrainRow

# Another load using more than this share of a core during a run makes its figures doubtful.
BUSY_OTHER_SHARE = 0.15

HEADER = (
    "workload",
    "req/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "ratio",
    "ceiling req/s",
    "ceiling drift",
    "wrk CPU",
    "server CPU",
    "server µs/req",
    "router CPU",
    "PG CPU",
    "PG µs/req",
    "other CPU",
    "check",
)


def cells(row: Row) -> tuple[str, ...]:
    r, cpu = row.run, row.cpu
    return (
        row.name,
        f"{r.rps:,.0f}",
        f"{r.p50_ms:.2f}",
        f"{r.p99_ms:.2f}",
        str(row.errors),
        "-" if row.ratio is None else f"{row.ratio:.2f}",
        "-" if row.adjacent_ceiling is None else f"{row.adjacent_ceiling:,.0f}",
        "-" if row.ceiling_drift is None else f"{row.ceiling_drift:+.0%}",
        f"{cpu.share(cpu.wrk):.0%}",
        f"{cpu.share(cpu.server):.0%}",
        per_request(cpu.server, r.ok),
        f"{cpu.share(cpu.router):.0%}" if cpu.router else "-",
        f"{cpu.share(cpu.postgres):.0%}",
        per_request(cpu.postgres, r.ok),
        f"{cpu.share(cpu.other):.0%}",
        "-" if row.check is None else row.check.text,
    )


def per_request(cpu_s: float, requests: int) -> str:
    """CPU per answered request: unlike a ratio, barely moved by other loads on the machine."""
    return f"{cpu_s / requests * 1e6:,.0f}" if requests else "-"


def run_notes(rows: list[Row]) -> list[str]:
    """The errors of each run, and the runs that another load disturbed."""
    notes = []
    for row in rows:
        other = row.cpu.share(row.cpu.other)
        if other > BUSY_OTHER_SHARE:
            notes.append(f"{row.name}: other processes used {other:.0%} of a core during the run")
        for phase, run in (("warm-up", row.warmup), ("run", row.run)):
            if run.errors:
                notes.append(
                    f"{row.name} {phase}: non-200 {run.not200}, connect {run.connect_errors}, "
                    f"read {run.read_errors}, write {run.write_errors}, timeouts {run.timeouts}, "
                    f"abandoned {run.abandoned}"
                )
    return notes


def aligned(table: list[tuple[str, ...]]) -> list[str]:
    """Rows of text cells in columns: the name left-aligned, the figures right-aligned, the last
    cell (a check or a verdict) as it is."""
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]

    def fmt(line: tuple[str, ...]) -> str:
        name, *figures, last = line
        padded = [name.ljust(widths[0])] + [f.rjust(w) for f, w in zip(figures, widths[1:-1], strict=True)]
        return "  ".join([*padded, last])

    return [fmt(line) for line in table]


def text_table(rows: list[Row]) -> str:
    return "\n".join(aligned([HEADER, *map(cells, rows)]) + run_notes(rows))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def markdown_table(
    preamble: list[str], header: tuple[str, ...], body: list[tuple[str, ...]], notes: list[str]
) -> str:
    """A paragraph, then a Markdown table (the name and last columns left-aligned, the figures
    right-aligned), then the notes as a list."""
    rule = "|" + "|".join([" --- "] + [" ---: "] * (len(header) - 2) + [" --- "]) + "|"
    lines = [*preamble, "", "| " + " | ".join(header) + " |", rule]
    lines += ["| " + " | ".join(line) + " |" for line in body]
    return "\n".join(lines + ([""] + [f"- {n}" for n in notes] if notes else []))


def markdown(rows: list[Row], opts: Options) -> str:
    lines = [
        f"Bench of {time.strftime('%Y-%m-%d %H:%M %Z')}: {os.cpu_count()} cores ({cpu_model()}), "
        f"Python {platform.python_version()}; wrk {opts.threads} thread(s), "
        f"{opts.connections} connections, {opts.duration:g} s per workload after a {WARMUP_S:g} s "
        f"warm-up; spread and reads over {opts.wallets} wallets; authentication: {opts.auth}. "
        "Ratios are to the bare aiohttp "
        "ceiling (POST or GET) measured just before and just after each workload (the mean of the "
        "two in the ceiling column; how far it moved across the workload, after ÷ before - 1, in the "
        "drift column); "
        "CPU is the share of one core over the measured window; µs/req is that CPU per answered "
        "request (the least disturbed figure on a busy machine).",
    ]
    return markdown_table(lines, HEADER, [cells(row) for row in rows], run_notes(rows))


DRAIN_HEADER = (
    "workers",
    "events",
    "seconds",
    "events/s",
    "steady events/s",
    "worker CPU µs/event",
    "alerts",
)


def drain_cells(row: DrainRow) -> tuple[str, ...]:
    return (
        str(row.workers),
        f"{row.events:,}",
        f"{row.seconds:.2f}",
        f"{row.rate:,.0f}",
        f"{row.steady_rate:,.0f}",
        f"{row.cpu_us_per_event:.0f}",
        f"{row.alerts:,}",
    )


def drain_table(rows: list[DrainRow]) -> str:
    table = [DRAIN_HEADER, *map(drain_cells, rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(DRAIN_HEADER))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in table)


def drain_markdown(rows: list[DrainRow], opts: Options) -> str:
    lines = [
        f"Fraud worker, {time.strftime('%Y-%m-%d %H:%M %Z')}: a backlog of {opts.events:,} events "
        "(keyed transfers and withdrawals through the API and the outbox) drained by `wallet worker` "
        "processes; seconds from their start (start-up included) to the last event processed; "
        "steady: from the first event processed; CPU: the workers' own, per event, while steady.",
        "",
        "| " + " | ".join(DRAIN_HEADER) + " |",
        "|" + "|".join([" ---: "] * len(DRAIN_HEADER)) + "|",
        *("| " + " | ".join(drain_cells(row)) + " |" for row in rows),
    ]
    return "\n".join(lines)


ALERT_HEADER = (
    "workload",
    "load req/s",
    "load errors",
    "samples",
    "alerts",
    "missed",
    "sample errors",
    "p50 ms",
    "p99 ms",
    "max ms",
    f"p99 ≤ {TARGET_P99_S:g} s",
    "worker CPU",
    "check",
)


def alert_cells(row: AlertRow) -> tuple[str, ...]:
    def ms(q: float) -> str:
        return f"{row.quantile(q) * 1000:,.0f}" if row.found else "-"

    return (
        row.name,
        f"{row.load.rps:,.0f}",
        str(row.load.errors),
        f"{row.samples:,}",
        f"{row.found:,}",
        f"{row.missed:,}",
        f"{row.sample_errors:,}",
        ms(0.5),
        ms(0.99),
        ms(1.0),
        "yes" if row.within_target else "NO",
        f"{row.worker_cpu_share:.0%}",
        row.check,
    )


def alert_table(rows: list[AlertRow]) -> str:
    return "\n".join(aligned([ALERT_HEADER, *map(alert_cells, rows)]) + alert_notes(rows))


def alert_notes(rows: list[AlertRow]) -> list[str]:
    """Failed polls (retried, then skipped): a gap in the listing times."""
    return [
        f"{r.name}: {r.poll_errors} of {r.polls + r.poll_errors} polls failed" for r in rows if r.poll_errors
    ]


def alert_markdown(rows: list[AlertRow], opts: Options) -> str:
    lines = [
        f"Commit-to-alert latency, {time.strftime('%Y-%m-%d %H:%M %Z')}: one `wallet worker` consuming; "
        f"while wrk sends the keyed load ({opts.connections} connections, {opts.duration:g} s, no "
        f"warm-up; relay {opts.relay}; authentication {opts.auth}), a keyed high-value withdrawal every "
        f"{SAMPLE_EVERY_S * 1000:.0f} ms from a fresh wallet and `GET /v1/fraud/alerts` polled every "
        f"~{POLL_EVERY_S * 1000:.0f} ms; latency from the withdrawal event's `created_at` to the first "
        f"poll listing its alert; missed: not listed within {GRACE_S:g} s after the load; worker CPU: "
        "share of one core over the load and that wait.",
    ]
    return markdown_table(lines, ALERT_HEADER, [alert_cells(row) for row in rows], alert_notes(rows))


def key_cost_cells(row: KeyCostRow) -> tuple[str, ...]:
    def rates(keyed: bool) -> str:
        return " / ".join(f"{rps:,.0f}" for rps in row.rates(keyed))

    pair = row.pair_ratios
    return (
        row.name,
        str(len(pair)),
        rates(True),
        rates(False),
        "-" if row.ratio is None else f"{row.ratio:.2f}",
        f"{min(pair):.2f} to {max(pair):.2f}" if pair else "-",
        f"{max(w.p99_ms for w in row.windows):.1f}" if row.windows else "-",
        f"{sum(w.errors for w in row.windows):,}",
        "ok" if all(w.books_ok for w in row.windows) else "MISMATCH",
    )


KEY_COST_HEADER = (
    "workload",
    "pairs",
    "keyed req/s (in order)",
    "key-less req/s (in order)",
    "keyed ÷ key-less",
    "pairs' range",
    "max p99 ms",
    "errors",
    "checks",
)


def key_cost_table(rows: list[KeyCostRow]) -> str:
    return "\n".join(aligned([KEY_COST_HEADER, *map(key_cost_cells, rows)]))


def key_cost_markdown(rows: list[KeyCostRow], opts: Options) -> str:
    lines = [
        f"Key cost, {time.strftime('%Y-%m-%d %H:%M %Z')}: each write workload keyed and key-less in "
        f"turn on one service and database, {opts.duration:g} s windows (after a {WARMUP_S:g} s "
        "warm-up each) in ABBA order, so each pair meets the machine within two windows' time; "
        "keyed ÷ key-less of the sums, and the range of the pairs' own ratios.",
    ]
    return markdown_table(lines, KEY_COST_HEADER, [key_cost_cells(row) for row in rows], [])
