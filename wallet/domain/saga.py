"""The transfer saga: states, and which state change each wallet step makes. Pure.

    PENDING --debit ok--> DEBITED --credit ok--> COMPLETED
    PENDING --debit refused--> FAILED          (nothing moved)
    DEBITED --credit refused, refund--> COMPENSATED

PENDING is not written for a new transfer: its debit's flush writes the row, DEBITED or FAILED
(``SagaTransition.created``), so before that commit there is nothing to recover and nothing moved.

Each step is a command to one wallet actor; the saga's state change is written in the same
transaction as that step's events, and only from the state the step expects, so a step applies at
most once per saga however often it is sent (recovery, retries, two instances).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeGuard

from wallet.domain.commands import (
    CompensateTransfer,
    CreditFromTransfer,
    DebitForTransfer,
    NewSaga,
    WalletCommand,
)
from wallet.domain.errors import DomainError
from wallet.domain.wallet import WalletState


class SagaState(enum.StrEnum):
    PENDING = "PENDING"
    DEBITED = "DEBITED"
    COMPLETED = "COMPLETED"
    COMPENSATED = "COMPENSATED"
    FAILED = "FAILED"


FINAL_STATES = frozenset({SagaState.COMPLETED, SagaState.COMPENSATED, SagaState.FAILED})
SagaStep = DebitForTransfer | CreditFromTransfer | CompensateTransfer


@dataclass(frozen=True, slots=True)
class SagaTransition:
    saga_id: str
    from_state: SagaState
    to_state: SagaState
    currency: str | None = None
    error: str | None = None  # the machine name of the rule that stopped the transfer
    reason: str | None = None
    created: NewSaga | None = None  # the row is written now, in ``to_state``, rather than changed


def is_saga_step(command: WalletCommand) -> TypeGuard[SagaStep]:
    return isinstance(command, DebitForTransfer | CreditFromTransfer | CompensateTransfer)


def expected_state(step: SagaStep) -> SagaState:
    """The saga state a step applies from."""
    return SagaState.PENDING if isinstance(step, DebitForTransfer) else SagaState.DEBITED


def transition_for(step: SagaStep, decision: WalletState | DomainError) -> SagaTransition | None:
    """The saga state change that goes with a step's outcome (None: the coordinator decides next)."""
    accepted = not isinstance(decision, DomainError)
    match step:
        case DebitForTransfer():
            if isinstance(decision, DomainError):
                return SagaTransition(
                    step.saga_id,
                    SagaState.PENDING,
                    SagaState.FAILED,
                    error=decision.name,
                    reason=decision.message,
                    created=step.creates,
                )
            return SagaTransition(
                step.saga_id,
                SagaState.PENDING,
                SagaState.DEBITED,
                currency=decision.currency,
                created=step.creates,
            )
        case CreditFromTransfer():
            if accepted:
                return SagaTransition(step.saga_id, SagaState.DEBITED, SagaState.COMPLETED)
            return None
        case CompensateTransfer():
            if accepted:
                return SagaTransition(
                    step.saga_id,
                    SagaState.DEBITED,
                    SagaState.COMPENSATED,
                    error=step.error,
                    reason=step.reason,
                )
            return None
    raise TypeError(step)  # pragma: no cover
