"""API keys in PostgreSQL: issued, listed, revoked, looked up by id, and checked in bulk."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

_COLUMNS = "id, name, secret_hash, scopes, wallets, created_at, expires_at, revoked_at"


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: str
    name: str
    secret_hash: bytes
    scopes: tuple[str, ...]
    wallets: tuple[str, ...]
    created_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def usable_at(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


def _record(row: asyncpg.Record) -> ApiKeyRecord:
    return ApiKeyRecord(
        row["id"],
        row["name"],
        bytes(row["secret_hash"]),
        tuple(row["scopes"]),
        tuple(row["wallets"]),
        row["created_at"],
        row["expires_at"],
        row["revoked_at"],
    )


class ApiKeyStore:
    def __init__(self, pool: asyncpg.Pool | asyncpg.Connection) -> None:
        self._db = pool

    async def insert(self, key: ApiKeyRecord) -> None:
        await self._db.execute(
            "INSERT INTO api_keys (id, name, secret_hash, scopes, wallets, expires_at)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            key.id,
            key.name,
            key.secret_hash,
            list(key.scopes),
            list(key.wallets),
            key.expires_at,
        )

    async def find(self, key_id: str) -> ApiKeyRecord | None:
        row = await self._db.fetchrow(f"SELECT {_COLUMNS} FROM api_keys WHERE id = $1", key_id)
        return None if row is None else _record(row)

    async def all(self) -> list[ApiKeyRecord]:
        return [
            _record(r) for r in await self._db.fetch(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at")
        ]

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key (at once, and it stays revoked); False if there is no such key."""
        status: str = await self._db.execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1", key_id
        )
        return status.endswith(" 1")

    async def usable(self, key_ids: Iterable[str]) -> set[str]:
        """Which of ``key_ids`` exist, are not revoked and have not expired (one round trip)."""
        rows = await self._db.fetch(
            "SELECT id FROM api_keys WHERE id = ANY($1::text[]) AND revoked_at IS NULL"
            " AND (expires_at IS NULL OR expires_at > now())",
            list(key_ids),
        )
        return {r["id"] for r in rows}

    async def any_exists(self) -> bool:
        found: bool = await self._db.fetchval("SELECT EXISTS (SELECT 1 FROM api_keys)")
        return found
