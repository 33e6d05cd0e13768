"""Events: the immutable facts a wallet is made of. Names as in API.md."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class EventType(enum.StrEnum):
    WALLET_CREATED = "WALLET_CREATED"
    FUNDS_DEPOSITED = "FUNDS_DEPOSITED"
    FUNDS_WITHDRAWN = "FUNDS_WITHDRAWN"
    TRANSFER_DEBITED = "TRANSFER_DEBITED"
    TRANSFER_CREDITED = "TRANSFER_CREDITED"
    TRANSFER_COMPENSATED = "TRANSFER_COMPENSATED"
    WALLET_FROZEN = "WALLET_FROZEN"
    WALLET_UNFROZEN = "WALLET_UNFROZEN"
    WALLET_CLOSED = "WALLET_CLOSED"
    DAILY_WITHDRAWAL_LIMIT_SET = "DAILY_WITHDRAWAL_LIMIT_SET"
    DAILY_WITHDRAWAL_LIMIT_REMOVED = "DAILY_WITHDRAWAL_LIMIT_REMOVED"


# Events that take money out of a wallet and so count against the daily withdrawal limit.
OUTFLOWS = frozenset({EventType.FUNDS_WITHDRAWN, EventType.TRANSFER_DEBITED})


@dataclass(frozen=True, slots=True)
class Event:
    """One fact about one wallet. ``amount`` is in cents; None for events that move no money.

    For WALLET_CREATED ``amount`` is None and ``metadata["currency"]`` names the currency; for
    DAILY_WITHDRAWAL_LIMIT_SET ``amount`` is the limit.
    """

    type: EventType
    wallet_id: str
    occurred_at: datetime
    amount: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
