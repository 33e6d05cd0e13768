"""Starting transfers (on the event loop) and recovering stuck ones.

A transfer is handed to the transfer coordinator at once; its debit's flush writes the saga's row
(DEBITED, or FAILED), so a crash before that commit leaves nothing (nothing moved, and a retry
starts afresh) and a crash at any later instant leaves a row recovery can finish. The coordinator's
final reply completes the client's future. With an X-Request-ID the saga row holds the key too: a
duplicate reaching another instance finds its debit refused, and follows the saga holding the key
instead of starting a second one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pykka

from wallet.actors.messages import (
    FutureReply,
    IdempotencyKey,
    Outcome,
    Rejected,
    Reply,
    key_in_flight,
    replay,
    unavailable,
)
from wallet.actors.transfer_coordinator import RenderTransfer, RunSaga, TransferResult
from wallet.auth.principal import SAGA_RECOVERY, audit
from wallet.domain.errors import IdempotencyKeyReuseError
from wallet.domain.saga import FINAL_STATES, SagaState
from wallet.persistence.idempotency_store import IdempotencyStore
from wallet.persistence.records import IdempotencyRecord
from wallet.persistence.saga_store import SagaRecord, SagaStore
from wallet.service.idempotency import IdempotencyGate

log = logging.getLogger(__name__)

# Rounds of driving one request's saga on after finding it moved on by someone else.
MAX_DRIVES = 3

RenderOutcome = Callable[[Outcome], Reply]
# Builds the reply renderer for a saga recovery finishes (no client is waiting; the reply is
# recorded under the saga's X-Request-ID, if it had one).
RecoveryRenderer = Callable[[SagaRecord], RenderTransfer]


class TransferService:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sagas: SagaStore,
        idempotency: IdempotencyStore,
        gate: IdempotencyGate,
        coordinator: pykka.ActorRef[Any],
        *,
        timeout_seconds: float,
        stuck_threshold_seconds: float,
        recovery_renderer: RecoveryRenderer,
        crash_before_debit: bool = False,
    ) -> None:
        self._loop = loop
        self._sagas = sagas
        self._idempotency = idempotency
        self._gate = gate
        self._coordinator = coordinator
        self._timeout = timeout_seconds
        self._stuck_threshold = stuck_threshold_seconds
        self._crash_before_debit = crash_before_debit
        self._recovery_renderer = recovery_renderer
        self.recovered = 0

    async def transfer(
        self,
        from_wallet_id: str,
        to_wallet_id: str,
        amount: int,
        render: RenderTransfer,
        render_outcome: RenderOutcome,
        key: IdempotencyKey | None,
        audit: dict[str, Any] | None = None,
    ) -> Reply:
        def start() -> asyncio.Future[Reply]:
            return asyncio.ensure_future(
                self._run(from_wallet_id, to_wallet_id, amount, render, render_outcome, key, audit)
            )

        if key is not None:
            return await self._gate.run(key, render_outcome, start)
        try:
            return await asyncio.wait_for(asyncio.shield(start()), self._timeout)
        except TimeoutError:
            return render(unavailable("transfer still in progress; see GET /v1/transfers"))

    async def _run(
        self,
        from_wallet_id: str,
        to_wallet_id: str,
        amount: int,
        render: RenderTransfer,
        render_outcome: RenderOutcome,
        key: IdempotencyKey | None,
        audit: dict[str, Any] | None,
    ) -> Reply:
        saga = SagaRecord(
            id=str(uuid.uuid4()),
            from_wallet_id=from_wallet_id,
            to_wallet_id=to_wallet_id,
            amount=amount,
            currency=None,
            state=SagaState.PENDING,
            request_key=key.key if key else None,
            request_fingerprint=key.fingerprint if key else None,
        )
        if self._crash_before_debit:
            log.error("fault injection: SIGKILL before the debit of saga %s", saga.id)
            os.kill(os.getpid(), signal.SIGKILL)
        reply = await self._drive(saga, render, key, audit, new=True)
        if reply is not None:
            return await self._naming_if_recorded(reply, saga.id)
        # Its debit found the key taken (by a saga of another instance, or another request):
        # record the saga the way it was before its debit wrote the row, which finds the holder.
        return await self._start_recorded(saga, render, render_outcome, key, audit)

    async def _naming_if_recorded(self, reply: Reply, saga_id: str) -> Reply:
        """Name the saga in a 409 or 503 if its row was written, or may have been (a debit that
        failed wrote none, and a client following a saga that does not exist finds 404)."""
        if reply.status not in (409, 503):
            return reply
        try:
            recorded = await self._sagas.get(saga_id) is not None
        except Exception:  # the database is away: it may have been written; name it
            recorded = True
        return naming_saga(reply, saga_id) if recorded else reply

    async def _start_recorded(
        self,
        saga: SagaRecord,
        render: RenderTransfer,
        render_outcome: RenderOutcome,
        key: IdempotencyKey | None,
        audit: dict[str, Any] | None,
    ) -> Reply:
        """Record ``saga`` PENDING, unless its key is held (then answer as the holder says), and
        drive it."""
        try:
            stored = await self._sagas.create(saga)
        except Exception as exc:
            log.warning("could not record transfer: %r", exc)
            return render(unavailable("database unavailable"))
        if isinstance(stored, IdempotencyRecord):  # the key was recorded by another request
            assert key is not None
            return replay(stored, key, render_outcome)
        if stored.id != saga.id:  # the key already started a saga (another instance)
            assert key is not None
            return await self._duplicate(stored, key, render, render_outcome, audit)
        return naming_saga(await self._driven(stored, render, key, audit), stored.id)

    async def _driven(
        self,
        saga: SagaRecord,
        render: RenderTransfer,
        key: IdempotencyKey | None,
        audit: dict[str, Any] | None,
    ) -> Reply:
        """Drive a saga that has its row (see ``_drive``)."""
        reply = await self._drive(saga, render, key, audit)
        assert reply is not None, "only a new saga's drive answers None"
        return reply

    async def _drive(
        self,
        saga: SagaRecord,
        render: RenderTransfer,
        key: IdempotencyKey | None,
        audit: dict[str, Any] | None,
        *,
        new: bool = False,
    ) -> Reply | None:
        """Drive ``saga`` on from its stored state (``new``: it has no row yet; its debit writes
        it) and answer its outcome. If a step finds the saga moved on by someone else (recovery,
        another instance, an earlier attempt), go on from where it is now; a finished saga is
        answered with its recorded reply. None: a new saga's debit found its key taken."""
        reply = Reply(503, None)
        for _ in range(MAX_DRIVES):
            future: asyncio.Future[Reply] = self._loop.create_future()
            self._coordinator.tell(RunSaga(saga, render, FutureReply(self._loop, future), key, audit, new))
            reply = await future
            if not _obsolete(reply):
                return reply
            current = await self._sagas.get(saga.id)
            if current is None:
                return None if new else reply
            new = False
            if current.state in FINAL_STATES:
                recorded = await self._recorded(key)
                return recorded or render(TransferResult(current, current.state))
            saga = current
        return reply

    async def _recorded(self, key: IdempotencyKey | None) -> Reply | None:
        if key is None:
            return None
        record = await self._idempotency.find(key.key)
        return None if record is None else Reply(record.status, record.body, replayed=True)

    async def _duplicate(
        self,
        saga: SagaRecord,
        key: IdempotencyKey,
        render: RenderTransfer,
        render_outcome: RenderOutcome,
        audit: dict[str, Any] | None,
    ) -> Reply:
        if saga.request_fingerprint != key.fingerprint:
            return render_outcome(
                Rejected(IdempotencyKeyReuseError("X-Request-ID was already used for a different request"))
            )
        if saga.state in FINAL_STATES:
            recorded = await self._recorded(key)
            if recorded is not None:
                return recorded
            finishing = key_in_flight("a transfer with this X-Request-ID is finishing")
            return naming_saga(render(finishing), saga.id)
        # Not finished: maybe nobody is driving it (its step could not be written, its process
        # died). The retry drives it on; every step is idempotent per saga, so a driver elsewhere
        # is harmless, and one here already is joined (the coordinator answers both).
        return naming_saga(await self._driven(saga, render, key, audit), saga.id)

    async def recover_stuck(self) -> int:
        """Hand every stuck saga to the coordinator (it skips those it is already driving)."""
        stuck = await self._sagas.stuck(self._stuck_threshold)
        for saga in stuck:
            key = None
            if saga.request_key and saga.request_fingerprint:
                key = IdempotencyKey(saga.request_key, saga.request_fingerprint)
            # Recovery acts as a system actor; the request id is the saga's.
            recovery = audit(SAGA_RECOVERY, f"saga:{saga.id}")
            self._coordinator.tell(RunSaga(saga, self._recovery_renderer(saga), None, key, recovery))
        if stuck:
            log.info("recovery: driving %d stuck transfer(s)", len(stuck))
        self.recovered += len(stuck)
        return len(stuck)

    async def recover_periodically(self) -> None:
        period = max(0.2, min(self._stuck_threshold / 4, 15.0))
        while True:
            try:
                await self.recover_stuck()
            except Exception as exc:
                log.warning("saga recovery round failed: %r", exc)
            await asyncio.sleep(period)


def naming_saga(reply: Reply, saga_id: str) -> Reply:
    """A transfer answered 409 or 503 once its saga exists names it (``sagaId``), so the client
    can follow it with GET /v1/transfers/{id} instead of guessing whether it happened."""
    body = reply.body
    if reply.status in (409, 503) and isinstance(body, dict) and "sagaId" not in body:
        return replace(reply, body=body | {"sagaId": saga_id})
    return reply


def _obsolete(reply: Reply) -> bool:
    """A step refused because the saga is no longer in the state that step starts from."""
    body = reply.body
    return reply.status == 409 and isinstance(body, dict) and body.get("error") == "SagaStepObsoleteError"
