"""The fraud worker's HTTP port behind the API's authentication (API.md): ``/health/live`` open,
the detailed ``/health`` and ``/metrics`` for ``ops:read``, with the API's answers (401 with
``WWW-Authenticate``, 403, 429 for an address that keeps failing). The same step as the API's
(``wallet.http.auth``), so both ports keep one policy."""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from wallet.auth.authenticator import Authenticator
from wallet.config import Settings
from wallet.http.auth import authentication
from wallet.http.chain import Handler
from wallet.http.errors import answer_errors
from wallet.persistence.balance_cache import create_redis


def guard_worker_app(app: web.Application, settings: Settings, authenticator: Authenticator | None) -> None:
    """Put ``app`` (the worker's health and metrics) behind ``authenticator`` (None: left open,
    ``AUTH_ENABLED=false``, which the builder of the authenticator logs). Failed attempts are
    counted in Redis (in this process's memory while Redis is away)."""
    if authenticator is None:
        return
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
