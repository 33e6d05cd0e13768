"""Two instances on one database behind HAProxy with the shipped configuration (deploy/haproxy.cfg).

One cluster for the module: a database of its own (``wallet verify`` checks the whole of it), two
``wallet serve`` processes (as compose runs them: relay off, readiness on the database), and
HAProxy in front, its configuration templated only in addresses. The tests run in file order; the
last one kills an instance and brings it back.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg
import pytest
import pytest_asyncio

from tests.conftest import ADMIN_URL, _database_url
from tests.e2e.service_process import ServiceProcess, free_port
from tests.integration.test_audit import run_verify
from wallet.bench.router import Router
from wallet.client import BusinessRuleError, RetryPolicy, WalletClient
from wallet.config import Settings
from wallet.persistence.migrations import migrate

pytestmark = pytest.mark.asyncio(loop_scope="module")

INSTANCE_ENV = {
    "OUTBOX_RELAY_ENABLED": "false",  # as compose runs the API replicas
    "HEALTH_REQUIRED": "database",
    "SAGA_STUCK_THRESHOLD": "1",  # recovery finishes the killed instance's transfers quickly
    "AUTH_ENABLED": "false",
}
RETRYABLE = {409, 502, 503, 504}  # key still in flight, router or instance unavailable: same key again
CLIENT_RETRY = RetryPolicy(deadline=30.0, attempt_timeout=20.0, initial=0.05, cap=0.5)


def counting_retries(sent_again: list[int]) -> aiohttp.TraceConfig:
    """Counts the requests of a session answered 'try again' or lost (the client resends them)."""
    trace = aiohttp.TraceConfig()

    async def on_end(session: Any, context: Any, params: aiohttp.TraceRequestEndParams) -> None:
        if params.response.status in RETRYABLE:
            sent_again.append(params.response.status)

    async def on_exception(session: Any, context: Any, params: Any) -> None:
        sent_again.append(0)

    trace.on_request_end.append(on_end)
    trace.on_request_exception.append(on_exception)
    return trace


@dataclass
class Cluster:
    settings: Settings
    dsn: str
    instances: dict[str, ServiceProcess]  # by the router's server name
    router: Router
    session: aiohttp.ClientSession
    db: asyncpg.Connection
    wallets: WalletClient  # through the router, on ``session``
    sent_again: list[int]  # requests whose answer was "try again" (the client sends them again)

    @property
    def retries(self) -> int:
        return len(self.sent_again)

    async def call(
        self, method: str, path: str, body: Any = None, key: str | None = None, base: str | None = None
    ) -> tuple[int, Any, str | None]:
        """One request (through the router unless ``base``): status, JSON body, answering instance."""
        headers = {"X-Request-ID": key} if key else {}
        url = (base or self.router.base_url) + path
        async with self.session.request(method, url, json=body, headers=headers) as resp:
            data = await resp.json(content_type=None) if resp.content_length != 0 else None
            return resp.status, data, resp.headers.get("X-Wallet-Instance")

    async def until_done(self, call: Awaitable[object]) -> int:
        """A write through ``wallets`` (wallet.client: the same key again on 409/502/503/504 and
        connection errors, within its deadline): 200, or a business rule's 422."""
        try:
            await call
        except BusinessRuleError as exc:
            assert exc.status is not None
            return exc.status
        return 200

    async def owner(self, wallet_id: str) -> str | None:
        _, _, instance = await self.call("GET", f"/v1/wallet/{wallet_id}")
        return instance

    async def owned(self, count: int, prefix: str) -> dict[str, list[str]]:
        """``count`` fresh wallet ids owned by each instance."""
        found: dict[str, list[str]] = {name: [] for name in self.instances}
        for _ in range(50 * count * len(found)):  # bounded: an instance left down must fail, not hang
            if all(len(ids) >= count for ids in found.values()):
                return found
            wallet_id = f"{prefix}-{uuid.uuid4().hex[:10]}"
            owner = await self.owner(wallet_id)
            assert owner in found
            if len(found[owner]) < count:
                found[owner].append(wallet_id)
        raise AssertionError(f"not every instance owns {count} wallets: {found}")

    async def conflicts(self, name: str) -> int:
        """The instance's ``wallet_version_conflicts_total`` (asked directly, not through the router)."""
        async with self.session.get(self.instances[name].base + "/metrics") as resp:
            text = await resp.text()
        for line in text.splitlines():
            if line.startswith("wallet_version_conflicts_total "):
                return int(float(line.split()[1]))
        raise AssertionError("no wallet_version_conflicts_total in /metrics")

    async def total_conflicts(self) -> int:
        return sum([await self.conflicts(name) for name in self.instances])

    async def cents(self, wallet_ids: list[str]) -> int:
        total = await self.db.fetchval(
            "SELECT coalesce(sum(balance), 0) FROM wallets WHERE id = ANY($1)", wallet_ids
        )
        return int(total)


async def start_instance(settings: Settings, port: int | None = None) -> ServiceProcess:
    return await ServiceProcess(settings, port, **INSTANCE_ENV).start()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(database_url: str, event_stream: dict[str, Any], run_id: str) -> AsyncIterator[Cluster]:
    name = f"wallet_scale_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = _database_url(name)
    instances: dict[str, ServiceProcess] = {}
    router = None
    try:
        await migrate(dsn)
        settings = replace(
            Settings(), **event_stream, database_url=dsn, redis_key_prefix=f"wallet_scale_{run_id}"
        )
        a, b = await asyncio.gather(start_instance(settings), start_instance(settings))
        instances = {"api1": a, "api2": b}
        router = Router(free_port(), free_port(), [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]).start()
        await router.wait_all_up()
        sent_again: list[int] = []
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=20), trace_configs=[counting_retries(sent_again)]
        ) as session:
            db = await asyncpg.connect(dsn)
            wallets = WalletClient(router.base_url, session=session, retry=CLIENT_RETRY)
            try:
                yield Cluster(settings, dsn, instances, router, session, db, wallets, sent_again)
            finally:
                await db.close()
    finally:
        if router is not None:
            router.stop()
        for instance in instances.values():
            instance.kill()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_every_route_of_a_wallet_reaches_its_owner(cluster: Cluster) -> None:
    owned = await cluster.owned(2, "route")
    for owner, wallet_ids in owned.items():
        for wallet_id, prefix in zip(wallet_ids, ("/v1", ""), strict=True):
            base = f"{prefix}/wallet/{wallet_id}"
            other = f"route-to-{uuid.uuid4().hex[:10]}"  # created by the credit
            calls = [
                ("POST", f"{base}/deposit", {"amount": 10}),
                ("POST", f"{base}/withdraw", {"amount": 1}),
                ("GET", base, None),
                ("GET", f"{base}/history", None),
                ("POST", f"{base}/transfer", {"toWalletId": other, "amount": 1}),
                ("PUT", f"{base}/limits", {"dailyWithdrawalLimit": 500}),
                ("POST", f"{base}/freeze", {"reason": "check"}),
                ("POST", f"{base}/unfreeze", {"reason": "check"}),
                ("POST", f"{base}/withdraw", {"amount": 8}),
                ("POST", f"{base}/close", {"reason": "check"}),
            ]
            for method, path, body in calls:
                status, answer, instance = await cluster.call(method, path, body)
                assert status == 200, (method, path, status, answer)
                assert instance == owner, (method, path, instance, owner)
    # Both instances own wallets: the hash spreads them.
    assert all(owned.values())
    # The credential is never part of the hash: whoever asks, a wallet has one owner.
    for owner, wallet_ids in owned.items():
        for k in range(6):
            headers = {"Authorization": f"Bearer key-{k}-{uuid.uuid4().hex}"}
            url = f"{cluster.router.base_url}/v1/wallet/{wallet_ids[0]}/history"
            async with cluster.session.get(url, headers=headers) as resp:
                assert resp.headers.get("X-Wallet-Instance") == owner


async def test_hot_and_spread_load_meet_in_one_actor_per_wallet(cluster: Cluster) -> None:
    hot = f"hot-{uuid.uuid4().hex[:10]}"
    spread = [f"spread-{uuid.uuid4().hex[:10]}" for _ in range(40)]
    owners = {await cluster.owner(w) for w in spread}
    assert owners == set(cluster.instances), "the spread wallets live on both instances"
    before = await cluster.total_conflicts()
    limit = asyncio.Semaphore(48)

    async def deposit(wallet_id: str, key: str) -> int:
        async with limit:
            status, _, _ = await cluster.call(
                "POST", f"/v1/wallet/{wallet_id}/deposit", {"amount": "0.01"}, key
            )
            return status

    hot_load = [deposit(hot, f"hot-{k}-{hot}") for k in range(600)]
    spread_load = [deposit(w, f"{w}-{k}") for w in spread for k in range(15)]
    statuses = await asyncio.gather(*hot_load, *spread_load)
    assert set(statuses) == {200}
    assert await cluster.cents([hot]) == 600
    assert await cluster.cents(spread) == 15 * len(spread)
    conflicts = await cluster.total_conflicts() - before
    assert conflicts == 0, f"{conflicts} version conflicts: a wallet's commands reached two instances"


async def test_transfers_between_instances_conserve_money(cluster: Cluster) -> None:
    owned = await cluster.owned(4, "xfer")
    wallets = owned["api1"] + owned["api2"]
    for wallet_id in wallets:
        assert (
            await cluster.until_done(cluster.wallets.deposit(wallet_id, 1000, request_id=f"f-{wallet_id}"))
            == 200
        )
    rng = random.Random(13)
    limit = asyncio.Semaphore(16)
    run = uuid.uuid4().hex[:8]

    async def transfer(k: int) -> int:
        source_owner = rng.choice(["api1", "api2"])
        source = rng.choice(owned[source_owner])
        target = rng.choice(owned["api2" if source_owner == "api1" else "api1"])
        amount = rng.randint(1, 50)
        async with limit:
            return await cluster.until_done(
                cluster.wallets.transfer(source, target, amount, request_id=f"x-{run}-{k}")
            )

    before = await cluster.total_conflicts()
    statuses = await asyncio.gather(*(transfer(k) for k in range(200)))
    assert set(statuses) <= {200, 422}, statuses
    await wait_sagas_terminal(cluster, wallets)
    # Credits run on the source's instance: an actor there for a wallet the other instance owns
    # reloads when the owner wrote since (correct, counted, never a stale answer).
    print(f"200 transfers between instances: {await cluster.total_conflicts() - before} version conflicts")
    assert await cluster.cents(wallets) == 8 * 1000 * 100
    sagas = await cluster.db.fetchval(
        "SELECT count(*) FROM transfer_sagas WHERE request_key LIKE $1", f"x-{run}-%"
    )
    assert sagas == 200


async def test_killed_instance_loses_nothing_and_comes_back_without_stale_reads(cluster: Cluster) -> None:
    owned = await cluster.owned(6, "kill")
    wallets = owned["api1"] + owned["api2"]
    victim, survivor = cluster.instances["api1"], cluster.instances["api2"]
    rng = random.Random(11)
    run = uuid.uuid4().hex[:8]
    counter = itertools.count()
    deposited: list[int] = []  # cents acknowledged
    transfers: list[str] = []  # keys acknowledged
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            k = next(counter)
            source = rng.choice(wallets)
            if k % 4 == 3:  # a transfer among the kill wallets, either direction
                target = rng.choice([w for w in wallets if w != source])
                status = await cluster.until_done(
                    cluster.wallets.transfer(source, target, "0.50", request_id=f"k-{run}-{k}")
                )
                assert status in (200, 422), status
                transfers.append(f"k-{run}-{k}")
            else:
                status = await cluster.until_done(
                    cluster.wallets.deposit(source, "1.00", request_id=f"k-{run}-{k}")
                )
                assert status == 200, status
                deposited.append(100)

    for wallet_id in wallets:  # each exists before the load, so a transfer's source is never unknown
        status = await cluster.until_done(
            cluster.wallets.deposit(wallet_id, "1.00", request_id=f"k-{run}-seed-{wallet_id}")
        )
        assert status == 200, status
        deposited.append(100)
    retries_before = cluster.retries
    clients = [asyncio.create_task(client()) for _ in range(16)]
    try:
        await asyncio.sleep(1.5)
        assert len(deposited) > len(wallets), "no load before the kill"
        victim.process.send_signal(signal.SIGKILL)  # mid-load
        killed_at = time.monotonic()
        taken_out = await cluster.router.wait_until({"api1": "DOWN"})
        await asyncio.sleep(2.0)
        stop.set()
        await asyncio.gather(*clients)
    finally:  # a failure above must not leave clients running into the next test
        for task in clients:
            task.cancel()
    assert await victim.wait() == -signal.SIGKILL
    retried = cluster.retries - retries_before
    print(
        f"api1 marked down {taken_out:.1f}s after SIGKILL; {len(deposited)} deposits and "
        f"{len(transfers)} transfers acknowledged, {retried} requests sent again"
    )
    assert retried > 0, "the kill interrupted no request: nothing was shown"

    # The survivor owns the dead instance's wallets now.
    for wallet_id in owned["api1"]:
        assert await cluster.owner(wallet_id) == "api2"
    await wait_sagas_terminal(cluster, wallets)
    # Nothing lost, nothing doubled: every acknowledged key once; transfers moved money only
    # between these wallets.
    assert await cluster.cents(wallets) == sum(deposited)
    sagas = await cluster.db.fetchval(
        "SELECT count(*) FROM transfer_sagas WHERE request_key LIKE $1", f"k-{run}-%"
    )
    assert sagas == len(transfers)
    verify = run_verify(cluster.dsn)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # Read through the router, every balance is the database's: nothing the dead instance
    # committed but never wrote to the cache is served stale (cache fences).
    await assert_reads_match_database(cluster, wallets)

    # The killed instance comes back on its port and takes its wallets back.
    cluster.instances["api1"] = await start_instance(cluster.settings, victim.port)
    back_in = await cluster.router.wait_until({"api1": "UP"})
    print(
        f"api1 back in the router {back_in:.1f}s after it answered, "
        f"{time.monotonic() - killed_at:.1f}s after the kill"
    )
    for wallet_id in owned["api1"]:
        assert await cluster.owner(wallet_id) == "api1"

    # The survivor still has live actors for those wallets, holding what they saw during the
    # outage. The new owner changes each wallet; whatever still reaches the survivor (a request
    # in flight during a move, the next failover) must be answered from the database's state,
    # not from that memory.
    base_b = survivor.base
    stale_before = await cluster.conflicts("api2")
    for wallet_id in owned["api1"]:
        balance = Decimal(await cluster.cents([wallet_id])) / 100
        status, _, instance = await cluster.call(
            "POST", f"/v1/wallet/{wallet_id}/withdraw", {"amount": str(balance)}
        )
        assert (status, instance) == (200, "api1")
        status, answer, _ = await cluster.call(
            "POST", f"/v1/wallet/{wallet_id}/withdraw", {"amount": "0.01"}, base=base_b
        )
        assert status == 422 and answer["error"] == "InsufficientFundsError", (status, answer)
        status, answer, _ = await cluster.call(
            "POST", f"/v1/wallet/{wallet_id}/deposit", {"amount": "2.00"}, base=base_b
        )
        assert status == 200 and Decimal(str(answer["balance"])) == Decimal("2.00"), (status, answer)
        status, view, instance = await cluster.call("GET", f"/v1/wallet/{wallet_id}")
        assert (status, instance) == (200, "api1")
        assert Decimal(str(view["balance"])) == Decimal("2.00"), view
        status, answer, _ = await cluster.call("POST", f"/v1/wallet/{wallet_id}/deposit", {"amount": "1.00"})
        assert status == 200 and Decimal(str(answer["balance"])) == Decimal("3.00"), (status, answer)
    # The survivor's actors noticed the newer state by the version check of their flush.
    assert await cluster.conflicts("api2") > stale_before
    await assert_reads_match_database(cluster, wallets)
    verify = run_verify(cluster.dsn)
    assert verify.returncode == 0, verify.stdout + verify.stderr


async def assert_reads_match_database(cluster: Cluster, wallets: list[str]) -> None:
    for wallet_id in wallets:
        status, view, _ = await cluster.call("GET", f"/v1/wallet/{wallet_id}")
        assert status == 200
        assert Decimal(str(view["balance"])) * 100 == await cluster.cents([wallet_id]), (wallet_id, view)


async def wait_sagas_terminal(cluster: Cluster, wallets: list[str], within_s: float = 20) -> None:
    deadline = time.monotonic() + within_s
    while True:
        open_sagas = await cluster.db.fetchval(
            "SELECT count(*) FROM transfer_sagas"
            " WHERE state IN ('PENDING', 'DEBITED') AND from_wallet_id = ANY($1)",
            wallets,
        )
        if open_sagas == 0:
            return
        assert time.monotonic() < deadline, f"{open_sagas} transfers never finished"
        await asyncio.sleep(0.2)


async def test_a_draining_instance_is_taken_out_without_losing_requests(cluster: Cluster) -> None:
    # SIGTERM: the instance stops listening, answers what it has, and exits; the router's checks
    # (and the refused connections of live traffic) take it out, its wallets move to the other.
    owned = await cluster.owned(4, "drain")
    wallets = owned["api1"] + owned["api2"]
    draining = cluster.instances["api2"]
    run = uuid.uuid4().hex[:8]
    counter = itertools.count()
    acknowledged: list[int] = []
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            k = next(counter)
            wallet_id = wallets[k % len(wallets)]
            call = cluster.wallets.deposit(wallet_id, "1.00", request_id=f"d-{run}-{k}")
            assert await cluster.until_done(call) == 200
            acknowledged.append(100)

    clients = [asyncio.create_task(client()) for _ in range(8)]
    try:
        await asyncio.sleep(1.0)
        draining.process.send_signal(signal.SIGTERM)
        taken_out = await cluster.router.wait_until({"api2": "DOWN"}, within_s=5)
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*clients)
    finally:
        for task in clients:
            task.cancel()
    assert await draining.wait() == 0
    print(f"api2 marked down {taken_out:.1f}s after SIGTERM")
    for wallet_id in owned["api2"]:
        assert await cluster.owner(wallet_id) == "api1"
    assert await cluster.cents(wallets) == sum(acknowledged)
