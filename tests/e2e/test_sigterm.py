"""SIGTERM while requests are in flight: the process answers them, stops every actor, exits < 5 s."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import aiohttp

from tests.helpers import balance_cents


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until_up(base: str, process: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert process.poll() is None, "service exited during start-up"
            try:
                async with session.get(f"{base}/health/live") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("service did not come up")


async def test_sigterm_answers_in_flight_requests_and_exits_quickly(database_url, db):
    port = free_port()
    env = os.environ | {
        "DATABASE_URL": database_url,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "RATE_LIMIT_ENABLED": "false",
        "LOG_LEVEL": "warning",
    }
    process = subprocess.Popen([sys.executable, "-m", "wallet", "serve"], env=env)
    base = f"http://127.0.0.1:{port}"
    wallet_id = f"sig-{uuid.uuid4().hex[:12]}"
    try:
        await wait_until_up(base, process)
        connector = aiohttp.TCPConnector(limit=400)
        async with aiohttp.ClientSession(connector=connector) as session:
            answered: list[int] = []
            failed: list[BaseException] = []

            async def deposit() -> None:
                try:
                    async with session.post(f"{base}/v1/wallet/{wallet_id}/deposit", json={"amount": 1}) as r:
                        await r.read()
                        answered.append(r.status)
                except aiohttp.ClientError as exc:
                    failed.append(exc)

            tasks = [asyncio.create_task(deposit()) for _ in range(400)]
            while not answered:
                await asyncio.sleep(0.005)
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            await asyncio.gather(*tasks)
            exit_code = await asyncio.get_running_loop().run_in_executor(None, process.wait, 10)
            elapsed = time.monotonic() - signalled

        assert exit_code == 0
        assert elapsed < 5.0, f"took {elapsed:.1f} s to exit"
        assert set(answered) <= {200, 503}, answered
        acknowledged = answered.count(200)
        assert acknowledged > 0
        # Every acknowledged deposit is durable; at most the unanswered ones may also have happened.
        balance = await balance_cents(db, wallet_id)
        assert acknowledged * 100 <= balance <= (acknowledged + len(failed)) * 100
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
