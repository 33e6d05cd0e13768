"""The bench's pure parts: the wrk/Lua result line, the command lines, CPU shares, the checks (no network)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from wallet.bench import parse_args
from wallet.bench.report import HEADER, cells
from wallet.bench.runner import Check, Row, beside_keyed, phase, set_ratios, settle
from wallet.bench.services import CpuUse
from wallet.bench.wrk import WrkError, WrkResult, parse_result, wrk_command

WRK_OUTPUT = """\
Running 13s test @ http://127.0.0.1:18081/v1/wallet/hot-1/deposit
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    14.01ms    5.12ms  80.33ms   85.17%
  Latency Distribution
     50%   13.88ms
     99%   40.64ms
  42680 requests in 13.00s, 6.13MB read
  Socket errors: connect 0, read 2, write 1, timeout 3
  Non-2xx or 3xx responses: 4
Requests/sec:   3283.08
Transfer/sec:      1.22MB
BENCH_RESULT {"ok":42670,"not200":4,"sent":42682,"responses":42674,"active_s":10.004021,\
"p50_ms":13.880,"p90_ms":20.125,"p99_ms":40.640,"max_ms":80.330,\
"errors":{"connect":0,"read":2,"write":1,"status":4,"timeout":3}}
"""


def test_parse_result_reads_counts_latency_and_errors() -> None:
    r = parse_result(WRK_OUTPUT)
    assert (r.ok, r.not200, r.sent, r.responses) == (42670, 4, 42682, 42674)
    assert r.active_s == pytest.approx(10.004021)
    assert (r.p50_ms, r.p99_ms, r.max_ms) == (13.88, 40.64, 80.33)
    assert (r.connect_errors, r.read_errors, r.write_errors, r.timeouts) == (0, 2, 1, 3)
    assert r.socket_errors == 3
    assert r.abandoned == 8  # sent but never answered
    assert r.errors == 3 + 3 + 4 + 8
    assert r.rps == pytest.approx(42670 / 10.004021)


def test_parse_result_clean_run_has_no_errors() -> None:
    line = (
        'BENCH_RESULT {"ok":10,"not200":0,"sent":10,"responses":10,"active_s":2.0,"p50_ms":1.0,'
        '"p90_ms":1.5,"p99_ms":2.0,"max_ms":3.0,"errors":{"connect":0,"read":0,"write":0,"status":0,"timeout":0}}'
    )
    r = parse_result("noise\n" + line + "\n")
    assert r.errors == 0 and r.abandoned == 0
    assert r.rps == 5.0


def test_parse_result_without_any_response() -> None:
    line = (
        'BENCH_RESULT {"ok":0,"not200":0,"sent":0,"responses":0,"active_s":0.0,"p50_ms":0,'
        '"p90_ms":0,"p99_ms":0,"max_ms":0,"errors":{"connect":64,"read":0,"write":0,"status":0,"timeout":0}}'
    )
    r = parse_result(line)
    assert r.rps == 0.0
    assert r.errors == 64


def test_parse_result_without_result_line() -> None:
    with pytest.raises(WrkError):
        parse_result("Running 1s test @ http://x/\nunable to connect to 127.0.0.1:1 Connection refused\n")


def test_wrk_command_gives_the_drain_margin_and_the_script_options() -> None:
    cmd = wrk_command(
        "http://h/",
        "fixed.lua",
        {"method": "POST", "body": '{"amount": 1}'},
        active_s=10,
        connections=64,
        threads=1,
    )
    assert "--duration=13s" in cmd and "--latency" in cmd
    assert cmd[cmd.index("--") + 1 :] == ["active=10", "method=POST", 'body={"amount": 1}']


def test_parse_args_defaults_and_service_env() -> None:
    opts = parse_args(["--workloads", "ceiling,transfers,ceiling", "--service-env", "A=b=c"])
    assert opts.workloads == ("ceiling", "transfers")
    assert opts.service_env == {"A": "b=c"}
    assert (opts.duration, opts.connections, opts.wallets) == (10.0, 64, 10_000)
    assert opts.auth == "key"  # the load sends a credential unless told otherwise
    assert parse_args(["--auth", "jwt"]).auth == "jwt"
    assert parse_args(["--auth", "off"]).auth == "off"


def test_parse_args_rejects_unknown_workload() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--workloads", "hot,nope"])


def test_cpu_use_shares_and_other_load() -> None:
    use = CpuUse(wall=10.0, server=9.0, wrk=3.0, postgres=1.0, machine=15.0)
    assert use.share(use.server) == pytest.approx(0.9)
    assert use.other == pytest.approx(2.0)
    assert CpuUse(wall=0.0, server=0, wrk=0, postgres=0, machine=0).share(1.0) == 0.0


async def test_settle_passes_once_the_read_catches_up_and_reports_a_mismatch() -> None:
    reads = iter([Decimal("1.00"), Decimal("1.01")])

    async def lagging() -> Decimal:
        return next(reads)

    assert await settle(lagging, Decimal("1.01"), "balance", pause_s=0) == Check(
        True, "ok (after 1 re-reads)"
    )

    async def short() -> Decimal:
        return Decimal("0.99")

    check = await settle(short, Decimal("1.01"), "balance", pause_s=0)
    assert not check.ok
    assert check.text == "MISMATCH balance 0.99 != expected 1.01 (diff -0.02)"


def test_ratios_use_the_ceilings_measured_on_either_side_of_each_workload() -> None:
    def row(name: str, kind: str, ok: int, before: float | None = None, after: float | None = None) -> Row:
        result = WrkResult(ok, 0, ok, ok, 10.0, 1.0, 1.0, 1.0, 1.0, 0, 0, 0, 0)
        cpu = CpuUse(wall=10.0, server=1, wrk=1, postgres=0, machine=2)
        return Row(name, kind, result, result, cpu, ceiling_rps=before, ceiling_after_rps=after)  # type: ignore[arg-type]

    rows = [
        row("ceiling", "post", 50_000),
        row("ceiling-get", "get", 70_000),
        row("hot", "post", 30_000, before=4_000.0, after=8_000.0),  # 3,000 req/s against their mean
        row("spread", "post", 30_000, before=6_000.0),  # measured before only: against it
        row("reads", "get", 35_000),  # no adjacent measurement: the first GET ceiling
    ]
    set_ratios(rows)
    assert [r.ratio for r in rows] == [1.0, 1.0, pytest.approx(0.5), pytest.approx(0.5), pytest.approx(0.5)]
    assert [r.ceiling_drift for r in rows] == [None, None, pytest.approx(1.0), None, None]
    hot = cells(rows[2])
    assert hot[HEADER.index("ceiling req/s")] == "6,000" and hot[HEADER.index("ceiling drift")] == "+100%"


def test_parse_args_instances() -> None:
    assert parse_args([]).instances == 1
    assert parse_args(["--instances", "2"]).instances == 2
    with pytest.raises(SystemExit):
        parse_args(["--instances", "5"])  # the router configuration names at most 4


def test_router_env_names_every_instance_and_fills_the_second_server_with_one() -> None:
    from wallet.bench.router import router_env

    env = router_env("127.0.0.1:1", "127.0.0.1:2", ["127.0.0.1:3", "127.0.0.1:4", "127.0.0.1:5"])
    assert env["WALLET_API_3"] == "127.0.0.1:5" and "WALLET_API_4" not in env
    assert router_env("a:1", "a:2", ["h:3"])["WALLET_API_2"] == "h:3"  # api2 is always configured


def test_the_worker_workload_and_its_backlog_size_are_options_and_its_rows_render():
    from wallet.bench.report import drain_markdown, drain_table
    from wallet.bench.worker_drain import DrainRow, stream_settings

    opts = parse_args(["--workloads", "worker", "--events", "1000"])
    assert (opts.workloads, opts.events) == (("worker",), 1000)
    with pytest.raises(SystemExit):
        parse_args(["--events", "0"])
    row = DrainRow(
        workers=2,
        events=1000,
        seconds=2.0,
        steady_seconds=0.5,
        steady_events=900,
        steady_cpu_s=0.09,
        alerts=3,
    )
    assert (row.rate, row.steady_rate, round(row.cpu_us_per_event)) == (500.0, 2000.0, 100)
    assert "2,000" in drain_table([row]) and "| 2 | 1,000 |" in drain_markdown([row], opts)
    own = stream_settings("abcd")
    assert (own.fraud_queue, own.rabbitmq_exchange) == (
        "fraud_detection.bench_abcd",
        "wallet_events.bench_abcd",
    )


def test_writes_are_keyed_by_default_and_both_ways_on_request() -> None:
    keyed = parse_args([])
    assert (keyed.keys, keyed.relay) == ("on", "in-process")
    assert [keyed.keyed(w) for w in ("hot", "spread", "transfers", "reads")] == [True] * 3 + [False]
    assert keyed.sessions(["hot", "reads"]) == [(keyed, ["hot", "reads"])]
    assert not parse_args(["--keys", "off"]).keyed("transfers")


def test_both_ways_run_the_key_less_writes_in_a_session_of_their_own() -> None:
    both = parse_args(["--keys", "both", "--relay", "separate"])
    (first, names), (second, keyless) = both.sessions(["hot", "reads", "transfers", "worker"])
    assert (first.keys, names) == ("on", ["hot", "reads", "transfers", "worker"])
    assert (second.keys, second.relay, keyless) == ("off", "separate", ["hot", "transfers"])
    assert [o.keys for o, _ in both.sessions(["reads"])] == ["on"]


def test_key_less_rows_stand_beside_their_keyed_twins() -> None:
    def row(name: str) -> Row:
        result = WrkResult(1, 0, 1, 1, 10.0, 1.0, 1.0, 1.0, 1.0, 0, 0, 0, 0)
        return Row(name, "post", result, result, CpuUse(wall=10.0, server=1, wrk=1, postgres=0, machine=2))

    keyed = [row("hot"), row("hot x2"), row("reads"), row("transfers")]
    merged = beside_keyed(keyed, [row("hot (no key)"), row("hot (no key) x2"), row("transfers (no key)")])
    assert [r.name for r in merged] == [
        "hot",
        "hot (no key)",
        "hot x2",
        "hot (no key) x2",
        "reads",
        "transfers",
        "transfers (no key)",
    ]


def test_the_warm_up_and_the_run_send_different_keys() -> None:
    args = {"method": "POST", "keys": "hot-ab12"}
    assert phase(args, "w")["keys"] != phase(args, "r")["keys"]
    assert phase({"method": "GET"}, "w") == {"method": "GET"}


def test_the_alerts_workload_is_an_option_and_its_figures_are_the_tests_percentiles() -> None:
    from wallet.bench.alert_latency import latencies, percentile, sample_amount, sample_count

    assert parse_args(["--workloads", "hot,alerts"]).workloads == ("hot", "alerts")
    assert percentile([], 0.99) == 0.0
    values = [i / 100 for i in range(1, 101)]  # 0.01 .. 1.00
    assert (percentile(values, 0.5), percentile(values, 0.99), percentile(values, 1.0)) == (0.51, 0.99, 1.0)
    assert percentile([0.3], 0.99) == 0.3
    # Only the samples with both a listing and an event; sorted.
    assert latencies({"a": 10.5, "b": 11.0, "c": 12.0}, {"a": 10.0, "b": 10.8, "d": 1.0}) == pytest.approx(
        [0.2, 0.5]
    )
    assert (sample_count(3), sample_count(10), sample_count(0.05), sample_count(0.3)) == (30, 100, 1, 3)
    assert sample_amount(Decimal("10000")) == Decimal("10000.01")


def test_alert_rows_count_misses_as_failures_and_render() -> None:
    from wallet.bench.alert_latency import AlertRow
    from wallet.bench.report import alert_markdown, alert_table

    load = parse_result(WRK_OUTPUT.replace('"read":2,"write":1', '"read":0,"write":0'))
    clean = WrkResult(**{**load.__dict__, "not200": 0, "sent": load.ok, "timeouts": 0})
    row = AlertRow(
        name="alerts: hot",
        load=clean,
        samples=30,
        acknowledged=30,
        latencies=tuple(sorted([0.1] * 28 + [0.4, 1.5])),
        worker_cpu_s=0.3,
        load_s=3.0,
        check="ok",
        polls=120,
    )
    assert (row.found, row.missed, row.sample_errors, row.failed) == (30, 0, 0, False)
    assert (row.quantile(0.5), row.quantile(0.99), row.quantile(1.0)) == (0.1, 1.5, 1.5)
    assert not row.within_target  # p99 1.5 s: a figure over the target, not a failed run
    assert row.worker_cpu_share == pytest.approx(0.1)
    missed = AlertRow(
        name="alerts: transfers",
        load=clean,
        samples=30,
        acknowledged=29,
        latencies=(0.2,) * 27,
        worker_cpu_s=0.0,
        load_s=0.0,
        poll_errors=3,
        polls=97,
    )
    assert (missed.missed, missed.sample_errors, missed.failed, missed.within_target) == (2, 1, True, False)
    table = alert_table([row, missed])
    assert "alerts: hot" in table and "1,500" in table and "NO" in table
    assert "alerts: transfers: 3 of 100 polls failed" in table
    md = alert_markdown([row, missed], parse_args(["--workloads", "alerts", "--duration", "3"]))
    assert "| alerts: transfers | 4,265 | 0 | 30 | 27 | 2 | 1 | 200 | 200 | 200 | NO | 0% | - |" in md
    empty = AlertRow("alerts: hot", clean, 1, 1, (), 0.0, 1.0)
    assert empty.missed == 1 and "| - | - | - |" in alert_markdown([empty], parse_args([]))
