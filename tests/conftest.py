"""Test fixtures: every run gets its own PostgreSQL database (and, later, its own queue names).

The database is created at session start on the server named by TEST_DATABASE_ADMIN_URL and
dropped at the end. Tests isolate themselves by using fresh wallet ids, so nothing is truncated
(the event table refuses that anyway).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import aio_pika
import asyncpg
import pytest
import uvloop
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aiohttp.test_utils import TestClient

from tests.helpers import WalletTestServer
from wallet.bootstrap import Api, build_worker, start_api
from wallet.config import Settings
from wallet.persistence.migrations import migrate
from wallet.service import WalletService

RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
ADMIN_URL = os.environ.get("TEST_DATABASE_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    """Every async test on the loop the service runs on (``EVENT_LOOP``'s default, uvloop); a test
    marked ``both_event_loops`` on asyncio's own loop as well, the other setting."""
    factories: dict[str, Callable[[], Any]] = {"uvloop": uvloop.new_event_loop}
    if item.get_closest_marker("both_event_loops") is not None:
        factories["asyncio"] = asyncio.new_event_loop
    return factories


def _database_url(name: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


async def _create_database(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    await migrate(_database_url(name))


async def _drop_database(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def run_id() -> str:
    """Unique per test run: names the database, queues and exchanges of this run."""
    return f"{os.getpid()}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def database_url(run_id: str) -> Iterator[str]:
    name = f"wallet_test_{run_id}"
    asyncio.run(_create_database(name))
    yield _database_url(name)
    if not os.environ.get("KEEP_TEST_DATABASE"):
        asyncio.run(_drop_database(name))


@pytest.fixture(scope="session")
def event_stream(run_id: str) -> Iterator[dict[str, Any]]:
    """Per-run RabbitMQ names (exchange, queues) and short relay/retry timings; at the end of the
    run, the run's queues and exchanges are deleted."""
    names: dict[str, Any] = {
        "rabbitmq_url": RABBITMQ_URL,
        "rabbitmq_exchange": f"wallet_events.test_{run_id}",
        "fraud_queue": f"fraud_detection.test_{run_id}",
        "fraud_alert_queue": f"fraud_auto_freeze.test_{run_id}",
        "outbox_poll_seconds": 0.2,
        "outbox_publish_timeout_seconds": 2.0,
        "outbox_backoff_initial_seconds": 0.05,
        "outbox_backoff_max_seconds": 0.4,
        "fraud_max_retries": 2,
        "fraud_retry_base_seconds": 0.05,
    }
    yield names
    asyncio.run(_delete_event_stream(replace(Settings(), **names)))


async def _delete_event_stream(settings: Settings) -> None:
    from wallet.messaging.topology import alert_topology, delete_topology, fraud_topology

    try:
        connection = await aio_pika.connect(settings.rabbitmq_url, timeout=5)
    except Exception:
        return  # the broker is down: nothing of this run can be cleaned now
    async with connection:
        channel = await connection.channel()
        await delete_topology(channel, fraud_topology(settings))
        await delete_topology(channel, alert_topology(settings))
        await channel.exchange_delete(settings.rabbitmq_exchange)


@pytest.fixture
def settings(database_url: str, event_stream: dict[str, Any], run_id: str) -> Settings:
    return replace(
        Settings(),
        **event_stream,
        database_url=database_url,
        redis_key_prefix=f"wallet_test_{run_id}",  # this run's cache entries and rate limit counts
        rate_limit_enabled=False,
        auth_enabled=False,  # the auth tests (tests/integration/test_auth*.py) turn it on
        command_timeout_seconds=15.0,
        db_pool_max=8,
    )


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    """The API process's parts, built by the composition root as ``wallet serve`` builds them."""
    built = await start_api(settings, name="test-a", run_migrations=False)
    yield built
    await built.stop()


@pytest.fixture
def service(api: Api) -> WalletService:
    return api.service


@pytest.fixture
async def client(aiohttp_client, api: Api) -> TestClient:  # type: ignore[no-untyped-def]
    return await aiohttp_client(WalletTestServer(api.app))


@pytest.fixture
def wallet_id() -> str:
    return f"w-{uuid.uuid4().hex[:16]}"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


# -- event stream (RabbitMQ) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    message_id: str
    routing_key: str
    body: dict[str, Any]
    at: float  # time.monotonic() on receipt
    persistent: bool
    content_type: str | None
    app_id: str | None = None  # the publishing relay's name


class EventCollector:
    """Everything published to the run's exchange under ``wallet.#``, in arrival order."""

    def __init__(self, connection: AbstractRobustConnection, exchange: str) -> None:
        self._connection = connection
        self._exchange = exchange
        self.received: list[Received] = []

    async def start(self) -> EventCollector:
        from wallet.messaging.topology import declare_exchange

        channel = await self._connection.channel()
        exchange = await declare_exchange(channel, self._exchange)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key="wallet.#")
        await queue.consume(self._on_message, no_ack=True)
        return self

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self.received.append(
            Received(
                message_id=str(message.message_id),
                routing_key=message.routing_key or "",
                body=json.loads(message.body, parse_float=Decimal),
                at=time.monotonic(),
                persistent=message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT,
                content_type=message.content_type,
                app_id=message.app_id,
            )
        )

    def of(self, wallet_ids: Iterable[str]) -> list[Received]:
        wanted = set(wallet_ids)
        return [r for r in self.received if r.body["walletId"] in wanted]

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        await wait_until(condition, timeout, lambda: f"received {len(self.received)} messages")


async def wait_until(
    condition: Callable[[], bool], timeout: float = 10.0, why: Callable[[], str] = str
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting; {why()}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def amqp(settings: Settings) -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(settings.rabbitmq_url)
    yield connection
    await connection.close()


@pytest.fixture
async def collector(amqp: AbstractRobustConnection, settings: Settings) -> EventCollector:
    return await EventCollector(amqp, settings.rabbitmq_exchange).start()


@pytest.fixture
async def fraud_settings(settings: Settings) -> AsyncIterator[Settings]:
    """Settings with this test's own fraud queues (so no backlog of other tests reaches them);
    the queues are deleted afterwards."""
    suffix = uuid.uuid4().hex[:8]
    own = replace(
        settings,
        fraud_queue=f"{settings.fraud_queue}.{suffix}",
        fraud_alert_queue=f"{settings.fraud_alert_queue}.{suffix}",
    )
    yield own
    from wallet.messaging.topology import alert_topology, delete_topology, fraud_topology

    async with await aio_pika.connect(own.rabbitmq_url, timeout=5) as connection:
        channel = await connection.channel()
        await delete_topology(channel, fraud_topology(own))
        await delete_topology(channel, alert_topology(own))


@pytest.fixture
async def fraud_worker(fraud_settings: Settings) -> AsyncIterator[Any]:
    worker = build_worker(fraud_settings, name="test-fraud-worker")
    await worker.start()
    yield worker
    await worker.stop()
