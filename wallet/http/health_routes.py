"""Health: liveness (the process answers) and readiness (its dependencies answer in time)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from wallet.http.openapi import operation
from wallet.http.schemas import HealthResponse
from wallet.http.wallet_routes import SERVICE

CHECK_TIMEOUT_SECONDS = 2.0  # the default of settings.health_timeout_seconds


def _failure(exc: BaseException) -> str:
    """The kind of failure only: an exception's text or repr names hosts, ports and objects."""
    return "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__


def _timeout(request: web.Request) -> float:
    return request.app[SERVICE].settings.health_timeout_seconds


async def _check_database(request: web.Request) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(_timeout(request)):
            async with request.app[SERVICE].pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
    except Exception as exc:
        return {"status": "down", "message": _failure(exc)}
    return {"status": "up", "responseTime": round((time.perf_counter() - started) * 1000)}


async def _check_redis(request: web.Request) -> dict[str, Any]:
    """A real PING on the service's Redis client (balance cache, rate limits), never its breaker."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(_timeout(request)):
            await request.app[SERVICE].read_side.redis.ping()
    except Exception as exc:
        return {"status": "down", "message": _failure(exc)}
    return {"status": "up", "responseTime": round((time.perf_counter() - started) * 1000)}


async def _check_rabbitmq(request: web.Request) -> dict[str, Any]:
    """A real round trip to the broker (the outbox relay's probe connection), and the outbox lag."""
    started = time.perf_counter()
    outbox = request.app[SERVICE].outbox
    try:
        async with asyncio.timeout(_timeout(request)):
            await outbox.ping()
    except Exception as exc:
        lag = round(outbox.lag_seconds, 3)
        return {"status": "down", "message": _failure(exc), "outboxLagSeconds": lag}
    elapsed = round((time.perf_counter() - started) * 1000)
    return {"status": "up", "responseTime": elapsed, "outboxLagSeconds": round(outbox.lag_seconds, 3)}


@operation(
    summary="Liveness: the process answers", tags=["health"], path=None, response=HealthResponse, errors=()
)
async def live(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@operation(
    summary="Readiness: PostgreSQL, RabbitMQ and Redis answer in time (503 when a required one does not)",
    tags=["health"],
    path=None,
    response=HealthResponse,
    errors=(),
    responses={"503": {"description": "A required dependency is down", "schema": HealthResponse}},
)
async def ready(request: web.Request) -> web.Response:
    # Every check runs at once, each bounded by its timeout: the answer never hangs.
    pending = {
        "database": _check_database(request),
        "rabbitmq": _check_rabbitmq(request),
        "redis": _check_redis(request),
    }
    checks = dict(zip(pending, await asyncio.gather(*pending.values()), strict=True))
    required = set(request.app[SERVICE].settings.health_required)
    up = {k: v for k, v in checks.items() if v["status"] == "up"}
    down = {k: v for k, v in checks.items() if v["status"] != "up"}
    failed = any(k in required for k in down)  # an optional one down is reported, not fatal
    body = {"status": "error" if failed else "ok", "info": up, "error": down, "details": checks}
    return web.json_response(body, status=503 if failed else 200)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health", ready)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/health/live", live)
