"""HAProxy with the shipped configuration (deploy/haproxy.cfg), in front of instances on this host.

Used by ``wallet bench --instances N`` and the end-to-end scale-out test: only the addresses
differ from a deployment (the configuration reads them from the environment).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp

from wallet.bench.services import ensure_port_free

REPO_ROOT = Path(__file__).resolve().parents[2]
HAPROXY_CFG = REPO_ROOT / "deploy" / "haproxy.cfg"
MAX_INSTANCES = 4  # servers api1..api4 in the configuration
BACKEND = "wallet_instances"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"  # /usr/sbin is not on every PATH


class RouterError(RuntimeError):
    """HAProxy is missing, would not start, or did not see its instances come up."""


def router_env(bind: str, stats: str, instances: list[str]) -> dict[str, str]:
    """The configuration's variables: where to listen, where the instances are (host:port)."""
    if not 1 <= len(instances) <= MAX_INSTANCES:
        raise RouterError(f"the router configuration takes 1 to {MAX_INSTANCES} instances")
    env = {"WALLET_ROUTER_BIND": bind, "WALLET_ROUTER_STATS": stats}
    # api1 and api2 are always configured; with one instance, both name it.
    padded = instances if len(instances) > 1 else instances * 2
    env |= {f"WALLET_API_{k}": address for k, address in enumerate(padded, 1)}
    return env


class Router:
    """``haproxy -f deploy/haproxy.cfg`` in the foreground, listening on ``port`` (127.0.0.1)."""

    def __init__(self, port: int, stats_port: int, instances: list[str]) -> None:
        if not os.access(HAPROXY, os.X_OK):
            raise RouterError("haproxy is not installed (apt-get install haproxy)")
        self.port = port
        self.stats_port = stats_port
        self.base_url = f"http://127.0.0.1:{port}"
        self.stats_url = f"http://127.0.0.1:{stats_port}/metrics"
        self.env = router_env(f"127.0.0.1:{port}", f"127.0.0.1:{stats_port}", instances)
        self.servers = [f"api{k}" for k in range(1, max(len(instances), 2) + 1)]
        fd, log = tempfile.mkstemp(prefix="wallet-router-", suffix=".log")
        os.close(fd)
        self.log_path = Path(log)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Router:
        ensure_port_free(self.port, "the router")
        ensure_port_free(self.stats_port, "the router's statistics")
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [HAPROXY, "-db", "-f", str(HAPROXY_CFG)],
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def server_states(self, session: aiohttp.ClientSession) -> dict[str, str]:
        """Each server's state as the router sees it (UP, DOWN, MAINT, ...), from its metrics."""
        async with session.get(self.stats_url, params={"scope": "server"}) as resp:
            text = await resp.text()
        states: dict[str, str] = {}
        for line in text.splitlines():
            if not line.startswith("haproxy_server_status{") or not line.endswith(" 1"):
                continue
            labels = dict(
                part.split("=", 1) for part in line[line.index("{") + 1 : line.index("}")].split(",")
            )
            if labels.get("proxy") == f'"{BACKEND}"':
                states[labels["server"].strip('"')] = labels["state"].strip('"')
        return states

    async def wait_until(self, wanted: dict[str, str], within_s: float = 20.0) -> float:
        """Wait until the servers named in ``wanted`` are in those states; the seconds it took."""
        started = time.monotonic()
        states: dict[str, str] = {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() - started < within_s:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RouterError(f"haproxy exited with {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    states = await self.server_states(session)
                except (aiohttp.ClientError, TimeoutError):
                    states = {}
                if all(states.get(name) == state for name, state in wanted.items()):
                    return time.monotonic() - started
                await asyncio.sleep(0.1)
        raise RouterError(f"router servers {states}, wanted {wanted} after {within_s:.0f}s")

    async def wait_all_up(self, within_s: float = 20.0) -> float:
        return await self.wait_until(dict.fromkeys(self.servers, "UP"), within_s)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # hard stop; SIGUSR1 would wait for clients
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_path.unlink(missing_ok=True)
