"""``wallet verify``: replay every wallet's events and check the books.

Checks, each reported with the wallets concerned:
1. versions are 1..N without gaps (no event removed);
2. each event's stored ``balance_after`` equals the replayed balance (an altered amount shows);
3. the ``wallets`` projection (balance, version, status) equals the replay;
4. money is conserved: Σ balances + Σ in-flight transfers = Σ deposits - Σ withdrawals.
Exit status 0 when all hold, 1 otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import asyncpg

from wallet.domain.events import Event, EventType
from wallet.domain.money import to_decimal
from wallet.domain.wallet import WalletState, evolve


@dataclass
class AuditReport:
    wallets: int = 0
    events: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> Iterator[str]:
        yield f"wallets: {self.wallets}, events: {self.events}"
        yield from (f"MISMATCH {p}" for p in self.problems)
        yield "OK: the books balance" if self.ok else f"FAILED: {len(self.problems)} problem(s)"


async def verify(dsn: str, max_problems: int = 100) -> AuditReport:
    report = AuditReport()
    conn = await asyncpg.connect(dsn)
    try:
        projections = {
            r["id"]: (r["balance"], r["version"], r["status"])
            for r in await conn.fetch("SELECT id, balance, version, status FROM wallets")
        }
        replayed: dict[str, WalletState | None] = {}
        state: WalletState | None = None
        current: str | None = None
        deposits = withdrawals = 0
        async with conn.transaction():
            query = (
                "SELECT wallet_id, version, event_type, amount, balance_after, metadata, created_at"
                " FROM wallet_events ORDER BY wallet_id, version"
            )
            async for row in conn.cursor(query, prefetch=5000):
                report.events += 1
                if row["wallet_id"] != current:
                    if current is not None:
                        replayed[current] = state
                    current, state = str(row["wallet_id"]), None
                expected_version = (state.version if state else 0) + 1
                if row["version"] != expected_version:
                    report.problems.append(
                        f"{current}: version {row['version']}, expected {expected_version}"
                    )
                event = Event(
                    EventType(row["event_type"]),
                    row["wallet_id"],
                    row["created_at"],
                    row["amount"],
                    json.loads(row["metadata"]),
                )
                if event.type is EventType.FUNDS_DEPOSITED:
                    deposits += event.amount or 0
                elif event.type is EventType.FUNDS_WITHDRAWN:
                    withdrawals += event.amount or 0
                state = evolve(state, event)
                if state.balance != row["balance_after"] or state.balance < 0:
                    report.problems.append(
                        f"{current} v{row['version']}: stored balance_after {row['balance_after']},"
                        f" replayed {state.balance}"
                    )
            if current is not None:
                replayed[current] = state
        for wallet_id in projections.keys() | replayed.keys():
            projection = projections.get(wallet_id)
            replay = replayed.get(wallet_id)
            got = None if replay is None else (replay.balance, replay.version, replay.status.value)
            if projection != got:
                report.problems.append(f"{wallet_id}: projection {projection}, replay {got}")
        report.wallets = len(projections)
        in_flight = await conn.fetchval(
            "SELECT coalesce(sum(amount), 0) FROM transfer_sagas WHERE state = 'DEBITED'"
        )
        balances = sum(p[0] for p in projections.values())
        if balances + in_flight != deposits - withdrawals:
            report.problems.append(
                f"conservation: balances {to_decimal(balances)} + in flight {to_decimal(in_flight)}"
                f" != deposits {to_decimal(deposits)} - withdrawals {to_decimal(withdrawals)}"
            )
    finally:
        await conn.close()
    del report.problems[max_problems:]
    return report
