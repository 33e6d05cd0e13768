"""Pure parts of the edges: metric counters, the breaker, the cached view, client identity, the
middleware's cost, and the settings that configure them."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry, generate_latest

from wallet.config import Settings
from wallet.domain.wallet import WalletState, WalletStatus
from wallet.http.metrics import BUCKETS, RequestStats, ServiceCollector, observe_middleware
from wallet.http.rate_limit import PRINCIPAL, ClientRateLimiter
from wallet.http.rendering import wallet_body
from wallet.persistence.balance_cache import Breaker, create_redis, view_json


def test_request_stats_put_each_duration_in_its_bucket():
    stats = RequestStats()
    stats.observe("GET", "/v1/wallet/{id}", 200, 0.0004)
    stats.observe("GET", "/v1/wallet/{id}", 200, 0.001)  # on a bound: that bucket (le is <=)
    stats.observe("GET", "/v1/wallet/{id}", 200, 99.0)  # above the last bound: +Inf only
    series = stats.series[("GET", "/v1/wallet/{id}", 200)]
    assert series[0] == 0.0004 + 0.001 + 99.0
    assert series[1] == 1 and series[2] == 1 and series[-1] == 1
    assert sum(series[1:]) == 3
    assert len(series) == len(BUCKETS) + 2


def test_the_collector_renders_cumulative_histograms_and_needs_no_service():
    stats = RequestStats()
    for seconds in (0.0001, 0.002, 0.002, 3.0):
        stats.observe("POST", "/v1/wallet/{id}/deposit", 200, seconds)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(object(), stats))
    text = generate_latest(registry).decode()
    labels = 'method="POST",route="/v1/wallet/{id}/deposit",status="200"'
    assert f"wallet_http_requests_total{{{labels}}} 4.0" in text
    assert f'wallet_http_request_duration_seconds_bucket{{le="0.0005",{labels}}} 1.0' in text
    assert f'wallet_http_request_duration_seconds_bucket{{le="0.0025",{labels}}} 3.0' in text
    assert f'wallet_http_request_duration_seconds_bucket{{le="+Inf",{labels}}} 4.0' in text
    assert "wallet_live_wallet_actors" not in text  # absent, not made up, when the source is


def test_the_observing_middleware_costs_a_few_microseconds():
    async def measure() -> float:
        app = web.Application()

        async def handler(request: web.Request) -> web.StreamResponse:
            return response

        app.router.add_get("/v1/wallet/{id}", handler)
        request = make_mocked_request("GET", "/v1/wallet/abc", app=app)
        request._match_info = await app.router.resolve(request)
        response = web.Response(text="x")
        middleware = observe_middleware(RequestStats())
        n, best = 20_000, float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(n):
                await handler(request)
            bare = time.perf_counter() - started
            started = time.perf_counter()
            for _ in range(n):
                await middleware(request, handler)
            best = min(best, (time.perf_counter() - started - bare) / n)
        return best

    overhead = asyncio.run(measure())
    assert overhead < 10e-6, f"{overhead * 1e6:.1f} us per request"  # about 1-2 us on the dev machine


def test_breaker_pauses_grow_and_reset():
    now = [100.0]
    breaker = Breaker("x", clock=lambda: now[0])
    assert breaker.closed()
    breaker.failed(RuntimeError("down"))
    assert not breaker.closed()
    now[0] += 0.5
    assert breaker.closed()
    breaker.failed(RuntimeError("down"))  # still failing: a longer pause
    now[0] += 0.5
    assert not breaker.closed()
    now[0] += 0.5
    assert breaker.closed()
    breaker.succeeded()
    breaker.failed(RuntimeError("down"))
    now[0] += 0.5
    assert breaker.closed()  # back to the first pause
    for _ in range(20):
        breaker.failed(RuntimeError("down"))
    now[0] += 5.0
    assert breaker.closed()  # capped


def test_the_cached_view_is_exactly_the_get_body():
    state = WalletState("w-1", "USD", balance=10_010, version=3, status=WalletStatus.FROZEN, daily_limit=250)
    assert json.loads(view_json(state)) == wallet_body(state)
    assert view_json(state) == json.dumps(wallet_body(state), separators=(",", ":")).encode()


def test_client_identity(monkeypatch):
    settings = replace(Settings(), rate_limit_trust_forwarded=False)
    limiter = ClientRateLimiter(settings, create_redis(settings.redis_url, timeout_seconds=0.1))
    forwarded = {"X-Forwarded-For": "203.0.113.9, 10.0.0.1"}
    request = make_mocked_request("GET", "/v1/wallet/a", headers=forwarded)
    monkeypatch.setattr(type(request), "remote", property(lambda self: "192.0.2.7"))
    assert limiter.client_of(request) == "ip:192.0.2.7"  # the header is not trusted
    limiter.trust_forwarded = True
    assert limiter.client_of(request) == "ip:203.0.113.9"
    request[PRINCIPAL] = "alice"
    assert limiter.client_of(request) == "principal:alice"


def test_limits_and_edges_are_configurable_from_the_environment():
    settings = Settings.from_env(
        {
            "RATE_LIMIT_ENABLED": "false",
            "RATE_LIMIT_DEFAULT": "50/second",
            "RATE_LIMIT_WITHDRAW": "3/hour",
            "RATE_LIMIT_TRUST_FORWARDED": "true",
            "DATABASE_REPLICA_URLS": "postgresql://r1/w, postgresql://r2/w",
            "BALANCE_CACHE_ENABLED": "false",
            "BALANCE_CACHE_TTL_SECONDS": "60",
            "REDIS_KEY_PREFIX": "blue",
            "HEALTH_REQUIRED": "database, Redis",
            "HEALTH_TIMEOUT_SECONDS": "1.5",
            "LOG_FORMAT": "console",
        }
    )
    assert not settings.rate_limit_enabled
    assert (settings.rate_limit_default, settings.rate_limit_withdraw) == ("50/second", "3/hour")
    assert settings.rate_limit_trust_forwarded
    assert settings.database_replica_urls == ("postgresql://r1/w", "postgresql://r2/w")
    assert not settings.balance_cache_enabled and settings.balance_cache_ttl_seconds == 60
    assert settings.redis_key_prefix == "blue"
    assert settings.health_required == ("database", "redis")
    assert settings.health_timeout_seconds == 1.5
    assert settings.log_format == "console"
    defaults = Settings.from_env({})
    assert defaults.rate_limit_enabled and defaults.rate_limit_withdraw == "10/minute"
    assert defaults.rate_limit_default == "100/minute"
    assert defaults.health_required == ("database", "rabbitmq", "redis")
