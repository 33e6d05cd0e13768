"""The fraud rules: pure functions, tested exhaustively at the edges and by property."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wallet.fraud.rules import (
    Movement,
    Rule,
    RuleConfig,
    Severity,
    evaluate,
    evaluate_batch,
    high_value,
    neighbours_needed,
    rapid_withdrawals,
    remembered,
    window_bounds,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CONFIG = RuleConfig()


def movement(
    amount: int = 100,
    *,
    seconds: float = 0,
    version: int = 1,
    event_type: str = "FUNDS_WITHDRAWN",
    wallet_id: str = "w1",
) -> Movement:
    return Movement(
        event_id=str(uuid.uuid4()),
        wallet_id=wallet_id,
        event_type=event_type,
        amount=amount,
        occurred_at=T0 + timedelta(seconds=seconds),
        version=version,
        currency="USD",
    )


# -- HIGH_VALUE_TRANSACTION ------------------------------------------------------------------


def test_a_withdrawal_of_10000_01_is_high_value():
    alert = high_value(movement(1_000_001), CONFIG)
    assert alert is not None
    assert alert.rule is Rule.HIGH_VALUE_TRANSACTION
    assert alert.severity is Severity.HIGH
    assert "10000.01" in alert.reason


def test_exactly_10000_is_not_high_value():
    assert high_value(movement(1_000_000), CONFIG) is None


def test_a_transfer_debit_above_the_threshold_is_high_value_but_not_its_credit_nor_a_deposit():
    assert high_value(movement(5_000_000, event_type="TRANSFER_DEBITED"), CONFIG) is not None
    assert high_value(movement(5_000_000, event_type="TRANSFER_CREDITED"), CONFIG) is None
    assert high_value(movement(5_000_000, event_type="FUNDS_DEPOSITED"), CONFIG) is None


def test_the_threshold_comes_from_configuration_as_a_decimal():
    config = RuleConfig.from_values(
        high_value_threshold=Decimal("500.50"),
        rapid_count=3,
        rapid_window_seconds=300,
        critical_rules=["high_value_transaction"],
    )
    assert config.high_value_threshold == 50_050
    assert high_value(movement(50_050), config) is None
    alert = high_value(movement(50_051), config)
    assert alert is not None and alert.severity is Severity.CRITICAL


def test_a_threshold_with_fractions_of_a_cent_is_refused():
    with pytest.raises(ValueError):
        RuleConfig.from_values(
            high_value_threshold=Decimal("0.001"), rapid_count=3, rapid_window_seconds=1, critical_rules=()
        )


# -- RAPID_WITHDRAWALS -------------------------------------------------------------------------


def test_four_withdrawals_within_five_minutes_alert_once_for_the_fourth():
    seen: list[Movement] = []
    alerts = []
    for i in range(4):
        m = movement(seconds=60 * i, version=i + 2)
        alerts.extend(rapid_withdrawals(m, seen, CONFIG))
        seen.append(m)
    assert len(alerts) == 1
    assert alerts[0].event == seen[3]
    assert alerts[0].rule is Rule.RAPID_WITHDRAWALS
    assert alerts[0].severity is Severity.CRITICAL
    assert alerts[0].details["count"] == 4


def test_three_withdrawals_do_not_alert():
    seen: list[Movement] = []
    for i in range(3):
        m = movement(seconds=i, version=i + 2)
        assert rapid_withdrawals(m, seen, CONFIG) == []
        seen.append(m)


def test_the_window_is_inclusive_at_five_minutes_and_not_beyond():
    first = [movement(seconds=0, version=2), movement(seconds=1, version=3), movement(seconds=2, version=4)]
    assert len(rapid_withdrawals(movement(seconds=300, version=5), first, CONFIG)) == 1
    assert rapid_withdrawals(movement(seconds=300.000001, version=5), first, CONFIG) == []


def test_other_wallets_and_other_event_types_do_not_count():
    noise = [movement(seconds=i, version=i + 2, wallet_id="other") for i in range(5)]
    noise += [movement(seconds=i, version=i + 10, event_type="FUNDS_DEPOSITED") for i in range(5)]
    assert rapid_withdrawals(movement(seconds=10, version=20), noise, CONFIG) == []
    assert rapid_withdrawals(movement(seconds=10, event_type="TRANSFER_DEBITED"), noise, CONFIG) == []


def test_the_movement_itself_in_the_activity_is_counted_once():
    seen = [movement(seconds=i, version=i + 2) for i in range(3)]
    m = movement(seconds=3, version=5)
    assert len(rapid_withdrawals(m, [*seen, m, m], CONFIG)) == 1


def test_a_late_withdrawal_raises_the_alert_for_the_one_it_makes_rapid():
    ms = [movement(seconds=i, version=i + 2) for i in range(4)]
    # The 4th arrived before the 3rd: nothing then; when the 3rd arrives, the 4th is rapid.
    assert rapid_withdrawals(ms[3], ms[:2], CONFIG) == []
    alerts = rapid_withdrawals(ms[2], [ms[0], ms[1], ms[3]], CONFIG)
    assert [a.event for a in alerts] == [ms[3]]


def test_equal_timestamps_are_ordered_by_version():
    ms = [movement(seconds=0, version=v) for v in (2, 3, 4, 5)]
    alerts = rapid_withdrawals(ms[3], ms[:3], CONFIG)
    assert [a.event for a in alerts] == [ms[3]]


def test_evaluate_combines_both_rules_and_remembers_only_withdrawals():
    seen = [movement(seconds=i, version=i + 2) for i in range(3)]
    big = movement(2_000_000, seconds=4, version=5)
    assert {a.rule for a in evaluate(big, seen, CONFIG)} == {
        Rule.HIGH_VALUE_TRANSACTION,
        Rule.RAPID_WITHDRAWALS,
    }
    assert remembered(big)
    assert not remembered(movement(event_type="TRANSFER_DEBITED"))
    start, end = window_bounds(big, CONFIG)
    assert end - start == timedelta(minutes=10)


def test_configuration_rejects_negative_values():
    with pytest.raises(ValueError):
        RuleConfig(rapid_count=-1)
    with pytest.raises(ValueError):
        RuleConfig(rapid_window=timedelta(seconds=-1))


# -- properties ---------------------------------------------------------------------------------


def _reference(ms: list[Movement], config: RuleConfig) -> set[str]:
    """The withdrawals whose trailing window holds more than ``rapid_count``, by brute force."""
    rapid = set()
    for x in ms:
        trailing = [
            y for y in ms if y.order <= x.order and y.occurred_at >= x.occurred_at - config.rapid_window
        ]
        if len(trailing) > config.rapid_count:
            rapid.add(x.event_id)
    return rapid


@settings(max_examples=150, deadline=None)
@given(
    offsets=st.lists(st.integers(min_value=0, max_value=900), min_size=1, max_size=14),
    rapid_count=st.integers(min_value=0, max_value=4),
    window=st.integers(min_value=0, max_value=400),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_alerts_do_not_depend_on_arrival_order(offsets, rapid_count, window, seed):
    """Whatever order events arrive in (retries, redeliveries), the set of alerted events is the
    brute-force answer, and in commit order only the arriving event is ever alerted."""
    config = RuleConfig(rapid_count=rapid_count, rapid_window=timedelta(seconds=window))
    ms = [movement(seconds=s, version=v + 2) for v, s in enumerate(sorted(offsets))]
    expected = _reference(ms, config)

    arrival = ms[:]
    random.Random(seed).shuffle(arrival)
    seen: list[Movement] = []
    alerted: set[str] = set()
    for m in arrival:
        alerted |= {a.event.event_id for a in rapid_withdrawals(m, seen, config)}
        seen.append(m)
    assert alerted == expected

    seen = []
    for m in ms:
        alerts = rapid_withdrawals(m, seen, config)
        assert all(a.event == m for a in alerts)
        seen.append(m)


def _neighbours(known: list[Movement], new: list[Movement], config: RuleConfig) -> list[Movement]:
    """What the store reads for a batch: around each new withdrawal, the ``neighbours_needed``
    nearest known ones of its wallet on either side within the window."""
    n, window, picked = neighbours_needed(config), config.rapid_window, {}
    for m in new:
        same = sorted((k for k in known if k.wallet_id == m.wallet_id), key=lambda k: k.order)
        before = [k for k in same if k.order < m.order and k.occurred_at >= m.occurred_at - window]
        after = [k for k in same if k.order > m.order and k.occurred_at <= m.occurred_at + window]
        for k in before[-n:] + after[:n] if n else []:
            picked[k.event_id] = k
    return list(picked.values())


@settings(max_examples=200, deadline=None)
@given(
    offsets=st.lists(st.integers(min_value=0, max_value=900), min_size=1, max_size=16),
    wallets=st.lists(st.sampled_from(["w1", "w2"]), min_size=16, max_size=16),
    batches=st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=16),
    rapid_count=st.integers(min_value=0, max_value=4),
    window=st.integers(min_value=0, max_value=400),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_batches_in_any_order_raise_the_brute_force_alerts_from_the_nearest_neighbours(
    offsets, wallets, batches, rapid_count, window, seed
):
    """Events arriving in batches of any size and order, each batch seeing only the nearest
    remembered withdrawals: the alerted set is the brute-force one; an alert raised for the first
    time carries the full count; high-value alerts are per event."""
    config = RuleConfig(
        rapid_count=rapid_count, rapid_window=timedelta(seconds=window), high_value_threshold=400
    )
    ms = [
        movement(amount=s, seconds=s, version=v + 2, wallet_id=wallets[v])
        for v, s in enumerate(sorted(offsets))
    ]
    arrival = ms[:]
    random.Random(seed).shuffle(arrival)
    seen: list[Movement] = []
    raised: set[tuple[str, Rule]] = set()
    sizes = iter(batches * len(ms))
    while arrival:
        size = next(sizes)
        batch, arrival = arrival[:size], arrival[size:]
        for alert in evaluate_batch(batch, _neighbours(seen, batch, config), config):
            key = (alert.event.event_id, alert.rule)
            if alert.rule is Rule.RAPID_WITHDRAWALS and key not in raised:
                reference = [a for m in batch for a in rapid_withdrawals(m, seen + batch, config)]
                full = next(a for a in reference if a.event.event_id == alert.event.event_id)
                assert alert.details["eventIds"] == full.details["eventIds"]
                counted, count = alert.details["count"], full.details["count"]
                assert rapid_count < counted <= count  # a lower bound, exact up to rapid_count + 2
                assert counted == count or counted >= rapid_count + 2
            raised.add(key)
        seen += batch
    rapid = {e for e, r in raised if r is Rule.RAPID_WITHDRAWALS}
    expected = set().union(*(_reference([m for m in ms if m.wallet_id == w], config) for w in ("w1", "w2")))
    assert rapid == expected
    high = {m.event_id for m in ms if m.amount > 400}
    assert {e for e, r in raised if r is Rule.HIGH_VALUE_TRANSACTION} == high


@given(
    amount=st.integers(min_value=1, max_value=10**14), threshold=st.integers(min_value=0, max_value=10**14)
)
def test_high_value_is_strictly_above_the_threshold(amount, threshold):
    config = RuleConfig(high_value_threshold=threshold)
    assert (high_value(movement(amount), config) is not None) == (amount > threshold)
