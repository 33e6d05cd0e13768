"""The wallet decider: examples of each rule, and properties over any command sequence."""

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from wallet.domain.commands import (
    Close,
    CompensateTransfer,
    CreditFromTransfer,
    DebitForTransfer,
    Deposit,
    Freeze,
    SetDailyLimit,
    Unfreeze,
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
from wallet.domain.events import EventType
from wallet.domain.money import MAX_BALANCE_CENTS
from wallet.domain.wallet import WalletState, WalletStatus, decide, evolve, fold

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)


def run(commands, state=None):
    for command in commands:
        decision = decide("w", state, command)
        if isinstance(decision, DomainError):
            return state, decision
        state = fold(state, decision)
    return state, None


def test_first_deposit_creates_the_wallet():
    decision = decide("w", None, Deposit(500, T0))
    assert [e.type for e in decision] == [EventType.WALLET_CREATED, EventType.FUNDS_DEPOSITED]
    state = fold(None, decision)
    assert state == WalletState("w", "USD", balance=500, version=2)


def test_withdraw_rules():
    state, _ = run([Deposit(100, T0)])
    assert decide("w", None, Withdraw(1, T0)) == WalletNotFoundError("wallet w not found")
    assert isinstance(decide("w", state, Withdraw(101, T0)), InsufficientFundsError)
    state, error = run([Withdraw(100, T0)], state)
    assert error is None and state.balance == 0


def test_frozen_and_closed_wallets_refuse_money_movements():
    state, _ = run([Deposit(100, T0), Freeze("check", T0)])
    assert state.status is WalletStatus.FROZEN
    assert isinstance(decide("w", state, Withdraw(1, T0)), WalletNotActiveError)
    assert isinstance(decide("w", state, Deposit(1, T0)), WalletNotActiveError)
    assert decide("w", state, Freeze("again", T0)) == []  # already frozen: nothing happens
    state, _ = run([Unfreeze("ok", T0)], state)
    assert isinstance(decide("w", state, Close("bye", T0)), BalanceNotZeroError)
    state, _ = run([Withdraw(100, T0), Close("bye", T0)], state)
    assert state.status is WalletStatus.CLOSED
    assert isinstance(decide("w", state, Unfreeze("x", T0)), WalletNotActiveError)
    assert decide("w", state, Close("again", T0)) == []


def test_daily_withdrawal_limit_resets_next_day_and_counts_transfers():
    state, _ = run([Deposit(10_000, T0), SetDailyLimit(500, T0), Withdraw(300, T0)])
    assert isinstance(decide("w", state, Withdraw(201, T0)), WithdrawalLimitExceededError)
    assert isinstance(decide("w", state, DebitForTransfer("s", "x", 201, T0)), WithdrawalLimitExceededError)
    state, error = run([Withdraw(200, T0)], state)
    assert error is None
    tomorrow = T0 + timedelta(days=1)
    state, error = run([Withdraw(500, tomorrow)], state)
    assert error is None
    state, _ = run([SetDailyLimit(None, tomorrow)], state)
    assert state.daily_limit is None


def test_compensation_gives_back_money_and_limit():
    state, _ = run([Deposit(1000, T0), SetDailyLimit(500, T0), DebitForTransfer("s1", "x", 500, T0)])
    assert isinstance(decide("w", state, Withdraw(1, T0)), WithdrawalLimitExceededError)
    state, _ = run([CompensateTransfer("s1", "x", 500, "frozen", T0)], state)
    assert state.balance == 1000
    state, error = run([Withdraw(500, T0)], state)
    assert error is None


def test_credit_rules():
    assert [e.type for e in decide("d", None, CreditFromTransfer("s", "w", 5, "EUR", T0))] == [
        EventType.WALLET_CREATED,
        EventType.TRANSFER_CREDITED,
    ]
    state, _ = run([Deposit(1, T0)])
    assert isinstance(decide("w", state, CreditFromTransfer("s", "x", 5, "EUR", T0)), CurrencyMismatchError)
    frozen, _ = run([Freeze("x", T0)], state)
    assert isinstance(decide("w", frozen, CreditFromTransfer("s", "x", 5, "USD", T0)), WalletNotActiveError)
    assert isinstance(decide("w", state, Deposit(1, T0, currency="EUR")), CurrencyMismatchError)


def test_balance_ceiling():
    state, _ = run([Deposit(MAX_BALANCE_CENTS, T0)])
    assert isinstance(decide("w", state, Deposit(1, T0)), BalanceLimitExceededError)


# -- properties --------------------------------------------------------------------------------

amounts = st.integers(min_value=1, max_value=5_000)
instants = st.integers(min_value=0, max_value=3 * 24 * 60).map(lambda m: T0 + timedelta(minutes=m))
commands = st.one_of(
    st.builds(Deposit, amounts, instants),
    st.builds(Withdraw, amounts, instants),
    st.builds(Freeze, st.just("f"), instants),
    st.builds(Unfreeze, st.just("u"), instants),
    st.builds(Close, st.just("c"), instants),
    st.builds(SetDailyLimit, st.none() | st.integers(min_value=0, max_value=3_000), instants),
    st.builds(DebitForTransfer, st.just("s"), st.just("x"), amounts, instants),
    st.builds(CreditFromTransfer, st.just("s"), st.just("x"), amounts, st.just("USD"), instants),
    st.builds(CompensateTransfer, st.just("s"), st.just("x"), amounts, st.just("r"), instants),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(commands, max_size=40))
def test_balance_is_the_fold_of_events_and_never_negative(sequence):
    state = None
    log = []
    for command in sorted(sequence, key=lambda c: c.at):
        decision = decide("w", state, command)
        if isinstance(decision, DomainError):
            continue
        for event in decision:
            state = evolve(state, event)
            log.append(event)
            assert state.balance >= 0
            assert state.version == len(log)
    assert fold(None, log) == state
    if state is not None:
        moved = sum(
            (e.amount or 0)
            * (
                1
                if e.type
                in {EventType.FUNDS_DEPOSITED, EventType.TRANSFER_CREDITED, EventType.TRANSFER_COMPENSATED}
                else -1
            )
            for e in log
            if e.type
            in {
                EventType.FUNDS_DEPOSITED,
                EventType.TRANSFER_CREDITED,
                EventType.TRANSFER_COMPENSATED,
                EventType.FUNDS_WITHDRAWN,
                EventType.TRANSFER_DEBITED,
            }
        )
        assert state.balance == moved


@settings(max_examples=200, deadline=None)
@given(st.lists(commands, max_size=30))
def test_decide_is_pure(sequence):
    state = None
    for command in sorted(sequence, key=lambda c: c.at):
        first = decide("w", state, command)
        assert decide("w", state, command) == first
        if not isinstance(first, DomainError):
            state = fold(state, first)
