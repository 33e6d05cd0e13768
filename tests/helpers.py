"""Small helpers shared by the tests: reading balances and folding events straight from the DB."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient, TestServer

from wallet.domain.events import Event, EventType
from wallet.domain.wallet import WalletState, fold
from wallet.http.serving import WalletAppRunner


class WalletTestServer(TestServer):
    """A test server run as ``wallet serve`` runs the app (timeouts, quiet protocol errors)."""

    async def _make_runner(self, **kwargs: Any) -> WalletAppRunner:
        from wallet.http.wallet_routes import SERVICE

        return WalletAppRunner(self.app, self.app[SERVICE].settings, **kwargs)


async def post(client: TestClient, path: str, body: Any, **headers: str) -> tuple[int, Any]:
    response = await client.post(path, json=body, headers=headers)
    return response.status, await response.json()


async def balance_cents(db: asyncpg.Connection, wallet_id: str) -> int:
    value = await db.fetchval("SELECT balance FROM wallets WHERE id = $1", wallet_id)
    assert value is not None, f"no wallet {wallet_id}"
    return int(value)


async def folded_state(db: asyncpg.Connection, wallet_id: str) -> WalletState | None:
    rows = await db.fetch(
        "SELECT event_type, amount, metadata, created_at FROM wallet_events"
        " WHERE wallet_id = $1 ORDER BY version",
        wallet_id,
    )
    events = [
        Event(EventType(r["event_type"]), wallet_id, r["created_at"], r["amount"], json.loads(r["metadata"]))
        for r in rows
    ]
    return fold(None, events)


async def versions(db: asyncpg.Connection, wallet_id: str) -> list[int]:
    rows = await db.fetch(
        "SELECT version FROM wallet_events WHERE wallet_id = $1 ORDER BY version", wallet_id
    )
    return [r["version"] for r in rows]


async def assert_projection_matches_events(db: asyncpg.Connection, wallet_id: str) -> None:
    """Invariant 1: the wallets row equals the fold of the wallet's events; versions contiguous."""
    state = await folded_state(db, wallet_id)
    assert state is not None
    row = await db.fetchrow("SELECT balance, version, status FROM wallets WHERE id = $1", wallet_id)
    assert row["balance"] == state.balance
    assert row["version"] == state.version
    assert row["status"] == state.status.value
    assert await versions(db, wallet_id) == list(range(1, state.version + 1))
    assert state.balance >= 0


def dec(value: Any) -> Decimal:
    return Decimal(str(value))


@contextlib.contextmanager
def root_logging_restored() -> Iterator[None]:
    """The root logger's handlers and level put back afterwards (for tests that configure logging)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
