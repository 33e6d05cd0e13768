"""Transfer sagas: a new one's row is written by its debit's wallet flush, in the state the debit
leads to, and later states by the later steps' flushes (``wallet_apply_batches.sql``). ``create``
writes a PENDING row first, the way every saga started before its debit wrote the row: the service falls
back on it when a new saga's key turns out to be taken, to find who holds it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from wallet.domain.saga import SagaState
from wallet.persistence.db import retrying
from wallet.persistence.grouped import Failed, GroupedCalls
from wallet.persistence.idempotency_store import IdempotencyStore
from wallet.persistence.records import IdempotencyRecord


@dataclass(frozen=True, slots=True)
class SagaRecord:
    id: str
    from_wallet_id: str
    to_wallet_id: str
    amount: int
    currency: str | None
    state: SagaState
    failure_error: str | None = None
    failure_reason: str | None = None
    request_key: str | None = None
    request_fingerprint: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


_COLUMNS = (
    "id::text AS id, from_wallet_id, to_wallet_id, amount, currency, state, failure_error,"
    " failure_reason, request_key, request_fingerprint, created_at, updated_at"
)


def _record(row: asyncpg.Record) -> SagaRecord:
    values = dict(row)
    values["state"] = SagaState(values["state"])
    return SagaRecord(**values)


class SagaStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._create_grouped: GroupedCalls[SagaRecord, SagaRecord | IdempotencyRecord] = GroupedCalls(
            self.create_many
        )

    async def create(self, saga: SagaRecord) -> SagaRecord | IdempotencyRecord:
        """Insert a PENDING saga; if its request key is taken, return the saga that holds it, or
        the record of the request that took it. Concurrent creates share one statement and one
        commit (``create_many``)."""
        return await self._create_grouped(saga)

    async def create_many(self, sagas: list[SagaRecord]) -> list[SagaRecord | IdempotencyRecord | Failed]:
        """Insert PENDING sagas in one statement; for each, the stored saga, or, if its request
        key was taken, the saga already holding it or the key's record (the key check of a keyed
        transfer, in the same round trip). The INSERT commits on its own: if finding a key's
        holder then fails, only the sagas that lost their key fail. Safe to repeat (a saga
        inserted by an attempt whose answer was lost is found by its id), so a lost connection is
        retried on another."""
        return await retrying(self._pool, lambda conn: self._create_many(conn, sagas))

    @staticmethod
    async def _create_many(
        conn: asyncpg.Connection, sagas: list[SagaRecord]
    ) -> list[SagaRecord | IdempotencyRecord | Failed]:
        rows = await conn.fetch(
            "INSERT INTO transfer_sagas (id, from_wallet_id, to_wallet_id, amount, state,"
            " request_key, request_fingerprint)"
            " SELECT id, from_wallet_id, to_wallet_id, amount, 'PENDING',"
            " request_key, request_fingerprint"
            " FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[])"
            " AS s(id, from_wallet_id, to_wallet_id, amount, request_key, request_fingerprint)"
            # OFFSET 0 keeps the key check one index probe per saga: without it, a generic plan
            # made while the table was small hashed all of idempotency_keys on every call, and
            # kept doing so (DESIGN.md §8, tests/integration/test_query_plans.py).
            " WHERE request_key IS NULL"
            " OR NOT EXISTS (SELECT 1 FROM idempotency_keys i WHERE i.key = s.request_key OFFSET 0)"
            f" ON CONFLICT DO NOTHING RETURNING {_COLUMNS}",
            [s.id for s in sagas],
            [s.from_wallet_id for s in sagas],
            [s.to_wallet_id for s in sagas],
            [s.amount for s in sagas],
            [s.request_key for s in sagas],
            [s.request_fingerprint for s in sagas],
        )
        stored = {row["id"]: _record(row) for row in rows}
        missing = [s for s in sagas if s.id not in stored]
        by_id: dict[str, SagaRecord] = {}
        by_key: dict[str, SagaRecord | IdempotencyRecord] = {}
        lookup_error: BaseException | None = None
        if missing:
            try:
                existing = await conn.fetch(
                    # One index probe per key and per id (the lateral OFFSET 0), not a plan
                    # that may scan the table when it was planned small.
                    f"SELECT {_COLUMNS} FROM unnest($1::text[]) AS wanted(v) CROSS JOIN LATERAL"
                    " (SELECT * FROM transfer_sagas t WHERE t.request_key = wanted.v OFFSET 0) s"
                    f" UNION ALL SELECT {_COLUMNS} FROM unnest($2::uuid[]) AS wanted(v) CROSS JOIN LATERAL"
                    " (SELECT * FROM transfer_sagas t WHERE t.id = wanted.v OFFSET 0) s",
                    [s.request_key for s in missing if s.request_key is not None],
                    [s.id for s in missing],
                )
                for row in existing:
                    found = _record(row)
                    by_id[found.id] = found
                    if found.request_key is not None:
                        by_key[found.request_key] = found
                unheld = [s.request_key for s in missing if s.request_key and s.request_key not in by_key]
                by_key.update(await IdempotencyStore.find_many(conn, unheld))
            except Exception as exc:
                lookup_error = exc
        results: list[SagaRecord | IdempotencyRecord | Failed] = []
        for saga in sagas:
            record: SagaRecord | IdempotencyRecord | None = stored.get(saga.id) or by_id.get(saga.id)
            if record is None and saga.request_key is not None:
                record = by_key.get(saga.request_key)
            if record is not None:
                results.append(record)
            else:
                why = f"saga {saga.id} neither inserted nor found by its request key"
                results.append(Failed(lookup_error or RuntimeError(why)))
        return results

    async def get(self, saga_id: str) -> SagaRecord | None:
        row = await retrying(
            self._pool,
            lambda conn: conn.fetchrow(f"SELECT {_COLUMNS} FROM transfer_sagas WHERE id = $1::uuid", saga_id),
        )
        return None if row is None else _record(row)

    async def key_taken(self, key: str) -> bool:
        """Whether a saga holds this X-Request-ID, or another request recorded it."""
        taken = await retrying(
            self._pool,
            lambda conn: conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM transfer_sagas WHERE request_key = $1)"
                " OR EXISTS (SELECT 1 FROM idempotency_keys WHERE key = $1)",
                key,
            ),
        )
        return bool(taken)

    async def state(self, saga_id: str) -> SagaState | None:
        value = await retrying(
            self._pool,
            lambda conn: conn.fetchval("SELECT state FROM transfer_sagas WHERE id = $1::uuid", saga_id),
        )
        return None if value is None else SagaState(value)

    async def stuck(self, older_than_seconds: float, limit: int = 500) -> list[SagaRecord]:
        """Sagas not finished and not touched for a while: recovery drives them on."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM transfer_sagas WHERE state IN ('PENDING', 'DEBITED')"
                " AND updated_at < clock_timestamp() - make_interval(secs => $1)"
                " ORDER BY updated_at LIMIT $2",
                older_than_seconds,
                limit,
            )
        return [_record(r) for r in rows]

    async def count_by_state(self) -> dict[str, int]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch("SELECT state, count(*) AS n FROM transfer_sagas GROUP BY state")
        return {r["state"]: r["n"] for r in rows}
