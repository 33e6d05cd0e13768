"""The reply bodies the service answers with, records under an X-Request-ID and replays.

They are the service's contract (API.md), not the HTTP layer's: a transfer that recovery finishes
records the same body a client waiting on it would have got, whether or not an HTTP app was ever
built in this process.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from wallet.actors.messages import Refused, Reply
from wallet.actors.transfer_coordinator import RenderTransfer, TransferResult
from wallet.auth.principal import request_id_of
from wallet.domain.money import to_json_number
from wallet.domain.saga import SagaState
from wallet.persistence.saga_store import SagaRecord


def utc_timestamp(at: datetime | None = None) -> str:
    at = at or datetime.now(UTC)
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error_body(status: int, name: str, message: str, path: str, request_id: str) -> dict[str, Any]:
    """API.md's error body."""
    return {
        "statusCode": status,
        "error": name,
        "message": message,
        "timestamp": utc_timestamp(),
        "path": path,
        "requestId": request_id,
    }


def transfer_body(saga: SagaRecord, state: SagaState) -> dict[str, Any]:
    return {
        "sagaId": saga.id,
        "state": state.value,
        "fromWalletId": saga.from_wallet_id,
        "toWalletId": saga.to_wallet_id,
        "amount": to_json_number(saga.amount),
    }


def transfer_renderer(path: str, request_id: str) -> RenderTransfer:
    """COMPLETED → 200; FAILED/COMPENSATED → the rule's status, with the saga id and state."""

    def render(result: TransferResult | Refused) -> Reply:
        if isinstance(result, Refused):
            return Reply(
                result.status, error_body(result.status, result.name, result.message, path, request_id)
            )
        body = transfer_body(result.saga, result.state)
        if result.state is SagaState.COMPLETED:
            return Reply(200, body)
        error = result.error
        status = error.status if error else 422
        name = error.name if error else "TransferFailedError"
        message = error.message if error else f"transfer {result.state.value.lower()}"
        return Reply(status, error_body(status, name, message, path, request_id) | body)

    return render


def recovery_renderer(saga: SagaRecord) -> RenderTransfer:
    """The renderer of a saga recovery finishes: the reply its client would have got."""
    request_id = request_id_of(saga.request_key) if saga.request_key else saga.id
    return transfer_renderer(f"/v1/wallet/{saga.from_wallet_id}/transfer", request_id)
