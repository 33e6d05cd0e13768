"""Consumer base: ack on success; on failure a bounded number of delayed retries, then the DLQ.

A handler that raises gets its message republished (publisher confirm awaited) to the retry queue
of the next attempt, then the original is acked; the retry queue's TTL brings it back to the
consumer's queue after a growing delay. After ``max_retries`` retries the message is rejected
without requeue, so the queue's dead-letter exchange moves it to ``<queue>.dlq`` (RabbitMQ adds
the ``x-death`` header), and the consumer goes on with the next messages.

Delivery is at least once: a crash between the handler's commit and the ack redelivers the
message, so handlers must be idempotent (the fraud worker dedupes by event id).

aio-pika runs one task per delivered message, so up to ``prefetch`` handlers run at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from wallet.messaging.topology import QueueTopology, declare_queue

log = logging.getLogger(__name__)

Handler = Callable[[AbstractIncomingMessage], Awaitable[None]]

RETRIES_HEADER = "x-wallet-retries"
ERROR_HEADER = "x-wallet-last-error"
ROUTING_KEY_HEADER = "x-wallet-routing-key"
PUBLISH_TIMEOUT_SECONDS = 10.0


@dataclass(slots=True)
class ConsumerStats:
    handled: int = 0
    retried: int = 0
    dead_lettered: int = 0


def retries_of(message: AbstractIncomingMessage) -> int:
    value = (message.headers or {}).get(RETRIES_HEADER, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _carried_headers(message: AbstractIncomingMessage) -> dict[str, Any]:
    # RabbitMQ's own x- headers (x-death, ...) stay behind; ours and the publisher's go along.
    return {
        k: v
        for k, v in (message.headers or {}).items()
        if not k.startswith("x-") or k.startswith("x-wallet-")
    }


class RetryingConsumer:
    def __init__(
        self, channel: AbstractChannel, topology: QueueTopology, handler: Handler, *, name: str
    ) -> None:
        self._channel = channel
        self._topology = topology
        self._handler = handler
        self._name = name
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self.stats = ConsumerStats()

    async def start(self) -> None:
        self._queue = await declare_queue(self._channel, self._topology)
        self._tag = await self._queue.consume(self._on_message)

    async def stop(self) -> None:
        """Stop receiving; unacked messages go back to the queue when the channel closes."""
        if self._queue is not None and self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except Exception as exc:  # the channel may be gone already
                log.debug("%s: cancel failed: %r", self._name, exc)
        self._tag = None

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            await self._handler(message)
        except asyncio.CancelledError:
            raise  # shutting down: unacked, so redelivered
        except Exception as exc:
            await self._retry_or_dead_letter(message, exc)
            return
        self.stats.handled += 1
        await message.ack()

    async def _retry_or_dead_letter(self, message: AbstractIncomingMessage, error: Exception) -> None:
        await retry_or_dead_letter(self._channel, self._topology, message, error, self.stats, name=self._name)


async def retry_or_dead_letter(
    channel: AbstractChannel,
    topology: QueueTopology,
    message: AbstractIncomingMessage,
    error: Exception,
    stats: ConsumerStats,
    *,
    name: str,
) -> None:
    """Schedule the next retry of a failed message (a confirmed copy in the retry queue, then the
    original acked), or reject it to the dead-letter queue once its retries are spent."""
    retries = retries_of(message)
    policy = topology.retry
    if retries >= policy.max_retries:
        log.error(
            "%s: message %s failed %d times, to %s: %r",
            name,
            message.message_id,
            retries + 1,
            topology.dead_letter_queue,
            error,
        )
        stats.dead_lettered += 1
        await message.reject(requeue=False)
        return
    retry = retries + 1
    headers = _carried_headers(message)
    headers[RETRIES_HEADER] = retry
    headers[ERROR_HEADER] = repr(error)[:500]
    headers.setdefault(ROUTING_KEY_HEADER, message.routing_key or "")
    copy = aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        type=message.type,
        timestamp=message.timestamp,
        app_id=message.app_id,
    )
    log.warning(
        "%s: message %s failed (attempt %d), retry in %d ms: %r",
        name,
        message.message_id,
        retry,
        policy.delay_ms(retry),
        error,
    )
    try:
        await channel.default_exchange.publish(
            copy, routing_key=topology.retry_queue(retry), timeout=PUBLISH_TIMEOUT_SECONDS
        )
    except Exception as exc:
        log.warning("%s: could not schedule the retry (%r); requeueing", name, exc)
        await asyncio.sleep(policy.delay_ms(retry) / 1000)  # no hot loop while the broker struggles
        await message.nack(requeue=True)
        return
    stats.retried += 1
    await message.ack()
