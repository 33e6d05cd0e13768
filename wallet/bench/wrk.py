"""Running wrk with the bench's Lua scripts, and parsing the one result line they print."""

from __future__ import annotations

import json
import math
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPTS = Path(__file__).with_name("scripts")
RESULT_PREFIX = "BENCH_RESULT "
# wrk's own -d runs this much longer than the Lua send deadline, so in-flight requests complete.
DRAIN_S = 3.0


class WrkError(RuntimeError):
    """wrk failed, or printed no result line."""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run, as counted by the Lua scripts (responses) and by wrk (latency, socket errors)."""

    ok: int  # 200 responses: the acknowledged requests
    not200: int
    sent: int
    responses: int
    active_s: float  # first thread start to last response
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    connect_errors: int
    read_errors: int
    write_errors: int
    timeouts: int

    @property
    def socket_errors(self) -> int:
        return self.connect_errors + self.read_errors + self.write_errors

    @property
    def abandoned(self) -> int:
        """Requests sent whose response never arrived (cut by wrk's end or a socket error)."""
        return max(self.sent - self.ok - self.not200, 0)

    @property
    def errors(self) -> int:
        return self.socket_errors + self.timeouts + self.not200 + self.abandoned

    @property
    def rps(self) -> float:
        return self.ok / self.active_s if self.active_s > 0 else 0.0


def parse_result(output: str) -> WrkResult:
    """The result line of a bench script (the last one, if wrk printed several)."""
    lines = [ln for ln in output.splitlines() if ln.startswith(RESULT_PREFIX)]
    if not lines:
        raise WrkError("no BENCH_RESULT line in wrk's output")
    data = json.loads(lines[-1][len(RESULT_PREFIX) :])
    errors = data["errors"]
    return WrkResult(
        ok=int(data["ok"]),
        not200=int(data["not200"]),
        sent=int(data["sent"]),
        responses=int(data["responses"]),
        active_s=float(data["active_s"]),
        p50_ms=float(data["p50_ms"]),
        p90_ms=float(data["p90_ms"]),
        p99_ms=float(data["p99_ms"]),
        max_ms=float(data["max_ms"]),
        connect_errors=int(errors["connect"]),
        read_errors=int(errors["read"]),
        write_errors=int(errors["write"]),
        timeouts=int(errors["timeout"]),
    )


def wrk_command(
    url: str, script: str, options: dict[str, str], *, active_s: float, connections: int, threads: int
) -> list[str]:
    return [
        "wrk",
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={math.ceil(active_s + DRAIN_S)}s",
        "--timeout=5s",
        "--latency",
        f"--script={SCRIPTS / script}",
        url,
        "--",
        f"active={active_s}",
        *(f"{key}={value}" for key, value in options.items()),
    ]


def start_wrk(
    url: str, script: str, options: dict[str, str], *, active_s: float, connections: int, threads: int
) -> subprocess.Popen[str]:
    cmd = wrk_command(url, script, options, active_s=active_s, connections=connections, threads=threads)
    env = {**os.environ, "LUA_PATH": f"{SCRIPTS}/?.lua;;"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_wrk(proc: subprocess.Popen[str]) -> WrkResult:
    """Wait for wrk and parse its result (blocking: call it in a thread from asyncio code)."""
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise WrkError(f"wrk exited {proc.returncode}: {err.strip() or out.strip()}")
    return parse_result(out)
