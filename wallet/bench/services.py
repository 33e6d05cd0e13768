"""The processes under test (ceiling, service), the bench database, and CPU accounting."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiohttp
import asyncpg

REPO_ROOT = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")


class StartError(RuntimeError):
    """A server did not come up."""


@dataclass(frozen=True)
class Target:
    """Where a workload's requests go (a server, or the router in front of several), and the
    processes whose CPU the report counts as the server's and the router's."""

    base_url: str
    server_pids: tuple[int, ...]
    router_pids: tuple[int, ...] = ()


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    @property
    def target(self) -> Target:
        return Target(self.base_url, (self.proc.pid,))

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait (SIGKILL if it will not stop); show the log if it ended badly, else delete it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"bench: {self.name} ignored SIGTERM for {timeout:.0f}s; killing it", file=sys.stderr)
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        if code in (0, -signal.SIGTERM):
            self.log_path.unlink(missing_ok=True)
        else:
            print(
                f"bench: {self.name} exited with {code}; its log ({self.log_path}) ends:\n{self.log_tail()}",
                file=sys.stderr,
            )
        return code


def ensure_port_free(port: int, what: str) -> None:
    """Refuse to start ``what`` on a port something already listens on: the readiness probe would
    get its answers from that (a server left by an interrupted run, perhaps of other code), and the
    run would measure it while the process started here died on the taken port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise StartError(
                f"port {port}, where {what} would listen, is taken ({exc.strerror}): stop what "
                "holds it (a server left by an earlier run?) or pass another --port-base"
            ) from exc


def spawn(
    name: str, args: list[str], port: int, env: Mapping[str, str] | None = None, *, listens: bool = True
) -> Server:
    """Start ``python <args>`` from the repository root, its output going to a log file; a server
    that ``listens`` on ``port`` only once the port is free."""
    if listens:
        ensure_port_free(port, name)
    fd, log = tempfile.mkstemp(prefix=f"wallet-bench-{name}-", suffix=".log")
    with os.fdopen(fd, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO_ROOT,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Server(name, proc, f"http://127.0.0.1:{port}", Path(log))


async def wait_ready(server: Server, probes: list[str], within_s: float = 60.0) -> None:
    """Wait until the first probe path answers 200, or, if it answers 404, until the next
    probe answers anything at all."""
    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise StartError(f"{server.name} exited with {server.proc.returncode} while starting")
            if await _probe(session, server.base_url, probes):
                return
            await asyncio.sleep(0.2)
    raise StartError(f"{server.name} not ready after {within_s:.0f}s:\n{server.log_tail()}")


async def _probe(session: aiohttp.ClientSession, base_url: str, probes: list[str]) -> bool:
    for i, path in enumerate(probes):
        try:
            async with session.get(base_url + path) as resp:
                status = resp.status
        except (TimeoutError, aiohttp.ClientError):
            return False
        if status == 200 or i > 0:
            return True
        if status != 404:
            return False
    return False


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far; 0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)"; utime, stime are fields 14, 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def postgres_cpu_by_pid() -> dict[int, float]:
    """CPU time of each local PostgreSQL process (none if the server is elsewhere)."""
    cpu = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if comm == "postgres":
                cpu[int(entry.name)] = proc_cpu_seconds(int(entry.name))
    return cpu


def machine_busy_seconds() -> float:
    """CPU time spent by every process on every core (user, nice, system, irq, softirq)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[:7])
    return (user + nice + system + irq + softirq) / CLK_TCK


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds used over a wall-clock time by the server(s) under test, wrk, PostgreSQL, the
    router in front of the servers (if any) and the whole machine."""

    wall: float
    server: float
    wrk: float
    postgres: float
    machine: float
    router: float = 0.0

    @property
    def other(self) -> float:
        """Everything but the servers, the router, wrk and PostgreSQL: another load disturbing the run."""
        return max(self.machine - self.server - self.router - self.wrk - self.postgres, 0.0)

    def share(self, cpu_s: float) -> float:
        """CPU seconds as a share of one core over the wall-clock time."""
        return cpu_s / self.wall if self.wall > 0 else 0.0


def cpu_seconds(pids: Sequence[int]) -> float:
    return sum(proc_cpu_seconds(pid) for pid in pids)


class CpuMeter:
    """Measures CpuUse from its creation to stop()."""

    def __init__(self, server_pids: Sequence[int], wrk_pid: int, router_pids: Sequence[int] = ()) -> None:
        self.server_pids, self.wrk_pid, self.router_pids = server_pids, wrk_pid, router_pids
        self.wall = time.monotonic()
        self.server, self.wrk = cpu_seconds(server_pids), proc_cpu_seconds(wrk_pid)
        self.router = cpu_seconds(router_pids)
        self.postgres = postgres_cpu_by_pid()
        self.machine = machine_busy_seconds()

    def stop(self) -> CpuUse:
        postgres = postgres_cpu_by_pid()  # a backend that ended meanwhile is lost, never negative
        return CpuUse(
            wall=time.monotonic() - self.wall,
            server=cpu_seconds(self.server_pids) - self.server,
            wrk=proc_cpu_seconds(self.wrk_pid) - self.wrk,
            postgres=sum(cpu - self.postgres.get(pid, 0.0) for pid, cpu in postgres.items()),
            machine=machine_busy_seconds() - self.machine,
            router=cpu_seconds(self.router_pids) - self.router,
        )


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def create_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def delete_exchange(rabbitmq_url: str, name: str) -> None:
    """Delete the bench run's own exchange (nothing else); a broker that is away is left alone."""
    try:
        connection = await aio_pika.connect(rabbitmq_url, timeout=5)
    except Exception:
        return
    async with connection:
        channel = await connection.channel()
        await channel.exchange_delete(name)
