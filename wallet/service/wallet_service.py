"""WalletService: the composition root of one service instance (one actor system, one pool)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import asyncpg
import pykka

from wallet.actors.directory import DirectoryClosed, WalletDirectory
from wallet.actors.messages import CommandEnvelope, FutureReply, IdempotencyKey, Outcome, Reply, unavailable
from wallet.actors.transfer_coordinator import Faults, TransferCoordinator
from wallet.actors.wallet_actor import WalletActor, WalletActorContext
from wallet.actors.writer import FlushWriter
from wallet.config import Settings
from wallet.domain.commands import WalletCommand
from wallet.fraud.auto_freeze import AutoFreezer
from wallet.messaging.inprocess import InProcessBus
from wallet.messaging.outbox import OutboxRelay
from wallet.persistence.db import create_pool
from wallet.persistence.event_store import EventStore
from wallet.persistence.idempotency_store import IdempotencyStore
from wallet.persistence.migrations import migrate
from wallet.persistence.read_side import ReadSide, open_read_side
from wallet.persistence.saga_store import SagaStore
from wallet.persistence.state_loader import BatchedStateLoader
from wallet.service.deadlines import CommandTimedOut, Deadlines
from wallet.service.idempotency import IdempotencyGate
from wallet.service.replies import recovery_renderer
from wallet.service.transfers import TransferService

log = logging.getLogger(__name__)

Render = Callable[[Outcome], Reply]


class WalletService:
    def __init__(self, settings: Settings, *, name: str = "wallet", bus: InProcessBus | None = None) -> None:
        self.settings = settings
        self.name = name
        self.bus = bus  # embedded mode: events go to this in-process bus instead of RabbitMQ
        self._tasks: list[asyncio.Task[Any]] = []
        self._started = False

    async def start(self, *, run_migrations: bool = True) -> None:
        s = self.settings
        self.loop = asyncio.get_running_loop()
        if run_migrations:
            applied = await migrate(s.database_url)
            if applied:
                log.info("applied migrations: %s", ", ".join(applied))
        self.pool: asyncpg.Pool = await create_pool(
            s.database_url,
            min_size=s.db_pool_min,
            max_size=s.db_pool_max,
            application_name=f"{self.name}-primary",
        )
        self.event_store = EventStore(self.pool)
        self.idempotency_store = IdempotencyStore(self.pool)
        self.saga_store = SagaStore(self.pool)
        # Redis (balance cache, rate limits), replica pools; reads go cache -> replica -> primary.
        self.read_side: ReadSide = await open_read_side(s, self.name, self.pool)
        self.writer = FlushWriter(
            self.loop,
            self.event_store.apply,
            concurrency=s.writer_concurrency,
            max_wallets=s.writer_max_wallets,
            after_commit=self.read_side.after_commit,
        )
        self.writer.start()
        context = WalletActorContext(
            loop=self.loop,
            loop_thread=threading.get_ident(),
            events=self.event_store,
            loader=BatchedStateLoader(self.event_store.load_many),
            idempotency=self.idempotency_store,
            sagas=self.saga_store,
            submit=self.writer.submit,
            max_flights=s.flush_pipeline_depth,
        )
        self.directory = WalletDirectory(
            self.loop,
            lambda wallet_id: WalletActor.start(wallet_id, context),
            max_live=s.max_live_actors,
            idle_seconds=s.actor_idle_seconds,
        )
        self.gate = IdempotencyGate(self.idempotency_store, s.command_timeout_seconds)
        self._deadlines = Deadlines(s.command_timeout_seconds)
        self._tasks.append(self.loop.create_task(self._deadlines.run()))
        self.coordinator = TransferCoordinator.start(
            self.loop, threading.get_ident(), self.directory.tell, Faults.from_env(dict(s.extra))
        )
        self.transfers = TransferService(
            self.loop,
            self.saga_store,
            self.idempotency_store,
            self.gate,
            self.coordinator,
            timeout_seconds=s.command_timeout_seconds,
            stuck_threshold_seconds=s.saga_stuck_threshold_seconds,
            recovery_renderer=recovery_renderer,
            crash_before_debit=s.extra.get("WALLET_FAULT_CRASH_BEFORE_DEBIT") == "1",
        )
        self._tasks.append(self.loop.create_task(self.transfers.recover_periodically()))
        self._tasks.append(self.loop.create_task(self._passivate_periodically()))
        self._tasks.append(self.loop.create_task(self._purge_periodically()))
        # Event stream: the outbox relay (never waits for RabbitMQ); optional fraud auto-freeze.
        self.outbox = OutboxRelay(self.pool, s, name=self.name, publisher=self.bus)
        await self.outbox.start()
        self.auto_freeze = (
            AutoFreezer(self.execute, s, name=self.name, bus=self.bus) if s.fraud_auto_freeze else None
        )
        if self.auto_freeze is not None:
            await self.auto_freeze.start()
        self._started = True
        log.info("wallet service %s started (pid %d)", self.name, os.getpid())

    async def stop(self) -> None:
        """Stop after the HTTP server has drained: no request is waiting on an actor any more."""
        if not self._started:
            return
        self._started = False
        if self.auto_freeze is not None:
            await self.auto_freeze.stop()
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
        self, wallet_id: str, command: WalletCommand, render: Render, key: IdempotencyKey | None = None
    ) -> Reply:
        """Run ``command`` on its wallet actor; the reply comes after COMMIT, or 503, never a hang."""
        if key is None:
            future = self._send(wallet_id, command, render, None)
            self._deadlines.watch(future)
            try:
                return await future
            except CommandTimedOut:
                return render(unavailable("timed out waiting for the wallet"))
        return await self.gate.run(key, render, lambda: self._send(wallet_id, command, render, key))

    def _send(
        self, wallet_id: str, command: WalletCommand, render: Render, key: IdempotencyKey | None
    ) -> asyncio.Future[Reply]:
        future: asyncio.Future[Reply] = self.loop.create_future()
        envelope = CommandEnvelope(command, render, FutureReply(self.loop, future), key)
        try:
            self.directory.tell(wallet_id, envelope)
        except DirectoryClosed:
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
