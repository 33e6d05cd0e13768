"""The in-process bus (embedded mode) and how settings tell which URLs were given."""

from __future__ import annotations

import asyncio

from wallet.config import Settings
from wallet.messaging.inprocess import BusMessage, InProcessBus
from wallet.messaging.topology import QueueTopology, RetryPolicy


def topology(*keys: str, retries: int = 2) -> QueueTopology:
    return QueueTopology("q", "x", keys, RetryPolicy(retries, 0.01))


async def publish(bus: InProcessBus, key: str, n: int) -> None:
    await bus.publish(key, str(n).encode(), message_id=str(n), message_type="T", app_id="test")


async def test_routes_by_key_in_publish_order_and_drains_on_stop() -> None:
    bus = InProcessBus(drain_seconds=2.0)
    got: list[int] = []

    async def handler(message: BusMessage) -> None:
        await asyncio.sleep(0)
        got.append(int(message.body))

    subscription = bus.subscribe(topology("wallet.a"), handler, name="t", concurrency=1)
    for n in range(50):
        await publish(bus, "wallet.a" if n % 2 == 0 else "wallet.b", n)
    await subscription.stop()
    assert got == list(range(0, 50, 2))
    assert subscription.stats.handled == 25
    await publish(bus, "wallet.a", 99)  # after stop: not queued
    assert 99 not in got


async def test_failing_handler_is_retried_then_dropped() -> None:
    bus = InProcessBus()
    attempts: dict[str, int] = {}

    async def handler(message: BusMessage) -> None:
        attempts[message.message_id] = attempts.get(message.message_id, 0) + 1
        if message.message_id == "1" or attempts[message.message_id] < 2:
            raise RuntimeError("boom")

    subscription = bus.subscribe(topology("k", retries=2), handler, name="t", concurrency=2)
    await publish(bus, "k", 1)  # always fails: 1 attempt + 2 retries, then dropped
    await publish(bus, "k", 2)  # fails once, then handled
    await subscription.stop()
    assert attempts == {"1": 3, "2": 2}
    assert (subscription.stats.handled, subscription.stats.dead_lettered) == (1, 1)


def test_settings_tell_which_urls_were_given() -> None:
    unset = Settings.from_env({"DATABASE_URL": "", "WALLET_DATA_DIR": "/tmp/w"})
    assert not (unset.database_url_given or unset.redis_url_given or unset.rabbitmq_url_given)
    assert unset.database_url == Settings().database_url  # the defaults are unchanged
    assert unset.data_dir == "/tmp/w"
    given = Settings.from_env(
        {"DATABASE_URL": "postgresql://db/w", "REDIS_URL": "redis://r:6379/0", "RABBITMQ_URL": "amqp://mq/"}
    )
    assert given.database_url_given and given.redis_url_given and given.rabbitmq_url_given
    assert given.database_url == "postgresql://db/w"
    assert Settings().database_url_given  # built in code (the tests' fixtures): real services
