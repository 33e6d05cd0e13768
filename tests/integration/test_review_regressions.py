"""Regressions from a correctness review: stale answers across instances, NUL text, stuck keys."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import post
from wallet.actors.messages import IdempotencyKey, Refused, Reply
from wallet.bootstrap import start_api
from wallet.service.deadlines import Deadlines
from wallet.service.idempotency import IdempotencyGate


@pytest.fixture
async def two_clients(aiohttp_client, settings):
    a = await start_api(settings, name="rev-a", run_migrations=False)
    b = await start_api(settings, name="rev-b", run_migrations=False)
    try:
        yield await aiohttp_client(a.app), await aiohttp_client(b.app)
    finally:
        await a.stop()
        await b.stop()


async def test_answers_without_a_write_are_checked_against_the_database(two_clients, db, wallet_id):
    a, b = two_clients
    await post(a, f"/v1/wallet/{wallet_id}/deposit", {"amount": 100})
    assert (await post(a, f"/v1/wallet/{wallet_id}/freeze", {"reason": "x"}))[1]["status"] == "FROZEN"
    assert (await post(b, f"/v1/wallet/{wallet_id}/unfreeze", {"reason": "y"}))[1]["status"] == "ACTIVE"
    status, body = await post(a, f"/v1/wallet/{wallet_id}/freeze", {"reason": "again"})
    assert (status, body["status"]) == (200, "FROZEN")
    assert await db.fetchval("SELECT status FROM wallets WHERE id = $1", wallet_id) == "FROZEN"
    await post(a, f"/v1/wallet/{wallet_id}/unfreeze", {"reason": "z"})
    await post(b, f"/v1/wallet/{wallet_id}/deposit", {"amount": 50})
    status, body = await post(a, f"/v1/wallet/{wallet_id}/withdraw", {"amount": 150})
    assert (status, body["balance"]) == (200, 0)  # not a stale "balance 100.00 is less than 150.00"


async def test_nul_in_text_is_a_400_not_a_failed_flush(client, wallet_id):
    await post(client, f"/v1/wallet/{wallet_id}/deposit", {"amount": 1})
    status, body = await post(client, f"/v1/wallet/{wallet_id}/freeze", {"reason": "bad\u0000"})
    assert (status, body["error"]) == (400, "ValidationError")


async def test_a_failed_send_does_not_leave_its_key_stuck(service):
    gate = IdempotencyGate(Deadlines(1.0))
    key = IdempotencyKey("stuck-key-test", "fp")

    def render(outcome):
        assert isinstance(outcome, Refused)
        return Reply(outcome.status, {"error": outcome.name})

    def failing_send() -> asyncio.Future[Reply]:
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        future.set_exception(RuntimeError("database blip"))
        return future

    reply = await gate.run(key, render, failing_send)
    assert reply.status == 503
    ok: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
    ok.set_result(Reply(200, {"ok": True}))
    assert (await gate.run(key, render, lambda: ok)).status == 200  # retried, not 409
