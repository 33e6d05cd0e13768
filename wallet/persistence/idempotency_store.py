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
        return (await retrying(self._pool, lambda conn: self.find_many(conn, [key]))).get(key)

    @staticmethod
    async def find_many(conn: asyncpg.Connection, keys: list[str]) -> dict[str, IdempotencyRecord]:
        """The records of ``keys`` that exist, by key, read on ``conn``."""
        if not keys:
            return {}
        rows = await conn.fetch(
            "SELECT key, fingerprint, status_code, response FROM idempotency_keys"
            " WHERE key = ANY($1::text[])",
            keys,
        )
        return {
            row["key"]: IdempotencyRecord(
                row["key"], row["fingerprint"], row["status_code"], json.loads(row["response"])
            )
            for row in rows
        }

    async def purge(self, older_than_seconds: int) -> int:
        async with self._pool.acquire() as conn:
            status = await conn.execute(
                "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
                float(older_than_seconds),
            )
        return int(status.split()[-1])
