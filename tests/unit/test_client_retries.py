"""The client's retry loop against a scripted HTTP server (answers chosen per test): what is retried,
with which key, how long it waits, and when it gives up. The live tests are in
tests/e2e/test_client_live.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.e2e.service_process import free_port
from wallet.client import (
    ConnectionFailedError,
    DeadlineExceededError,
    ForbiddenError,
    InternalServerError,
    RateLimitExceededError,
    RetryPolicy,
    TransferPendingError,
    UnauthorizedError,
    ValidationError,
    WalletClient,
    WalletNotFoundError,
    WithdrawalLimitExceededError,
)

FAST = RetryPolicy(deadline=5.0, attempt_timeout=1.0, initial=0.01, cap=0.05)
SAGA = "7f1c0a52-3f7e-4d4b-9a55-0c0f6f1f0a01"


class Script:
    """The answers to give, in order (the last one repeats), and the requests received."""

    def __init__(self, *answers: tuple[int, Any, dict[str, str]]) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path, dict(request.headers)))
        status, body, headers = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if body == "hang":
            await asyncio.sleep(10)
        return web.json_response(body, status=status, headers=headers)

    def keys(self) -> list[str]:
        return [headers["X-Request-ID"] for _, _, headers in self.requests]


def error(status: int, name: str, **extra: Any) -> dict[str, Any]:
    return {"statusCode": status, "error": name, "message": f"{name} says no", "requestId": "x"} | extra


BALANCE = (200, {"walletId": "w1", "balance": 10.5}, {})


@pytest.fixture
async def served() -> AsyncIterator[Any]:
    servers: list[TestServer] = []

    async def serve(script: Script) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", script.handle)
        server = TestServer(app)
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/"))

    yield serve
    for server in servers:
        await server.close()


async def test_503_and_409_in_flight_are_retried_with_the_same_key_and_the_key_is_reported(served):
    script = Script(
        (503, error(503, "ServiceUnavailableError"), {}),
        (409, error(409, "IdempotencyKeyInFlightError"), {}),
        BALANCE,
    )
    async with WalletClient(await served(script), api_key="s3cret", retry=FAST) as client:
        result = await client.deposit("w1", "10.50")
    assert len(script.requests) == 3
    assert len(set(script.keys())) == 1 and result.request_id == script.keys()[0]
    assert all(h["Authorization"] == "Bearer s3cret" for _, _, h in script.requests)
    assert script.requests[0][:2] == ("POST", "/v1/wallet/w1/deposit")
    assert str(result.balance) == "10.5" and not result.replayed


async def test_the_callers_request_id_is_used(served):
    script = Script(BALANCE)
    async with WalletClient(await served(script), retry=FAST) as client:
        await client.withdraw("w1", 1, request_id="order-42")
    assert script.keys() == ["order-42"]
    assert "Authorization" not in script.requests[0][2]


@pytest.mark.parametrize(
    ("status", "name", "raised"),
    [
        (400, "ValidationError", ValidationError),
        (401, "UnauthorizedError", UnauthorizedError),
        (403, "ForbiddenError", ForbiddenError),
        (404, "WalletNotFoundError", WalletNotFoundError),
        (422, "WithdrawalLimitExceededError", WithdrawalLimitExceededError),
        (500, "InternalServerError", InternalServerError),
    ],
)
async def test_client_errors_and_500_are_raised_after_one_attempt(served, status, name, raised):
    script = Script((status, error(status, name), {}))
    async with WalletClient(await served(script), retry=FAST) as client:
        with pytest.raises(raised) as caught:
            await client.withdraw("w1", 1, request_id="k1")
    assert len(script.requests) == 1
    assert (caught.value.status, caught.value.error, caught.value.request_id) == (status, name, "k1")


async def test_429_waits_for_retry_after(served):
    script = Script((429, error(429, "RateLimitExceededError"), {"Retry-After": "1"}), BALANCE)
    async with WalletClient(await served(script), retry=FAST) as client:
        started = time.monotonic()
        await client.deposit("w1", 1)
    assert time.monotonic() - started >= 1.0
    assert len(script.requests) == 2


async def test_a_retry_after_beyond_the_deadline_gives_up_at_once(served):
    script = Script((429, error(429, "RateLimitExceededError"), {"Retry-After": "30"}))
    async with WalletClient(await served(script), retry=FAST) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError) as caught:
            await client.deposit("w1", 1, deadline=2)
    assert time.monotonic() - started < 1.0  # not the 2 s deadline, let alone 30 s
    assert isinstance(caught.value.last_error, RateLimitExceededError)
    assert caught.value.status == 429 and len(script.requests) == 1


async def test_a_service_that_never_answers_costs_the_deadline_and_no_more(served):
    script = Script((200, "hang", {}))
    policy = RetryPolicy(deadline=5.0, attempt_timeout=0.3, initial=0.01, cap=0.05)
    async with WalletClient(await served(script), retry=policy) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError) as caught:
            await client.deposit("w1", 1, deadline=1.0)
        elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 1.6, elapsed  # the margin: a loaded machine
    assert isinstance(caught.value.last_error, ConnectionFailedError)
    assert len(script.requests) >= 3 and len(set(script.keys())) == 1


async def test_a_refused_connection_is_retried_until_the_deadline():
    async with WalletClient(f"http://127.0.0.1:{free_port()}", retry=FAST) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError) as caught:
            await client.wallet("w1", deadline=0.5)
    assert 0.4 <= time.monotonic() - started < 1.1
    assert isinstance(caught.value.last_error, ConnectionFailedError)
    assert caught.value.status is None


TRANSFER = {"fromWalletId": "a", "toWalletId": "b", "amount": 5, "sagaId": SAGA}


async def test_a_transfer_answered_in_flight_is_followed_until_terminal(served):
    script = Script(
        (409, error(409, "IdempotencyKeyInFlightError", sagaId=SAGA), {}),
        (200, TRANSFER | {"state": "DEBITED"}, {}),
        (200, TRANSFER | {"state": "COMPLETED"}, {}),
    )
    async with WalletClient(await served(script), retry=FAST) as client:
        done = await client.transfer("a", "b", 5, request_id="t1")
    assert (done.saga_id, done.state, done.request_id) == (SAGA, "COMPLETED", "t1")
    assert [(m, p) for m, p, _ in script.requests] == [
        ("POST", "/v1/wallet/a/transfer"),
        ("GET", f"/v1/transfers/{SAGA}"),
        ("GET", f"/v1/transfers/{SAGA}"),
    ]


async def test_a_followed_transfer_that_compensates_raises_its_rule(served):
    script = Script(
        (503, error(503, "ServiceUnavailableError", sagaId=SAGA), {}),
        (200, TRANSFER | {"state": "COMPENSATED", "error": "WalletNotActiveError", "reason": "frozen"}, {}),
    )
    async with WalletClient(await served(script), retry=FAST) as client:
        with pytest.raises(Exception) as caught:
            await client.transfer("a", "b", 5)
    assert caught.value.__class__.__name__ == "WalletNotActiveError"
    assert caught.value.saga_id == SAGA and caught.value.body["state"] == "COMPENSATED"


async def test_a_transfer_still_pending_at_the_deadline_raises_with_its_saga_id(served):
    script = Script(
        (409, error(409, "IdempotencyKeyInFlightError", sagaId=SAGA), {}),
        (200, TRANSFER | {"state": "DEBITED"}, {}),
    )
    async with WalletClient(await served(script), retry=FAST) as client:
        started = time.monotonic()
        with pytest.raises(TransferPendingError) as caught:
            await client.transfer("a", "b", 5, deadline=0.6)
    assert time.monotonic() - started < 1.2
    assert (caught.value.saga_id, caught.value.state) == (SAGA, "DEBITED")


async def test_a_key_that_may_not_read_transfers_waits_on_the_post_instead(served):
    script = Script(
        (409, error(409, "IdempotencyKeyInFlightError", sagaId=SAGA), {}),
        (403, error(403, "ForbiddenError"), {}),
        (200, TRANSFER | {"state": "COMPLETED"}, {"Idempotent-Replayed": "true"}),
    )
    async with WalletClient(await served(script), retry=FAST) as client:
        done = await client.transfer("a", "b", 5, request_id="t2")
    assert (done.state, done.replayed) == ("COMPLETED", True)
    assert [m for m, _, _ in script.requests] == ["POST", "GET", "POST"]
    assert script.keys()[0] == script.keys()[2] == "t2"


async def test_a_deadline_that_runs_out_during_the_back_off_keeps_the_last_error(monkeypatch):
    """A loaded machine can oversleep the back-off past the deadline: the error still says why."""
    real_sleep = asyncio.sleep

    async def oversleep(delay: float, *args: Any) -> Any:
        return await real_sleep(delay + 0.3 if delay > 0 else delay, *args)

    async with WalletClient(f"http://127.0.0.1:{free_port()}", retry=FAST) as client:
        monkeypatch.setattr("wallet.client.client.asyncio.sleep", oversleep)
        with pytest.raises(DeadlineExceededError) as caught:
            await client.wallet("w1", deadline=0.2)
    assert isinstance(caught.value.last_error, ConnectionFailedError)
