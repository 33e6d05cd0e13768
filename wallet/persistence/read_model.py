"""Queries behind the read routes: a wallet's current view and its history."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from wallet.persistence.db import retrying


@dataclass(frozen=True, slots=True)
class WalletView:
    wallet_id: str
    balance: int
    currency: str
    status: str
    version: int
    daily_limit: int | None


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    id: str
    event_type: str
    amount: int | None
    metadata: dict[str, Any]
    created_at: datetime


class WalletReadModel:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def wallet(self, wallet_id: str) -> WalletView | None:
        row = await retrying(
            self._pool,
            lambda conn: conn.fetchrow(
                "SELECT balance, currency, status, version, daily_withdrawal_limit"
                " FROM wallets WHERE id = $1",
                wallet_id,
            ),
        )
        if row is None:
            return None
        return WalletView(
            wallet_id,
            row["balance"],
            row["currency"],
            row["status"],
            row["version"],
            row["daily_withdrawal_limit"],
        )

    async def history(self, wallet_id: str, limit: int, offset: int) -> list[HistoryEntry] | None:
        """The wallet's events oldest first, or None if the wallet does not exist."""

        async def read(conn: asyncpg.Connection) -> list[asyncpg.Record] | None:
            rows: list[asyncpg.Record] = await conn.fetch(
                "SELECT id, event_type, amount, metadata, created_at FROM wallet_events"
                " WHERE wallet_id = $1 ORDER BY version LIMIT $2 OFFSET $3",
                wallet_id,
                limit,
                offset,
            )
            if not rows:
                exists = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM wallets WHERE id = $1)", wallet_id)
                if not exists:
                    return None
            return rows

        rows = await retrying(self._pool, read)
        if rows is None:
            return None
        return [
            HistoryEntry(
                str(r["id"]), r["event_type"], r["amount"], json.loads(r["metadata"]), r["created_at"]
            )
            for r in rows
        ]
