"""Running `python -m wallet serve` as a real process for end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

import aiohttp

from wallet.config import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServiceProcess:
    """The service on a free port, with this test run's database, exchange and Redis prefix."""

    def __init__(self, settings: Settings, port: int | None = None, **env: str) -> None:
        self.port = port or free_port()  # a port of its own, or the one a killed instance had
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = (
            os.environ
            | {
                "DATABASE_URL": settings.database_url,
                "REDIS_URL": settings.redis_url,  # each URL set: unset, `serve` would embed one
                "RABBITMQ_URL": settings.rabbitmq_url,
                "RABBITMQ_EXCHANGE": settings.rabbitmq_exchange,
                "REDIS_KEY_PREFIX": settings.redis_key_prefix,
                "PORT": str(self.port),
                "HOST": "127.0.0.1",
                "RATE_LIMIT_ENABLED": "false",
                "AUTH_ENABLED": "false",
                "LOG_LEVEL": "warning",
            }
            | env
        )
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self, seconds: float = 30) -> ServiceProcess:
        self.process = subprocess.Popen([sys.executable, "-m", "wallet", "serve"], env=self.env)
        deadline = time.monotonic() + seconds
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert self.process.poll() is None, "service exited during start-up"
                try:
                    async with session.get(f"{self.base}/health/live") as response:
                        if response.status == 200:
                            return self
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError("service did not come up")

    async def wait(self, seconds: float = 10) -> int:
        assert self.process is not None
        return await asyncio.get_running_loop().run_in_executor(None, self.process.wait, seconds)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
