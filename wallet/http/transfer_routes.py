"""Transfer routes: start a transfer (a saga) and read one back."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from wallet.actors.messages import Accepted, IdempotencyKey, Refused, Reply
from wallet.actors.transfer_coordinator import RenderTransfer, TransferResult
from wallet.domain.money import to_json_number
from wallet.domain.saga import SagaState
from wallet.http.context import RequestContext, request_context
from wallet.http.errors import ApiError, error_body, utc_timestamp, validation_error
from wallet.http.rendering import renderer, respond
from wallet.http.schemas import TransferRequest
from wallet.http.validation import FastLoader, json_body, wallet_id_from
from wallet.http.wallet_routes import SERVICE
from wallet.persistence.saga_store import SagaRecord
from wallet.service.idempotency import fingerprint

_TRANSFER = FastLoader(TransferRequest())


def transfer_body(saga: SagaRecord, state: SagaState) -> dict[str, Any]:
    return {
        "sagaId": saga.id,
        "state": state.value,
        "fromWalletId": saga.from_wallet_id,
        "toWalletId": saga.to_wallet_id,
        "amount": to_json_number(saga.amount),
    }


def transfer_renderer(ctx: RequestContext) -> RenderTransfer:
    """COMPLETED → 200; FAILED/COMPENSATED → the rule's status, with the saga id and state."""

    def render(result: TransferResult | Refused) -> Reply:
        if isinstance(result, Refused):
            return Reply(
                result.status,
                error_body(result.status, result.name, result.message, ctx.path, ctx.request_id),
            )
        body = transfer_body(result.saga, result.state)
        if result.state is SagaState.COMPLETED:
            return Reply(200, body)
        error = result.error
        status = error.status if error else 422
        name = error.name if error else "TransferFailedError"
        message = error.message if error else f"transfer {result.state.value.lower()}"
        return Reply(status, error_body(status, name, message, ctx.path, ctx.request_id) | body)

    return render


def recovery_renderer(saga: SagaRecord) -> RenderTransfer:
    ctx = RequestContext(
        f"/v1/wallet/{saga.from_wallet_id}/transfer", saga.request_key or saga.id, saga.request_key
    )
    return transfer_renderer(ctx)


def _not_expected(outcome: Accepted) -> Any:  # transfers never render an Accepted via this path
    raise AssertionError("unexpected outcome")


async def transfer(request: web.Request) -> web.Response:
    from_wallet_id = wallet_id_from(request)
    ctx = request_context(request)
    if ctx.bad_request_id:
        raise validation_error("X-Request-ID must be 1-255 characters")
    data = await json_body(request, _TRANSFER)
    to_wallet_id = data["toWalletId"]
    if to_wallet_id == from_wallet_id:
        raise validation_error("toWalletId must differ from the source wallet")
    key = None
    if ctx.idempotency_key is not None:
        key = IdempotencyKey(ctx.idempotency_key, fingerprint("transfer", from_wallet_id, data))
    service = request.app[SERVICE]
    reply = await service.transfers.transfer(
        from_wallet_id,
        to_wallet_id,
        data["amount"],
        transfer_renderer(ctx),
        renderer(_not_expected, ctx),
        key,
    )
    return respond(reply, ctx)


async def get_transfer(request: web.Request) -> web.Response:
    ctx = request_context(request)
    saga_id = request.match_info["saga_id"]
    try:
        uuid.UUID(saga_id)
    except ValueError:
        raise validation_error("sagaId must be a UUID") from None
    saga = await request.app[SERVICE].saga_store.get(saga_id)
    if saga is None:
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
