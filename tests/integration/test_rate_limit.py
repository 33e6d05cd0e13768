"""Rate limiting per client through the real Redis: the 11th withdrawal in a minute is refused,
other clients are not, two instances share the count, and Redis down still limits (per instance)."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from tests.integration.edges import closed_port_url, serving
from wallet.bootstrap import start_api
from wallet.config import Settings
from wallet.http.rate_limit import PRINCIPAL, rate_limiting


@pytest.fixture
def limited(settings: Settings) -> Settings:
    return replace(settings, rate_limit_enabled=True, rate_limit_trust_forwarded=True)


def _client_ip() -> str:
    """A fresh client per test (X-Forwarded-For is trusted in these settings)."""
    n = uuid.uuid4().int
    return f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250}"


def _headers(response) -> dict[str, str]:
    return {
        k: response.headers[k] for k in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
    }


async def test_eleventh_withdrawal_in_a_minute_is_refused_other_clients_are_not(limited, wallet_id):
    alice, bob = _client_ip(), _client_ip()
    async with serving(limited) as (_, client):
        url = f"/v1/wallet/{wallet_id}"
        deposit = await client.post(
            f"{url}/deposit", json={"amount": 100}, headers={"X-Forwarded-For": alice}
        )
        assert deposit.status == 200
        assert _headers(deposit)["X-RateLimit-Limit"] == "100"
        assert _headers(deposit)["X-RateLimit-Remaining"] == "99"

        for n in range(10):
            response = await client.post(
                f"{url}/withdraw", json={"amount": 1}, headers={"X-Forwarded-For": f"{alice}, 192.0.2.1"}
            )
            assert response.status == 200
            headers = _headers(response)
            assert headers["X-RateLimit-Limit"] == "10"  # the tighter limit is the one reported
            assert headers["X-RateLimit-Remaining"] == str(9 - n)
            assert 0 < int(headers["X-RateLimit-Reset"]) <= 60

        refused = await client.post(
            f"{url}/withdraw", json={"amount": 1}, headers={"X-Forwarded-For": alice, "X-Request-ID": "rl-1"}
        )
        assert refused.status == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert _headers(refused)["X-RateLimit-Limit"] == "10"
        assert _headers(refused)["X-RateLimit-Remaining"] == "0"
        body = await refused.json()
        assert body["statusCode"] == 429
        assert body["error"] == "RateLimitExceededError"
        assert body["path"] == f"{url}/withdraw"
        assert body["requestId"] == "rl-1"
        assert set(body) == {"statusCode", "error", "message", "timestamp", "path", "requestId"}

        # Not withdrawn: the balance is 100 - 10.
        balance = await client.get(url, headers={"X-Forwarded-For": alice})
        assert (await balance.json())["balance"] == 90
        # Alice may still deposit (her overall limit is not used up); Bob may withdraw.
        assert (
            await client.post(f"{url}/deposit", json={"amount": 1}, headers={"X-Forwarded-For": alice})
        ).status == 200
        other = await client.post(f"{url}/withdraw", json={"amount": 1}, headers={"X-Forwarded-For": bob})
        assert other.status == 200
        assert _headers(other)["X-RateLimit-Remaining"] == "9"


async def test_the_overall_limit_and_the_routes_it_leaves_alone(limited, wallet_id):
    own = replace(limited, rate_limit_default="5/minute")
    ip = _client_ip()
    async with serving(own) as (_, client):
        headers = {"X-Forwarded-For": ip}
        statuses = [(await client.get(f"/v1/wallet/{wallet_id}", headers=headers)).status for _ in range(6)]
        assert statuses == [404] * 5 + [429]  # errors count too, and get the headers
        # Unknown routes are limited as well; health, metrics and the docs are not.
        assert (await client.get("/nowhere", headers=headers)).status == 429
        for path in ("/health/live", "/metrics", "/api/openapi.json"):
            for _ in range(7):
                response = await client.get(path, headers=headers)
                assert response.status == 200, path
                assert "X-RateLimit-Limit" not in response.headers


async def test_two_instances_share_the_count(limited, wallet_id):
    own = replace(limited, rate_limit_withdraw="4/minute")
    ip = _client_ip()
    async with serving(own, "rl-a") as (_, a), serving(own, "rl-b") as (_, b):
        headers = {"X-Forwarded-For": ip}
        url = f"/v1/wallet/{wallet_id}"
        assert (await a.post(f"{url}/deposit", json={"amount": 10}, headers=headers)).status == 200
        statuses = []
        for client in (a, b, a, b, a, b):
            statuses.append(
                (await client.post(f"{url}/withdraw", json={"amount": 1}, headers=headers)).status
            )
        assert statuses == [200, 200, 200, 200, 429, 429]


async def test_without_a_trusted_proxy_the_peer_address_is_the_client(limited, wallet_id):
    own = replace(
        limited,
        rate_limit_trust_forwarded=False,
        rate_limit_default="3/minute",
        redis_key_prefix=f"rl-{uuid.uuid4().hex}",
    )
    async with serving(own) as (_, client):
        statuses = [
            (await client.get(f"/v1/wallet/{wallet_id}", headers={"X-Forwarded-For": _client_ip()})).status
            for _ in range(4)
        ]
        assert statuses == [404, 404, 404, 429]  # forged X-Forwarded-For values do not help


async def test_the_authenticated_principal_is_the_client(limited, wallet_id):
    own = replace(limited, rate_limit_default="2/minute")
    api = await start_api(own, name="rl-principal", run_migrations=False)
    try:
        app = api.app

        @web.middleware  # an authentication layer's stand-in
        async def authenticate(request, handler):
            request[PRINCIPAL] = request.headers["X-User"]
            return await handler(request)

        app.middlewares.insert(0, authenticate)
        user = f"user-{uuid.uuid4().hex[:8]}"
        async with TestClient(TestServer(app)) as client:
            ip = {"X-Forwarded-For": _client_ip()}
            same_user = [
                (await client.get(f"/v1/wallet/{wallet_id}", headers={"X-User": user, **ip})).status
                for _ in range(3)
            ]
            assert same_user == [404, 404, 429]
            other_user = await client.get(f"/v1/wallet/{wallet_id}", headers={"X-User": user + "x", **ip})
            assert other_user.status == 404  # same address, another principal
    finally:
        await api.stop()


async def test_redis_down_limits_are_kept_per_instance(limited, wallet_id):
    own = replace(limited, redis_url=closed_port_url(), rate_limit_default="3/minute")
    async with serving(own) as (_, client):
        headers = {"X-Forwarded-For": _client_ip()}
        statuses = [(await client.get(f"/v1/wallet/{wallet_id}", headers=headers)).status for _ in range(4)]
        assert statuses == [404, 404, 404, 429]


async def test_disabled_installs_nothing(settings, wallet_id):
    assert not settings.rate_limit_enabled
    assert rate_limiting(settings, Redis()) is None
    async with serving(settings) as (_, client):
        for _ in range(3):
            response = await client.get(f"/v1/wallet/{wallet_id}")
            assert response.status == 404
            assert "X-RateLimit-Limit" not in response.headers
        assert rate_limiting(settings, None) is None  # type: ignore[arg-type]
