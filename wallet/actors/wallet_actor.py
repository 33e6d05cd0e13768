"""The wallet actor: one per live wallet; serialises its commands and group-commits their events.

A command is decided at once against the *optimistic* state (committed state plus everything
decided since) and joins the pending batch. The first command after a quiet spell tells the actor
``Flush``; commands already queued ahead of that message join the same batch. A batch goes to the
flush writer and the actor moves on without waiting; while one batch is in flight the next one
grows, so under load batches grow by themselves. Answers leave only after COMMIT (the writer sends
them), rejections included, because a rejection may rest on an earlier decision not yet durable.

The actor runs on the event loop (``LoopActor``) and never blocks: loading its state, reloading
after a version conflict (another instance wrote) and finding out whether a failed flush committed
anyway all run as tasks whose results come back as a ``Reloaded`` message. Commands that arrive
meanwhile wait, undecided, in arrival order.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from wallet.actors.loop_actor import LoopActor
from wallet.actors.messages import (
    FLUSH,
    Accepted,
    CommandEnvelope,
    Flush,
    Flushed,
    FlushRequest,
    FlushResult,
    Passivate,
    Rejected,
    Reply,
    replay,
    saga_step_obsolete,
    unavailable,
)
from wallet.domain.commands import DebitForTransfer
from wallet.domain.errors import DomainError
from wallet.domain.events import Event
from wallet.domain.saga import SagaTransition, expected_state, is_saga_step, transition_for
from wallet.domain.wallet import WalletState, decide, evolve
from wallet.ids import new_uuid
from wallet.persistence.db import is_connection_failure, is_lost_to_a_deadlock
from wallet.persistence.event_store import EventStore, FlushOutcomeUnknownError
from wallet.persistence.records import IdempotencyRecord, StoredEvent, StoredWallet, WalletBatch
from wallet.persistence.saga_store import SagaStore
from wallet.persistence.state_loader import BatchedStateLoader

log = logging.getLogger(__name__)

# After this many version conflicts in a row the actor gives up on its commands (503).
MAX_CONSECUTIVE_CONFLICTS = 50
# A command whose flush failed for want of a connection, and did not commit, is decided and
# written again (a failover costs latency, not errors) this many times before it is answered 503.
MAX_FAILED_WRITES = 3


@dataclass(frozen=True, slots=True)
class WalletActorContext:
    """What every wallet actor shares: the loop, the stores, the loader and the writer."""

    loop: asyncio.AbstractEventLoop
    loop_thread: int
    events: EventStore
    loader: BatchedStateLoader
    sagas: SagaStore
    submit: Callable[[FlushRequest], None]
    # Batches of one wallet in flight at once: the next one overlaps the database's half of the
    # previous (round trip, fsync) with the Python half of the next requests.
    max_flights: int = 2


@dataclass(slots=True)
class _Decided:
    envelope: CommandEnvelope
    reply: Reply
    events: tuple[StoredEvent, ...]
    saga_transition: SagaTransition | None = None


@dataclass(frozen=True, slots=True)
class _Flight:
    """A batch sent to the writer: its commands, and the state and last event id it leads to."""

    token: int
    decided: list[_Decided]
    state_after: WalletState | None
    last_event_id: uuid.UUID | None
    request: FlushRequest


@dataclass(frozen=True, slots=True)
class Reloaded:
    """The result of a reload task, told back to the actor."""

    stored: StoredWallet | None = None
    settled: dict[int, Reply] = field(default_factory=dict)  # id(envelope) -> reply to give
    checks_committed: list[bool | None] = field(default_factory=list)  # per failed flight: committed?
    error: BaseException | None = None


class WalletActor(LoopActor):
    registered = False  # the directory tracks wallet actors

    def __init__(self, wallet_id: str, context: WalletActorContext) -> None:
        super().__init__(context.loop, context.loop_thread)
        self.wallet_id = wallet_id
        self._ctx = context
        self._ready = False  # state loaded and no reload running
        self._reloading = False
        self._committed: WalletState | None = None
        self._optimistic: WalletState | None = None
        self._waiting: list[CommandEnvelope] = []  # undecided, while loading
        self._checking: list[list[_Decided]] = []  # failed flights whose outcome is being checked
        self._check_retryable: list[bool] = []  # per checked flight: lost its connection?
        self._pending: list[_Decided] = []
        self._committed_event_id: uuid.UUID | None = None
        self._flights: collections.deque[_Flight] = collections.deque()  # in flight, oldest first
        self._results: dict[int, Flushed] = {}  # results that came back ahead of older flights
        self._troubled: list[tuple[_Flight, Flushed]] = []  # conflicted/failed, and those after
        self._next_token = 0
        self._flush_told = False
        self._passivating = False
        self._stop_requested = False
        self._conflicts_in_a_row = 0

    # -- pykka -------------------------------------------------------------------------------

    def on_receive(self, message: Any) -> None:
        try:
            match message:
                case CommandEnvelope():
                    self._on_command(message)
                case Flush():
                    self._flush_told = False
                    self._submit_if_room()
                case Flushed():
                    self._on_flushed(message)
                case Reloaded():
                    self._on_reloaded(message)
                case Passivate():
                    self._passivating = True
                case _:
                    log.warning("wallet actor %s: unknown message %r", self.wallet_id, message)
        except Exception:
            log.exception("wallet actor %s failed; answering its waiting commands", self.wallet_id)
            self._fail_everything("internal error")
        self._stop_if_drained()

    # -- commands ----------------------------------------------------------------------------

    def _on_command(self, envelope: CommandEnvelope) -> None:
        if not self._ready:
            self._waiting.append(envelope)
            if not self._reloading:
                self._reload([])
            return
        self._decide(envelope)

    def _decide(self, envelope: CommandEnvelope) -> None:
        command = envelope.command
        decision = decide(self.wallet_id, self._optimistic, command)
        result: WalletState | DomainError
        if isinstance(decision, DomainError):
            state = self._optimistic
            stored: tuple[StoredEvent, ...] = ()
            reply = envelope.render(Rejected(decision))
            result = decision
        else:
            state, stored = self._append(self._optimistic, decision, envelope.audit)
            assert state is not None
            reply = envelope.render(Accepted(state, stored))
            result = state
        transition = transition_for(command, result) if is_saga_step(command) else None
        # Rejections and no-ops go through the flush too: it checks that the state they were
        # decided on is still the database's (another instance, or an actor still finishing
        # before passivation, may have written since), and answers only then.
        self._pending.append(_Decided(envelope, reply, stored, transition))
        self._optimistic = state
        if not self._flush_told and len(self._flights) < self._ctx.max_flights:
            # Told at the end of the loop's current round of callbacks, not now: the requests
            # whose bytes already arrived get decided first and join the same batch.
            self._flush_told = True
            self._loop.call_soon(self.actor_ref.tell, FLUSH)

    @staticmethod
    def _append(
        state: WalletState | None, events: list[Event], audit: dict[str, Any] | None = None
    ) -> tuple[WalletState | None, tuple[StoredEvent, ...]]:
        stored = []
        for event in events:
            if audit is not None:  # the events are new: their metadata is theirs to extend
                event.metadata.update(audit)
            state = evolve(state, event)
            stored.append(StoredEvent(new_uuid(), state.version, state.balance, event))
        return state, tuple(stored)

    # -- flushing ----------------------------------------------------------------------------

    def _submit_if_room(self) -> None:
        """Send the pending batch if fewer than ``max_flights`` are in flight (none while a failed
        or conflicting flight is being sorted out). A batch names the state it builds on: that
        of the last flight, or the committed one."""
        if (
            not self._pending
            or not self._ready
            or len(self._flights) >= self._ctx.max_flights
            or self._troubled
        ):
            return
        if self._flights:
            base, base_event_id = self._flights[-1].state_after, self._flights[-1].last_event_id
        else:
            base, base_event_id = self._committed, self._committed_event_id
        decided, self._pending = self._pending, []
        batch = WalletBatch(
            wallet_id=self.wallet_id,
            expected_version=base.version if base else 0,
            state=self._optimistic,
            events=tuple(e for d in decided for e in d.events),
            keys=tuple(
                IdempotencyRecord(key.key, key.fingerprint, d.reply.status, d.reply.body)
                for d in decided
                if (key := d.envelope.idempotency) is not None and d.reply.recordable
            ),
            saga_transitions=tuple(d.saga_transition for d in decided if d.saga_transition is not None),
            previous_event_id=base_event_id,
        )
        self._next_token += 1
        answers = [(d.envelope, d.reply) for d in decided]
        request = FlushRequest(batch, answers, self.actor_ref, self._next_token)
        self._flights.append(
            _Flight(self._next_token, decided, self._optimistic, batch.last_event_id, request)
        )
        self._ctx.submit(request)

    def _on_flushed(self, message: Flushed) -> None:
        """Results may come back in any order; they are taken in the order the flights left."""
        self._results[message.token] = message
        while self._flights and self._flights[0].token in self._results:
            flight = self._flights.popleft()
            result = self._results.pop(flight.token)
            if result.result is FlushResult.COMMITTED and not self._troubled:
                self._conflicts_in_a_row = 0
                self._committed = flight.state_after
                self._committed_event_id = flight.last_event_id
            else:  # this one, and every flight after it, is sorted out once all are back
                self._troubled.append((flight, result))
        if self._troubled and not self._flights:
            self._sort_out_troubled()
        else:
            self._submit_if_room()

    def _sort_out_troubled(self) -> None:
        """A flight conflicted, found keys taken, or failed (and so did any flight built on it,
        unless the failure hid a COMMIT). Committed flights were answered by the writer.
        Conflicting ones are decided again; of those with keys taken, the commands with a taken
        key get its stored answer and the others are decided again; failed ones are checked:
        did they commit after all?

        Keys taken alone (and the flights after one, which conflict only because it did not
        write) need no reload: nothing was written, so the committed state still stands (if
        another writer changed it, the next flush says so)."""
        troubled, self._troubled = self._troubled, []
        redecide: list[CommandEnvelope] = []
        checks: list[list[_Decided]] = []
        retryable: list[bool] = []
        orphans: set[int] = set()  # server processes of flushes that may still commit
        reload = False
        after_taken = False
        for flight, result in troubled:
            if result.result is FlushResult.KEYS_TAKEN:
                redecide.extend(self._answer_taken(flight.decided, result.taken))
                after_taken = True
            elif result.result is FlushResult.CONFLICT:
                redecide.extend(d.envelope for d in flight.decided)
                reload = reload or not after_taken
            elif result.result is FlushResult.COMMITTED:  # after a refused flight that wrote nothing
                reload = True
            elif result.result is FlushResult.FAILED:
                reload = True
                log.warning("wallet actor %s: flush failed: %r", self.wallet_id, result.error)
                checks.append(flight.decided)
                error = result.error
                retryable.append(
                    isinstance(error, FlushOutcomeUnknownError)
                    or is_connection_failure(error)
                    or is_lost_to_a_deadlock(error)
                )
                if isinstance(error, FlushOutcomeUnknownError) and error.backend_pid is not None:
                    orphans.add(error.backend_pid)
        if not reload:
            self._decide_again(redecide)
            return
        if any(result.result is FlushResult.CONFLICT for _, result in troubled):
            self._conflicts_in_a_row += 1
            if self._conflicts_in_a_row > MAX_CONSECUTIVE_CONFLICTS:
                for envelope in redecide:
                    envelope.answer_on_loop(
                        envelope.render(unavailable("too much contention on this wallet; retry"))
                    )
                redecide = []
        self._reload(redecide, checks, orphans, retryable)

    @staticmethod
    def _answer_taken(decided: list[_Decided], taken: Sequence[IdempotencyRecord]) -> list[CommandEnvelope]:
        """Answer the commands whose key was already recorded (the stored answer, or 422 for a
        different request); return the others, to be decided again. A saga step whose key was
        taken meanwhile goes on without recording it (the saga must finish either way), but the
        debit that would start a saga does not start it: the service follows the key's holder."""
        records = {record.key: record for record in taken}
        again: list[CommandEnvelope] = []
        for d in decided:
            envelope = d.envelope
            key = envelope.idempotency
            record = records.get(key.key) if key is not None else None
            if record is None or key is None:
                again.append(envelope)
            elif _creates_saga(envelope.command):
                envelope.answer_on_loop(envelope.render(_KEY_TAKEN))
            elif is_saga_step(envelope.command):
                envelope.idempotency = None
                again.append(envelope)
            else:
                envelope.answer_on_loop(replay(record, key, envelope.render))
        return again

    def _decide_again(self, envelopes: list[CommandEnvelope]) -> None:
        """Decide ``envelopes``, then the pending commands, again from the committed state."""
        self._optimistic = self._committed
        pending, self._pending = self._pending, []
        for envelope in envelopes + [d.envelope for d in pending]:
            self._decide(envelope)
        self._submit_if_room()

    # -- reloading ---------------------------------------------------------------------------

    def _reload(
        self,
        redecide: list[CommandEnvelope],
        checks: list[list[_Decided]] | None = None,
        orphans: set[int] | None = None,
        retryable: list[bool] | None = None,
    ) -> None:
        """Forget the optimistic state; decide ``redecide``, the pending and waiting commands
        again, in order, once the committed state is loaded (a task; never blocks the loop).
        ``checks``: failed flights, each checked for whether it committed after all, once the
        server processes in ``orphans`` (flushes cut off mid-way) have ended."""
        self._ready = False
        self._reloading = True
        self._checking = checks or []
        self._check_retryable = retryable or []
        self._waiting = redecide + [d.envelope for d in self._pending] + self._waiting
        self._pending = []
        check_ids = [[e.id for d in decided for e in d.events] for decided in self._checking]
        # New sagas' debits a flush refused: only those can have lost their key to another saga.
        refused = {id(e) for e in redecide if _creates_saga(e.command)}
        task = self._loop.create_task(self._load(list(self._waiting), check_ids, orphans or set(), refused))
        task.add_done_callback(self._tell_reloaded)

    async def _load(
        self,
        envelopes: list[CommandEnvelope],
        check_ids: list[list[Any]],
        orphans: set[int],
        refused: set[int],
    ) -> Reloaded:
        committed: list[bool | None] = []
        try:  # a late COMMIT must land (or be ruled out) before the checks and the load
            for pid in orphans:
                await self._ctx.events.wait_for_backend(pid)
        except Exception as exc:
            log.warning("wallet actor %s: flush outcome still unknown: %r", self.wallet_id, exc)
            return Reloaded(checks_committed=[None] * len(check_ids), error=exc)
        for ids in check_ids:
            if not ids:
                committed.append(False)
                continue
            try:
                committed.append(await self._ctx.events.any_event_exists(ids))
            except Exception:
                committed.append(None)
        try:
            stored = await self._ctx.loader.load(self.wallet_id)
            settled = await self._settled_elsewhere(envelopes, refused)
        except Exception as exc:
            return Reloaded(checks_committed=committed, error=exc)
        return Reloaded(stored, settled, committed)

    def _tell_reloaded(self, task: asyncio.Task[Reloaded]) -> None:
        try:
            message = task.result()
        except BaseException as exc:  # cancelled at shutdown, or a bug
            message = Reloaded(error=exc)
        self.actor_ref.tell(message)

    def _on_reloaded(self, message: Reloaded) -> None:
        self._reloading = False
        checking, self._checking = self._checking, []
        retryable, self._check_retryable = self._check_retryable, []
        write_again: list[CommandEnvelope] = []
        for position, decided in enumerate(checking):
            committed = (
                message.checks_committed[position] if position < len(message.checks_committed) else None
            )
            if committed:
                for d in decided:
                    d.envelope.answer_on_loop(d.reply)
            elif committed is False and position < len(retryable) and retryable[position]:
                for d in decided:  # ruled out: nothing was written, so writing again is safe
                    d.envelope.failed_writes += 1
                    if d.envelope.failed_writes <= MAX_FAILED_WRITES:
                        write_again.append(d.envelope)
                    else:
                        self._answer_unavailable([d], "write failed; retry")
            else:
                self._answer_unavailable(
                    decided, "database unavailable" if committed is None else "write failed; retry"
                )
        waiting, self._waiting = write_again + self._waiting, []
        if message.error is not None:
            log.warning("wallet actor %s: load failed: %r", self.wallet_id, message.error)
            for envelope in waiting:
                envelope.answer_on_loop(envelope.render(unavailable("database unavailable")))
            return
        stored = message.stored
        self._committed = self._optimistic = stored.state if stored else None
        self._committed_event_id = stored.last_event_id if stored else None
        self._ready = True
        for envelope in waiting:
            settled = message.settled.get(id(envelope))
            if settled is not None:
                envelope.answer_on_loop(settled)
            else:
                self._decide(envelope)
        self._submit_if_room()

    async def _settled_elsewhere(
        self, envelopes: list[CommandEnvelope], refused: set[int]
    ) -> dict[int, Reply]:
        """Commands someone else settled meanwhile: a saga step already applied (by recovery or
        another instance), or the X-Request-ID of a new saga's debit a flush refused (``refused``,
        by ``id``) taken by another saga or request. The reply to give each. (Another request's
        key recorded meanwhile needs no lookup here: the next flush refuses it and reports its
        stored answer; nor does a new saga's debit no flush refused: its row cannot exist.)"""
        replies: dict[int, Reply] = {}
        for envelope in envelopes:
            command = envelope.command
            if not is_saga_step(command) or (_creates_saga(command) and id(envelope) not in refused):
                continue
            current = await self._ctx.sagas.state(command.saga_id)
            if current is None and _creates_saga(command):  # not written: unless its key is taken,
                key = envelope.idempotency  # the debit is decided again
                if key is not None and await self._ctx.sagas.key_taken(key.key):
                    replies[id(envelope)] = envelope.render(_KEY_TAKEN)
            elif current is not expected_state(command):
                refusal = saga_step_obsolete(f"saga is {current}; step not applied")
                replies[id(envelope)] = envelope.render(refusal)
        return replies

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _answer_unavailable(decided: Sequence[_Decided], why: str) -> None:
        for d in decided:
            d.envelope.answer_on_loop(d.envelope.render(unavailable(why)))

    def _fail_everything(self, why: str) -> None:
        # A flight that committed (its Flushed not handled yet) is answered by the writer.
        in_flight = [d for flight in self._flights if not flight.request.committed for d in flight.decided]
        checking = [d for decided in self._checking for d in decided]
        troubled = [
            d
            for flight, result in self._troubled
            if result.result is not FlushResult.COMMITTED
            for d in flight.decided
        ]
        self._answer_unavailable(in_flight + troubled + self._pending + checking, why)
        for envelope in self._waiting:
            envelope.answer_on_loop(envelope.render(unavailable(why)))
        self._flights.clear()
        self._results.clear()
        self._troubled = []
        self._pending, self._checking, self._waiting = [], [], []
        self._ready = False

    def _stop_if_drained(self) -> None:
        if (
            self._passivating
            and not self._flights
            and not self._troubled
            and not self._pending
            and not self._waiting
            and not self._reloading
            and not self._stop_requested
        ):
            self._stop_requested = True
            self.stop()


# A new saga's debit not applied: its X-Request-ID was taken (by another saga or another request)
# before its row could hold it. The service finds the holder and answers as a retry would be.
_KEY_TAKEN = saga_step_obsolete("X-Request-ID taken by another transfer or request; saga not started")


def _creates_saga(command: Any) -> TypeGuard[DebitForTransfer]:
    return isinstance(command, DebitForTransfer) and command.creates is not None
