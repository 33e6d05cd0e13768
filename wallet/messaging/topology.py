"""RabbitMQ topology: the events exchange, and consumer queues with retries and a dead-letter queue.

- ``<exchange>`` (topic, durable): wallet events, routing key ``wallet.<event type lower case>``;
  fraud alerts, routing key ``fraud.alert.<severity lower case>``.
- A consumer queue ``<queue>`` (durable) bound to its routing keys, whose dead letters go to the
  direct exchange ``<queue>.dlx`` and from there to ``<queue>.dlq``.
- Retries: one queue per delay, ``<queue>.retry.<ms>ms``, with that message TTL and the default
  exchange as dead-letter exchange, routing key ``<queue>``: a message published there comes back
  to ``<queue>`` alone (not to every queue bound to the original routing key) after the delay.
  The delay is in the name so a changed configuration declares new queues instead of failing on
  the arguments of the old ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from wallet.config import Settings
from wallet.fraud.rules import WATCHED_EVENT_TYPES, Severity

WALLET_ROUTING_PREFIX = "wallet."
ALERT_ROUTING_PREFIX = "fraud.alert."


def event_routing_key(event_type: str) -> str:
    """The routing key of a wallet event (the outbox computes the same in SQL)."""
    return WALLET_ROUTING_PREFIX + event_type.lower()


def alert_routing_key(severity: str) -> str:
    return ALERT_ROUTING_PREFIX + severity.lower()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``max_retries`` retries after the first attempt, the n-th after ``base * factor**(n-1)``."""

    max_retries: int
    base_delay_seconds: float
    factor: float = 2.0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.base_delay_seconds <= 0 or self.factor < 1:
            raise ValueError(f"bad retry policy: {self}")

    def delay_ms(self, retry: int) -> int:
        """The delay before retry number ``retry`` (1-based), in milliseconds."""
        return max(1, round(self.base_delay_seconds * self.factor ** (retry - 1) * 1000))


@dataclass(frozen=True, slots=True)
class QueueTopology:
    queue: str
    exchange: str
    routing_keys: tuple[str, ...]
    retry: RetryPolicy

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.queue}.dlx"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dlq"

    def retry_queue(self, retry: int) -> str:
        return f"{self.queue}.retry.{self.retry.delay_ms(retry)}ms"

    def queue_names(self) -> list[str]:
        retries = [self.retry_queue(n) for n in range(1, self.retry.max_retries + 1)]
        return [self.queue, self.dead_letter_queue, *dict.fromkeys(retries)]

    def exchange_names(self) -> list[str]:
        return [self.dead_letter_exchange]


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(settings.fraud_max_retries, settings.fraud_retry_base_seconds)


def fraud_topology(settings: Settings) -> QueueTopology:
    """The fraud worker's queue: withdrawal and transfer-debit events."""
    keys = tuple(sorted(event_routing_key(t) for t in WATCHED_EVENT_TYPES))
    return QueueTopology(settings.fraud_queue, settings.rabbitmq_exchange, keys, retry_policy(settings))


def alert_topology(settings: Settings) -> QueueTopology:
    """The API's auto-freeze queue: critical fraud alerts."""
    keys = (alert_routing_key(Severity.CRITICAL),)
    return QueueTopology(settings.fraud_alert_queue, settings.rabbitmq_exchange, keys, retry_policy(settings))


async def declare_exchange(channel: AbstractChannel, name: str) -> AbstractExchange:
    return await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)


async def declare_queue(channel: AbstractChannel, topology: QueueTopology) -> AbstractQueue:
    """Declare the exchange, the queue with its bindings, the DLX/DLQ and the retry queues."""
    exchange = await declare_exchange(channel, topology.exchange)
    dlx = await channel.declare_exchange(
        topology.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    dlq = await channel.declare_queue(topology.dead_letter_queue, durable=True)
    await dlq.bind(dlx, routing_key=topology.dead_letter_queue)
    for retry in range(1, topology.retry.max_retries + 1):
        await channel.declare_queue(
            topology.retry_queue(retry),
            durable=True,
            arguments={
                "x-message-ttl": topology.retry.delay_ms(retry),
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": topology.queue,
            },
        )
    queue = await channel.declare_queue(
        topology.queue,
        durable=True,
        arguments={
            "x-dead-letter-exchange": topology.dead_letter_exchange,
            "x-dead-letter-routing-key": topology.dead_letter_queue,
        },
    )
    for key in topology.routing_keys:
        await queue.bind(exchange, routing_key=key)
    return queue


async def delete_topology(channel: AbstractChannel, topology: QueueTopology) -> None:
    """Delete the queues and exchanges ``declare_queue`` made (not the shared events exchange)."""
    for name in topology.queue_names():
        await channel.queue_delete(name)
    for name in topology.exchange_names():
        await channel.exchange_delete(name)
