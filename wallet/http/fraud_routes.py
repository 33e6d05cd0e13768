"""Fraud routes: the alerts the fraud worker raised, newest first."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from wallet.domain.money import to_json_number
from wallet.fraud.store import FraudStore, StoredAlert
from wallet.http.auth import current_principal
from wallet.http.context import request_context
from wallet.http.errors import validation_error
from wallet.http.schemas import WALLET_ID_PATTERN
from wallet.http.validation import int_query
from wallet.http.wallet_routes import SERVICE
from wallet.service.replies import utc_timestamp


def alert_body(alert: StoredAlert) -> dict[str, Any]:
    return {
        "id": str(alert.id),
        "walletId": alert.wallet_id,
        "rule": alert.rule,
        "severity": alert.severity,
        "eventId": str(alert.event_id),
        "amount": None if alert.amount is None else to_json_number(alert.amount),
        "currency": alert.currency,
        "reason": alert.reason,
        "details": alert.details,
        "occurredAt": utc_timestamp(alert.occurred_at),
        "createdAt": utc_timestamp(alert.created_at),
    }


async def list_alerts(request: web.Request) -> web.Response:
    ctx = request_context(request)
    wallet_id = request.query.get("walletId")  # given but empty is refused, as documented
    if wallet_id is not None and not WALLET_ID_PATTERN.fullmatch(wallet_id):
        raise validation_error("walletId must be 1-64 characters of [A-Za-z0-9_.:-]")
    limit = int_query(request, "limit", 100, 1, 1000)
    wallets = current_principal(request).wallets
    if wallet_id is not None and not wallets.allows(wallet_id):
        alerts = []  # another principal's wallet: the same as one without alerts
    else:
        within = None if wallets.everything else (sorted(wallets.exact), list(wallets.prefixes))
        alerts = await FraudStore(request.app[SERVICE].pool).alerts(wallet_id, limit, within)
    return web.json_response([alert_body(a) for a in alerts], headers={"X-Request-ID": ctx.request_id})


def add_routes(app: web.Application) -> None:
    for prefix in ("/v1", ""):
        app.router.add_get(f"{prefix}/fraud/alerts", list_alerts)
