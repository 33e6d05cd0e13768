"""Commit-to-alert latency: while keyed hot-wallet deposits and transfers run, high-value
withdrawals are made and ``GET /v1/fraud/alerts`` is polled until each one's alert is listed.

Measured from the withdrawal event's ``created_at`` (its flush transaction's start, so a little
before the commit: an upper bound) to the poll that lists its alert, with the API, the outbox
relay and the fraud worker running, all in this test's process (one event loop) on this machine.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid

import pytest

from tests.helpers import post

LOAD_SECONDS = 3.0
# Runnable processes per core (1-minute load average) above which a miss is reported, not failed:
# on a machine shared by several test suites at once (5-7 per core seen) the same code measured
# p99 0.7-1.9 s, against 0.28 s at a quieter moment.
OVERLOADED = 3.0
SAMPLE_EVERY_SECONDS = 0.1
LOAD_CLIENTS = 4


async def test_commit_to_alert_p99_is_under_a_second_under_a_keyed_load(client, fraud_worker, db):
    run = uuid.uuid4().hex[:8]
    hot, source, target = f"lat-hot-{run}", f"lat-a-{run}", f"lat-b-{run}"
    for wallet in (hot, source):
        assert (await post(client, f"/v1/wallet/{wallet}/deposit", {"amount": 100000}))[0] == 200
    stop = asyncio.Event()
    requests = 0

    async def keyed_load(n: int) -> None:
        nonlocal requests
        while not stop.is_set():
            key = {"X-Request-ID": str(uuid.uuid4())}
            if n % 2:
                status, _ = await post(client, f"/v1/wallet/{hot}/deposit", {"amount": "0.01"}, **key)
            else:
                body = {"toWalletId": target, "amount": "0.01"}
                status, _ = await post(client, f"/v1/wallet/{source}/transfer", body, **key)
            assert status == 200
            requests += 1

    sent: set[str] = set()  # the wallets whose high-value withdrawal was sent
    listed: dict[str, float] = {}  # wallet -> when its alert was first listed (epoch seconds)

    async def sample(i: int) -> None:
        wallet = f"lat-s{i}-{run}"
        assert (await post(client, f"/v1/wallet/{wallet}/deposit", {"amount": 20000}))[0] == 200
        sent.add(wallet)
        key = {"X-Request-ID": str(uuid.uuid4())}
        assert (await post(client, f"/v1/wallet/{wallet}/withdraw", {"amount": "10000.01"}, **key))[0] == 200

    async def poll_alerts() -> None:
        while len(listed) < len(sent) or not stop.is_set():
            response = await client.get("/v1/fraud/alerts?limit=100")  # newest first: the samples'
            now = time.time()
            for alert in await response.json():
                wallet = alert["walletId"]
                if wallet in sent and wallet not in listed:
                    listed[wallet] = now
            await asyncio.sleep(0.01)

    load = [asyncio.create_task(keyed_load(n)) for n in range(LOAD_CLIENTS)]
    poller = asyncio.create_task(poll_alerts())
    samples = []
    started = time.monotonic()
    i = 0
    while time.monotonic() - started < LOAD_SECONDS:
        samples.append(asyncio.create_task(sample(i)))
        i += 1
        await asyncio.sleep(SAMPLE_EVERY_SECONDS)
    await asyncio.gather(*samples)
    stop.set()
    await asyncio.gather(*load)
    await asyncio.wait_for(poller, 15)

    rows = await db.fetch(
        "SELECT wallet_id, created_at FROM wallet_events"
        " WHERE wallet_id = ANY($1::text[]) AND event_type = 'FUNDS_WITHDRAWN'",
        list(sent),
    )
    values = sorted(listed[r["wallet_id"]] - r["created_at"].timestamp() for r in rows)
    p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
    p50, top = statistics.median(values), values[-1]
    print(
        f"\ncommit-to-alert: {len(values)} alerts under {requests / LOAD_SECONDS:.0f} keyed req/s: "
        f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {top * 1000:.0f} ms"
    )
    assert len(values) == len(sent) >= 20 and values[0] > 0
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    if p99 > 1.0 and load > OVERLOADED:  # every hop waits for a CPU: no latency holds
        pytest.xfail(f"p99 {p99:.2f} s with the machine overloaded ({load:.1f} runnable per core)")
    assert p99 <= 1.0
