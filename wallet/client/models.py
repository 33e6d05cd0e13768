"""What the client's methods return: small frozen dataclasses, amounts as ``Decimal``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

Amount = Decimal | int | str
"""An amount the client accepts: ``Decimal``, ``int`` or a decimal string (never a ``float``)."""

TERMINAL_TRANSFER_STATES = frozenset({"COMPLETED", "FAILED", "COMPENSATED"})


def to_amount(value: Amount, name: str = "amount") -> Decimal:
    """``value`` as a finite ``Decimal``, or ``TypeError``/``ValueError`` before anything is sent.

    Floats are refused: ``0.1`` is not one tenth, and money must not depend on binary rounding.
    The server checks the rest (positive, at most 2 decimal places, at most 10^12).
    """
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        hint = ""
        if isinstance(value, float):
            hint = f" (floats are inexact: pass Decimal({str(value)!r}) or the string {str(value)!r})"
        kind = type(value).__name__
        raise TypeError(f"{name} must be a Decimal, an int or a decimal string, not {kind}{hint}")
    try:
        amount = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{name} {value!r} is not a decimal number") from None
    if not amount.is_finite():
        raise ValueError(f"{name} must be a finite number, not {value!r}")
    return amount


def amount_json(value: Decimal) -> str:
    """An amount as the API's decimal string (exact; the API takes numbers or decimal strings)."""
    return format(value, "f")


def _decimal(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _optional_decimal(value: Any) -> Decimal | None:
    return None if value is None else _decimal(value)


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class Balance:
    """A deposit's or withdrawal's answer. ``replayed``: the stored answer of an earlier request
    with the same ``request_id`` (no second effect)."""

    wallet_id: str
    balance: Decimal
    request_id: str
    replayed: bool = False

    @classmethod
    def from_json(cls, body: dict[str, Any], request_id: str, replayed: bool) -> Balance:
        return cls(body["walletId"], _decimal(body["balance"]), request_id, replayed)


@dataclass(frozen=True, slots=True)
class Wallet:
    wallet_id: str
    balance: Decimal
    currency: str
    status: str  # ACTIVE, FROZEN or CLOSED
    version: int
    daily_withdrawal_limit: Decimal | None
    request_id: str
    replayed: bool = False

    @classmethod
    def from_json(cls, body: dict[str, Any], request_id: str, replayed: bool) -> Wallet:
        return cls(
            body["walletId"],
            _decimal(body["balance"]),
            body["currency"],
            body["status"],
            int(body["version"]),
            _optional_decimal(body.get("dailyWithdrawalLimit")),
            request_id,
            replayed,
        )


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One event of a wallet, oldest first. Transfer events name the saga and the other wallet in
    ``metadata``."""

    id: str
    event_type: str
    amount: Decimal | None
    metadata: dict[str, Any]
    created_at: datetime | None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> HistoryEntry:
        return cls(
            str(body["id"]),
            body["eventType"],
            _optional_decimal(body.get("amount")),
            body.get("metadata") or {},
            _timestamp(body.get("createdAt")),
        )


@dataclass(frozen=True, slots=True)
class Transfer:
    """A transfer (saga). ``state`` is terminal (COMPLETED) when ``WalletClient.transfer`` returns;
    ``get_transfer`` may show PENDING or DEBITED. ``error``/``reason``: why it FAILED or was
    COMPENSATED."""

    saga_id: str
    state: str
    from_wallet_id: str
    to_wallet_id: str
    amount: Decimal
    request_id: str
    replayed: bool = False
    currency: str | None = None
    error: str | None = None
    reason: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_TRANSFER_STATES

    @classmethod
    def from_json(cls, body: dict[str, Any], request_id: str, replayed: bool) -> Transfer:
        return cls(
            body["sagaId"],
            body["state"],
            body["fromWalletId"],
            body["toWalletId"],
            _decimal(body["amount"]),
            request_id,
            replayed,
            body.get("currency"),
            body.get("error"),
            body.get("reason"),
            _timestamp(body.get("createdAt")),
            _timestamp(body.get("updatedAt")),
        )


@dataclass(frozen=True, slots=True)
class FraudAlert:
    id: str
    wallet_id: str
    rule: str  # HIGH_VALUE_TRANSACTION, RAPID_WITHDRAWALS, ...
    severity: str
    event_id: str
    amount: Decimal | None
    currency: str | None
    reason: str
    details: dict[str, Any] = field(default_factory=dict)
    occurred_at: datetime | None = None
    created_at: datetime | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> FraudAlert:
        return cls(
            str(body["id"]),
            body["walletId"],
            body["rule"],
            body["severity"],
            str(body["eventId"]),
            _optional_decimal(body.get("amount")),
            body.get("currency"),
            body.get("reason") or "",
            body.get("details") or {},
            _timestamp(body.get("occurredAt")),
            _timestamp(body.get("createdAt")),
        )
