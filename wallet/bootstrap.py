"""The composition root: settings (and optional replacements) in, wired parts out.

Shaped like Cosmic Python's ``bootstrap``: every part is built here and nowhere else, each
replaceable part a parameter whose default is the production choice. Three processes are built:

- the API (``start_api``): the wallet service (``start_service``), its HTTP app, the fraud
  auto-freezer if ``FRAUD_AUTO_FREEZE``, and, given an in-process bus, the fraud worker on it;
- the outbox relay alone (``start_relay``, ``wallet relay``);
- the fraud worker (``build_worker``, ``wallet worker``).

``wallet/server.py`` runs them as processes (signals, draining); the tests build through here too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import asyncpg
from aiohttp import web

from wallet.actors.directory import WalletDirectory
from wallet.actors.transfer_coordinator import Faults, TransferCoordinator
from wallet.actors.wallet_actor import WalletActor, WalletActorContext
from wallet.actors.writer import FlushWriter
from wallet.auth.authenticator import Authenticator
from wallet.auth.dev_key import ensure_dev_key
from wallet.config import Settings
from wallet.fraud.auto_freeze import AutoFreezer
from wallet.fraud.worker import FraudWorker
from wallet.http.app import create_app
from wallet.http.worker_guard import guard_worker_app
from wallet.messaging.broker_link import BrokerLink
from wallet.messaging.inprocess import InProcessBus
from wallet.messaging.outbox import OutboxRelay
from wallet.persistence.api_key_store import ApiKeyStore
from wallet.persistence.db import create_pool
from wallet.persistence.event_store import EventStore
from wallet.persistence.idempotency_store import IdempotencyStore
from wallet.persistence.migrations import migrate
from wallet.persistence.outbox_store import LEADER_SERVER_SETTINGS, OutboxStore
from wallet.persistence.read_side import open_read_side
from wallet.persistence.records import WalletBatch
from wallet.persistence.saga_store import SagaStore
from wallet.persistence.state_loader import BatchedStateLoader
from wallet.service import WalletService
from wallet.service.deadlines import Deadlines
from wallet.service.idempotency import IdempotencyGate
from wallet.service.replies import recovery_renderer
from wallet.service.transfers import TransferService

log = logging.getLogger(__name__)


async def migrate_database(settings: Settings) -> None:
    applied = await migrate(settings.database_url)
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))


async def start_service(
    settings: Settings,
    *,
    name: str = "wallet",
    bus: InProcessBus | None = None,
    run_migrations: bool = True,
    faults: Faults | None = None,
) -> WalletService:
    """A started wallet service. ``bus``: publish events to this in-process bus instead of
    RabbitMQ (embedded mode). ``faults``: crash points for the crash tests (default: from the
    environment's ``WALLET_FAULT_*``)."""
    s = settings
    loop = asyncio.get_running_loop()
    if run_migrations:
        await migrate_database(s)
    pool: asyncpg.Pool = await create_pool(
        s.database_url,
        min_size=s.db_pool_min,
        max_size=s.db_pool_max,
        application_name=f"{name}-primary",
        statement_cache_size=s.db_statement_cache_size,
    )
    event_store = EventStore(pool)
    idempotency_store = IdempotencyStore(pool)
    saga_store = SagaStore(pool)
    read_side = await open_read_side(s, name, pool)
    writer = FlushWriter(
        loop,
        event_store.apply,
        concurrency=s.writer_concurrency,
        max_wallets=s.writer_max_wallets,
        after_commit=_crash_after_commit(read_side.after_commit, s.extra),
        before_commit=read_side.before_commit,
    )
    writer.start()
    context = WalletActorContext(
        loop=loop,
        loop_thread=threading.get_ident(),
        events=event_store,
        loader=BatchedStateLoader(event_store.load_many),
        sagas=saga_store,
        submit=writer.submit,
        max_flights=s.flush_pipeline_depth,
    )
    directory = WalletDirectory(
        loop,
        lambda wallet_id: WalletActor.start(wallet_id, context),
        max_live=s.max_live_actors,
        idle_seconds=s.actor_idle_seconds,
    )
    deadlines = Deadlines(s.command_timeout_seconds)  # one sweeper for every waiting request
    gate = IdempotencyGate(deadlines)
    coordinator = TransferCoordinator.start(
        loop, threading.get_ident(), directory.tell, faults or Faults.from_env(dict(s.extra))
    )
    transfers = TransferService(
        loop,
        saga_store,
        idempotency_store,
        gate,
        coordinator,
        timeout_seconds=s.command_timeout_seconds,
        stuck_threshold_seconds=s.saga_stuck_threshold_seconds,
        recovery_renderer=recovery_renderer,
        crash_before_debit=s.extra.get("WALLET_FAULT_CRASH_BEFORE_DEBIT") == "1",
    )
    service = WalletService(
        s,
        name=name,
        loop=loop,
        pool=pool,
        event_store=event_store,
        idempotency_store=idempotency_store,
        saga_store=saga_store,
        read_side=read_side,
        writer=writer,
        directory=directory,
        gate=gate,
        deadlines=deadlines,
        coordinator=coordinator,
        transfers=transfers,
        outbox=_outbox_relay(pool, s, name=name, bus=bus),
    )
    await service.start()
    return service


def _outbox_relay(
    pool: asyncpg.Pool, settings: Settings, *, name: str, bus: InProcessBus | None
) -> OutboxRelay:
    """The relay over the outbox table, publishing to RabbitMQ or, given one, the in-process bus."""
    publisher = bus if bus is not None else BrokerLink(settings, name=name)

    async def connect() -> asyncpg.Connection:  # the leader's own, direct, like the listener's
        conn: asyncpg.Connection = await asyncpg.connect(
            settings.database_url,
            timeout=settings.outbox_publish_timeout_seconds,
            command_timeout=30,
            server_settings={"application_name": f"{name}-outbox-leader", **LEADER_SERVER_SETTINGS},
        )
        return conn

    return OutboxRelay(OutboxStore(pool, connect), settings, name=name, publisher=publisher)


@dataclass(slots=True)
class Api:
    """The API process's parts: stop them (``stop``) after its HTTP server has drained."""

    service: WalletService
    app: web.Application
    auto_freeze: AutoFreezer | None = None
    worker: FraudWorker | None = None  # embedded mode: the fraud worker on the in-process bus
    authenticator: Authenticator | None = None  # None: AUTH_ENABLED=false

    async def stop(self) -> None:
        if self.auto_freeze is not None:
            await self.auto_freeze.stop()
        if self.authenticator is not None:
            await self.authenticator.stop()
        await self.service.stop()
        if self.worker is not None:
            await self.worker.stop()  # after the relay: it drains what the relay published


async def start_api(
    settings: Settings,
    *,
    name: str = "wallet",
    bus: InProcessBus | None = None,
    run_migrations: bool = True,
    faults: Faults | None = None,
) -> Api:
    """The service, its HTTP app (not yet listening) and its companions, started."""
    service = await start_service(settings, name=name, bus=bus, run_migrations=run_migrations, faults=faults)
    authenticator = build_authenticator(settings, service.pool)
    api = Api(service, create_app(service, authenticator), authenticator=authenticator)
    if authenticator is not None:
        authenticator.start()  # the API key revocation check
        if not settings.database_url_given:  # embedded mode: the newcomer path (make run)
            await ensure_dev_key(service.pool, Path(settings.data_dir))
    if settings.fraud_auto_freeze:  # it freezes through the service's own command path
        api.auto_freeze = AutoFreezer(service.execute, settings, name=name, bus=bus)
        await api.auto_freeze.start()
    if bus is not None:  # no RABBITMQ_URL: the fraud worker consumes the in-process bus
        api.worker = build_worker(settings, name="fraud-worker-inprocess", bus=bus)
        await api.worker.start()
    return api


def build_authenticator(settings: Settings, pool: asyncpg.Pool) -> Authenticator | None:
    """API keys (from ``pool``) and JWTs; None, with a warning, when ``AUTH_ENABLED=false``."""
    if not settings.auth_enabled:
        log.warning("AUTH_ENABLED=false: every route is open to anyone who can reach the port")
        return None
    return Authenticator.from_settings(settings, ApiKeyStore(pool))


@dataclass(slots=True)
class Relay:
    """``wallet relay``: the outbox relay as its own process, on a small pool of its own."""

    relay: OutboxRelay
    pool: asyncpg.Pool

    async def stop(self) -> None:
        await self.relay.stop()
        await self.pool.close()


async def start_relay(
    settings: Settings, *, name: str = "wallet-relay", run_migrations: bool = True
) -> Relay:
    """A started relay that publishes (whatever ``OUTBOX_RELAY_ENABLED`` says: that setting turns
    the relay off in API instances). Any mix of relays is safe: one publishes at a time."""
    if run_migrations:
        await migrate_database(settings)
    settings = replace(settings, outbox_relay_enabled=True)
    pool = await create_pool(settings.database_url, min_size=1, max_size=2, application_name=name)
    relay = _outbox_relay(pool, settings, name=name, bus=None)
    await relay.start()
    return Relay(relay, pool)


def build_worker(
    settings: Settings, *, name: str = "fraud-worker", bus: InProcessBus | None = None
) -> FraudWorker:
    """The fraud worker, not started: its start waits for the broker (``wallet worker`` races
    that against a stop signal). Given ``bus``, it consumes that in-process bus instead."""
    return FraudWorker(settings, name=name, bus=bus, guard=_guard_worker)


def _guard_worker(app: web.Application, settings: Settings, pool: asyncpg.Pool) -> None:
    """The worker's health and metrics behind the API's authentication, keys from its pool."""
    guard_worker_app(app, settings, build_authenticator(settings, pool))


def _crash_after_commit(
    hook: Callable[[WalletBatch], None] | None, extra: Mapping[str, str]
) -> Callable[[WalletBatch], None] | None:
    """Fault injection for the crash tests (``WALLET_FAULT_CRASH_AFTER_COMMIT=n``): SIGKILL right
    after the n-th committed wallet batch, before anyone hears of it (cache, actor, client)."""
    crash_at = int(extra.get("WALLET_FAULT_CRASH_AFTER_COMMIT", "0") or 0)
    if crash_at <= 0:
        return hook
    seen = 0

    def crash(batch: WalletBatch) -> None:
        nonlocal seen
        seen += 1
        if seen >= crash_at:
            log.error("fault injection: SIGKILL after the commit of %s", batch.wallet_id)
            os.kill(os.getpid(), signal.SIGKILL)
        if hook is not None:
            hook(batch)

    return crash
