"""What one flush writes for one wallet: the unit the actors hand to the event store."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from wallet.domain.events import Event
from wallet.domain.saga import SagaTransition
from wallet.domain.wallet import WalletState


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event with its place in the wallet's log."""

    id: uuid.UUID
    version: int
    balance_after: int
    event: Event


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """The answer given to one ``X-Request-ID``, kept so a retry gets it again."""

    key: str
    fingerprint: str
    status: int
    body: dict[str, Any]


# What a flush reports for each wallet batch (by 0-based position) that did not commit: the stored
# records of its X-Request-IDs that were already taken, or () for a conflict (the wallet's stored
# state is not the one the batch was decided on).
Refusals = dict[int, tuple[IdempotencyRecord, ...]]


@dataclass(frozen=True, slots=True)
class WalletBatch:
    """One wallet's share of a flush: written atomically, and only on the state it was decided on,
    named by ``expected_version`` and ``previous_event_id`` (the wallet's last event before it)."""

    wallet_id: str
    expected_version: int
    state: WalletState | None  # the state after ``events``; None when nothing changes
    events: tuple[StoredEvent, ...]
    keys: tuple[IdempotencyRecord, ...]
    saga_transitions: tuple[SagaTransition, ...] = ()
    previous_event_id: uuid.UUID | None = None

    @property
    def last_event_id(self) -> uuid.UUID | None:
        """The wallet's last event id once this batch is written."""
        return self.events[-1].id if self.events else self.previous_event_id


@dataclass(frozen=True, slots=True)
class StoredWallet:
    """A wallet as stored: its state and the id of its last event (None before any, or for rows
    written before migration 0004)."""

    state: WalletState
    last_event_id: uuid.UUID | None
