"""Fraud rules: pure functions over one event and the wallet's remembered activity. No I/O.

HIGH_VALUE_TRANSACTION: a withdrawal or transfer (its debit side) above the threshold.
RAPID_WITHDRAWALS: more than ``rapid_count`` withdrawals from one wallet within ``rapid_window``
(both ends inclusive), raised for the withdrawal that makes the count exceed the limit.

The rapid rule does not depend on the order events arrive in. Events are ordered by
``(occurred_at, version)``; a withdrawal X is "rapid" when its trailing window (the withdrawals
of its wallet at or before X, at most ``rapid_window`` older) holds more than ``rapid_count``.
When an event arrives, every withdrawal whose trailing window it belongs to is re-examined, so a
late (redelivered, retried) event still raises the alert for the withdrawal it makes rapid; the
alert store keeps one alert per (event, rule), so re-raising an existing alert changes nothing.
With in-order delivery only the new event can be affected, which is the usual case.

The worker evaluates a batch of events at once (``evaluate_batch``): the rapid rule then needs,
around each new withdrawal, only its ``rapid_count + 1`` nearest remembered withdrawals on either
side within the window (``neighbours_needed``), however many the wallet made: every withdrawal
with more than ``rapid_count`` remembered ones before it in its window was alerted already, and
a withdrawal that was not has all of its window's withdrawals among those neighbours.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from wallet.domain.events import EventType
from wallet.domain.money import MINOR_UNITS_PER_MAJOR, to_decimal


class Rule(enum.StrEnum):
    HIGH_VALUE_TRANSACTION = "HIGH_VALUE_TRANSACTION"
    RAPID_WITHDRAWALS = "RAPID_WITHDRAWALS"


class Severity(enum.StrEnum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


# Which events each rule looks at. A transfer is judged on its debit (the money leaving); its
# credit is the same money and would alert twice.
HIGH_VALUE_EVENT_TYPES = frozenset({EventType.FUNDS_WITHDRAWN.value, EventType.TRANSFER_DEBITED.value})
RAPID_EVENT_TYPES = frozenset({EventType.FUNDS_WITHDRAWN.value})
# The events the fraud worker needs to receive at all.
WATCHED_EVENT_TYPES = HIGH_VALUE_EVENT_TYPES | RAPID_EVENT_TYPES


@dataclass(frozen=True, slots=True)
class Movement:
    """A money movement as the rules see it. ``amount`` in cents."""

    event_id: str
    wallet_id: str
    event_type: str
    amount: int
    occurred_at: datetime
    version: int
    currency: str | None = None

    @property
    def order(self) -> tuple[datetime, int]:
        return (self.occurred_at, self.version)


@dataclass(frozen=True, slots=True)
class RuleConfig:
    high_value_threshold: int = 10_000 * MINOR_UNITS_PER_MAJOR  # cents; strictly above alerts
    rapid_count: int = 3  # more than this many ...
    rapid_window: timedelta = timedelta(minutes=5)  # ... within this long alerts
    critical_rules: frozenset[str] = frozenset({Rule.RAPID_WITHDRAWALS.value})

    def __post_init__(self) -> None:
        if self.high_value_threshold < 0:
            raise ValueError("high_value_threshold must not be negative")
        if self.rapid_count < 0:
            raise ValueError("rapid_count must not be negative")
        if self.rapid_window < timedelta(0):
            raise ValueError("rapid_window must not be negative")

    @classmethod
    def from_values(
        cls,
        *,
        high_value_threshold: Decimal,
        rapid_count: int,
        rapid_window_seconds: float,
        critical_rules: Iterable[str],
    ) -> RuleConfig:
        """From configuration: the threshold in major units as a Decimal (never a float)."""
        cents = high_value_threshold * MINOR_UNITS_PER_MAJOR
        if cents != cents.to_integral_value():
            raise ValueError("the high-value threshold must have at most 2 decimal places")
        return cls(
            high_value_threshold=int(cents),
            rapid_count=rapid_count,
            rapid_window=timedelta(seconds=rapid_window_seconds),
            critical_rules=frozenset(r.upper() for r in critical_rules),
        )

    def severity(self, rule: Rule) -> Severity:
        return Severity.CRITICAL if rule.value in self.critical_rules else Severity.HIGH


@dataclass(frozen=True, slots=True)
class Alert:
    rule: Rule
    severity: Severity
    event: Movement  # the event the alert is about
    reason: str
    details: Mapping[str, Any] = field(default_factory=dict)


def remembered(movement: Movement) -> bool:
    """Whether the worker must remember this movement for later evaluations."""
    return movement.event_type in RAPID_EVENT_TYPES


def window_bounds(movement: Movement, config: RuleConfig) -> tuple[datetime, datetime]:
    """The span of remembered activity ``evaluate`` needs for this movement (both ends inclusive)."""
    return movement.occurred_at - config.rapid_window, movement.occurred_at + config.rapid_window


def high_value(movement: Movement, config: RuleConfig) -> Alert | None:
    if movement.event_type not in HIGH_VALUE_EVENT_TYPES:
        return None
    if movement.amount <= config.high_value_threshold:
        return None
    amount = to_decimal(movement.amount)
    threshold = to_decimal(config.high_value_threshold)
    currency = f" {movement.currency}" if movement.currency else ""
    return Alert(
        Rule.HIGH_VALUE_TRANSACTION,
        config.severity(Rule.HIGH_VALUE_TRANSACTION),
        movement,
        f"{movement.event_type} of {amount}{currency} is above {threshold}",
        {"threshold": str(threshold), "amount": str(amount)},
    )


def rapid_withdrawals(movement: Movement, activity: Iterable[Movement], config: RuleConfig) -> list[Alert]:
    """Alerts for every withdrawal that ``movement`` makes rapid (usually ``movement`` itself).

    ``activity``: the wallet's remembered withdrawals, at least those within ``window_bounds``;
    it may include ``movement`` itself and other wallets' movements (both are ignored as needed).
    """
    if movement.event_type not in RAPID_EVENT_TYPES:
        return []
    window = config.rapid_window
    by_id = {
        m.event_id: m
        for m in activity
        if m.wallet_id == movement.wallet_id and m.event_type in RAPID_EVENT_TYPES
    }
    by_id[movement.event_id] = movement
    ordered = sorted(by_id.values(), key=lambda m: m.order)
    alerts = []
    for candidate in ordered:
        # Only the withdrawals whose trailing window contains ``movement`` can have changed.
        if candidate.order < movement.order or candidate.occurred_at - window > movement.occurred_at:
            continue
        trailing = [
            m
            for m in ordered
            if m.order <= candidate.order and m.occurred_at >= candidate.occurred_at - window
        ]
        if len(trailing) > config.rapid_count:
            alerts.append(_rapid_alert(candidate, trailing, config))
    return alerts


def neighbours_needed(config: RuleConfig) -> int:
    """How many remembered withdrawals ``evaluate_batch`` needs on each side of a new one."""
    return config.rapid_count + 1


def _rapid_alert(candidate: Movement, trailing: list[Movement], config: RuleConfig) -> Alert:
    seconds = config.rapid_window.total_seconds()
    shown = trailing[-(config.rapid_count + 1) :]
    return Alert(
        Rule.RAPID_WITHDRAWALS,
        config.severity(Rule.RAPID_WITHDRAWALS),
        candidate,
        f"{len(trailing)} withdrawals within {seconds:g} s (more than {config.rapid_count})",
        {
            "count": len(trailing),
            "limit": config.rapid_count,
            "windowSeconds": seconds,
            "eventIds": [m.event_id for m in shown],
        },
    )


def rapid_withdrawals_batch(
    new: Iterable[Movement], known: Iterable[Movement], config: RuleConfig
) -> list[Alert]:
    """The alerts of every withdrawal whose trailing window holds one of ``new`` and more than
    ``rapid_count`` withdrawals: the union of ``rapid_withdrawals`` over ``new`` in any order.

    ``known``: the remembered withdrawals of the same wallets, at least the
    ``neighbours_needed`` nearest ones on either side of each new one within the window.
    An alert's ``count`` is then exact up to ``rapid_count + 2`` and a lower bound beyond (a hot
    wallet's window may hold thousands); its ``eventIds`` (the last ``rapid_count + 1``) are exact.
    One pass per wallet over its sorted withdrawals (the window's start moves forward only).
    """
    window = config.rapid_window
    fresh = {m.event_id: m for m in new if m.event_type in RAPID_EVENT_TYPES}
    by_wallet: dict[str, dict[str, Movement]] = {}
    for m in known:
        if m.event_type in RAPID_EVENT_TYPES:
            by_wallet.setdefault(m.wallet_id, {})[m.event_id] = m
    for m in fresh.values():
        by_wallet.setdefault(m.wallet_id, {})[m.event_id] = m
    alerts = []
    for movements in by_wallet.values():
        ordered = sorted(movements.values(), key=lambda m: m.order)
        # new_before[i]: how many new withdrawals precede position i.
        new_before = [0]
        for m in ordered:
            new_before.append(new_before[-1] + (m.event_id in fresh))
        start = 0
        for i, candidate in enumerate(ordered):
            while ordered[start].occurred_at < candidate.occurred_at - window:
                start += 1
            touched = new_before[i + 1] > new_before[start]  # a new one in its trailing window
            if touched and i + 1 - start > config.rapid_count:
                alerts.append(_rapid_alert(candidate, ordered[start : i + 1], config))
    return alerts


def evaluate_batch(new: Iterable[Movement], known: Iterable[Movement], config: RuleConfig) -> list[Alert]:
    """Every alert a batch of new movements raises, given the remembered activity around them
    (see ``rapid_withdrawals_batch``); at most one per event and rule."""
    new = list(new)
    alerts = [a for a in (high_value(m, config) for m in new) if a is not None]
    alerts.extend(rapid_withdrawals_batch(new, known, config))
    return alerts


def evaluate(movement: Movement, activity: Iterable[Movement], config: RuleConfig) -> list[Alert]:
    """Every alert ``movement`` raises, given the wallet's remembered activity."""
    alerts: list[Alert] = []
    alert = high_value(movement, config)
    if alert is not None:
        alerts.append(alert)
    alerts.extend(rapid_withdrawals(movement, activity, config))
    return alerts
