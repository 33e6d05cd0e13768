"""The transfer coordinator: drives each transfer saga by telling wallet actors one step at a time.

It never waits (it runs on the event loop, see ``LoopActor``): it tells a wallet actor a step,
and the wallet's reply comes back as a message
(``StepReply``) once that step's flush has committed, so thousands of transfers are in progress at
once while the coordinator only routes messages. It never holds two wallets: each step touches one
wallet, so A→B and B→A together cannot deadlock.

    RunSaga ─▶ debit source ─ok─▶ credit destination ─ok─▶ COMPLETED
                  │ refused                 │ refused
                  ▼                         ▼
                FAILED              refund source ─▶ COMPENSATED

The saga's state change is written by the wallet flush of each step (see ``domain.saga``), a new
saga's row by its debit's; when a step cannot be run now (503) the saga stays where it is, and
recovery drives it on later.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from wallet.actors.directory import DirectoryClosedError
from wallet.actors.loop_actor import LoopActor
from wallet.actors.messages import (
    Accepted,
    ActorReply,
    CommandEnvelope,
    IdempotencyKey,
    Outcome,
    Refused,
    Rejected,
    Reply,
    ReplyTo,
    StepReply,
    internal_error,
    unavailable,
)
from wallet.domain.commands import CompensateTransfer, CreditFromTransfer, DebitForTransfer, NewSaga
from wallet.domain.errors import DomainError
from wallet.domain.saga import SagaState, SagaStep
from wallet.persistence.saga_store import SagaRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TransferResult:
    """How a transfer ended, for the client's reply."""

    saga: SagaRecord
    state: SagaState
    error: DomainError | None = None


# Renders the client's final reply; also given a Refused for "cannot finish now" (503, 409).
RenderTransfer = Callable[[TransferResult | Refused], Reply]


@dataclass(frozen=True, slots=True)
class RunSaga:
    saga: SagaRecord
    render: RenderTransfer
    client: ReplyTo | None = None
    idempotency: IdempotencyKey | None = None
    audit: dict[str, Any] | None = None  # actor and requestId of every step's events
    new: bool = False  # no row yet: the debit's flush writes it


@dataclass(slots=True)
class _Run:
    saga: SagaRecord
    render: RenderTransfer
    client: ReplyTo | None
    idempotency: IdempotencyKey | None
    audit: dict[str, Any] | None  # actor and requestId of every step's events
    new: bool = False
    also: list[ReplyTo] = field(default_factory=list)  # clients who joined (retries of the request)
    stage: str = "debit"
    currency: str | None = None
    credit_error: DomainError | None = None
    started: float = field(default=0.0)


@dataclass(frozen=True, slots=True)
class Faults:
    """Crash points for tests of recovery (WALLET_FAULT_* environment variables); off in production."""

    crash_after_debit: bool = False

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Faults:
        return cls(crash_after_debit=env.get("WALLET_FAULT_CRASH_AFTER_DEBIT") == "1")


class TransferCoordinator(LoopActor):
    """Runs on the event loop like the wallet actors: routing a step costs no thread hand-off."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        loop_thread: int,
        tell_wallet: Callable[[str, Any], None],
        faults: Faults | None = None,
    ) -> None:
        super().__init__(loop, loop_thread)
        self._tell_wallet = tell_wallet
        self._faults = faults or Faults()
        self._running: dict[str, _Run] = {}

    def on_receive(self, message: Any) -> None:
        try:
            if isinstance(message, StepReply):
                self._on_step_reply(message)
            elif isinstance(message, RunSaga):
                self._start(message)
            else:
                log.warning("transfer coordinator: unknown message %r", message)
        except Exception:
            log.exception("transfer coordinator failed on %r", message)

    def _start(self, message: RunSaga) -> None:
        saga = message.saga
        running = self._running.get(saga.id)
        if running is not None:  # already driving it: a retry waits for the same outcome
            if message.client is not None:
                running.also.append(message.client)
            return
        run = _Run(
            saga,
            message.render,
            message.client,
            message.idempotency,
            message.audit,
            message.new,
            currency=saga.currency,
        )
        self._running[saga.id] = run
        if saga.state is SagaState.PENDING:
            self._debit(run)
        elif saga.state is SagaState.DEBITED:
            self._credit(run)
        else:
            self._finish(run, run.render(TransferResult(saga, saga.state)))

    # -- steps -------------------------------------------------------------------------------

    def _debit(self, run: _Run) -> None:
        run.stage = "debit"
        s = run.saga
        row = None
        if run.new:  # the debit's flush writes the saga's row, holding its key
            row = NewSaga(s.from_wallet_id, s.to_wallet_id, s.amount, s.request_key, s.request_fingerprint)
        self._send(run, s.from_wallet_id, DebitForTransfer(s.id, s.to_wallet_id, s.amount, _now(), row))

    def _credit(self, run: _Run) -> None:
        run.stage = "credit"
        s = run.saga
        assert run.currency is not None, "a debited saga has a currency"
        self._send(
            run, s.to_wallet_id, CreditFromTransfer(s.id, s.from_wallet_id, s.amount, run.currency, _now())
        )

    def _compensate(self, run: _Run, error: DomainError) -> None:
        run.stage = "compensate"
        run.credit_error = error
        s = run.saga
        step = CompensateTransfer(s.id, s.to_wallet_id, s.amount, error.message, _now(), error=error.name)
        self._send(run, s.from_wallet_id, step)

    def _send(self, run: _Run, wallet_id: str, step: SagaStep) -> None:
        envelope = CommandEnvelope(
            step,
            self._step_renderer(run),
            ActorReply(self.actor_ref, run.saga.id),
            run.idempotency,
            audit=run.audit,
        )
        try:
            self._tell_wallet(wallet_id, envelope)
        except DirectoryClosedError:
            self._finish(run, run.render(unavailable("service is shutting down")))

    def _step_renderer(self, run: _Run) -> Callable[[Outcome], Reply]:
        """Called by the wallet actor: the step's outcome, and the client's reply if it is the last."""

        def render(outcome: Outcome) -> Reply:
            result = self._final_result(run, outcome)
            if result is None:
                return Reply(0, None, recordable=False, outcome=outcome)
            final = run.render(result)
            return Reply(final.status, final.body, recordable=True, outcome=outcome)

        return render

    @staticmethod
    def _final_result(run: _Run, outcome: Outcome) -> TransferResult | None:
        if run.stage == "debit" and isinstance(outcome, Rejected):
            return TransferResult(run.saga, SagaState.FAILED, outcome.error)
        if run.stage == "credit" and isinstance(outcome, Accepted):
            return TransferResult(run.saga, SagaState.COMPLETED)
        if run.stage == "compensate" and isinstance(outcome, Accepted):
            return TransferResult(run.saga, SagaState.COMPENSATED, run.credit_error)
        return None

    def _on_step_reply(self, message: StepReply) -> None:
        run = self._running.get(message.saga_id)
        if run is None:
            return
        reply = message.reply
        outcome = reply.outcome
        if isinstance(outcome, Refused) or outcome is None:
            # Not now (503) or already done elsewhere (409): the saga stays as the database has it.
            refusal = outcome if isinstance(outcome, Refused) else internal_error("no outcome")
            self._finish(run, run.render(refusal))
            return
        if reply.recordable:  # the saga reached its final state with this step
            self._finish(run, reply)
            return
        if run.stage == "debit":
            assert isinstance(outcome, Accepted)
            run.currency = outcome.state.currency
            if self._faults.crash_after_debit:
                log.error("fault injection: SIGKILL after the debit of saga %s", run.saga.id)
                os.kill(os.getpid(), signal.SIGKILL)
            self._credit(run)
        elif run.stage == "credit":
            assert isinstance(outcome, Rejected)
            self._compensate(run, outcome.error)
        else:
            log.error("saga %s: refund refused (%r); left for recovery", run.saga.id, outcome)
            self._finish(run, run.render(unavailable("refund pending; retry")))

    def _finish(self, run: _Run, reply: Reply) -> None:
        self._running.pop(run.saga.id, None)
        if run.client is not None:
            run.client.on_loop(reply)
        for client in run.also:
            client.on_loop(reply)


def _now() -> datetime:
    return datetime.now(UTC)
