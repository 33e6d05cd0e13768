"""Commands: what a client asks of one wallet. Each carries the instant it was issued."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Deposit:
    """``currency``, when given, must be the wallet's; a new wallet takes it, else ``currency_if_new``."""

    amount: int
    at: datetime
    currency: str | None = None
    currency_if_new: str = "USD"


@dataclass(frozen=True, slots=True)
class Withdraw:
    amount: int
    at: datetime


@dataclass(frozen=True, slots=True)
class Freeze:
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Unfreeze:
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Close:
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class SetDailyLimit:
    limit: int | None
    at: datetime


@dataclass(frozen=True, slots=True)
class NewSaga:
    """What a saga's row records beside its state, when its debit writes the row."""

    from_wallet_id: str
    to_wallet_id: str
    amount: int
    request_key: str | None = None  # the transfer's X-Request-ID, held by the row
    request_fingerprint: str | None = None


@dataclass(frozen=True, slots=True)
class DebitForTransfer:
    """Saga step 1 on the source wallet. ``creates``: the saga has no row yet, and the debit's
    flush writes this one, in the state the debit leads to (a saga recovery found PENDING has one)."""

    saga_id: str
    to_wallet_id: str
    amount: int
    at: datetime
    creates: NewSaga | None = None


@dataclass(frozen=True, slots=True)
class CreditFromTransfer:
    """Saga step 2 on the destination wallet; creates it if new, in the saga's currency."""

    saga_id: str
    from_wallet_id: str
    amount: int
    currency: str
    at: datetime


@dataclass(frozen=True, slots=True)
class CompensateTransfer:
    """Saga compensation on the source wallet: the debited amount comes back."""

    saga_id: str
    to_wallet_id: str
    amount: int
    reason: str
    at: datetime
    error: str | None = None  # the machine name of the rule that refused the credit


WalletCommand = (
    Deposit
    | Withdraw
    | Freeze
    | Unfreeze
    | Close
    | SetDailyLimit
    | DebitForTransfer
    | CreditFromTransfer
    | CompensateTransfer
)
