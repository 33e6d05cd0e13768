"""Fixtures of the authentication tests: the app with authentication ON, and keys issued to it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from wallet.auth.issue import issue_key
from wallet.bootstrap import Api, start_api
from wallet.config import Settings
from wallet.persistence.api_key_store import ApiKeyRecord, ApiKeyStore
from wallet.service import WalletService

JWT_SECRET = "test-secret-of-at-least-32-bytes-for-hs256!"
JWT_ISSUER = "https://idp.test/"
JWT_AUDIENCE = "wallet-api"


@dataclass(frozen=True)
class Key:
    record: ApiKeyRecord
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def auth_settings(settings: Settings) -> Settings:
    """Authentication on; this test's own Redis prefix (failed-auth counts are per address)."""
    return replace(
        settings,
        auth_enabled=True,
        auth_jwt_issuer=JWT_ISSUER,
        auth_jwt_audience=JWT_AUDIENCE,
        auth_jwt_secret=JWT_SECRET,
        auth_failure_rate_limit="1000/minute",
        redis_key_prefix=f"{settings.redis_key_prefix}:{uuid.uuid4().hex[:8]}",
    )


@pytest.fixture
async def start_auth_api(
    aiohttp_client: Any,
) -> AsyncIterator[Callable[..., Awaitable[tuple[Api, TestClient]]]]:
    """``await start_auth_api(settings, name)``: another API instance and its client, as
    ``wallet serve`` builds them (stopped at the end of the test)."""
    started: list[Api] = []

    async def start(settings: Settings, name: str) -> tuple[Api, TestClient]:
        api = await start_api(settings, name=name, run_migrations=False)
        started.append(api)
        return api, await aiohttp_client(api.app)

    yield start
    for api in reversed(started):
        await api.stop()


@pytest.fixture
async def auth_api(auth_settings: Settings, start_auth_api: Any) -> tuple[Api, TestClient]:
    api_and_client: tuple[Api, TestClient] = await start_auth_api(auth_settings, "test-auth")
    return api_and_client


@pytest.fixture
def auth_service(auth_api: tuple[Api, TestClient]) -> WalletService:
    return auth_api[0].service


@pytest.fixture
def auth_client(auth_api: tuple[Api, TestClient]) -> TestClient:
    return auth_api[1]


IssueKey = Callable[..., Awaitable[Key]]


@pytest.fixture
def issue(auth_service: WalletService) -> IssueKey:
    """``await issue(scopes, wallets, name=...)``: a new API key in the test database."""

    async def make(
        scopes: list[str], wallets: list[str] | None = None, name: str = "test key", days: float | None = None
    ) -> Key:
        record, token = await issue_key(
            ApiKeyStore(auth_service.pool), name, scopes, ["*"] if wallets is None else wallets, days
        )
        return Key(record, token)

    return make
