"""WalletService: one instance's commands, housekeeping and shutdown (wired by ``wallet.bootstrap``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

import asyncpg
import pykka

from wallet.actors.directory import DirectoryClosedError, WalletDirectory
from wallet.actors.messages import CommandEnvelope, FutureReply, IdempotencyKey, Outcome, Reply, unavailable
from wallet.actors.writer import FlushWriter
from wallet.config import Settings
from wallet.domain.commands import WalletCommand
from wallet.messaging.outbox import OutboxRelay
from wallet.persistence.event_store import EventStore
from wallet.persistence.idempotency_store import IdempotencyStore
from wallet.persistence.read_side import ReadSide
from wallet.persistence.saga_store import SagaStore
from wallet.service.deadlines import CommandTimedOutError, Deadlines
from wallet.service.idempotency import IdempotencyGate
from wallet.service.transfers import TransferService

log = logging.getLogger(__name__)

Render = Callable[[Outcome], Reply]


class WalletService:
    """One service instance (one actor system, one pool), built by ``wallet.bootstrap``.

    It runs commands on the wallet actors (``execute``), keeps house (deadlines, saga recovery,
    passivation, purging old keys) while started, and stops its parts in order.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        name: str,
        loop: asyncio.AbstractEventLoop,
        pool: asyncpg.Pool,
        event_store: EventStore,
        idempotency_store: IdempotencyStore,
        saga_store: SagaStore,
        read_side: ReadSide,
        writer: FlushWriter,
        directory: WalletDirectory,
        gate: IdempotencyGate,
        deadlines: Deadlines,
        coordinator: pykka.ActorRef[Any],
        transfers: TransferService,
        outbox: OutboxRelay,
    ) -> None:
        self.settings = settings
        self.name = name
        self.loop = loop
        self.pool = pool
        self.event_store = event_store
        self.idempotency_store = idempotency_store
        self.saga_store = saga_store
        # Redis (balance cache, rate limits), replica pools; reads go cache -> replica -> primary.
        self.read_side = read_side
        self.writer = writer
        self.directory = directory
        self.gate = gate
        self._deadlines = deadlines
        self.coordinator = coordinator
        self.transfers = transfers
        self.outbox = outbox  # the event stream: the outbox relay (never waits for RabbitMQ)
        self._tasks: list[asyncio.Task[Any]] = []
        self._started = False

    async def start(self) -> None:
        """Start the housekeeping tasks and the outbox relay (the actors are already running)."""
        self._tasks.append(self.loop.create_task(self._deadlines.run()))
        self._tasks.append(self.loop.create_task(self.transfers.recover_periodically()))
        self._tasks.append(self.loop.create_task(self._passivate_periodically()))
        self._tasks.append(self.loop.create_task(self._purge_periodically()))
        await self.outbox.start()
        self._started = True
        log.info("wallet service %s started (pid %d)", self.name, os.getpid())

    async def stop(self) -> None:
        """Stop after the HTTP server has drained: no request is waiting on an actor any more."""
        if not self._started:
            return
        self._started = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        refs = [self.coordinator, *self.directory.close()]
        await self.loop.run_in_executor(None, _stop_actors, refs, self.settings.shutdown_timeout_seconds)
        await self.writer.stop()
        await self.event_store.release_held()
        await self.read_side.close()
        await self.outbox.stop()
        await self.pool.close()

    # -- commands ----------------------------------------------------------------------------

    async def execute(
        self,
        wallet_id: str,
        command: WalletCommand,
        render: Render,
        key: IdempotencyKey | None = None,
        audit: dict[str, Any] | None = None,
    ) -> Reply:
        """Run ``command`` on its wallet actor; the reply comes after COMMIT, or 503, never a hang.
        ``audit`` (actor, requestId) goes into the metadata of the events it causes."""
        if key is None:
            future = self._send(wallet_id, command, render, None, audit)
            self._deadlines.watch(future)
            try:
                return await future
            except CommandTimedOutError:
                return render(unavailable("timed out waiting for the wallet"))
        return await self.gate.run(key, render, lambda: self._send(wallet_id, command, render, key, audit))

    def _send(
        self,
        wallet_id: str,
        command: WalletCommand,
        render: Render,
        key: IdempotencyKey | None,
        audit: dict[str, Any] | None,
    ) -> asyncio.Future[Reply]:
        future: asyncio.Future[Reply] = self.loop.create_future()
        envelope = CommandEnvelope(command, render, FutureReply(self.loop, future), key, audit=audit)
        try:
            self.directory.tell(wallet_id, envelope)
        except DirectoryClosedError:
            future.set_result(render(unavailable("service is shutting down")))
        return future

    # -- housekeeping ------------------------------------------------------------------------

    async def _passivate_periodically(self) -> None:
        period = max(0.05, min(self.settings.actor_idle_seconds / 2, 10.0))
        while True:
            await asyncio.sleep(period)
            self.directory.passivate_idle()

    async def _purge_periodically(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.idempotency_store.purge(self.settings.idempotency_ttl_seconds)
            await asyncio.sleep(3600)


def _stop_actors(refs: list[pykka.ActorRef[Any]], timeout: float) -> None:
    futures = []
    for ref in refs:
        with contextlib.suppress(pykka.ActorDeadError):
            futures.append(ref.stop(block=False))
    for future in futures:
        with contextlib.suppress(Exception):
            future.get(timeout=timeout)
