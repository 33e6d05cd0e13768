"""The ceiling: a bare aiohttp app doing the least a wallet handler must (read and parse a JSON body
exactly, answer JSON). Run alone in its own process: ``python -m wallet.bench.ceiling --port N``,
on the event loop the service runs on (``EVENT_LOOP``), so a ratio compares the service's own work."""

from __future__ import annotations

import argparse
import asyncio
import json
from decimal import Decimal

from aiohttp import web

from wallet.config import Settings
from wallet.event_loop import loop_factory


async def deposit(request: web.Request) -> web.Response:
    payload = json.loads(await request.read(), parse_float=Decimal)
    if not isinstance(payload, dict) or "amount" not in payload:
        raise web.HTTPBadRequest()
    return web.json_response({"walletId": request.match_info["wallet_id"], "balance": 1})


async def get_wallet(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "walletId": request.match_info["wallet_id"],
            "balance": 1,
            "currency": "USD",
            "status": "ACTIVE",
            "version": 1,
        }
    )


async def ready(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})  # the router's health check (bench --instances)


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/health/ready", ready)
    app.router.add_post("/wallet/{wallet_id}/deposit", deposit)
    app.router.add_get("/wallet/{wallet_id}", get_wallet)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m wallet.bench.ceiling")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", default=Settings.from_env().event_loop)
    args = parser.parse_args(argv)
    try:
        factory = loop_factory(args.loop) or asyncio.new_event_loop
    except ValueError as exc:  # an unknown loop, or uvloop missing
        parser.error(str(exc))
    web.run_app(make_app(), host=args.host, port=args.port, access_log=None, print=None, loop=factory())


if __name__ == "__main__":
    main()
