"""Connecting to RabbitMQ: plain connections for the relay (it handles its own back-off) and
robust ones, retried until the broker answers, for long-running consumers."""

from __future__ import annotations

import asyncio
import logging
import random

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractRobustConnection

log = logging.getLogger(__name__)


async def connect(url: str, *, name: str, connect_timeout: float) -> AbstractConnection:
    """One attempt, bounded by ``connect_timeout``."""
    async with asyncio.timeout(connect_timeout):
        return await aio_pika.connect(
            url, timeout=connect_timeout, client_properties={"connection_name": name}
        )


def next_backoff(current: float, initial: float, maximum: float) -> float:
    """Exponential back-off: ``initial``, then doubling, capped at ``maximum``."""
    return min(maximum, initial if current <= 0 else current * 2)


def jittered(delay: float) -> float:
    """The delay, give or take 10 %, so instances that lost the broker together do not return together."""
    return delay * random.uniform(0.9, 1.1)


async def connect_robust_retrying(
    url: str,
    *,
    name: str,
    connect_timeout: float = 10.0,
    initial_backoff: float = 0.2,
    max_backoff: float = 30.0,
) -> AbstractRobustConnection:
    """A robust connection (it reconnects and restores channels, queues and consumers by itself),
    tried with exponential back-off until the broker first answers."""
    backoff = 0.0
    while True:
        try:
            async with asyncio.timeout(connect_timeout):
                return await aio_pika.connect_robust(
                    url,
                    timeout=connect_timeout,
                    client_properties={"connection_name": name},
                    reconnect_interval=max(initial_backoff, 1.0),
                )
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            backoff = next_backoff(backoff, initial_backoff, max_backoff)
            log.warning("%s: RabbitMQ unreachable (%r); retrying in %.1f s", name, exc, backoff)
            await asyncio.sleep(jittered(backoff))
