"""The in-process event bus: RabbitMQ's part when ``RABBITMQ_URL`` is unset (embedded mode).

The outbox relay publishes to it instead of the broker (``OutboxRelay(publisher=bus)``), and the
fraud worker and auto-freeze subscribe to it with the same topologies, handlers and retry policy
they use on RabbitMQ (``QueueTopology``): a subscription receives the messages whose routing key
is one of its topology's keys (exact keys, as every binding of this service is), in publish order.

Each subscription has an asyncio queue and ``concurrency`` consumer tasks. A handler that raises
is retried after the policy's growing delays; after ``max_retries`` retries the message is logged
and dropped (there is no dead-letter queue in-process).

Delivery is at most once across a crash: ``publish`` returns once the message is queued in memory
(where a broker would confirm it), so the relay marks its outbox row published; messages queued
and not yet handled when the process dies are lost. ``stop`` lets the queue drain first. This is
for development and demos; production runs RabbitMQ.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from wallet.messaging.consumer import ConsumerStats
from wallet.messaging.topology import QueueTopology

log = logging.getLogger(__name__)


class Delivery(Protocol):
    """What a handler reads of a message: an aio-pika ``AbstractIncomingMessage`` or a ``BusMessage``."""

    @property
    def body(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class OutgoingEvent:
    """One outbox row as the relay publishes it."""

    routing_key: str
    body: bytes
    message_id: str  # the event id: consumers dedupe by it
    message_type: str  # the event type


class EventPublisher(Protocol):
    """Where the outbox relay publishes: RabbitMQ (``BrokerLink``) or the in-process bus."""

    async def publish_batch(
        self, events: Sequence[OutgoingEvent], *, app_id: str
    ) -> list[BaseException | None]:
        """Publish ``events`` in order; one result each: None once delivered, or what failed it."""
        ...


@dataclass(frozen=True, slots=True)
class BusMessage:
    routing_key: str
    body: bytes
    message_id: str
    type: str
    app_id: str


BusHandler = Callable[[BusMessage], Awaitable[None]]


class Subscription:
    """One consumer queue on the bus; ``stop`` drains it (for at most ``drain_seconds``)."""

    def __init__(
        self,
        topology: QueueTopology,
        handler: BusHandler,
        *,
        name: str,
        concurrency: int,
        drain_seconds: float,
    ) -> None:
        self.topology = topology
        self.name = name
        self.stats = ConsumerStats()
        self._handler = handler
        self._drain_seconds = drain_seconds
        self._queue: asyncio.Queue[BusMessage] = asyncio.Queue()
        self._closed = False
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._consume(), name=f"{name}-{n}") for n in range(concurrency)]

    def offer(self, message: BusMessage) -> None:
        if not self._closed:
            self._queue.put_nowait(message)

    async def stop(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), self._drain_seconds)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._closed = True
        if left := self._queue.qsize():
            log.warning("%s: stopped with %d messages not handled", self.name, left)

    async def _consume(self) -> None:
        while True:
            message = await self._queue.get()
            try:
                await self._handle(message)
            finally:
                self._queue.task_done()

    async def _handle(self, message: BusMessage) -> None:
        policy = self.topology.retry
        for attempt in range(policy.max_retries + 1):
            if attempt:
                await asyncio.sleep(policy.delay_ms(attempt) / 1000)
                self.stats.retried += 1
            try:
                await self._handler(message)
            except Exception as exc:
                log.warning(
                    "%s: message %s failed (attempt %d): %r", self.name, message.message_id, attempt + 1, exc
                )
                continue
            self.stats.handled += 1
            return
        self.stats.dead_lettered += 1
        log.error(
            "%s: message %s dropped after %d attempts", self.name, message.message_id, policy.max_retries + 1
        )


class InProcessBus:
    def __init__(self, *, drain_seconds: float = 5.0) -> None:
        self._drain_seconds = drain_seconds
        self._subscriptions: list[Subscription] = []

    def subscribe(
        self, topology: QueueTopology, handler: BusHandler, *, name: str, concurrency: int = 4
    ) -> Subscription:
        """Start consuming (on the running loop) the messages routed by ``topology``'s keys."""
        subscription = Subscription(
            topology, handler, name=name, concurrency=concurrency, drain_seconds=self._drain_seconds
        )
        self._subscriptions.append(subscription)
        return subscription

    async def publish(
        self, routing_key: str, body: bytes, *, message_id: str, message_type: str, app_id: str
    ) -> None:
        message = BusMessage(routing_key, body, message_id, message_type, app_id)
        for subscription in self._subscriptions:
            if routing_key in subscription.topology.routing_keys:
                subscription.offer(message)

    async def publish_batch(
        self, events: Sequence[OutgoingEvent], *, app_id: str
    ) -> list[BaseException | None]:
        for event in events:
            await self.publish(
                event.routing_key,
                event.body,
                message_id=event.message_id,
                message_type=event.message_type,
                app_id=app_id,
            )
        return [None] * len(events)
