"""Wallet routes: translate HTTP into commands and reads, and replies back into HTTP."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from wallet.actors.messages import Accepted, IdempotencyKey
from wallet.auth.principal import audit
from wallet.domain.commands import Close, Deposit, Freeze, SetDailyLimit, Unfreeze, WalletCommand, Withdraw
from wallet.http.auth import current_principal
from wallet.http.context import BAD_REQUEST_ID, request_context
from wallet.http.errors import ApiError, validation_error
from wallet.http.openapi import operation
from wallet.http.rendering import balance_body, history_body, renderer, respond, wallet_body
from wallet.http.schemas import (
    MAX_HISTORY_OFFSET,
    BalanceResponse,
    DepositRequest,
    HistoryItem,
    HistoryQuery,
    LifecycleRequest,
    LimitsRequest,
    WalletResponse,
    WithdrawRequest,
)
from wallet.http.validation import FastLoader, int_query, json_body, wallet_id_from
from wallet.service import WalletService

Handler = Callable[[web.Request], Awaitable[web.Response]]

SERVICE = web.AppKey("wallet_service", WalletService)

_DEPOSIT = FastLoader(DepositRequest())
_WITHDRAW = FastLoader(WithdrawRequest())
_LIFECYCLE = FastLoader(LifecycleRequest())
_LIMITS = FastLoader(LimitsRequest())


def _balance(outcome: Accepted) -> dict[str, Any]:
    return balance_body(outcome.state)


def _wallet(outcome: Accepted) -> dict[str, Any]:
    return wallet_body(outcome.state)


async def _run(
    request: web.Request,
    operation: str,
    command: WalletCommand,
    params: dict[str, Any],
    success: Any,
) -> web.Response:
    ctx = request_context(request)
    if ctx.bad_request_id:
        raise validation_error(BAD_REQUEST_ID)
    wallet_id = request.match_info["id"]
    principal = current_principal(request)
    key = None
    if ctx.idempotency_key is not None:
        key_text = principal.scoped_key(ctx.idempotency_key)
        key = IdempotencyKey.for_request(key_text, operation, wallet_id, params)
    service = request.app[SERVICE]
    reply = await service.execute(
        wallet_id, command, renderer(success, ctx), key, audit(principal, ctx.request_id)
    )
    return respond(reply, ctx)


def _now() -> datetime:
    return datetime.now(UTC)


@operation(
    summary="Deposit (the first deposit creates the wallet)",
    body=DepositRequest,
    response=BalanceResponse,
    errors=(400, 409, 422, 429, 500, 503),
    idempotent_key=True,
)
async def deposit(request: web.Request) -> web.Response:
    wallet_id_from(request)
    data = await json_body(request, _DEPOSIT)
    service = request.app[SERVICE]
    command = Deposit(
        amount=data["amount"],
        at=_now(),
        currency=data.get("currency"),
        currency_if_new=service.settings.default_currency,
    )
    return await _run(request, "deposit", command, data, _balance)


@operation(
    summary="Withdraw",
    body=WithdrawRequest,
    response=BalanceResponse,
    errors=(400, 404, 409, 422, 429, 500, 503),
    idempotent_key=True,
)
async def withdraw(request: web.Request) -> web.Response:
    wallet_id_from(request)
    data = await json_body(request, _WITHDRAW)
    return await _run(request, "withdraw", Withdraw(data["amount"], _now()), data, _balance)


def _lifecycle_route(
    operation_name: str, summary: str, command: type[Freeze] | type[Unfreeze] | type[Close]
) -> Handler:
    """freeze, unfreeze and close: the same shape, a reason in, the wallet out."""

    @operation(
        summary=summary,
        body=LifecycleRequest,
        response=WalletResponse,
        errors=(400, 404, 409, 422, 429, 500, 503),
        idempotent_key=True,
    )
    async def handler(request: web.Request) -> web.Response:
        wallet_id_from(request)
        data = await json_body(request, _LIFECYCLE)
        return await _run(request, operation_name, command(data["reason"], _now()), data, _wallet)

    handler.__name__ = operation_name
    return handler


freeze = _lifecycle_route("freeze", "Freeze", Freeze)
unfreeze = _lifecycle_route("unfreeze", "Unfreeze", Unfreeze)
close = _lifecycle_route("close", "Close", Close)


@operation(
    summary="Set or remove the daily withdrawal limit",
    body=LimitsRequest,
    response=WalletResponse,
    errors=(400, 404, 409, 422, 429, 500, 503),
    idempotent_key=True,
)
async def set_limits(request: web.Request) -> web.Response:
    wallet_id_from(request)
    data = await json_body(request, _LIMITS)
    command = SetDailyLimit(data["dailyWithdrawalLimit"], _now())
    return await _run(request, "limits", command, data, _wallet)


@operation(
    summary="A wallet: balance, currency, status, version",
    response=WalletResponse,
    errors=(400, 404, 429, 500),
)
async def get_wallet(request: web.Request) -> web.Response:
    wallet_id = wallet_id_from(request)
    ctx = request_context(request)
    body = await request.app[SERVICE].read_side.wallet_json(wallet_id)  # cache, replica, primary
    if body is None:
        raise ApiError(404, "WalletNotFoundError", f"wallet {wallet_id} not found")
    return web.Response(body=body, content_type="application/json", headers={"X-Request-ID": ctx.request_id})


@operation(
    summary="A wallet's events, oldest first",
    query=HistoryQuery,
    response=HistoryItem(many=True),
    errors=(400, 404, 429, 500),
)
async def history(request: web.Request) -> web.Response:
    wallet_id = wallet_id_from(request)
    ctx = request_context(request)
    limit = int_query(request, "limit", 100, 1, 1000)
    offset = int_query(request, "offset", 0, 0, MAX_HISTORY_OFFSET)
    entries = await request.app[SERVICE].read_side.history(wallet_id, limit, offset)
    if entries is None:
        raise ApiError(404, "WalletNotFoundError", f"wallet {wallet_id} not found")
    return web.json_response(history_body(entries), headers={"X-Request-ID": ctx.request_id})


def add_routes(app: web.Application) -> None:
    for prefix in ("/v1", ""):
        # The balance read first: aiohttp tries a prefix's routes in order (the hottest GET).
        app.router.add_get(f"{prefix}/wallet/{{id}}", get_wallet)
        app.router.add_post(f"{prefix}/wallet/{{id}}/deposit", deposit)
        app.router.add_post(f"{prefix}/wallet/{{id}}/withdraw", withdraw)
        app.router.add_post(f"{prefix}/wallet/{{id}}/freeze", freeze)
        app.router.add_post(f"{prefix}/wallet/{{id}}/unfreeze", unfreeze)
        app.router.add_post(f"{prefix}/wallet/{{id}}/close", close)
        app.router.add_put(f"{prefix}/wallet/{{id}}/limits", set_limits)
        app.router.add_get(f"{prefix}/wallet/{{id}}/history", history)
