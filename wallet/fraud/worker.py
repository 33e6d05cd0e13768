"""The fraud-detection worker (``wallet worker``): consumes the event stream, raises alerts.

Its own process. It consumes the durable queue ``fraud_detection`` (withdrawal and transfer-debit
events, prefetch ``FRAUD_PREFETCH``) through ``BatchConsumer``: the messages in hand, up to
``FRAUD_BATCH_SIZE``, are handled as one batch; a message that does not parse or fails on its own
is retried after growing delays and, after ``FRAUD_MAX_RETRIES`` retries, dead-lettered to
``fraud_detection.dlq``, while the rest of its batch goes on.

Per batch, ``FraudStore.process_batch`` writes the processed-event records, the rules' memory and
the alerts in one transaction, so a redelivered event (or batch) changes nothing. Then every alert
of the batch's events not yet published is published (confirmed) as ``fraud.alert.<severity>`` on
the events exchange and marked; only then is the batch acked. A crash in between redelivers the
batch, which finds its alerts unpublished and publishes them; a periodic sweep catches any left
over (e.g. after a message went to the DLQ). The API's auto-freeze consumes the critical ones.
Any number of workers may consume the queue together (see ``wallet/fraud/store.py``).

Given an ``InProcessBus`` (embedded mode, no ``RABBITMQ_URL``) the same worker runs inside the API
process: it subscribes to the bus with the same topology and handler and publishes its alerts there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import aio_pika
import asyncpg
from aio_pika.abc import AbstractExchange, AbstractRobustChannel, AbstractRobustConnection
from aiohttp import web

from wallet.config import Settings
from wallet.fraud.messages import WalletEventMessage, parse_wallet_event
from wallet.fraud.observability import WorkerMetrics, health_app, serve
from wallet.fraud.rules import RuleConfig
from wallet.fraud.store import FraudStore, StoredAlert
from wallet.messaging.batch_consumer import BatchConsumer
from wallet.messaging.connection import connect_robust_retrying
from wallet.messaging.inprocess import Delivery, InProcessBus, Subscription
from wallet.messaging.topology import alert_routing_key, declare_exchange, fraud_topology
from wallet.persistence.db import create_pool

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_SECONDS = 10.0
SWEEP_EVERY_SECONDS = 5.0
PURGE_EVERY_SECONDS = 3600.0
QUEUE_DEPTH_EVERY_SECONDS = 5.0


def rule_config(settings: Settings) -> RuleConfig:
    return RuleConfig.from_values(
        high_value_threshold=settings.fraud_high_value_threshold,
        rapid_count=settings.fraud_rapid_count,
        rapid_window_seconds=settings.fraud_rapid_window_seconds,
        critical_rules=settings.fraud_critical_rules,
    )


@dataclass(slots=True)
class WorkerStats:
    processed: int = 0
    duplicates: int = 0
    alerts: int = 0
    alerts_published: int = 0
    batches: int = 0


# Puts the worker's HTTP app (health, metrics) behind authentication, given the settings and the
# worker's pool (where API keys are looked up); the composition root passes the HTTP layer's.
GuardApp = Callable[[web.Application, Settings, asyncpg.Pool], None]


class FraudWorker:
    def __init__(
        self,
        settings: Settings,
        *,
        name: str = "fraud-worker",
        bus: InProcessBus | None = None,
        guard: GuardApp,
    ) -> None:
        self.settings = settings
        self.name = name
        self.bus = bus
        self._guard = guard
        self.config = rule_config(settings)
        self.topology = fraud_topology(settings)
        self.stats = WorkerStats()
        self.metrics = WorkerMetrics(self)
        self.queue_depth: int | None = None  # ready messages, as last read from the broker
        self._in_hand: list[datetime] = []  # the oldest event of each batch being processed
        self._last_lag = 0.0  # the age of the last batch's oldest event when it was done
        self._in_flight: set[asyncio.Task[object]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._http: web.AppRunner | None = None
        # Crash point for the tests of a crash between the commit and the ack (WALLET_FAULT_*).
        self._crash_after_commit = settings.extra.get("WALLET_FAULT_CRASH_AFTER_FRAUD_COMMIT") == "1"
        self._started = False

    async def start(self) -> None:
        s = self.settings
        self.pool: asyncpg.Pool = await create_pool(
            s.database_url,
            min_size=1,
            max_size=4,
            application_name=self.name,
            statement_cache_size=s.db_statement_cache_size,
        )
        self.store = FraudStore(self.pool)
        self.consumer: BatchConsumer[WalletEventMessage] | Subscription
        if self.bus is not None:
            self.consumer = self.bus.subscribe(self.topology, self.handle, name=self.name, concurrency=2)
        else:
            await self._consume_from_rabbitmq()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._sweep_periodically()))
        self._tasks.append(loop.create_task(self._purge_periodically()))
        if self.bus is None:
            self._tasks.append(loop.create_task(self._read_queue_depth_periodically()))
        if s.fraud_worker_port:
            app = health_app(self.metrics, self, s.fraud_lag_threshold_seconds)
            self._guard(app, s, self.pool)
            self._http = await serve(app, s.host, s.fraud_worker_port)
        self._started = True
        where = " (in-process bus)" if self.bus is not None else ""
        log.info("fraud worker %s consuming %s%s", self.name, self.topology.queue, where)

    async def _consume_from_rabbitmq(self) -> None:
        s = self.settings
        try:
            self.connection: AbstractRobustConnection = await connect_robust_retrying(
                s.rabbitmq_url, name=self.name
            )
            channel = await self.connection.channel(publisher_confirms=True)
            assert isinstance(channel, AbstractRobustChannel)
            self.channel: AbstractRobustChannel = channel
            await self.channel.set_qos(prefetch_count=s.fraud_prefetch)
            self.exchange: AbstractExchange = await declare_exchange(self.channel, s.rabbitmq_exchange)
            self.consumer = BatchConsumer(
                self.channel,
                self.topology,
                parse_wallet_event,
                self.handle_batch,
                name=self.name,
                max_batch=s.fraud_batch_size,
            )
            await self.consumer.start()
        except BaseException:
            await self.pool.close()
            raise

    async def stop(self) -> None:
        """Stop consuming, let the batch in hand finish (briefly), close everything."""
        if not self._started:
            return
        self._started = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Every wait bounded: a broker or a client that does not answer must not hold the shutdown.
        grace = self.settings.shutdown_timeout_seconds
        with contextlib.suppress(TimeoutError):
            if isinstance(self.consumer, BatchConsumer):
                await asyncio.wait_for(self.consumer.stop(grace), 2 * grace + 1)
            else:
                await asyncio.wait_for(self.consumer.stop(), grace)
        if self._in_flight:  # the bus's handlers
            await asyncio.wait(set(self._in_flight), timeout=grace)
        if self._http is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._http.cleanup(), grace)
        if self.bus is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.connection.close(), 5.0)
        try:
            await asyncio.wait_for(self.pool.close(), 5.0)
        except Exception:
            self.pool.terminate()

    def lag_seconds(self) -> float:
        """Age of the oldest event received and not yet processed: of the batches in hand;
        between batches with deliveries waiting, the last batch's; 0 when idle."""
        if self._in_hand:
            return max(0.0, (datetime.now(UTC) - min(self._in_hand)).total_seconds())
        if isinstance(self.consumer, BatchConsumer) and self.consumer.buffered:
            return self._last_lag
        return 0.0

    async def handle(self, message: Delivery) -> None:
        """One message (the in-process bus): a batch of one."""
        await self.handle_batch([parse_wallet_event(message.body)])

    async def handle_batch(self, events: Sequence[WalletEventMessage]) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        started = time.monotonic()
        oldest = min(e.occurred_at for e in events)
        self._in_hand.append(oldest)
        try:
            result = await self.store.process_batch(events, self.config)
            if self._crash_after_commit:  # fault injection for the crash tests only
                os.kill(os.getpid(), signal.SIGKILL)
            # Fresh or not: the alerts not yet published of these events go out now (a
            # redelivery after a crash between the commit and the publish finds them here).
            sources = {a.source_event_id for a in result.alerts} | result.duplicates
            if sources:
                published = await self.store.publish_pending(self.publish_alert, source_event_ids=sources)
                self.stats.alerts_published += published
        except Exception:
            self.metrics.failed(len(events))
            raise
        finally:
            self._in_hand.remove(oldest)
            self._last_lag = max(0.0, (datetime.now(UTC) - oldest).total_seconds())
            if task is not None:
                self._in_flight.discard(task)
        self.stats.batches += 1
        self.stats.processed += len(result.fresh)
        duplicates = len(events) - len(result.fresh)  # a copy within the batch is one too
        self.stats.duplicates += duplicates
        self.stats.alerts += len(result.alerts)
        elapsed = time.monotonic() - started
        self.metrics.batch(len(events), elapsed, len(result.fresh), duplicates, len(result.alerts))

    async def publish_alert(self, alert: StoredAlert) -> None:
        if self.bus is not None:
            await self.bus.publish(
                alert_routing_key(alert.severity),
                alert.message().to_json(),
                message_id=str(alert.id),
                message_type="FRAUD_ALERT",
                app_id=self.name,
            )
            return
        message = aio_pika.Message(
            alert.message().to_json(),
            message_id=str(alert.id),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            type="FRAUD_ALERT",
            app_id=self.name,
        )
        await self.exchange.publish(
            message,
            routing_key=alert_routing_key(alert.severity),
            mandatory=False,
            timeout=PUBLISH_TIMEOUT_SECONDS,
        )

    async def _sweep_periodically(self) -> None:
        """Publish alerts left unpublished (their message died in the DLQ, or a publish failed)."""
        while True:
            await asyncio.sleep(SWEEP_EVERY_SECONDS)
            try:
                published = await self.store.publish_pending(
                    self.publish_alert, older_than=SWEEP_EVERY_SECONDS
                )
                self.stats.alerts_published += published
            except Exception as exc:
                log.warning("fraud worker: alert sweep failed: %r", exc)

    async def _read_queue_depth_periodically(self) -> None:
        """The queue's ready messages, read by a passive declaration on a channel of its own."""
        while True:
            try:
                channel = await self.connection.channel()
                try:
                    queue = await channel.declare_queue(self.topology.queue, passive=True)
                    self.queue_depth = queue.declaration_result.message_count
                finally:
                    with contextlib.suppress(Exception):
                        await channel.close()
            except Exception as exc:
                self.queue_depth = None
                log.debug("fraud worker: queue depth unknown: %r", exc)
            await asyncio.sleep(QUEUE_DEPTH_EVERY_SECONDS)

    async def _purge_periodically(self) -> None:
        while True:
            try:
                await self.store.purge(self.settings.fraud_state_retention_seconds)
            except Exception as exc:
                log.warning("fraud worker: purge failed: %r", exc)
            await asyncio.sleep(PURGE_EVERY_SECONDS)
