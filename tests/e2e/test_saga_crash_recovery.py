"""Crash mid-saga (SIGKILL at a fault-injection point); on restart, recovery finishes the transfer."""

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


@pytest.mark.parametrize(
    ("fault", "state_after_crash", "debited_after_crash"),
    [
        ("WALLET_FAULT_CRASH_AFTER_DEBIT", "DEBITED", True),
        ("WALLET_FAULT_CRASH_BEFORE_DEBIT", "PENDING", False),
    ],
)
async def test_recovery_completes_a_transfer_interrupted_by_a_crash(
    settings, db, fault, state_after_crash, debited_after_crash
):
    source, dest = f"crash-{uuid.uuid4().hex[:10]}", f"crash-{uuid.uuid4().hex[:10]}"
    crashing = await ServiceProcess(settings, **{fault: "1"}).start()
    try:
        async with WalletClient(crashing.base) as wallets:
            assert (await wallets.deposit(source, 100)).balance == 100
        async with aiohttp.ClientSession() as session:  # raw: the answer is lost to the crash
            with pytest.raises(aiohttp.ClientError):
                async with session.post(
                    f"{crashing.base}/v1/wallet/{source}/transfer", json={"toWalletId": dest, "amount": 30}
                ) as r:
                    await r.read()
        assert await crashing.wait() == -signal.SIGKILL
    finally:
        crashing.kill()

    saga = await saga_state(db, source)
    assert saga is not None and saga[1] == state_after_crash
    assert await balance_cents(db, source) == (7000 if debited_after_crash else 10000)

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
