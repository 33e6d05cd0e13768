"""The outbox relay's link to RabbitMQ: the publishing connection, and a probe connection.

An ``EventPublisher`` (``wallet/messaging/inprocess.py``), like the in-process bus:
``publish_batch`` sends a batch of persistent messages on the confirmed channel and returns once
the broker confirmed (or refused) each. The batch goes straight on the aiormq channel under
aio-pika's (which declared the topology), as one encoded write holding every message's frames
(``publish_frames``), and the channel's confirm futures are registered for it exactly as aiormq's
``basic_publish`` registers its one (under the channel's lock, in delivery-tag order). One task,
one queue put and one socket write per batch instead of per message (DESIGN.md §6).

Health probes use a separate connection (a passive-safe exchange declare), so a probe never
disturbs the publishing channel. Back-off after failures is the relay's (it applies to any
publisher).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq import Channel as RawChannel
from aiormq import spec
from aiormq.abc import ChannelFrame

from wallet.config import Settings
from wallet.messaging.connection import connect
from wallet.messaging.inprocess import OutgoingEvent
from wallet.messaging.publish_frames import publish_frames
from wallet.messaging.topology import declare_exchange

log = logging.getLogger(__name__)


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

    async def publish_batch(
        self, events: Sequence[OutgoingEvent], *, app_id: str
    ) -> list[BaseException | None]:
        """Publish ``events`` in order as persistent messages; one result each: None once the
        broker confirmed it, or the error (a Nack, the channel closing, the timeout)."""
        channel = self._channel
        if channel is None:
            return [ConnectionError("not connected to RabbitMQ")] * len(events)
        confirms: list[asyncio.Future[Any]] = []
        try:
            frame = ChannelFrame(
                payload=publish_frames(
                    events,
                    exchange=self._settings.rabbitmq_exchange,
                    app_id=app_id,
                    channel=channel.number,
                    max_body_frame=channel.max_content_size,
                ),
                should_close=False,
            )
            async with asyncio.timeout(self._settings.outbox_publish_timeout_seconds):
                async with channel.lock:
                    await channel.write_queue.put(frame)
                    # Registered right after the frame is queued, before the writer task (or a
                    # confirm, which the reader task handles) can run: the broker numbers the
                    # messages of a confirmed channel in the order they arrive.
                    for _ in events:
                        channel.delivery_tag += 1
                        confirm = channel.create_future()
                        channel.confirmations[channel.delivery_tag] = confirm
                        confirms.append(confirm)
                results = await asyncio.gather(*confirms, return_exceptions=True)
        except BaseException as exc:
            settled = [_settled(confirm, exc) for confirm in confirms] or [exc] * len(events)
            for confirm in confirms:
                confirm.cancel()  # a late confirm of a cancelled future is ignored by aiormq
            if not isinstance(exc, Exception):
                raise
            return settled
        return [_failure(result) for result in results]

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


def _settled(confirm: asyncio.Future[Any], error: BaseException) -> BaseException | None:
    """What a confirm says when waiting for the batch ended in ``error``."""
    if confirm.done() and not confirm.cancelled():
        return _failure(confirm.exception() or confirm.result())
    return error


def _failure(result: object) -> BaseException | None:
    if isinstance(result, BaseException):
        return result
    if isinstance(result, spec.Basic.Ack):
        return None
    return RuntimeError(f"not confirmed by the broker: {result!r}")
