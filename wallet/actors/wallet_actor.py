"""The wallet actor: one per live wallet; serialises its commands and group-commits their events.

A command is decided at once against the *optimistic* state (committed state plus everything
decided since) and joins the pending batch. The first command after a quiet spell tells the actor
``Flush``; commands already queued ahead of that message join the same batch. A batch goes to the
flush writer and the actor moves on without waiting; while one batch is in flight the next one
grows, so under load batches grow by themselves. Answers leave only after COMMIT (the writer sends
them), rejections included, because a rejection may rest on an earlier decision not yet durable.

When the database says the batch's version is stale (another instance wrote), the actor reloads
and decides every unanswered command again. When a flush fails outright, the actor finds out
whether it committed anyway before it answers.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import pykka

from wallet.actors.messages import (
    FLUSH,
    Accepted,
    CommandEnvelope,
    Flush,
    Flushed,
    FlushRequest,
    FlushResult,
    Passivate,
    Refused,
    Rejected,
    Reply,
    unavailable,
)
from wallet.domain.errors import DomainError, IdempotencyKeyReuseError
from wallet.domain.events import Event
from wallet.domain.saga import SagaTransition, expected_state, is_saga_step, transition_for
from wallet.domain.wallet import WalletState, decide, evolve
from wallet.persistence.event_store import EventStore
from wallet.persistence.idempotency_store import IdempotencyStore
from wallet.persistence.records import IdempotencyRecord, StoredEvent, WalletBatch
from wallet.persistence.saga_store import SagaStore

log = logging.getLogger(__name__)
T = TypeVar("T")

# After this many version conflicts in a row the actor gives up on its commands (503).
MAX_CONSECUTIVE_CONFLICTS = 50


class ServiceUnavailable(Exception):
    """A dependency the command needs is down; the client gets 503 and may retry."""


@dataclass(frozen=True, slots=True)
class WalletActorContext:
    """What every wallet actor shares: the loop that owns the I/O objects, the stores, the writer."""

    loop: asyncio.AbstractEventLoop
    events: EventStore
    idempotency: IdempotencyStore
    submit: Callable[[FlushRequest], None]  # thread-safe
    sagas: SagaStore
    io_timeout: float = 10.0


@dataclass(slots=True)
class _Decided:
    envelope: CommandEnvelope
    reply: Reply
    events: tuple[StoredEvent, ...]
    saga_transition: SagaTransition | None = None


class WalletActor(pykka.ThreadingActor):
    use_daemon_thread = True  # a safety net only: shutdown stops every actor

    def __init__(self, wallet_id: str, context: WalletActorContext) -> None:
        super().__init__()
        self.wallet_id = wallet_id
        self._ctx = context
        self._loaded = False
        self._committed: WalletState | None = None
        self._optimistic: WalletState | None = None
        self._pending: list[_Decided] = []
        self._in_flight: list[_Decided] | None = None
        self._in_flight_state: WalletState | None = None
        self._flush_told = False
        self._passivating = False
        self._conflicts_in_a_row = 0

    # -- pykka -------------------------------------------------------------------------------

    def on_receive(self, message: Any) -> None:
        try:
            match message:
                case CommandEnvelope():
                    self._on_command(message)
                case Flush():
                    self._flush_told = False
                    self._submit_if_idle()
                case Flushed():
                    self._on_flushed(message)
                case Passivate():
                    self._passivating = True
                    self._stop_if_drained()
                case _:
                    log.warning("wallet actor %s: unknown message %r", self.wallet_id, message)
        except Exception:
            log.exception("wallet actor %s failed; answering its waiting commands", self.wallet_id)
            self._fail_everything("internal error")

    # -- commands ----------------------------------------------------------------------------

    def _on_command(self, envelope: CommandEnvelope) -> None:
        if not self._loaded:
            try:
                self._reload()
            except Exception as exc:
                log.warning("wallet actor %s: load failed: %r", self.wallet_id, exc)
                envelope.answer_from_thread(self._unavailable(envelope, "database unavailable"))
                return
        command = envelope.command
        decision = decide(self.wallet_id, self._optimistic, command)
        result: WalletState | DomainError
        if isinstance(decision, DomainError):
            state = self._optimistic
            stored: tuple[StoredEvent, ...] = ()
            reply = envelope.render(Rejected(decision))
            result = decision
        else:
            state, stored = self._append(self._optimistic, decision)
            assert state is not None
            reply = envelope.render(Accepted(state, stored))
            result = state
        transition = transition_for(command, result) if is_saga_step(command) else None
        nothing_to_write = not stored and transition is None and envelope.idempotency is None
        if nothing_to_write and self._in_flight is None and not self._pending:
            # Nothing to make durable and nothing undecided ahead of it: answer now.
            envelope.answer_from_thread(reply)
            return
        self._pending.append(_Decided(envelope, reply, stored, transition))
        self._optimistic = state
        if not self._flush_told and self._in_flight is None:
            self._flush_told = True
            self.actor_ref.tell(FLUSH)

    @staticmethod
    def _append(
        state: WalletState | None, events: list[Event]
    ) -> tuple[WalletState | None, tuple[StoredEvent, ...]]:
        stored = []
        for event in events:
            state = evolve(state, event)
            stored.append(StoredEvent(uuid.uuid4(), state.version, state.balance, event))
        return state, tuple(stored)

    # -- flushing ----------------------------------------------------------------------------

    def _submit_if_idle(self) -> None:
        if self._in_flight is not None or not self._pending:
            return
        decided, self._pending = self._pending, []
        events = tuple(e for d in decided for e in d.events)
        keys = tuple(
            IdempotencyRecord(
                d.envelope.idempotency.key, d.envelope.idempotency.fingerprint, d.reply.status, d.reply.body
            )
            for d in decided
            if d.envelope.idempotency is not None and d.reply.recordable
        )
        transitions = tuple(d.saga_transition for d in decided if d.saga_transition is not None)
        batch = WalletBatch(
            wallet_id=self.wallet_id,
            expected_version=self._committed.version if self._committed else 0,
            state=self._optimistic,
            events=events,
            keys=keys,
            saga_transitions=transitions,
        )
        self._in_flight = decided
        self._in_flight_state = self._optimistic
        self._ctx.submit(FlushRequest(batch, [(d.envelope, d.reply) for d in decided], self.actor_ref))

    def _on_flushed(self, message: Flushed) -> None:
        decided = self._in_flight or []
        self._in_flight = None
        if message.result is FlushResult.COMMITTED:
            self._conflicts_in_a_row = 0
            self._committed = self._in_flight_state
            self._submit_if_idle()
        elif message.result is FlushResult.CONFLICT:
            self._conflicts_in_a_row += 1
            if self._conflicts_in_a_row > MAX_CONSECUTIVE_CONFLICTS:
                self._answer_unavailable(decided, "too much contention on this wallet; retry")
                decided = []
            self._decide_again(decided)
        else:
            self._recover_from_failure(decided, message.error)
        self._stop_if_drained()

    def _decide_again(self, decided: list[_Decided]) -> None:
        """Reload, then decide every unanswered command again, in the order they came."""
        waiting = decided + self._pending
        self._pending = []
        try:
            self._reload()
            replays = self._stored_replies([d.envelope for d in waiting])
        except Exception as exc:
            log.warning("wallet actor %s: reload failed: %r", self.wallet_id, exc)
            self._loaded = False
            self._answer_unavailable(waiting, "database unavailable")
            return
        for d in waiting:
            replay = replays.get(id(d.envelope))
            if replay is not None:
                d.envelope.answer_from_thread(replay)
            else:
                self._on_command(d.envelope)
        self._submit_if_idle()

    def _recover_from_failure(self, decided: list[_Decided], error: BaseException | None) -> None:
        """The flush failed: did it commit anyway (a lost COMMIT reply)? Answer accordingly."""
        log.warning("wallet actor %s: flush failed: %r", self.wallet_id, error)
        event_ids = [e.id for d in decided for e in d.events]
        committed: bool | None = False
        if event_ids:
            try:
                committed = self._call(self._ctx.events.any_event_exists(event_ids))
            except Exception:
                committed = None
        if committed:
            for d in decided:
                d.envelope.answer_from_thread(d.reply)
        elif committed is None:
            # Outcome unknown: the client may retry with the same X-Request-ID.
            self._answer_unavailable(decided + self._pending, "database unavailable")
            self._pending = []
            self._loaded = False
            return
        else:
            self._answer_unavailable(decided, "write failed; retry")
        self._decide_again([])

    def _stored_replies(self, envelopes: list[CommandEnvelope]) -> dict[int, Reply]:
        """Commands someone else settled meanwhile: a saga step already applied (by recovery or
        another instance), or an X-Request-ID another writer recorded. The reply to give each."""
        replies: dict[int, Reply] = {}
        for envelope in envelopes:
            command = envelope.command
            if is_saga_step(command):
                current = self._call(self._ctx.sagas.state(command.saga_id))
                if current is not expected_state(command):
                    refusal = Refused(409, "SagaStepObsoleteError", f"saga is {current}; step not applied")
                    replies[id(envelope)] = envelope.render(refusal)
                    continue
            if envelope.idempotency is None:
                continue
            record = self._call(self._ctx.idempotency.find(envelope.idempotency.key))
            if record is None:
                continue
            if is_saga_step(command):
                # Another request took this key meanwhile; the saga goes on without recording it.
                envelope.idempotency = None
                continue
            if record.fingerprint == envelope.idempotency.fingerprint:
                replies[id(envelope)] = Reply(record.status, record.body, replayed=True)
            else:
                error = IdempotencyKeyReuseError("X-Request-ID was used for a different request")
                replies[id(envelope)] = envelope.render(Rejected(error))
        return replies

    # -- helpers -----------------------------------------------------------------------------

    def _reload(self) -> None:
        state = self._call(self._ctx.events.load(self.wallet_id))
        self._committed = self._optimistic = state
        self._loaded = True

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the event loop and wait for it (never called on the loop itself)."""
        return asyncio.run_coroutine_threadsafe(coro, self._ctx.loop).result(self._ctx.io_timeout)

    @staticmethod
    def _unavailable(envelope: CommandEnvelope, why: str) -> Reply:
        return envelope.render(unavailable(why))

    def _answer_unavailable(self, decided: list[_Decided], why: str) -> None:
        for d in decided:
            d.envelope.answer_from_thread(self._unavailable(d.envelope, why))

    def _fail_everything(self, why: str) -> None:
        self._answer_unavailable((self._in_flight or []) + self._pending, why)
        self._in_flight = None
        self._pending = []
        self._loaded = False

    def _stop_if_drained(self) -> None:
        if self._passivating and self._in_flight is None and not self._pending:
            self.stop()
