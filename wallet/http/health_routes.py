"""Health: liveness (the process answers) and readiness (its dependencies answer in time)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from wallet.http.wallet_routes import SERVICE

CHECK_TIMEOUT_SECONDS = 2.0


async def _check_database(request: web.Request) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            async with request.app[SERVICE].pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
    except Exception as exc:
        return {"status": "down", "message": repr(exc)[:200]}
    return {"status": "up", "responseTime": round((time.perf_counter() - started) * 1000)}


async def live(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    checks = {"database": await _check_database(request)}
    up = {k: v for k, v in checks.items() if v["status"] == "up"}
    down = {k: v for k, v in checks.items() if v["status"] != "up"}
    body = {"status": "ok" if not down else "error", "info": up, "error": down, "details": checks}
    return web.json_response(body, status=200 if not down else 503)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health", ready)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/health/live", live)
