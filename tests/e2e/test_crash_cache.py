"""Read-your-writes across a crash (issue 11, item 9): the process is SIGKILLed after a COMMIT and
before its cache write; the next process must not serve the older cached balance."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.e2e.service_process import ServiceProcess


async def test_a_crash_between_commit_and_cache_write_leaves_no_stale_read(settings):
    wallet = f"crash-cache-{uuid.uuid4().hex[:10]}"
    key = f"{settings.redis_key_prefix}:balance:{wallet}"
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    redis = Redis.from_url(settings.redis_url)
    # The second committed batch kills the process before the cache (or the client) hears of it.
    crashing = await ServiceProcess(settings, WALLET_FAULT_CRASH_AFTER_COMMIT="2").start()
    try:
        async with aiohttp.ClientSession() as session:
            url = f"{crashing.base}/v1/wallet/{wallet}/deposit"
            async with session.post(url, json={"amount": 100}, headers={"X-Request-ID": first}) as r:
                assert r.status == 200
            deadline = time.monotonic() + 5
            while await redis.get(key) is None:  # the first write is cached
                assert time.monotonic() < deadline, "the first balance was never cached"
                await asyncio.sleep(0.02)
            with pytest.raises(aiohttp.ClientError):
                async with session.post(url, json={"amount": 50}, headers={"X-Request-ID": second}) as r:
                    await r.read()
        assert await crashing.wait() == -signal.SIGKILL
    finally:
        crashing.kill()

    restarted = await ServiceProcess(settings).start()
    try:
        async with aiohttp.ClientSession() as session:
            url = f"{restarted.base}/v1/wallet/{wallet}/deposit"
            async with session.post(url, json={"amount": 50}, headers={"X-Request-ID": second}) as r:
                assert r.status == 200
                assert r.headers.get("Idempotent-Replayed") == "true"  # it had committed
                assert (await r.json())["balance"] == 150
            async with session.get(f"{restarted.base}/v1/wallet/{wallet}") as r:
                body = await r.json()
            assert body["balance"] == 150, "stale cached balance after a crash"
    finally:
        restarted.process.send_signal(signal.SIGTERM)
        await restarted.wait()
        restarted.kill()
        await redis.aclose()
