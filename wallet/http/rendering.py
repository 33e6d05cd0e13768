"""Outcomes to replies, replies to aiohttp responses. Amounts leave as exact JSON numbers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from wallet.actors.messages import Accepted, Outcome, Refused, Rejected, Reply
from wallet.domain.money import to_json_number
from wallet.domain.wallet import WalletState
from wallet.http.context import RequestContext
from wallet.persistence.read_model import HistoryEntry, WalletView
from wallet.service.replies import error_body, utc_timestamp


def balance_body(state: WalletState) -> dict[str, Any]:
    return {"walletId": state.wallet_id, "balance": to_json_number(state.balance)}


def wallet_body(state: WalletState | WalletView) -> dict[str, Any]:
    limit = state.daily_limit
    return {
        "walletId": state.wallet_id,
        "balance": to_json_number(state.balance),
        "currency": state.currency,
        "status": str(state.status),
        "version": state.version,
        "dailyWithdrawalLimit": None if limit is None else to_json_number(limit),
    }


def history_body(entries: list[HistoryEntry]) -> list[dict[str, Any]]:
    return [
        {
            "id": e.id,
            "eventType": e.event_type,
            "amount": None if e.amount is None else to_json_number(e.amount),
            "metadata": e.metadata,
            "createdAt": utc_timestamp(e.created_at),
        }
        for e in entries
    ]


Render = Callable[[Outcome], Reply]


def renderer(success: Callable[[Accepted], Any], ctx: RequestContext) -> Render:
    """The function a wallet actor calls to turn an outcome into this request's reply."""

    def render(outcome: Outcome) -> Reply:
        if isinstance(outcome, Accepted):
            return Reply(200, success(outcome))
        if isinstance(outcome, Rejected):
            error = outcome.error
            return Reply(
                error.status, error_body(error.status, error.name, error.message, ctx.path, ctx.request_id)
            )
        assert isinstance(outcome, Refused)
        body = error_body(outcome.status, outcome.name, outcome.message, ctx.path, ctx.request_id)
        return Reply(outcome.status, body)

    return render


def respond(reply: Reply, ctx: RequestContext) -> web.Response:
    headers = {"X-Request-ID": ctx.request_id}
    if reply.replayed:
        headers["Idempotent-Replayed"] = "true"
    if reply.status == 503:
        headers["Retry-After"] = "1"
    return web.Response(
        status=reply.status,
        body=orjson.dumps(reply.body),
        content_type="application/json",
        headers=headers,
    )
