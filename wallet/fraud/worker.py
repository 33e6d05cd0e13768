"""The fraud-detection worker (``wallet worker``): consumes the event stream, raises alerts.

Its own process. It consumes the durable queue ``fraud_detection`` (withdrawal and transfer-debit
events, prefetch ``FRAUD_PREFETCH``) through ``RetryingConsumer``: a failing message is retried
after growing delays and, after ``FRAUD_MAX_RETRIES`` retries, dead-lettered to
``fraud_detection.dlq``; the worker goes on with the next ones.

Per message, ``FraudStore.process`` writes the processed-event record, the rules' memory and the
alerts in one transaction, so a redelivered event changes nothing. Then every alert of that event
not yet published is published (confirmed) as ``fraud.alert.<severity>`` on the events exchange and
marked; only then is the message acked. A crash in between redelivers the message, which finds
its alerts unpublished and publishes them; a periodic sweep catches any left over (e.g. after the
message went to the DLQ). The API's auto-freeze consumes the critical ones.

Given an ``InProcessBus`` (embedded mode, no ``RABBITMQ_URL``) the same worker runs inside the API
process: it subscribes to the bus with the same topology and handler and publishes its alerts there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import aio_pika
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

from wallet.config import Settings
from wallet.fraud.messages import parse_wallet_event
from wallet.fraud.rules import RuleConfig
from wallet.fraud.store import FraudStore, StoredAlert
from wallet.messaging.connection import connect_robust_retrying
from wallet.messaging.consumer import RetryingConsumer
from wallet.messaging.inprocess import Delivery, InProcessBus, Subscription
from wallet.messaging.topology import alert_routing_key, declare_exchange, fraud_topology
from wallet.persistence.db import create_pool

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_SECONDS = 10.0
SWEEP_EVERY_SECONDS = 5.0
PURGE_EVERY_SECONDS = 3600.0


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


class FraudWorker:
    def __init__(
        self, settings: Settings, *, name: str = "fraud-worker", bus: InProcessBus | None = None
    ) -> None:
        self.settings = settings
        self.name = name
        self.bus = bus
        self.config = rule_config(settings)
        self.topology = fraud_topology(settings)
        self.stats = WorkerStats()
        self._in_flight: set[asyncio.Task[object]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False

    async def start(self) -> None:
        s = self.settings
        self.pool: asyncpg.Pool = await create_pool(
            s.database_url,
            min_size=1,
            max_size=max(2, min(s.fraud_prefetch, 8)),
            application_name=self.name,
            statement_cache_size=s.db_statement_cache_size,
        )
        self.store = FraudStore(self.pool)
        self.consumer: RetryingConsumer | Subscription
        if self.bus is not None:
            concurrency = max(1, min(s.fraud_prefetch, 8))  # at most the pool's connections
            self.consumer = self.bus.subscribe(
                self.topology, self.handle, name=self.name, concurrency=concurrency
            )
        else:
            await self._consume_from_rabbitmq()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._sweep_periodically()))
        self._tasks.append(loop.create_task(self._purge_periodically()))
        self._started = True
        where = " (in-process bus)" if self.bus is not None else ""
        log.info("fraud worker %s consuming %s%s", self.name, self.topology.queue, where)

    async def _consume_from_rabbitmq(self) -> None:
        s = self.settings
        try:
            self.connection: AbstractRobustConnection = await connect_robust_retrying(
                s.rabbitmq_url, name=self.name
            )
            self.channel: AbstractChannel = await self.connection.channel(publisher_confirms=True)
            await self.channel.set_qos(prefetch_count=s.fraud_prefetch)
            self.exchange: AbstractExchange = await declare_exchange(self.channel, s.rabbitmq_exchange)
            self.consumer = RetryingConsumer(self.channel, self.topology, self.handle, name=self.name)
            await self.consumer.start()
        except BaseException:
            await self.pool.close()
            raise

    async def stop(self) -> None:
        """Stop consuming, let the messages in hand finish (briefly), close everything."""
        if not self._started:
            return
        self._started = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.consumer.stop()
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=self.settings.shutdown_timeout_seconds)
        if self.bus is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.connection.close(), 5.0)
        try:
            await asyncio.wait_for(self.pool.close(), 5.0)
        except Exception:
            self.pool.terminate()

    async def handle(self, message: Delivery) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            event = parse_wallet_event(message.body)
            result = await self.store.process(event, self.config)
            if result.duplicate:
                self.stats.duplicates += 1
            else:
                self.stats.processed += 1
                self.stats.alerts += len(result.alerts)
            # Fresh or not: its alerts not yet published go out now (a redelivery after a crash
            # between the commit and the publish finds them here).
            if result.alerts or result.duplicate:
                published = await self.store.publish_pending(
                    self.publish_alert, source_event_id=event.event_id
                )
                self.stats.alerts_published += published
        finally:
            if task is not None:
                self._in_flight.discard(task)

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

    async def _purge_periodically(self) -> None:
        while True:
            try:
                await self.store.purge(self.settings.fraud_state_retention_seconds)
            except Exception as exc:
                log.warning("fraud worker: purge failed: %r", exc)
            await asyncio.sleep(PURGE_EVERY_SECONDS)
