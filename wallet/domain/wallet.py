"""The wallet decider: ``decide(id, state, command) -> events | error`` and ``evolve(state, event)``.

Pure functions over immutable values. ``state`` is None for a wallet that does not exist yet.
A wallet's state is the left fold of ``evolve`` over its events; ``version`` counts its events.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime

from wallet.domain.commands import (
    Close,
    CompensateTransfer,
    CreditFromTransfer,
    DebitForTransfer,
    Deposit,
    Freeze,
    SetDailyLimit,
    Unfreeze,
    WalletCommand,
    Withdraw,
)
from wallet.domain.errors import (
    BalanceLimitExceededError,
    BalanceNotZeroError,
    CurrencyMismatchError,
    DomainError,
    InsufficientFundsError,
    WalletNotActiveError,
    WalletNotFoundError,
    WithdrawalLimitExceededError,
)
from wallet.domain.events import Event, EventType
from wallet.domain.money import MAX_BALANCE_CENTS, to_decimal


class WalletStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    FROZEN = "FROZEN"
    CLOSED = "CLOSED"


@dataclass(frozen=True, slots=True)
class WalletState:
    wallet_id: str
    currency: str
    balance: int = 0
    version: int = 0
    status: WalletStatus = WalletStatus.ACTIVE
    daily_limit: int | None = None
    # Money taken out on ``outflow_day`` (UTC), for the daily withdrawal limit.
    outflow_day: date | None = None
    outflow_today: int = 0

    def outflow_on(self, day: date) -> int:
        return self.outflow_today if self.outflow_day == day else 0


Decision = list[Event] | DomainError


def decide(wallet_id: str, state: WalletState | None, command: WalletCommand) -> Decision:
    """The events that ``command`` causes on wallet ``wallet_id`` in ``state``, or the rule it breaks."""
    match command:
        case Deposit():
            return _deposit(wallet_id, state, command)
        case CreditFromTransfer():
            return _credit(wallet_id, state, command)
        case Withdraw():
            return _outflow(wallet_id, state, command.amount, command.at, EventType.FUNDS_WITHDRAWN, {})
        case DebitForTransfer():
            meta = {"sagaId": command.saga_id, "toWalletId": command.to_wallet_id}
            return _outflow(wallet_id, state, command.amount, command.at, EventType.TRANSFER_DEBITED, meta)
        case CompensateTransfer():
            return _compensate(wallet_id, state, command)
        case Freeze() | Unfreeze() | Close() | SetDailyLimit():
            return _lifecycle(wallet_id, state, command)
    raise TypeError(f"not a wallet command: {command!r}")  # pragma: no cover


def evolve(state: WalletState | None, event: Event) -> WalletState:
    """The state after ``event``. Events are facts: evolve never refuses one."""
    if event.type is EventType.WALLET_CREATED:
        return WalletState(wallet_id=event.wallet_id, currency=event.metadata["currency"], version=1)
    if state is None:
        raise ValueError(f"{event.type} before WALLET_CREATED on {event.wallet_id}")
    amount = event.amount or 0
    version = state.version + 1
    match event.type:
        # Money in and out spell the constructor out: a third of the cost of ``replace`` (the
        # hot-wallet path evolves one state per request).
        case EventType.FUNDS_DEPOSITED | EventType.TRANSFER_CREDITED:
            return WalletState(
                state.wallet_id,
                state.currency,
                state.balance + amount,
                version,
                state.status,
                state.daily_limit,
                state.outflow_day,
                state.outflow_today,
            )
        case EventType.FUNDS_WITHDRAWN | EventType.TRANSFER_DEBITED:
            day = event.occurred_at.date()
            return WalletState(
                state.wallet_id,
                state.currency,
                state.balance - amount,
                version,
                state.status,
                state.daily_limit,
                day,
                state.outflow_on(day) + amount,
            )
        case EventType.TRANSFER_COMPENSATED:
            day = event.occurred_at.date()
            return replace(
                state,
                balance=state.balance + amount,
                version=version,
                outflow_today=max(0, state.outflow_on(day) - amount),
                outflow_day=day if state.outflow_day == day else state.outflow_day,
            )
        case EventType.WALLET_FROZEN:
            return replace(state, status=WalletStatus.FROZEN, version=version)
        case EventType.WALLET_UNFROZEN:
            return replace(state, status=WalletStatus.ACTIVE, version=version)
        case EventType.WALLET_CLOSED:
            return replace(state, status=WalletStatus.CLOSED, version=version)
        case EventType.DAILY_WITHDRAWAL_LIMIT_SET:
            return replace(state, daily_limit=amount, version=version)
        case EventType.DAILY_WITHDRAWAL_LIMIT_REMOVED:
            return replace(state, daily_limit=None, version=version)
    raise ValueError(f"unknown event type {event.type}")  # pragma: no cover


def fold(state: WalletState | None, events: Iterable[Event]) -> WalletState | None:
    for event in events:
        state = evolve(state, event)
    return state


def _exists(state: WalletState | None, wallet_id: str) -> WalletState | DomainError:
    if state is None:
        return WalletNotFoundError(f"wallet {wallet_id} not found")
    return state


def _exceeds_limit(state: WalletState, amount: int) -> bool:
    return state.balance + amount > MAX_BALANCE_CENTS


def _deposit(wallet_id: str, state: WalletState | None, command: Deposit) -> Decision:
    events: list[Event] = []
    if state is None:
        currency = command.currency or command.currency_if_new
        created = Event(EventType.WALLET_CREATED, wallet_id, command.at, None, {"currency": currency})
        events.append(created)
        state = WalletState(wallet_id=wallet_id, currency=currency)
    elif command.currency is not None and state.currency != command.currency:
        return CurrencyMismatchError(f"wallet holds {state.currency}, deposit is in {command.currency}")
    if state.status is not WalletStatus.ACTIVE:
        return WalletNotActiveError(f"wallet is {state.status}")
    if _exceeds_limit(state, command.amount):
        return BalanceLimitExceededError(
            f"balance would exceed {to_decimal(MAX_BALANCE_CENTS)} {state.currency}"
        )
    events.append(Event(EventType.FUNDS_DEPOSITED, wallet_id, command.at, command.amount))
    return events


def _credit(wallet_id: str, state: WalletState | None, command: CreditFromTransfer) -> Decision:
    events: list[Event] = []
    if state is None:
        created = Event(EventType.WALLET_CREATED, wallet_id, command.at, None, {"currency": command.currency})
        events.append(created)
        state = WalletState(wallet_id=wallet_id, currency=command.currency)
    # The sender may have no right to see the destination: its refusals name the rule that
    # refused, never the destination's status, currency or balance (they become the saga's
    # failure reason, which the sender reads).
    if state.status is not WalletStatus.ACTIVE:
        return WalletNotActiveError("the destination wallet cannot receive transfers")
    if state.currency != command.currency:
        return CurrencyMismatchError(f"the destination wallet does not hold {command.currency}")
    if _exceeds_limit(state, command.amount):
        return BalanceLimitExceededError("the destination wallet cannot hold this amount")
    meta = {"sagaId": command.saga_id, "fromWalletId": command.from_wallet_id}
    events.append(Event(EventType.TRANSFER_CREDITED, wallet_id, command.at, command.amount, meta))
    return events


def _outflow(
    wallet_id: str,
    state: WalletState | None,
    amount: int,
    at: datetime,
    kind: EventType,
    meta: dict[str, str],
) -> Decision:
    found = _exists(state, wallet_id)
    if isinstance(found, DomainError):
        return found
    if found.status is not WalletStatus.ACTIVE:
        return WalletNotActiveError(f"wallet is {found.status}")
    if found.balance < amount:
        return InsufficientFundsError(
            f"balance {to_decimal(found.balance)} is less than {to_decimal(amount)}"
        )
    if found.daily_limit is not None:
        used = found.outflow_on(at.date())
        if used + amount > found.daily_limit:
            return WithdrawalLimitExceededError(
                f"daily withdrawal limit {to_decimal(found.daily_limit)} reached "
                f"({to_decimal(used)} already withdrawn today)"
            )
    return [Event(kind, wallet_id, at, amount, meta)]


def _compensate(wallet_id: str, state: WalletState | None, command: CompensateTransfer) -> Decision:
    found = _exists(state, wallet_id)
    if isinstance(found, DomainError):
        return found
    # A refund is owed whatever the wallet's status became meanwhile.
    meta = {"sagaId": command.saga_id, "toWalletId": command.to_wallet_id, "reason": command.reason}
    return [Event(EventType.TRANSFER_COMPENSATED, wallet_id, command.at, command.amount, meta)]


def _lifecycle(
    wallet_id: str,
    state: WalletState | None,
    command: Freeze | Unfreeze | Close | SetDailyLimit,
) -> Decision:
    found = _exists(state, wallet_id)
    if isinstance(found, DomainError):
        return found
    if found.status is WalletStatus.CLOSED:
        if isinstance(command, Close):
            return []
        return WalletNotActiveError("wallet is CLOSED")
    match command:
        case Freeze():
            if found.status is WalletStatus.FROZEN:
                return []
            return [Event(EventType.WALLET_FROZEN, wallet_id, command.at, None, {"reason": command.reason})]
        case Unfreeze():
            if found.status is WalletStatus.ACTIVE:
                return []
            return [
                Event(
                    EventType.WALLET_UNFROZEN,
                    wallet_id,
                    command.at,
                    None,
                    {"reason": command.reason},
                )
            ]
        case Close():
            if found.balance != 0:
                return BalanceNotZeroError(
                    f"a wallet closes only at zero balance; balance is {to_decimal(found.balance)}"
                )
            return [Event(EventType.WALLET_CLOSED, wallet_id, command.at, None, {"reason": command.reason})]
        case SetDailyLimit():
            if command.limit == found.daily_limit:
                return []
            if command.limit is None:
                return [Event(EventType.DAILY_WITHDRAWAL_LIMIT_REMOVED, wallet_id, command.at)]
            return [Event(EventType.DAILY_WITHDRAWAL_LIMIT_SET, wallet_id, command.at, command.limit)]
    raise TypeError(command)  # pragma: no cover
