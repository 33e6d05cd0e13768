"""Invariant 5: the event table refuses UPDATE, DELETE and TRUNCATE at the database."""

from __future__ import annotations

import asyncpg
import pytest

from tests.helpers import post


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE wallet_events SET amount = amount + 1 WHERE wallet_id = $1",
        "DELETE FROM wallet_events WHERE wallet_id = $1",
    ],
)
async def test_events_cannot_be_changed(client, db, wallet_id, statement):
    await post(client, f"/v1/wallet/{wallet_id}/deposit", {"amount": 1})
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await db.execute(statement, wallet_id)
    assert await db.fetchval("SELECT sum(amount) FROM wallet_events WHERE wallet_id = $1", wallet_id) == 100


async def test_events_cannot_be_truncated(db):
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await db.execute("TRUNCATE wallet_events CASCADE")
