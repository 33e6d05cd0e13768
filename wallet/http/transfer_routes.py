"""Transfer routes: start a transfer (a saga) and read one back."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from wallet.actors.messages import Accepted, IdempotencyKey
from wallet.auth.principal import audit
from wallet.http.auth import current_principal
from wallet.http.context import BAD_REQUEST_ID, request_context
from wallet.http.errors import ApiError, validation_error
from wallet.http.rendering import renderer, respond
from wallet.http.schemas import SAGA_ID_PATTERN, TransferRequest
from wallet.http.validation import FastLoader, json_body, wallet_id_from
from wallet.http.wallet_routes import SERVICE
from wallet.service.replies import transfer_body, transfer_renderer, utc_timestamp

_TRANSFER = FastLoader(TransferRequest())


def _not_expected(outcome: Accepted) -> Any:  # transfers never render an Accepted via this path
    raise AssertionError("unexpected outcome")


async def transfer(request: web.Request) -> web.Response:
    from_wallet_id = wallet_id_from(request)
    ctx = request_context(request)
    if ctx.bad_request_id:
        raise validation_error(BAD_REQUEST_ID)
    data = await json_body(request, _TRANSFER)
    to_wallet_id = data["toWalletId"]
    if to_wallet_id == from_wallet_id:
        raise validation_error("toWalletId must differ from the source wallet")
    principal = current_principal(request)
    key = None
    if ctx.idempotency_key is not None:
        key_text = principal.scoped_key(ctx.idempotency_key)
        key = IdempotencyKey.for_request(key_text, "transfer", from_wallet_id, data)
    service = request.app[SERVICE]
    reply = await service.transfers.transfer(
        from_wallet_id,
        to_wallet_id,
        data["amount"],
        transfer_renderer(ctx.path, ctx.request_id),
        renderer(_not_expected, ctx),
        key,
        audit(principal, ctx.request_id),
    )
    return respond(reply, ctx)


async def get_transfer(request: web.Request) -> web.Response:
    ctx = request_context(request)
    saga_id = request.match_info["saga_id"]
    if not SAGA_ID_PATTERN.fullmatch(saga_id):  # uuid.UUID() also takes urn:uuid:, braces, no hyphens
        raise validation_error("sagaId must be a UUID (8-4-4-4-12 hexadecimal digits)")
    saga = await request.app[SERVICE].saga_store.get(saga_id)
    principal = current_principal(request)
    # Outside the principal's wallets on both sides: exactly as if it did not exist.
    if saga is None or not (
        principal.may_touch(saga.from_wallet_id) or principal.may_touch(saga.to_wallet_id)
    ):
        raise ApiError(404, "TransferNotFoundError", f"transfer {saga_id} not found")
    body = transfer_body(saga, saga.state) | {
        "currency": saga.currency,
        "error": saga.failure_error,
        "reason": saga.failure_reason,
        "createdAt": utc_timestamp(saga.created_at) if saga.created_at else None,
        "updatedAt": utc_timestamp(saga.updated_at) if saga.updated_at else None,
    }
    return web.json_response(body, headers={"X-Request-ID": ctx.request_id})


def add_routes(app: web.Application) -> None:
    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/wallet/{{id}}/transfer", transfer)
        app.router.add_get(f"{prefix}/transfers/{{saga_id}}", get_transfer)
