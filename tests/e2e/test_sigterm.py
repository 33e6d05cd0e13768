"""SIGTERM while requests are in flight: the process answers them, stops every actor, exits < 5 s."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import aiohttp

from tests.e2e.service_process import ServiceProcess
from tests.helpers import balance_cents


async def test_sigterm_answers_in_flight_requests_and_exits_quickly(settings, db):
    service = await ServiceProcess(settings).start()
    wallet_id = f"sig-{uuid.uuid4().hex[:12]}"
    try:
        connector = aiohttp.TCPConnector(limit=400)
        async with aiohttp.ClientSession(connector=connector) as session:
            answered: list[int] = []
            failed: list[BaseException] = []

            async def deposit() -> None:
                try:
                    async with session.post(
                        f"{service.base}/v1/wallet/{wallet_id}/deposit", json={"amount": 1}
                    ) as r:
                        await r.read()
                        answered.append(r.status)
                except aiohttp.ClientError as exc:
                    failed.append(exc)

            tasks = [asyncio.create_task(deposit()) for _ in range(400)]
            while not answered:
                await asyncio.sleep(0.005)
            assert service.process is not None
            service.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            await asyncio.gather(*tasks)
            exit_code = await service.wait()
            elapsed = time.monotonic() - signalled

        assert exit_code == 0
        assert elapsed < 5.0, f"took {elapsed:.1f} s to exit"
        assert set(answered) <= {200, 503}, answered
        acknowledged = answered.count(200)
        assert acknowledged > 0
        # Every acknowledged deposit is durable; at most the unanswered ones may also have happened.
        balance = await balance_cents(db, wallet_id)
        assert acknowledged * 100 <= balance <= (acknowledged + len(failed)) * 100
    finally:
        service.kill()
