"""Crash mid-saga (SIGKILL at a fault-injection point): after the debit, recovery finishes the
transfer on restart; before it, nothing was written and the client's retry does the transfer once."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import aiohttp
import pytest

from tests.e2e.service_process import ServiceProcess
from tests.helpers import balance_cents
from wallet.client import WalletClient


async def saga_state(db, from_wallet_id: str) -> tuple[str, str] | None:
    row = await db.fetchrow(
        "SELECT id::text AS id, state FROM transfer_sagas WHERE from_wallet_id = $1", from_wallet_id
    )
    return None if row is None else (row["id"], row["state"])


async def crash_during_a_transfer(settings, fault: str, source: str, dest: str, key: str) -> None:
    crashing = await ServiceProcess(settings, **{fault: "1"}).start()
    try:
        async with WalletClient(crashing.base) as wallets:
            assert (await wallets.deposit(source, 100)).balance == 100
        async with aiohttp.ClientSession() as session:  # raw: the answer is lost to the crash
            with pytest.raises(aiohttp.ClientError):
                async with session.post(
                    f"{crashing.base}/v1/wallet/{source}/transfer",
                    json={"toWalletId": dest, "amount": 30},
                    headers={"X-Request-ID": key},
                ) as r:
                    await r.read()
        assert await crashing.wait() == -signal.SIGKILL
    finally:
        crashing.kill()


async def test_a_crash_before_the_debit_leaves_nothing_and_the_retry_transfers_once(settings, db):
    source, dest, key = f"crash-{uuid.uuid4().hex[:10]}", f"crash-{uuid.uuid4().hex[:10]}", str(uuid.uuid4())
    await crash_during_a_transfer(settings, "WALLET_FAULT_CRASH_BEFORE_DEBIT", source, dest, key)
    assert await saga_state(db, source) is None
    assert await balance_cents(db, source) == 10000

    restarted = await ServiceProcess(settings, SAGA_STUCK_THRESHOLD="0.3").start()
    try:
        async with WalletClient(restarted.base) as wallets:
            for _ in range(2):  # the retry, and a retry of the retry (replayed)
                done = await wallets.transfer(source, dest, 30, request_id=key)
                assert done.state == "COMPLETED"
        assert (await balance_cents(db, source), await balance_cents(db, dest)) == (7000, 3000)
        assert await db.fetchval("SELECT count(*) FROM transfer_sagas WHERE from_wallet_id = $1", source) == 1
    finally:
        restarted.process.send_signal(signal.SIGTERM)
        await restarted.wait()
        restarted.kill()


async def test_recovery_completes_a_transfer_interrupted_by_a_crash_after_its_debit(settings, db):
    source, dest, key = f"crash-{uuid.uuid4().hex[:10]}", f"crash-{uuid.uuid4().hex[:10]}", str(uuid.uuid4())
    await crash_during_a_transfer(settings, "WALLET_FAULT_CRASH_AFTER_DEBIT", source, dest, key)
    saga = await saga_state(db, source)
    assert saga is not None and saga[1] == "DEBITED"
    assert await balance_cents(db, source) == 7000

    recovering = await ServiceProcess(settings, SAGA_STUCK_THRESHOLD="0.3").start()
    try:
        deadline = time.monotonic() + 15
        while (await saga_state(db, source))[1] != "COMPLETED":
            assert time.monotonic() < deadline, "recovery did not finish the saga"
            await asyncio.sleep(0.1)
        assert await balance_cents(db, source) == 7000
        assert await balance_cents(db, dest) == 3000
        async with WalletClient(recovering.base) as wallets:
            assert (await wallets.get_transfer(saga[0])).state == "COMPLETED"
    finally:
        recovering.process.send_signal(signal.SIGTERM)
        await recovering.wait()
        recovering.kill()
