"""The fraud worker's HTTP port behind the API's authentication (API.md): ``/health/live`` open,
the detailed ``/health`` and ``/metrics`` for ``ops:read``, with the API's answers (401 with
``WWW-Authenticate``, 403, 429 for an address that keeps failing). The same step as the API's
(``wallet.http.auth``), so both ports keep one policy."""

from __future__ import annotations

import logging
from dataclasses import replace

import asyncpg
from aiohttp import web

from wallet.auth.authenticator import Authenticator
from wallet.config import Settings
from wallet.http.auth import authentication
from wallet.http.chain import Handler
from wallet.http.errors import answer_errors
from wallet.persistence.api_key_store import ApiKeyStore
from wallet.persistence.balance_cache import create_redis

log = logging.getLogger(__name__)


def guard_worker_app(app: web.Application, settings: Settings, pool: asyncpg.Pool) -> None:
    """Put ``app`` (the worker's health and metrics) behind authentication, unless
    ``AUTH_ENABLED=false``. API keys are looked up in ``pool``'s database; failed attempts are
    counted in Redis (in this process's memory while Redis is away)."""
    if not settings.auth_enabled:
        log.warning(
            "AUTH_ENABLED=false: the worker's /health and /metrics are open to anyone who can reach the port"
        )
        return
    authenticator = Authenticator.from_settings(settings, ApiKeyStore(pool))
    redis = create_redis(settings.redis_url, timeout_seconds=settings.redis_timeout_seconds)
    # No proxy stands in front of this port: X-Forwarded-For is whatever the caller wrote, so the
    # failed attempts count against the peer's own address whatever the API's setting.
    direct = replace(settings, rate_limit_trust_forwarded=False)
    step = authentication(direct, authenticator, redis, then=answer_errors)

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await step(request, handler)

    async def start(_app: web.Application) -> None:
        authenticator.start()  # the API key revocation check

    async def stop(_app: web.Application) -> None:
        await authenticator.stop()
        await redis.aclose(close_connection_pool=True)

    app.middlewares.append(authenticate)
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
