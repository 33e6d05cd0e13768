"""A keyed mixed workload for the fault-injection suite: careful clients that retry.

Each client owns a few wallets and runs one operation at a time on them (deposits, withdrawals,
transfers between its own wallets), each with its own ``X-Request-ID``, retried with the same key
on 503, 409, connection errors and timeouts until a definite answer. Because nobody else touches
its wallets, the client knows every balance exactly (its model): each acknowledged operation is
applied to the model, and right after it the client reads both wallets through the API and
compares (read-your-writes). Any duplicate or lost effect shows up as a difference.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp
import orjson

RETRYABLE = {409, 429, 502, 503, 504}
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=15)


@dataclass(slots=True)
class Op:
    kind: str
    wallet: str
    amount: int
    to_wallet: str | None = None
    key: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = 0.0
    answered: float = 0.0
    attempts: int = 0
    status: int = 0
    body: Any = None
    phase: str = ""
    retried: list[int] = field(default_factory=list)  # the answers retried (0: no answer at all)

    @property
    def waited(self) -> float:
        return self.answered - self.started


@dataclass(slots=True)
class Problem:
    what: str
    op: Op | None = None


class Phases:
    """The fault currently injected, and the windows in which the API was down on purpose."""

    def __init__(self) -> None:
        self.current = "warm-up"
        self.outages: list[tuple[float, float]] = []

    def overlaps_outage(self, start: float, end: float) -> bool:
        return any(start <= b and end >= a for a, b in self.outages)


class Client:
    def __init__(self, base: str, session: aiohttp.ClientSession, wallets: list[str], phases: Phases) -> None:
        self.base = base
        self.session = session
        self.wallets = wallets
        self.phases = phases
        self.model = dict.fromkeys(wallets, 0)
        self.ops: list[Op] = []
        self.reads: list[tuple[str, float, float]] = []  # (phase, started, answered)
        self.problems: list[Problem] = []
        self.rng = random.Random(hash(tuple(wallets)))

    async def run(self, stop: asyncio.Event) -> None:
        for wallet in self.wallets:  # every wallet starts with a deposit
            await self.perform(Op("deposit", wallet, 1000))
        while not stop.is_set():
            await self.perform(self.next_op())

    def next_op(self) -> Op:
        wallet = self.rng.choice(self.wallets)
        roll = self.rng.random()
        if roll < 0.35:
            return Op("deposit", wallet, self.rng.randint(1, 200))
        if roll < 0.65:
            return Op("withdraw", wallet, self.rng.randint(1, 400))
        other = self.rng.choice([w for w in self.wallets if w != wallet])
        return Op("transfer", wallet, self.rng.randint(1, 400), to_wallet=other)

    async def perform(self, op: Op) -> None:
        op.phase = self.phases.current
        op.started = time.monotonic()
        path = f"/v1/wallet/{op.wallet}/{op.kind}"
        body: dict[str, Any] = {"amount": op.amount}
        if op.to_wallet is not None:
            body["toWalletId"] = op.to_wallet
        status, reply = await self._until_definite("POST", path, body, op)
        op.answered = time.monotonic()
        op.status, op.body = status, reply
        self.ops.append(op)
        self._apply(op)
        await self._check_reads(op)

    async def _until_definite(self, method: str, path: str, body: Any, op: Op | None) -> tuple[int, Any]:
        headers = {"X-Request-ID": op.key} if op is not None else {}
        give_up = time.monotonic() + 90
        while True:
            if op is not None:
                op.attempts += 1
            try:
                async with self.session.request(
                    method, self.base + path, json=body, headers=headers, timeout=REQUEST_TIMEOUT
                ) as response:
                    data = await response.read()
                    if response.status not in RETRYABLE:
                        return response.status, orjson.loads(data) if data else None
                    if op is not None:
                        op.retried.append(response.status)
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
                if op is not None:
                    op.retried.append(0)
            if time.monotonic() > give_up:
                raise AssertionError(f"no definite answer to {method} {path} in 90 s")
            await asyncio.sleep(0.1)

    def _apply(self, op: Op) -> None:
        model = self.model
        if op.status == 200:
            if op.kind == "deposit":
                model[op.wallet] += op.amount
            elif op.kind == "withdraw":
                model[op.wallet] -= op.amount
            else:
                assert op.to_wallet is not None
                if op.body.get("state") != "COMPLETED":
                    self.problems.append(Problem(f"transfer 200 but {op.body}", op))
                    return
                model[op.wallet] -= op.amount
                model[op.to_wallet] += op.amount
            if op.kind != "transfer" and Decimal(str(op.body["balance"])) != model[op.wallet]:
                self.problems.append(
                    Problem(f"acknowledged balance {op.body['balance']} != {model[op.wallet]}", op)
                )
        elif op.status == 422 and op.kind in ("withdraw", "transfer"):
            if model[op.wallet] >= op.amount:  # refused for want of funds the client knows it has
                self.problems.append(Problem(f"refused with {model[op.wallet]} available: {op.body}", op))
        else:
            self.problems.append(Problem(f"unexpected answer {op.status}: {op.body}", op))

    async def _check_reads(self, op: Op) -> None:
        for wallet in (op.wallet, op.to_wallet):
            if wallet is None:
                continue
            started = time.monotonic()
            status, body = await self._until_definite("GET", f"/v1/wallet/{wallet}", None, None)
            self.reads.append((self.phases.current, started, time.monotonic()))
            if status != 200 or Decimal(str(body["balance"])) != self.model[wallet]:
                self.problems.append(
                    Problem(
                        f"read {wallet} after {op.kind}: {status} {body}, acknowledged {self.model[wallet]}",
                        op,
                    )
                )
