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
            seconds = window.total_seconds()
            shown = trailing[-(config.rapid_count + 1) :]
            alerts.append(
                Alert(
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
            )
    return alerts


def evaluate(movement: Movement, activity: Iterable[Movement], config: RuleConfig) -> list[Alert]:
    """Every alert ``movement`` raises, given the wallet's remembered activity."""
    alerts: list[Alert] = []
    alert = high_value(movement, config)
    if alert is not None:
        alerts.append(alert)
    alerts.extend(rapid_withdrawals(movement, activity, config))
    return alerts
