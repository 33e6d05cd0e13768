"""wallet.client against the real service (a subprocess on real PostgreSQL, Redis, RabbitMQ): every
method, key replays, no retry of a client error (401 and 403 included), calls that end at their
deadline, a transfer that retries through a SIGKILL and a restart of the service yet happens once,
and the bench's funding and checks. Authentication is on, with keys issued by ``wallet keys``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from tests.e2e.service_process import ServiceProcess
from wallet.bench.runner import BenchError, Options, ServiceBench
from wallet.bench.services import Target
from wallet.client import (
    BalanceNotZeroError,
    DeadlineExceededError,
    ForbiddenError,
    IdempotencyKeyReuseError,
    InsufficientFundsError,
    RetryPolicy,
    TransferNotFoundError,
    UnauthorizedError,
    ValidationError,
    WalletClient,
    WalletNotActiveError,
    WalletNotFoundError,
    WithdrawalLimitExceededError,
)
from wallet.config import Settings

FAST = RetryPolicy(deadline=15.0, attempt_timeout=5.0, initial=0.02, cap=0.3)


def new_id(prefix: str = "cl") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def stop(service: ServiceProcess) -> None:
    if service.process is not None and service.process.poll() is None:
        service.process.send_signal(signal.SIGTERM)
        try:
            service.process.wait(10)
        finally:
            service.kill()


@pytest.fixture(scope="module")
def live_settings(database_url: str, event_stream: dict[str, Any], run_id: str) -> Settings:
    return replace(
        Settings(), **event_stream, database_url=database_url, redis_key_prefix=f"wallet_test_{run_id}"
    )


AUTH_ON = {"AUTH_ENABLED": "true"}


@dataclass(frozen=True)
class Live:
    base: str
    key: str  # every scope, every wallet
    reader: str  # wallets:read only


def issue_keys(database_url: str, *keys: tuple[str, str]) -> list[str]:
    """API keys (name, scopes) issued as an operator would, by ``wallet keys create`` (side by
    side): each secret is the last line of its output."""
    env = os.environ | {"DATABASE_URL": database_url}
    create = [sys.executable, "-m", "wallet", "keys", "create"]
    running = [
        subprocess.Popen(
            [*create, "--name", name, "--scopes", scopes, "--wallets", "*"],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name, scopes in keys
    ]
    secrets = []
    for process in running:
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0, out
        secrets.append(out.strip().splitlines()[-1])
    return secrets


@pytest.fixture(scope="module")
def live(live_settings: Settings) -> Iterator[Live]:
    """One service process, authentication on, for the module's method tests, and two keys."""
    service = ServiceProcess(live_settings, **AUTH_ON)
    asyncio.run(service.start())
    try:
        key, reader = issue_keys(
            live_settings.database_url, ("client-live", "*"), ("client-live-reader", "wallets:read")
        )
        yield Live(service.base, key, reader)
    finally:
        stop(service)


class Counting:
    """A session whose requests are counted (an aiohttp trace hook: what went on the wire)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(self._on_start)
        self.session = aiohttp.ClientSession(trace_configs=[trace])

    async def _on_start(self, session: Any, context: Any, params: aiohttp.TraceRequestStartParams) -> None:
        self.sent.append(f"{params.method} {params.url.path}")


async def test_every_method_against_the_live_service(live):
    alice, bob = new_id("tenant:alice"), new_id()
    async with WalletClient(live.base, api_key=live.key, retry=FAST) as c:
        first = await c.deposit(alice, Decimal("100.10"))
        assert first.balance == Decimal("100.10") and not first.replayed
        assert (await c.deposit(alice, "0.90")).balance == Decimal("101.00")
        assert (await c.withdraw(alice, 1)).balance == Decimal(100)

        moved = await c.transfer(alice, bob, "25.50")
        assert (moved.state, moved.from_wallet_id, moved.to_wallet_id, moved.amount) == (
            "COMPLETED",
            alice,
            bob,
            Decimal("25.50"),
        )
        looked_up = await c.get_transfer(moved.saga_id)
        assert (looked_up.state, looked_up.currency, looked_up.amount) == (
            "COMPLETED",
            "USD",
            Decimal("25.5"),
        )
        assert await c.balance(bob) == Decimal("25.50")

        wallet = await c.wallet(alice)
        assert (wallet.balance, wallet.currency, wallet.status) == (Decimal("74.50"), "USD", "ACTIVE")

        frozen = await c.freeze(alice, "card lost")
        assert frozen.status == "FROZEN"
        with pytest.raises(WalletNotActiveError):
            await c.withdraw(alice, 1)
        assert (await c.unfreeze(alice)).status == "ACTIVE"

        limited = await c.set_daily_limit(alice, "10")
        assert limited.daily_withdrawal_limit == Decimal(10)
        with pytest.raises(WithdrawalLimitExceededError):
            await c.withdraw(alice, "10.01")
        assert (await c.set_daily_limit(alice, None)).daily_withdrawal_limit is None

        with pytest.raises(BalanceNotZeroError):
            await c.close(alice)
        await c.withdraw(alice, wallet.balance)
        assert (await c.close(alice, "done")).status == "CLOSED"

        history = [entry async for entry in c.history(alice, page_size=2)]  # five pages
        assert [e.event_type for e in history] == [
            "WALLET_CREATED",
            "FUNDS_DEPOSITED",
            "FUNDS_DEPOSITED",
            "FUNDS_WITHDRAWN",
            "TRANSFER_DEBITED",
            "WALLET_FROZEN",
            "WALLET_UNFROZEN",
            "DAILY_WITHDRAWAL_LIMIT_SET",
            "DAILY_WITHDRAWAL_LIMIT_REMOVED",
            "FUNDS_WITHDRAWN",
            "WALLET_CLOSED",
        ]
        assert history[1].amount == Decimal("100.10") and history[4].metadata["sagaId"] == moved.saga_id
        assert [e.event_type async for e in c.history(bob)] == ["WALLET_CREATED", "TRANSFER_CREDITED"]

        with pytest.raises(WalletNotFoundError):
            await c.wallet(new_id())
        with pytest.raises(TransferNotFoundError):
            await c.get_transfer(str(uuid.uuid4()))


async def test_fraud_alerts_are_listed(live, fraud_worker):
    big = new_id()
    async with WalletClient(live.base, api_key=live.key, retry=FAST) as c:
        await c.deposit(big, 20000)
        await c.withdraw(big, "10000.01")
        deadline = time.monotonic() + 10
        while not (alerts := await c.fraud_alerts(big)):
            assert time.monotonic() < deadline, "no alert"
            await asyncio.sleep(0.1)
        assert [(a.rule, a.wallet_id, a.amount, a.currency) for a in alerts] == [
            ("HIGH_VALUE_TRANSACTION", big, Decimal("10000.01"), "USD")
        ]
        assert len(await c.fraud_alerts(limit=1)) == 1


async def test_a_key_replay_is_reported_as_such(live):
    wallet = new_id()
    async with WalletClient(live.base, api_key=live.key, retry=FAST) as c:
        once = await c.deposit(wallet, 10, request_id=f"dep-{wallet}")
        again = await c.deposit(wallet, 10, request_id=f"dep-{wallet}")
        assert (once.replayed, again.replayed) == (False, True)
        assert again.balance == once.balance == await c.balance(wallet) == Decimal(10)

        refused = []
        for _ in range(2):
            with pytest.raises(InsufficientFundsError) as caught:
                await c.withdraw(wallet, 11, request_id=f"wd-{wallet}")
            refused.append(caught.value)
        assert [e.replayed for e in refused] == [False, True]
        assert refused[1].request_id == f"wd-{wallet}" and refused[1].status == 422

        with pytest.raises(IdempotencyKeyReuseError):
            await c.deposit(wallet, 11, request_id=f"dep-{wallet}")
        assert await c.balance(wallet) == Decimal(10)


async def test_client_errors_are_not_retried(live):
    wallet = new_id()
    counting = Counting()
    async with (
        counting.session,
        WalletClient(live.base, api_key=live.key, session=counting.session, retry=FAST) as c,
    ):
        await c.deposit(wallet, 5)
        for call, raised in (
            (c.withdraw(wallet, 6), InsufficientFundsError),  # 422
            (c.withdraw(wallet, "0.001"), ValidationError),  # 400
            (c.withdraw(new_id(), 1), WalletNotFoundError),  # 404
        ):
            counting.sent.clear()
            with pytest.raises(raised):
                await call
            assert len(counting.sent) == 1, counting.sent
    assert counting.session.closed


async def test_401_and_403_raise_their_exceptions_at_once_and_never_show_the_key(live):
    wallet = new_id()
    counting = Counting()
    async with counting.session:
        async with WalletClient(live.base, api_key=live.key, session=counting.session) as owner:
            await owner.deposit(wallet, 5)
        for api_key, call, raised in (
            ("not-a-key", "wallet", UnauthorizedError),
            (None, "wallet", UnauthorizedError),
            (live.reader, "deposit", ForbiddenError),  # wallets:read only
        ):
            async with WalletClient(live.base, api_key=api_key, session=counting.session, retry=FAST) as c:
                counting.sent.clear()
                with pytest.raises(raised) as caught:
                    await (c.wallet(wallet) if call == "wallet" else c.deposit(wallet, 1))
                assert len(counting.sent) == 1, counting.sent
                assert caught.value.status == (401 if raised is UnauthorizedError else 403)
                assert caught.value.request_id is not None
                for shown in (str(caught.value), repr(caught.value.body), repr(c)):
                    assert live.key not in shown and live.reader not in shown
        async with WalletClient(live.base, api_key=live.reader, session=counting.session) as reader:
            assert await reader.balance(wallet) == 5  # the scope it has


async def test_the_bench_funds_and_checks_through_the_client(live, live_settings):
    async with aiohttp.ClientSession() as session:
        bench = ServiceBench(Options(connections=4), Target(live.base, ()), session, "", live.key)
        wallets = [f"{bench.spread_prefix}{k}" for k in range(6)]
        await bench.deposit_all(wallets, Decimal("2.50"))
        await bench.deposit_all(wallets, Decimal("2.50"))  # the same keys: funded once
        assert [await bench.balance(w) for w in wallets] == [Decimal("2.50")] * 6
        with pytest.raises(BenchError, match="WalletNotFoundError"):
            await bench.balance(new_id())


async def test_a_transfer_retried_through_a_sigkill_and_restart_happens_once(live, live_settings):
    """The service SIGKILLs itself after the debit (fault injection). The call retries through the
    outage; meanwhile the same key on another instance drives the saga on at once (issue 11: a
    retry finishes what nobody is driving; recovery is the last resort). Restarted, the service
    answers the first call with the recorded outcome: one debit, one credit."""
    source, dest, key = new_id(), new_id(), f"t-{uuid.uuid4()}"
    crashing = ServiceProcess(live_settings, WALLET_FAULT_CRASH_AFTER_DEBIT="1", **AUTH_ON)
    restarted = ServiceProcess(live_settings, crashing.port, **AUTH_ON)
    try:
        await crashing.start()
        async with (
            WalletClient(crashing.base, api_key=live.key, retry=FAST) as c,
            WalletClient(live.base, api_key=live.key, retry=FAST) as other,
        ):
            await c.deposit(source, 100)
            call = asyncio.create_task(c.transfer(source, dest, 30, request_id=key, deadline=30))
            assert await crashing.wait() == -signal.SIGKILL
            started = time.monotonic()
            with pytest.raises(DeadlineExceededError) as gave_up:  # nobody answers on that port now
                await c.balance(source, deadline=0.5)
            # Never past the deadline; it may end early, when the next jittered wait would overrun it.
            assert time.monotonic() - started < 1.3
            assert gave_up.value.last_error is not None

            started = time.monotonic()
            elsewhere = await other.transfer(source, dest, 30, request_id=key, deadline=5)
            assert time.monotonic() - started < 3.0
            saga_id = elsewhere.saga_id
            assert saga_id is not None and elsewhere.state == "COMPLETED"
            assert not call.done()

            await restarted.start()
            done = await call
            assert (done.saga_id, done.state, done.request_id) == (saga_id, "COMPLETED", key)
            assert await c.balance(source) == Decimal(70)
            assert await c.balance(dest) == Decimal(30)
            source_events = [e.event_type async for e in c.history(source)]
            assert source_events == ["WALLET_CREATED", "FUNDS_DEPOSITED", "TRANSFER_DEBITED"]
            assert [e.event_type async for e in c.history(dest)] == ["WALLET_CREATED", "TRANSFER_CREDITED"]
            replay = await c.transfer(source, dest, 30, request_id=key)
            assert (replay.saga_id, replay.replayed) == (saga_id, True)
    finally:
        crashing.kill()
        stop(restarted)
