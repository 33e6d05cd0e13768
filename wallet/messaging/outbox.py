"""The outbox relay: every committed event reaches RabbitMQ at least once, in commit order per wallet.

Two halves, because asyncpg and aio-pika objects belong to the event loop that made them:

- ``OutboxRelay`` lives on the service's event loop. It owns the LISTEN connection (asyncpg
  ``add_listener`` on ``wallet_outbox``, notified by ``wallet_apply_batches`` at commit), the
  polling fallback, the broker connection and the relay round itself (a coroutine).
- ``OutboxActor`` (``wallet/messaging/outbox_actor.py``, a pykka ``ThreadingActor``) drives the
  rounds one at a time. Wakes coalesce: at most one is queued at any time, however many commits
  are notified meanwhile, and a wake that arrives during a round queues exactly one more round, so
  no commit is missed.

The table's queries are ``wallet/persistence/outbox_store.py``; the RabbitMQ connection and probe
are ``wallet/messaging/broker_link.py``, one ``EventPublisher`` like the in-process bus.

A round: as the relay leader (holding the leader's session-level advisory lock on a connection of
its own, ``OutboxStore.leader_round``; while another relay holds it, this one stays on standby,
polling, until the lock is free), SELECT the oldest unpublished rows; publish them with publisher
confirms (the whole batch as one write, in row order, on one channel; the broker routes them in
that order); mark the confirmed rows published. Two statements, no transaction of its own. One
leader at a time is what keeps per-wallet order with several relays: two could otherwise publish a
wallet's later rows while one still holds its earlier ones. Per-wallet order in the table is commit order: a
wallet's next batch inserts its outbox rows only after the previous batch's transaction commits
(the version-checked ``UPDATE wallets`` waits for it), so ``ORDER BY id`` is commit order per wallet.

If a publish fails, that wallet's later rows in the batch are not marked either, so after a retry a
consumer sees every event of a wallet first in order (duplicates only of already-seen ones).

While the broker is away, rounds back off exponentially (notifications are ignored until the
back-off ends; the poller wakes the actor when it does), writes go on, rows wait in the outbox.
Published rows are purged after ``outbox_retention_seconds``.

``lag_seconds`` (age of the oldest unpublished row) and ``latencies`` (insert-to-confirm times of
recent publishes) are for /health and /metrics.

Publishing costs Python time per event on the loop (DESIGN.md §8). With ``OUTBOX_RELAY_ENABLED=false``
an API instance only measures the lag and probes the broker, and ``wallet relay`` (``wallet.server``)
publishes from its own process; any mix of relays is safe (one leader at a time).

In embedded mode (no ``RABBITMQ_URL``) the relay's publisher is the in-process bus
(``wallet/messaging/inprocess.py``): the same rounds hand the rows to it instead of the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import pykka

from wallet.config import Settings
from wallet.messaging.broker_link import BrokerLink
from wallet.messaging.connection import jittered, next_backoff
from wallet.messaging.inprocess import EventPublisher, OutgoingEvent
from wallet.messaging.outbox_actor import WAKE, OutboxActor
from wallet.persistence.outbox_store import NOTIFY_CHANNEL, OutboxStore

log = logging.getLogger(__name__)

LATENCY_SAMPLES = 10_000


@dataclass(frozen=True, slots=True)
class RoundResult:
    published: int = 0
    more: bool = False  # a full batch: run again at once
    failed: bool = False
    standby: bool = False


@dataclass(slots=True)
class RelayStats:
    rounds: int = 0
    published: int = 0
    publish_failures: int = 0
    database_failures: int = 0
    broker_connects: int = 0
    standby_rounds: int = 0
    purged: int = 0
    last_error: str | None = None


class OutboxRelay:
    def __init__(
        self,
        store: OutboxStore,
        settings: Settings,
        *,
        name: str = "wallet",
        publisher: EventPublisher,
    ) -> None:
        self._store = store
        self._settings = settings
        self._name = name
        # RabbitMQ (a BrokerLink: connected per round, probed by /health) or, in embedded mode,
        # the in-process bus.
        self._publisher = publisher
        self._broker = publisher if isinstance(publisher, BrokerLink) else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._actor: pykka.ActorRef[OutboxActor] | None = None
        self._wake_lock = threading.Lock()
        self._wake_pending = False
        self._listener: asyncpg.Connection | None = None
        self._poller: asyncio.Task[None] | None = None
        # Back-off while the publisher fails; quiet (ignore notifications) during back-off/standby.
        self._backoff = 0.0
        self._retry_at = 0.0
        self._quiet_until = 0.0
        self._broker_up = False
        # Lag: age of the oldest unpublished row when last measured, and when (monotonic).
        self._oldest_age: float | None = None
        self._measured_at = 0.0
        self._last_purge = 0.0
        self.latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.stats = RelayStats()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """False in an API instance whose events a separate ``wallet relay`` process publishes:
        it then only measures the lag and answers health probes."""
        return self._settings.outbox_relay_enabled

    async def start(self) -> None:
        """Start relaying. Never waits for RabbitMQ (nor for the LISTEN connection)."""
        self._loop = asyncio.get_running_loop()
        if self.enabled:
            self._actor = OutboxActor.start(
                self._loop,
                self.run_round,
                wake_taken=self._wake_taken,
                wake=self.wake,
                round_timeout=self._settings.outbox_publish_timeout_seconds * 2 + 30.0,
            )
        self._poller = self._loop.create_task(self._poll(), name=f"{self._name}-outbox-poller")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None
        await self._close_listener()
        actor, self._actor = self._actor, None
        if actor is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                stopped = actor.stop(block=False)
                timeout = self._settings.shutdown_timeout_seconds
                with contextlib.suppress(Exception):
                    await asyncio.get_running_loop().run_in_executor(
                        None, lambda: stopped.get(timeout=timeout)
                    )
        await self._store.close()  # the leader's lock, free for another relay at once
        if self._broker is not None:
            await self._broker.close()

    # -- what /health and /metrics read -------------------------------------------------------

    @property
    def lag_seconds(self) -> float:
        """Age of the oldest unpublished outbox row as last observed (0.0 when none), in seconds.

        Refreshed by every round and every poll; between refreshes it grows with the clock.
        """
        if self._oldest_age is None:
            return 0.0
        return self._oldest_age + (time.monotonic() - self._measured_at)

    async def measure_lag(self) -> float:
        """The lag read from the database now."""
        await self._refresh_lag(force=True)
        return self.lag_seconds

    @property
    def broker_connected(self) -> bool:
        """Whether the last attempt to publish succeeded."""
        return self._broker_up

    async def ping(self) -> None:
        """Raise unless the broker answers a request now (the in-process bus always does)."""
        if self._broker is not None:
            await self._broker.ping()

    # -- waking --------------------------------------------------------------------------------

    def wake(self) -> None:
        """Ask for a round; any thread. Coalesces: at most one Wake is queued at a time."""
        with self._wake_lock:
            if self._wake_pending or self._actor is None:
                return
            self._wake_pending = True
            actor = self._actor
        try:
            actor.tell(WAKE)
        except pykka.ActorDeadError:
            with self._wake_lock:
                self._wake_pending = False

    def _wake_taken(self) -> None:
        """The actor took the queued Wake; the round it starts now sees every commit so far."""
        with self._wake_lock:
            self._wake_pending = False

    def _on_notify(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        if time.monotonic() >= self._quiet_until:
            self.wake()

    async def _poll(self) -> None:
        """Polling fallback, LISTEN (re)connection, lag refresh and purge, on the loop."""
        poll = self._settings.outbox_poll_seconds
        while True:
            try:
                if self.enabled:
                    await self._ensure_listener()
                    self.wake()
                await self._refresh_lag(force=True)
                if self.enabled:
                    await self._purge_if_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # nothing here may kill the poller
                log.warning("outbox poller: %r", exc)
            delay = poll
            until_retry = self._retry_at - time.monotonic()
            if 0 < until_retry < delay:
                delay = until_retry + 0.001
            await asyncio.sleep(delay)

    async def _ensure_listener(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        await self._close_listener()
        conn = await asyncpg.connect(
            self._settings.database_url,
            timeout=self._settings.outbox_publish_timeout_seconds,
            server_settings={"application_name": f"{self._name}-outbox-listener"},
        )
        await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
        self._listener = conn

    async def _close_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.remove_listener(NOTIFY_CHANNEL, self._on_notify)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2.0)

    # -- the round -----------------------------------------------------------------------------

    async def run_round(self) -> RoundResult:
        """Publish the oldest unpublished rows (at most one batch). On the loop."""
        self.stats.rounds += 1
        if time.monotonic() < self._retry_at:
            await self._refresh_lag()
            return RoundResult(failed=True)
        if self._broker is not None:
            try:
                if await self._broker.connect():
                    self.stats.broker_connects += 1
            except Exception as exc:
                self._publish_failed(exc)
                await self._refresh_lag()
                return RoundResult(failed=True)
        batch_size = self._settings.outbox_batch_size
        failure: BaseException | None = None
        try:
            async with self._store.leader_round() as leader:
                if leader is None:
                    self.stats.standby_rounds += 1
                    self._quiet_until = time.monotonic() + self._settings.outbox_poll_seconds
                    return RoundResult(standby=True)
                rows = await leader.fetch(batch_size)
                if not rows:
                    self._set_lag(None)
                    return RoundResult()
                published, failure = await self._publish(rows)
                if published:
                    await leader.mark_published(published)
        except Exception as exc:
            self.stats.database_failures += 1
            self.stats.last_error = repr(exc)[:300]
            log.warning("outbox round failed on the database: %r", exc)
            await self._refresh_lag()
            return RoundResult(failed=True)
        self.stats.published += len(published)
        if failure is not None:
            self._publish_failed(failure)
            await self._refresh_lag(force=True)
            return RoundResult(published=len(published), failed=True)
        self._publish_ok()
        more = len(rows) == batch_size
        if more:
            await self._refresh_lag(force=True)
        else:
            self._set_lag(None)
        return RoundResult(published=len(published), more=more)

    async def _publish(self, rows: Sequence[asyncpg.Record]) -> tuple[list[int], BaseException | None]:
        """Publish the rows in order; return the ids to mark and the first failure, if any."""
        fetched_at = time.monotonic()
        events = [
            OutgoingEvent(row["routing_key"], row["body"].encode(), str(row["event_id"]), row["event_type"])
            for row in rows
        ]
        results = await self._publisher.publish_batch(events, app_id=self._name)
        confirmed_at = time.monotonic()
        published: list[int] = []
        failed_wallets: set[str] = set()
        failure: BaseException | None = None
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, BaseException):
                failure = failure or result
                failed_wallets.add(row["wallet_id"])
                self.stats.publish_failures += 1
            elif row["wallet_id"] not in failed_wallets:
                published.append(row["id"])
                self.latencies.append(row["age"] + (confirmed_at - fetched_at))
        return published, failure

    # -- back-off ------------------------------------------------------------------------------

    def _publish_failed(self, error: BaseException) -> None:
        s = self._settings
        self._backoff = next_backoff(
            self._backoff, s.outbox_backoff_initial_seconds, s.outbox_backoff_max_seconds
        )
        self._retry_at = self._quiet_until = time.monotonic() + jittered(self._backoff)
        if self._broker_up or self.stats.last_error is None:
            log.warning("outbox relay %s: RabbitMQ unavailable (%r); backing off", self._name, error)
        self._broker_up = False
        self.stats.last_error = repr(error)[:300]
        if self._broker is not None:
            self._broker.drop()

    def _publish_ok(self) -> None:
        if not self._broker_up and self._backoff > 0:
            log.info("outbox relay %s: RabbitMQ is back", self._name)
        self._broker_up = True
        self._backoff = 0.0
        self._retry_at = 0.0

    # -- lag and purge -------------------------------------------------------------------------

    def _set_lag(self, age: float | None) -> None:
        self._oldest_age = age
        self._measured_at = time.monotonic()

    async def _refresh_lag(self, *, force: bool = False) -> None:
        if not force and time.monotonic() - self._measured_at < min(0.5, self._settings.outbox_poll_seconds):
            return
        try:
            age = await self._store.oldest_age()
        except Exception as exc:
            log.debug("outbox lag: %r", exc)
            return
        self._set_lag(age)

    async def _purge_if_due(self) -> None:
        retention = self._settings.outbox_retention_seconds
        every = min(max(retention / 4, 1.0), 300.0)
        if time.monotonic() - self._last_purge < every:
            return
        self._last_purge = time.monotonic()
        await self.purge()

    async def purge(self) -> int:
        """Delete published rows older than the retention period; return how many."""
        total = await self._store.purge(self._settings.outbox_retention_seconds)
        self.stats.purged += total
        return total
