"""The outbox relay's link to RabbitMQ: the publishing connection, and a probe connection.

An ``EventPublisher`` (``wallet/messaging/inprocess.py``), like the in-process bus: ``publish``
sends one persistent message on the confirmed channel and returns once the broker confirmed it.
Publishes go straight on the aiormq channel under aio-pika's (which declared the topology): about
half the CPU per message of ``Exchange.publish``; ``wait=False`` skips waiting for each frame to
be written, the broker's confirm is still awaited for every message. Concurrent publishes go out
in call order: each takes the channel's FIFO lock before its first suspension.

Health probes use a separate connection (a passive-safe exchange declare), so a probe never
disturbs the publishing channel. Back-off after failures is the relay's (it applies to any
publisher).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq import Channel as RawChannel
from aiormq import spec

from wallet.config import Settings
from wallet.messaging.connection import connect
from wallet.messaging.topology import declare_exchange

log = logging.getLogger(__name__)

PERSISTENT = int(aio_pika.DeliveryMode.PERSISTENT)


class BrokerLink:
    def __init__(self, settings: Settings, *, name: str) -> None:
        self._settings = settings
        self._name = name
        self._connection: AbstractConnection | None = None
        self._channel: RawChannel | None = None  # aiormq channel under the aio-pika one ...
        self._pika_channel: AbstractChannel | None = None  # ... kept referenced: it closes on GC
        self._probe: AbstractConnection | None = None
        self._probe_channel: AbstractChannel | None = None
        self._probe_lock = asyncio.Lock()

    async def connect(self) -> bool:
        """Make sure the publishing channel is open; True if it had to connect anew."""
        if self._channel is not None and self._connection is not None and not self._connection.is_closed:
            return False
        await self._close_publishing()
        timeout = self._settings.outbox_publish_timeout_seconds
        connection = await connect(
            self._settings.rabbitmq_url, name=f"{self._name}-outbox", connect_timeout=timeout
        )
        try:
            async with asyncio.timeout(timeout):
                channel = await connection.channel(publisher_confirms=True)
                await declare_exchange(channel, self._settings.rabbitmq_exchange)
                raw = await channel.get_underlay_channel()
                assert isinstance(raw, RawChannel)  # for ``basic_publish(wait=...)``
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 2.0)
            raise
        self._connection, self._channel, self._pika_channel = connection, raw, channel
        log.info("outbox relay %s connected to RabbitMQ", self._name)
        return True

    async def publish(
        self, routing_key: str, body: bytes, *, message_id: str, message_type: str, app_id: str
    ) -> None:
        channel = self._channel
        if channel is None:
            raise ConnectionError("not connected to RabbitMQ")
        properties = spec.Basic.Properties(
            message_id=message_id,
            content_type="application/json",
            delivery_mode=PERSISTENT,
            message_type=message_type,
            app_id=app_id,
        )
        confirm = await channel.basic_publish(
            body,
            exchange=self._settings.rabbitmq_exchange,
            routing_key=routing_key,
            properties=properties,
            timeout=self._settings.outbox_publish_timeout_seconds,
            wait=False,
        )
        if not isinstance(confirm, spec.Basic.Ack):  # a Nack raises DeliveryError already
            raise RuntimeError(f"not confirmed by the broker: {confirm!r}")

    def drop(self) -> None:
        """Forget the publishing connection after a failure (closed in the background)."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            asyncio.get_running_loop().create_task(_close_quietly(connection))

    async def ping(self) -> None:
        """Raise unless the broker answers a request now, on the probe connection."""
        async with self._probe_lock:
            timeout = self._settings.outbox_publish_timeout_seconds
            try:
                if self._probe is None or self._probe.is_closed or self._probe_channel is None:
                    await self._close_probe()
                    self._probe = await connect(
                        self._settings.rabbitmq_url, name=f"{self._name}-probe", connect_timeout=timeout
                    )
                    self._probe_channel = await self._probe.channel(publisher_confirms=False)
                await declare_exchange(self._probe_channel, self._settings.rabbitmq_exchange)
            except BaseException:
                await self._close_probe()
                raise

    async def close(self) -> None:
        await self._close_publishing()
        await self._close_probe()

    async def _close_publishing(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            await _close_quietly(connection)

    async def _close_probe(self) -> None:
        probe, self._probe, self._probe_channel = self._probe, None, None
        if probe is not None:
            await _close_quietly(probe)


async def _close_quietly(connection: AbstractConnection) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(connection.close(), 2.0)
