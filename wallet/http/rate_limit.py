"""Rate limiting per client, shared through Redis so it holds across instances (API.md).

The counting is the ``limits`` library's (moving window by default, one Lua call per hit); this
module only decides who the client is, which limits a route has, and how the answer looks:
``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (seconds until a slot
frees) on every limited route, and 429 ``RateLimitExceededError`` with ``Retry-After``.

- Client: the authenticated principal (``request[PRINCIPAL]``, set by an authentication layer)
  if any, else the peer IP; the first ``X-Forwarded-For`` address only when
  ``RATE_LIMIT_TRUST_FORWARDED`` says a trusted proxy sets it (or a test does).
- Limits: every API route counts against the overall limit (100/minute); withdrawals also against
  theirs (10/minute), checked first so a refused withdrawal does not use an overall slot. Health,
  metrics and the API documentation are not limited.
- Redis down: the counting falls back to this instance's memory until Redis answers again (a
  breaker), so requests are still limited, per instance, and never fail for it.
- ``RATE_LIMIT_ENABLED=false``: the middleware is not installed at all (zero cost).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import STRATEGIES, RateLimiter
from redis.asyncio import Redis

from wallet.config import Settings
from wallet.http.chain import Handler, Step, call_handler
from wallet.http.errors import error_response
from wallet.persistence.balance_cache import Breaker

PRINCIPAL = web.RequestKey("wallet_principal", str)
UNLIMITED_PREFIXES = ("/health", "/metrics", "/api")
ERROR_NAME = "RateLimitExceededError"


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    item: RateLimitItem


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int  # until the window frees a slot


class ClientRateLimiter:
    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.trust_forwarded = settings.rate_limit_trust_forwarded
        self.overall = Rule("all", parse(settings.rate_limit_default))
        self.withdraw = Rule("withdraw", parse(settings.rate_limit_withdraw))
        strategy: Any = STRATEGIES[settings.rate_limit_strategy]
        storage = RedisStorage(
            "async+" + settings.redis_url,
            implementation="redispy",
            key_prefix=f"{settings.redis_key_prefix}:ratelimit",
            wrap_exceptions=True,
            connection_pool=redis.connection_pool,  # type: ignore[arg-type]
        )
        self._shared: RateLimiter = strategy(storage)
        self._local: RateLimiter = strategy(MemoryStorage())
        self.breaker = Breaker("redis rate limits")
        self._rules: dict[str, tuple[Rule, ...]] = {}

    def rules_for(self, request: web.Request) -> tuple[Rule, ...]:
        resource = request.match_info.route.resource
        path = resource.canonical if resource is not None else ""
        rules = self._rules.get(path)
        if rules is None:
            if path.startswith(UNLIMITED_PREFIXES):
                rules = ()
            elif path.endswith("/withdraw"):
                rules = (self.withdraw, self.overall)
            else:
                rules = (self.overall,)
            self._rules[path] = rules
        return rules

    def client_of(self, request: web.Request) -> str:
        principal = request.get(PRINCIPAL)
        if principal:
            return f"principal:{principal}"
        if self.trust_forwarded:
            forwarded = request.headers.get("X-Forwarded-For")
            if forwarded:
                return "ip:" + forwarded.split(",", 1)[0].strip()
        return f"ip:{request.remote or 'unknown'}"

    async def check(self, rules: tuple[Rule, ...], client: str) -> Verdict:
        if self.breaker.closed():
            try:
                verdict = await self._check(self._shared, rules, client)
            except Exception as exc:
                self.breaker.failed(exc)
            else:
                self.breaker.succeeded()
                return verdict
        return await self._check(self._local, rules, client)

    @staticmethod
    async def _check(limiter: RateLimiter, rules: tuple[Rule, ...], client: str) -> Verdict:
        """Hit each limit in turn (the first refusal stops); report the tightest."""
        tightest: Verdict | None = None
        for rule in rules:
            allowed = await limiter.hit(rule.item, rule.name, client)
            stats = await limiter.get_window_stats(rule.item, rule.name, client)
            verdict = Verdict(
                allowed,
                rule.item.amount,
                max(0, stats.remaining),
                max(0, math.ceil(stats.reset_time - time.time())),
            )
            if not allowed:
                return verdict
            if tightest is None or verdict.remaining < tightest.remaining:
                tightest = verdict
        assert tightest is not None
        return tightest


def _headers(response: web.StreamResponse, verdict: Verdict) -> None:
    headers = response.headers
    headers["X-RateLimit-Limit"] = str(verdict.limit)
    headers["X-RateLimit-Remaining"] = str(verdict.remaining)
    headers["X-RateLimit-Reset"] = str(verdict.reset_seconds)


def rate_limit_step(limiter: ClientRateLimiter, then: Step) -> Step:
    """A step of the chain (``wallet.http.chain``): refuse over-limit requests (429), else run
    ``then``; the rate-limit headers go on every answer, errors included."""

    async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        rules = limiter.rules_for(request)
        if not rules:
            return await then(request, handler)
        verdict = await limiter.check(rules, limiter.client_of(request))
        if not verdict.allowed:
            retry_after = max(1, verdict.reset_seconds)
            response: web.StreamResponse = error_response(
                request, 429, ERROR_NAME, f"rate limit of {verdict.limit} exceeded; retry in {retry_after}s"
            )
            response.headers["Retry-After"] = str(retry_after)
        else:
            response = await then(request, handler)
        if not response.prepared:
            _headers(response, verdict)
        return response

    return rate_limit


def rate_limiting(settings: Settings, redis: Redis, then: Step = call_handler) -> Step | None:
    """The rate-limit step, running ``then`` inside it, when rate limiting is on; else None."""
    if not settings.rate_limit_enabled:
        return None
    return rate_limit_step(ClientRateLimiter(settings, redis), then)
