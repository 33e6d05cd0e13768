"""Test fixtures: every run gets its own PostgreSQL database (and, later, its own queue names).

The database is created at session start on the server named by TEST_DATABASE_ADMIN_URL and
dropped at the end. Tests isolate themselves by using fresh wallet ids, so nothing is truncated
(the event table refuses that anyway).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from wallet.config import Settings
from wallet.http.app import create_app
from wallet.persistence.migrations import migrate
from wallet.service import WalletService

ADMIN_URL = os.environ.get("TEST_DATABASE_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


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


@pytest.fixture
def settings(database_url: str) -> Settings:
    return replace(
        Settings(),
        database_url=database_url,
        rate_limit_enabled=False,
        command_timeout_seconds=15.0,
        db_pool_max=8,
    )


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[WalletService]:
    svc = WalletService(settings, name="test-a")
    await svc.start(run_migrations=False)
    yield svc
    await svc.stop()


@pytest.fixture
async def client(aiohttp_client, service: WalletService) -> TestClient:  # type: ignore[no-untyped-def]
    return await aiohttp_client(create_app(service))


@pytest.fixture
def wallet_id() -> str:
    return f"w-{uuid.uuid4().hex[:16]}"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()
