"""Message bodies of the event stream, parsed exactly (amounts as Decimal, never float). No I/O.

Wallet events (published by the outbox relay, format in docs/EVENTS.md) and fraud alert events
(published by the fraud worker, consumed by the API's auto-freeze).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from wallet.domain.money import MINOR_UNITS_PER_MAJOR, to_json_number
from wallet.fraud.rules import Movement


class MalformedMessageError(ValueError):
    """A body that is not the expected JSON document; retrying will not fix it."""


@dataclass(frozen=True, slots=True)
class WalletEventMessage:
    event_id: uuid.UUID
    event_type: str
    wallet_id: str
    amount: int | None  # cents
    currency: str | None
    version: int
    occurred_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)

    def movement(self) -> Movement | None:
        """The event as the rules see it; None for events that move no money."""
        if self.amount is None:
            return None
        return Movement(
            event_id=str(self.event_id),
            wallet_id=self.wallet_id,
            event_type=self.event_type,
            amount=self.amount,
            occurred_at=self.occurred_at,
            version=self.version,
            currency=self.currency,
        )


def _reject_constant(token: str) -> Any:
    raise MalformedMessageError(f"{token} is not a number")


# One decoder for every message (``json.loads`` with options builds a new one per call).
_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_reject_constant)


def _load(body: bytes) -> dict[str, Any]:
    try:
        data = _DECODER.decode(body.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedMessageError(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedMessageError("body is not a JSON object")
    return data


def amount_to_cents(value: Any) -> int | None:
    """A JSON amount in major units (Decimal, int or decimal string) as exact cents."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise MalformedMessageError("amount must be a number")
    try:
        number = Decimal(value) if isinstance(value, (int, str)) else value
    except InvalidOperation:
        raise MalformedMessageError(f"amount {value!r} is not a number") from None
    if not isinstance(number, Decimal) or not number.is_finite():
        raise MalformedMessageError(f"amount {value!r} is not a number")
    cents = number * MINOR_UNITS_PER_MAJOR
    if cents != cents.to_integral_value() or cents < 0:
        raise MalformedMessageError(f"amount {value!r} is not a non-negative number of cents")
    return int(cents)


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise MalformedMessageError(f"{name} must be a non-empty string")
    return value


def _timestamp(data: dict[str, Any], name: str) -> datetime:
    try:
        at = datetime.fromisoformat(_text(data, name))
    except ValueError:
        raise MalformedMessageError(f"{name} is not an ISO 8601 timestamp") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _uuid(data: dict[str, Any], name: str) -> uuid.UUID:
    try:
        return uuid.UUID(_text(data, name))
    except ValueError:
        raise MalformedMessageError(f"{name} is not a UUID") from None


def parse_wallet_event(body: bytes) -> WalletEventMessage:
    data = _load(body)
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise MalformedMessageError("version must be a positive integer")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise MalformedMessageError("metadata must be an object")
    currency = data.get("currency")
    return WalletEventMessage(
        event_id=_uuid(data, "eventId"),
        event_type=_text(data, "eventType"),
        wallet_id=_text(data, "walletId"),
        amount=amount_to_cents(data.get("amount")),
        currency=currency if isinstance(currency, str) else None,
        version=version,
        occurred_at=_timestamp(data, "occurredAt"),
        metadata=metadata,
    )


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class AlertMessage:
    """A fraud alert as published on the exchange (routing key ``fraud.alert.<severity>``)."""

    alert_id: uuid.UUID
    rule: str
    severity: str
    wallet_id: str
    event_id: uuid.UUID
    amount: int | None  # cents
    currency: str | None
    reason: str
    occurred_at: datetime

    def to_json(self) -> bytes:
        body = {
            "alertId": str(self.alert_id),
            "rule": self.rule,
            "severity": self.severity,
            "walletId": self.wallet_id,
            "eventId": str(self.event_id),
            "amount": None if self.amount is None else to_json_number(self.amount),
            "currency": self.currency,
            "reason": self.reason,
            "occurredAt": _iso(self.occurred_at),
        }
        return json.dumps(body, separators=(",", ":")).encode()


def parse_alert(body: bytes) -> AlertMessage:
    data = _load(body)
    currency = data.get("currency")
    return AlertMessage(
        alert_id=_uuid(data, "alertId"),
        rule=_text(data, "rule"),
        severity=_text(data, "severity"),
        wallet_id=_text(data, "walletId"),
        event_id=_uuid(data, "eventId"),
        amount=amount_to_cents(data.get("amount")),
        currency=currency if isinstance(currency, str) else None,
        reason=_text(data, "reason"),
        occurred_at=_timestamp(data, "occurredAt"),
    )
