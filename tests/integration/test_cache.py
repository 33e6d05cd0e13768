"""The Redis balance cache against the real Redis: write-through after commit, read-your-writes,
the version guard, and Redis stopped, frozen or unreachable (requests still succeed)."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from dataclasses import replace

import pytest
from redis.asyncio import Redis

from tests.helpers import post
from tests.integration.edges import closed_port_url, eventually, redis_process, serving, silent_server
from wallet.domain.wallet import WalletState
from wallet.persistence.balance_cache import PUT_IF_NEWER, BalanceCache, create_redis, view_json
from wallet.persistence.read_model import WalletView
from wallet.persistence.records import WalletBatch
from wallet.persistence.redis_lean import LeanConnection, LuaScript, RedisReplyError, lean_redis

# The lean Redis connection and the API under both EVENT_LOOP settings.
pytestmark = pytest.mark.both_event_loops


async def _cached(redis: Redis, key: str) -> bytes | None:
    value: bytes | None = await redis.get(key)
    return value


async def _true(value: bool) -> bool:
    return value


async def test_read_after_write_returns_new_balance_then_serves_from_redis(settings, wallet_id):
    async with serving(settings) as (service, client):
        cache = service.read_side.cache
        assert cache is not None
        redis = service.read_side.redis
        url = f"/v1/wallet/{wallet_id}"
        assert (await post(client, f"{url}/deposit", {"amount": 10}))[0] == 200
        assert (await (await client.get(url)).json())["balance"] == 10
        # The very next read sees each write, though the reply left before the cache write.
        for amount, expected in ((5.25, 15.25), (0.25, 15.5)):
            assert (await post(client, f"{url}/deposit", {"amount": amount}))[0] == 200
            assert (await (await client.get(url)).json())["balance"] == expected
        status, _ = await post(client, f"{url}/withdraw", {"amount": "0.5"})
        assert status == 200
        assert (await (await client.get(url)).json())["balance"] == 15

        # Written through: the entry is the wallet's view at its latest version.
        entry = await eventually(lambda: _cached(redis, cache.key(wallet_id)))
        version, _, body = entry.partition(b"|")
        assert int(version) == 5
        response = await client.get(url)
        assert await response.read() == body
        assert json.loads(body) == {
            "walletId": wallet_id,
            "balance": 15,
            "currency": "USD",
            "status": "ACTIVE",
            "version": 5,
            "dailyWithdrawalLimit": None,
        }

        # Served by Redis: reads go up, the database is not asked.
        await eventually(lambda: _true(cache.idle))
        served = sum(service.read_side.router.served.values())
        hits = cache.hits
        for _ in range(5):
            assert (await (await client.get(url)).json())["balance"] == 15
        assert cache.hits == hits + 5
        assert sum(service.read_side.router.served.values()) == served


async def test_a_miss_is_read_from_the_database_and_cached(settings, wallet_id):
    async with serving(settings) as (service, client):
        cache = service.read_side.cache
        assert cache is not None
        redis = service.read_side.redis
        await post(client, f"/v1/wallet/{wallet_id}/deposit", {"amount": 7})
        await eventually(lambda: _cached(redis, cache.key(wallet_id)))
        await eventually(lambda: _true(cache.idle))
        await redis.delete(cache.key(wallet_id))
        served = service.read_side.router.served["primary"]
        assert (await (await client.get(f"/v1/wallet/{wallet_id}")).json())["balance"] == 7
        assert service.read_side.router.served["primary"] == served + 1
        entry = await eventually(lambda: _cached(redis, cache.key(wallet_id)))
        assert entry.startswith(b"2|")
        assert (await client.get("/v1/wallet/w-never-created")).status == 404


async def test_an_older_version_never_overwrites_a_newer_one(settings, wallet_id):
    redis = create_redis(settings.redis_url, timeout_seconds=5)
    try:
        put = redis.register_script(PUT_IF_NEWER)
        key = f"{settings.redis_key_prefix}:balance:{wallet_id}"
        assert await put(keys=[key], args=[60, 5, b"5|five"]) == 1
        assert await put(keys=[key], args=[60, 3, b"3|three"]) == 0  # stale: refused
        assert await put(keys=[key], args=[60, 5, b"5|again"]) == 0  # same version: kept
        assert await redis.get(key) == b"5|five"
        assert await put(keys=[key], args=[60, 6, b"6|six"]) == 1
        assert await redis.get(key) == b"6|six"
        assert 0 < await redis.ttl(key) <= 60

        # Many writers racing with versions in any order: the newest always ends up cached.
        race_key = key + ":race"
        versions = list(range(1, 201))
        random.shuffle(versions)
        await asyncio.gather(*(put(keys=[race_key], args=[60, v, f"{v}|x".encode()]) for v in versions))
        assert await redis.get(race_key) == b"200|x"
        await redis.delete(key, race_key)
    finally:
        await redis.aclose()


async def test_a_stale_database_read_cannot_replace_a_newer_cached_view(settings, wallet_id):
    """Two instances: a slow one fills the cache with an old view after a newer one was cached."""
    async with serving(settings, "cache-a") as (service, client):
        cache = service.read_side.cache
        assert cache is not None
        for _ in range(3):
            await post(client, f"/v1/wallet/{wallet_id}/deposit", {"amount": 1})
        await eventually(lambda: _cached(service.read_side.redis, cache.key(wallet_id)), timeout=5)
        other = BalanceCache(
            service.read_side.redis,
            asyncio.get_running_loop(),
            prefix=settings.redis_key_prefix,
            ttl_seconds=60,
        )
        other.fill(WalletView(wallet_id, 100, "USD", "ACTIVE", 2, None))  # version 2 < 4
        await asyncio.sleep(0.2)
        await other.close()
        entry = await service.read_side.redis.get(cache.key(wallet_id))
        assert entry is not None and entry.startswith(b"4|")
        assert (await (await client.get(f"/v1/wallet/{wallet_id}")).json())["balance"] == 3


async def test_redis_unreachable_deposits_and_reads_still_succeed(settings, wallet_id):
    unreachable = replace(settings, redis_url=closed_port_url())
    async with serving(unreachable) as (service, client):
        url = f"/v1/wallet/{wallet_id}"
        started = time.monotonic()
        assert (await post(client, f"{url}/deposit", {"amount": 20}))[0] == 200
        assert (await (await client.get(url)).json())["balance"] == 20
        assert (await post(client, f"{url}/withdraw", {"amount": 5}))[0] == 200
        assert (await (await client.get(url)).json())["balance"] == 15
        history = await client.get(f"{url}/history")
        assert history.status == 200 and len(await history.json()) == 3
        assert (await client.get("/v1/wallet/w-nobody")).status == 404
        assert time.monotonic() - started < 3
        cache = service.read_side.cache
        assert cache is not None and not cache.breaker.closed()

        health = await client.get("/health")
        body = await health.json()
        assert health.status == 503
        assert body["error"]["redis"]["status"] == "down"
        assert body["info"]["database"]["status"] == "up"


async def test_redis_frozen_then_back_no_stale_balance(settings, wallet_id):
    """Redis hangs (SIGSTOP: connections open, no answers), then comes back with its old data:
    requests never wait on it for long, and the entry it kept from before is not served."""
    async with redis_process() as private:
        own = replace(settings, redis_url=private.url, redis_timeout_seconds=0.3)
        async with serving(own) as (service, client):
            cache = service.read_side.cache
            assert cache is not None
            redis = Redis.from_url(private.url)
            url = f"/v1/wallet/{wallet_id}"
            try:
                await post(client, f"{url}/deposit", {"amount": 10})
                await eventually(lambda: _cached(redis, cache.key(wallet_id)))

                private.freeze()
                started = time.monotonic()
                assert (await post(client, f"{url}/deposit", {"amount": 5}))[0] == 200
                for _ in range(3):
                    assert (await (await client.get(url)).json())["balance"] == 15
                assert time.monotonic() - started < 3
                await asyncio.sleep(0.5)  # the failed cache write is now behind us

                private.thaw()
                deadline = time.monotonic() + 2.0
                while time.monotonic() < deadline:  # never the 10 Redis still held
                    assert (await (await client.get(url)).json())["balance"] == 15
                    await asyncio.sleep(0.05)
                # The stale entry was deleted; the next miss caches the current view.
                entry = await eventually(lambda: _cached(redis, cache.key(wallet_id)))
                assert entry.startswith(b"3|")
            finally:
                await redis.aclose()


async def test_redis_stopped_requests_still_succeed(settings, wallet_id):
    async with redis_process() as private:
        own = replace(settings, redis_url=private.url)
        async with serving(own) as (_, client):
            url = f"/v1/wallet/{wallet_id}"
            await post(client, f"{url}/deposit", {"amount": 1})
            assert (await (await client.get(url)).json())["balance"] == 1
            private.stop()
            for n in range(2, 5):
                assert (await post(client, f"{url}/deposit", {"amount": 1}))[0] == 200
                assert (await (await client.get(url)).json())["balance"] == n
            health = await client.get("/health/ready")
            assert health.status == 503
            assert (await health.json())["error"]["redis"]["status"] == "down"


def test_cached_view_is_the_get_body():
    view = WalletView("w-1", 1010, "EUR", "FROZEN", 7, 5000)
    assert json.loads(view_json(view)) == {
        "walletId": "w-1",
        "balance": 10.1,
        "currency": "EUR",
        "status": "FROZEN",
        "version": 7,
        "dailyWithdrawalLimit": 50,
    }


async def test_the_lean_mget_connection_authenticates_selects_and_recovers():
    async with redis_process("--requirepass", "s3cret") as private:
        url = f"redis://:s3cret@127.0.0.1:{private.port}/3"
        writer = Redis.from_url(url)
        reader = LeanConnection(url, timeout_seconds=0.5)
        try:
            await writer.set("k1", b"1|one")
            assert await reader.mget(["k1", "k2"]) == [b"1|one", None]
            # Pipelined: many calls in flight on one connection, each gets its own reply.
            replies = await asyncio.gather(*(reader.mget([f"k{n % 3}"]) for n in range(50)))
            assert replies[1] == [b"1|one"] and replies[0] == [None]
            # The server drops the connection: the next call connects again.
            await writer.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            await asyncio.sleep(0.1)
            assert await reader.mget(["k1"]) == [b"1|one"]
            wrong = LeanConnection(f"redis://:nope@127.0.0.1:{private.port}/3", timeout_seconds=0.5)
            with pytest.raises(RedisReplyError):
                await wrong.mget(["k1"])
            await wrong.close()
        finally:
            await reader.close()
            await writer.aclose()


async def test_the_lean_connection_runs_the_guarded_write_after_redis_forgets_the_script():
    async with redis_process() as private:
        url = f"redis://127.0.0.1:{private.port}/0"
        admin = Redis.from_url(url)
        lean = LeanConnection(url, timeout_seconds=0.5)
        script = LuaScript.of(PUT_IF_NEWER)
        try:
            assert await lean.run_script(script, ["w"], [60, 2, b"2|two"]) == 1  # NOSCRIPT, then EVAL
            assert await lean.run_script(script, ["w"], [60, 1, b"1|one"]) == 0  # EVALSHA; older loses
            await admin.script_flush()
            assert await lean.run_script(script, ["w"], [60, 3, b"3|three"]) == 1
            assert await admin.get("w") == b"3|three"
            with pytest.raises(RedisReplyError):  # an error reply leaves the connection usable
                await lean.run_script(LuaScript.of("return redis.call('NOPE')"), [], [])
            assert await lean.mget(["w"]) == [b"3|three"]
        finally:
            await lean.close()
            await admin.aclose()


async def test_urls_the_lean_connection_does_not_handle_fall_back_to_redis_py(settings):
    client = Redis.from_url(settings.redis_url)
    key = f"{settings.redis_key_prefix}:fallback:{uuid.uuid4().hex}"
    lean = lean_redis("rediss://tls-only.invalid:6380/0", client, timeout_seconds=0.5)  # TLS: redis-py's
    script = LuaScript.of(PUT_IF_NEWER + "-- fallback test")  # a script Redis has not seen yet
    try:
        assert await lean.run_script(script, [key], [60, 2, b"2|two"]) == 1
        assert await lean.run_script(script, [key], [60, 1, b"1|one"]) == 0
        assert await lean.mget([key, key + "-none"]) == [b"2|two", None]
    finally:
        await client.delete(key)
        await lean.close()
        await client.aclose()


async def test_the_lean_mget_connection_times_out_on_a_hung_server():
    async with silent_server() as port:
        reader = LeanConnection(f"redis://127.0.0.1:{port}/0", timeout_seconds=0.2)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await reader.mget(["k"])
        assert time.monotonic() - started < 1
        await reader.close()


async def test_a_backlog_of_commits_is_written_in_rounds(settings):
    redis = create_redis(settings.redis_url, timeout_seconds=2)
    cache = BalanceCache(
        redis, asyncio.get_running_loop(), prefix=f"{settings.redis_key_prefix}:rounds", ttl_seconds=60
    )
    ids = [f"r-{uuid.uuid4().hex[:10]}" for _ in range(1200)]
    try:
        for n, wallet_id in enumerate(ids):
            for version in (1, 2):  # the later commit of a wallet wins locally already
                state = WalletState(wallet_id, "USD", balance=n * 100 + version, version=version)
                cache.after_commit(WalletBatch(wallet_id, version - 1, state, (), ()))
        await eventually(lambda: _true(cache.idle), timeout=10)
        values = await redis.mget([cache.key(w) for w in ids])
        assert all(v is not None and v.startswith(b"2|") for v in values)
        assert json.loads(values[-1].partition(b"|")[2])["balance"] == (1199 * 100 + 2) / 100
        await redis.delete(*(cache.key(w) for w in ids))
    finally:
        await cache.close()
        await redis.aclose()


async def test_a_fence_hides_older_views_until_a_view_of_its_version_lands(settings, wallet_id):
    """Two instances: A fences the wallet before its flush and dies after COMMIT (no cache write);
    B's reads miss, B's stale fill is refused, a fill of the committed version lands."""
    redis = create_redis(settings.redis_url, timeout_seconds=2)
    loop = asyncio.get_running_loop()
    a = BalanceCache(redis, loop, prefix=settings.redis_key_prefix, ttl_seconds=60)
    b = BalanceCache(redis, loop, prefix=settings.redis_key_prefix, ttl_seconds=60)
    try:
        old = WalletView(wallet_id, 100, "USD", "ACTIVE", 4, None)
        b.fill(old)
        await eventually(lambda: _true(b.idle))
        assert await b.get(wallet_id) == view_json(old)
        state = WalletState(wallet_id, "USD", balance=150, version=5)
        await a.fence([WalletBatch(wallet_id, 4, state, (object(),), ())])  # type: ignore[arg-type]
        assert await redis.get(a.key(wallet_id)) == b"F5|"
        assert await b.get(wallet_id) is None  # a fence is a miss
        b.fill(old)  # read before the COMMIT, landing after it: refused
        await eventually(lambda: _true(b.idle))
        assert await b.get(wallet_id) is None
        new = WalletView(wallet_id, 150, "USD", "ACTIVE", 5, None)
        b.fill(new)  # read after the COMMIT
        await eventually(lambda: _true(b.idle))
        assert await b.get(wallet_id) == view_json(new)
        # A fence never goes backwards, nor over a newer view.
        await a.fence([WalletBatch(wallet_id, 3, replace(state, version=4), (object(),), ())])  # type: ignore[arg-type]
        assert await b.get(wallet_id) == view_json(new)
    finally:
        await a.close()
        await b.close()
        await redis.delete(a.key(wallet_id))
        await redis.aclose()
