"""Idempotency records: written by the flush that has the effect, read to replay, purged by age."""

from __future__ import annotations

import json

import asyncpg

from wallet.persistence.db import retrying
from wallet.persistence.records import IdempotencyRecord


class IdempotencyStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def find(self, key: str) -> IdempotencyRecord | None:
        row = await retrying(
            self._pool,
            lambda conn: conn.fetchrow(
                "SELECT fingerprint, status_code, response FROM idempotency_keys WHERE key = $1", key
            ),
        )
        if row is None:
            return None
        return IdempotencyRecord(key, row["fingerprint"], row["status_code"], json.loads(row["response"]))

    async def purge(self, older_than_seconds: int) -> int:
        async with self._pool.acquire() as conn:
            status = await conn.execute(
                "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
                float(older_than_seconds),
            )
        return int(status.split()[-1])
