"""The relay's batch publish on a real broker: every message arrives in order with its properties,
a body larger than a frame is split and joined again, and a batch on a channel the broker closed
fails every message at once (never hangs) and the next connection publishes again."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from wallet.config import Settings
from wallet.messaging.broker_link import BrokerLink
from wallet.messaging.inprocess import OutgoingEvent


def event(n: int, size: int = 0) -> OutgoingEvent:
    body = orjson.dumps({"n": n, "pad": "x" * size})
    return OutgoingEvent(f"wallet.test_{n % 3}", body, f"event-{n}", f"TYPE_{n % 3}")


Received = asyncio.Queue[AbstractIncomingMessage]


async def bound_queue(amqp: AbstractRobustConnection, exchange: str) -> Received:
    received: Received = asyncio.Queue()
    channel = await amqp.channel()
    declared = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(declared, routing_key="wallet.#")
    await queue.consume(received.put, no_ack=True)
    return received


async def take(received: Received, n: int) -> list[AbstractIncomingMessage]:
    return [await asyncio.wait_for(received.get(), 10) for _ in range(n)]


async def test_a_batch_arrives_whole_in_order_with_every_property(settings: Settings, amqp) -> None:
    own = replace(settings, rabbitmq_exchange=f"{settings.rabbitmq_exchange}.link_{uuid.uuid4().hex[:6]}")
    received = await bound_queue(amqp, own.rabbitmq_exchange)
    link = BrokerLink(own, name="link-test")
    try:
        assert await link.connect()
        large = 300_000  # above the broker's frame size (128 KiB): sent as several body frames
        events = [event(n, size=large if n == 7 else 10) for n in range(300)]
        assert await link.publish_batch(events, app_id="link-test") == [None] * 300
        assert await link.publish_batch(events[:2], app_id="link-test") == [None, None]
        messages = await take(received, 302)
    finally:
        await link.close()
        async with await amqp.channel() as channel:
            await channel.exchange_delete(own.rabbitmq_exchange)
    for sent, got in zip(events + events[:2], messages, strict=True):
        assert got.body == sent.body
        assert (got.routing_key, got.message_id) == (sent.routing_key, sent.message_id)
        assert got.type == sent.message_type
        assert got.app_id == "link-test" and got.content_type == "application/json"
        assert got.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert len(messages[7].body) > large


async def test_a_batch_on_a_channel_the_broker_closed_fails_each_message_then_a_new_link_publishes(
    settings: Settings, amqp
) -> None:
    own = replace(settings, rabbitmq_exchange=f"{settings.rabbitmq_exchange}.link_{uuid.uuid4().hex[:6]}")
    link = BrokerLink(own, name="link-test")
    try:
        assert await link.connect()
        async with await amqp.channel() as channel:
            await channel.exchange_delete(own.rabbitmq_exchange)  # the broker closes a publisher's channel
        results = await asyncio.wait_for(link.publish_batch([event(n) for n in range(50)], app_id="t"), 10)
        assert len(results) == 50 and all(isinstance(r, BaseException) for r in results)
        later = await asyncio.wait_for(link.publish_batch([event(1)], app_id="t"), 10)
        assert isinstance(later[0], BaseException)  # the channel stays closed until the link is renewed
        link.drop()
        received = await bound_queue(amqp, own.rabbitmq_exchange)
        assert await link.connect()
        assert await link.publish_batch([event(n) for n in range(5)], app_id="t") == [None] * 5
        assert [m.message_id for m in await take(received, 5)] == [f"event-{n}" for n in range(5)]
    finally:
        await link.close()
        async with await amqp.channel() as channel:
            await channel.exchange_delete(own.rabbitmq_exchange)
