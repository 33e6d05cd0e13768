"""The fraud worker's HTTP port asks for the same credentials as the API (API.md): ``/health/live``
is open, the detailed ``/health`` and ``/metrics`` need ``ops:read``. A real worker on a real port,
API keys in the real database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import asyncpg
import pytest

from tests.integration.edges import free_port
from wallet.auth.issue import issue_key
from wallet.auth.principal import OPS_READ, WALLETS_READ
from wallet.bootstrap import build_worker
from wallet.config import Settings
from wallet.persistence.api_key_store import ApiKeyStore


async def started_worker(settings: Settings, **changes: object) -> AsyncIterator[str]:
    port = free_port()
    s = replace(
        settings,
        auth_enabled=True,
        fraud_worker_port=port,
        host="127.0.0.1",
        redis_key_prefix=f"{settings.redis_key_prefix}:{uuid.uuid4().hex[:8]}",
        **changes,  # type: ignore[arg-type]
    )
    worker = build_worker(s, name="test-worker-auth")
    await worker.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await worker.stop()


@pytest.fixture
async def worker_url(fraud_settings: Settings) -> AsyncIterator[str]:
    async for url in started_worker(fraud_settings, auth_failure_rate_limit="1000/minute"):
        yield url


@pytest.fixture
async def strict_worker_url(fraud_settings: Settings) -> AsyncIterator[str]:
    """Three failed attempts a minute, and the API's setting that trusts X-Forwarded-For on."""
    async for url in started_worker(
        fraud_settings, auth_failure_rate_limit="3/minute", rate_limit_trust_forwarded=True
    ):
        yield url


async def key(database_url: str, scopes: list[str]) -> str:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        _record, token = await issue_key(ApiKeyStore(pool), "worker test", scopes, ["*"], None)
    finally:
        await pool.close()
    return token


async def test_health_and_metrics_need_ops_read_and_liveness_is_open(worker_url, database_url) -> None:
    ops, reader = await key(database_url, [OPS_READ]), await key(database_url, [WALLETS_READ])
    async with aiohttp.ClientSession() as session:

        async def get(path: str, token: str | None = None) -> tuple[int, str, aiohttp.ClientResponse]:
            headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
            async with session.get(worker_url + path, headers=headers) as response:
                return response.status, await response.text(), response

        status, _, _ = await get("/health/live")
        assert status == 200
        async with session.head(worker_url + "/metrics") as response:
            assert response.status == 401
        for path in ("/health", "/metrics"):
            status, body, response = await get(path)
            assert status == 401 and '"UnauthorizedError"' in body
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            forged = "wk_" + "x" * 40
            status, body, _ = await get(path, forged)
            assert status == 401 and forged not in body
            status, body, _ = await get(path, reader)
            assert status == 403 and '"ForbiddenError"' in body and reader not in body
        status, body, _ = await get("/health", ops)
        assert status == 200 and '"status": "ok"' in body.replace('":"', '": "')
        status, body, _ = await get("/metrics", ops)
        assert status == 200 and "wallet_fraud_" in body


async def test_failed_attempts_are_limited_per_peer_whatever_x_forwarded_for_says(strict_worker_url) -> None:
    """No proxy stands in front of the worker's port: a caller who writes a new X-Forwarded-For on
    each attempt is still counted as one address."""
    async with aiohttp.ClientSession() as session:
        statuses = []
        for n in range(5):
            headers = {"Authorization": f"Bearer wk_{n:040d}", "X-Forwarded-For": f"10.0.0.{n}"}
            async with session.get(strict_worker_url + "/metrics", headers=headers) as response:
                statuses.append(response.status)
        assert statuses[:3] == [401, 401, 401]
        assert statuses[3:] == [429, 429]
