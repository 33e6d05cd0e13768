"""The fraud worker's tables: processed events, remembered activity, alerts (0003_fraud.sql).

``process`` is the heart of "once per event": in ONE transaction it records the event as processed
(a redelivered event finds its record and stops there), remembers it for the window rules, runs
the pure rules and inserts their alerts (at most one per event and rule). A per-wallet advisory
lock serialises the events of one wallet across consumers and worker instances, so the window a
rule sees is never missing a concurrently processed event.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from wallet.fraud.messages import AlertMessage, WalletEventMessage
from wallet.fraud.rules import Alert, Movement, RuleConfig, evaluate, remembered, window_bounds

# Namespace of alert ids: uuid5(namespace, "<event id>:<rule>"), the same on every delivery.
ALERT_NAMESPACE = uuid.UUID("6d1c1f0e-5c44-4c8e-9a34-0f7a1e2b9c51")
# Class id of the per-wallet advisory locks (two-key form, apart from other advisory locks).
WALLET_LOCK_CLASS = 0x0F4A0D


@dataclass(frozen=True, slots=True)
class StoredAlert:
    id: uuid.UUID
    wallet_id: str
    rule: str
    severity: str
    event_id: uuid.UUID
    source_event_id: uuid.UUID
    amount: int | None
    currency: str | None
    reason: str
    details: dict[str, Any]
    occurred_at: datetime
    created_at: datetime
    published_at: datetime | None

    def message(self) -> AlertMessage:
        return AlertMessage(
            alert_id=self.id,
            rule=self.rule,
            severity=self.severity,
            wallet_id=self.wallet_id,
            event_id=self.event_id,
            amount=self.amount,
            currency=self.currency,
            reason=self.reason,
            occurred_at=self.occurred_at,
        )


@dataclass(frozen=True, slots=True)
class ProcessResult:
    duplicate: bool
    alerts: tuple[StoredAlert, ...] = ()  # the alerts this processing inserted


def alert_id(event_id: str, rule: str) -> uuid.UUID:
    return uuid.uuid5(ALERT_NAMESPACE, f"{event_id}:{rule}")


_ALERT_COLUMNS = (
    "id, wallet_id, rule, severity, event_id, source_event_id, amount, currency, reason,"
    " details::text AS details, occurred_at, created_at, published_at"
)


def _stored(row: asyncpg.Record) -> StoredAlert:
    return StoredAlert(
        id=row["id"],
        wallet_id=row["wallet_id"],
        rule=row["rule"],
        severity=row["severity"],
        event_id=row["event_id"],
        source_event_id=row["source_event_id"],
        amount=row["amount"],
        currency=None if row["currency"] is None else row["currency"].strip(),
        reason=row["reason"],
        details=json.loads(row["details"]),
        occurred_at=row["occurred_at"],
        created_at=row["created_at"],
        published_at=row["published_at"],
    )


def _movement(row: asyncpg.Record) -> Movement:
    return Movement(
        event_id=str(row["event_id"]),
        wallet_id=row["wallet_id"],
        event_type=row["event_type"],
        amount=row["amount"],
        occurred_at=row["occurred_at"],
        version=row["version"],
    )


class FraudStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def process(self, event: WalletEventMessage, config: RuleConfig) -> ProcessResult:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))", WALLET_LOCK_CLASS, event.wallet_id
            )
            fresh = await conn.fetchval(
                "INSERT INTO fraud_processed_events (event_id, wallet_id, event_type) VALUES ($1, $2, $3)"
                " ON CONFLICT (event_id) DO NOTHING RETURNING true",
                event.event_id,
                event.wallet_id,
                event.event_type,
            )
            if not fresh:
                return ProcessResult(duplicate=True)
            movement = event.movement()
            if movement is None:
                return ProcessResult(duplicate=False)
            activity: list[Movement] = []
            if remembered(movement):
                await conn.execute(
                    "INSERT INTO fraud_activity"
                    " (event_id, wallet_id, event_type, version, amount, occurred_at)"
                    " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING",
                    event.event_id,
                    movement.wallet_id,
                    movement.event_type,
                    movement.version,
                    movement.amount,
                    movement.occurred_at,
                )
                start, end = window_bounds(movement, config)
                rows = await conn.fetch(
                    "SELECT event_id, wallet_id, event_type, version, amount, occurred_at FROM fraud_activity"
                    " WHERE wallet_id = $1 AND occurred_at BETWEEN $2 AND $3",
                    movement.wallet_id,
                    start,
                    end,
                )
                activity = [_movement(r) for r in rows]
            inserted = []
            for alert in evaluate(movement, activity, config):
                row = await self._insert_alert(conn, alert, event)
                if row is not None:
                    inserted.append(row)
            return ProcessResult(duplicate=False, alerts=tuple(inserted))

    @staticmethod
    async def _insert_alert(
        conn: asyncpg.Connection, alert: Alert, source: WalletEventMessage
    ) -> StoredAlert | None:
        row = await conn.fetchrow(
            "INSERT INTO fraud_alerts (id, wallet_id, rule, severity, event_id, source_event_id, amount,"
            " currency, reason, details, occurred_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11)"
            f" ON CONFLICT (event_id, rule) DO NOTHING RETURNING {_ALERT_COLUMNS}",
            alert_id(alert.event.event_id, alert.rule.value),
            alert.event.wallet_id,
            alert.rule.value,
            alert.severity.value,
            uuid.UUID(alert.event.event_id),
            source.event_id,
            alert.event.amount,
            alert.event.currency or source.currency,  # one wallet, one currency
            alert.reason,
            json.dumps(dict(alert.details)),
            alert.event.occurred_at,
        )
        return None if row is None else _stored(row)

    async def publish_pending(
        self,
        publish: Callable[[StoredAlert], Awaitable[None]],
        *,
        source_event_id: uuid.UUID | None = None,
        older_than: float = 0.0,
        limit: int = 100,
    ) -> int:
        """Publish the alerts not yet published (of one source event, or all older than
        ``older_than`` seconds) and mark them, holding their rows locked meanwhile: concurrent
        callers (duplicate deliveries, the sweep) skip them, so each alert event goes out once
        (again only if a publish was confirmed and the mark then failed). Returns how many."""
        async with self._pool.acquire() as conn, conn.transaction():
            if source_event_id is not None:
                rows = await conn.fetch(
                    f"SELECT {_ALERT_COLUMNS} FROM fraud_alerts"
                    " WHERE source_event_id = $1 AND published_at IS NULL"
                    " ORDER BY created_at FOR UPDATE SKIP LOCKED",
                    source_event_id,
                )
            else:
                rows = await conn.fetch(
                    f"SELECT {_ALERT_COLUMNS} FROM fraud_alerts WHERE published_at IS NULL"
                    " AND created_at < clock_timestamp() - make_interval(secs => $1)"
                    " ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED",
                    float(older_than),
                    limit,
                )
            alerts = [_stored(r) for r in rows]
            for alert in alerts:
                await publish(alert)
            if alerts:
                await conn.execute(
                    "UPDATE fraud_alerts SET published_at = clock_timestamp() WHERE id = ANY($1::uuid[])",
                    [a.id for a in alerts],
                )
        return len(alerts)

    async def alerts(
        self, wallet_id: str | None, limit: int, within: tuple[list[str], list[str]] | None = None
    ) -> list[StoredAlert]:
        """Newest first; of one wallet or of all; ``within``: only wallets with one of these ids
        or starting with one of these prefixes (a principal's wallet patterns)."""
        exact, prefixes = within if within is not None else (None, None)
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {_ALERT_COLUMNS} FROM fraud_alerts"
                " WHERE ($1::text IS NULL OR wallet_id = $1)"
                " AND ($2::text[] IS NULL OR wallet_id = ANY($2::text[])"
                " OR EXISTS (SELECT 1 FROM unnest($3::text[]) AS p WHERE starts_with(wallet_id, p)))"
                " ORDER BY created_at DESC, id LIMIT $4",
                wallet_id,
                exact,
                prefixes,
                limit,
            )
        return [_stored(r) for r in rows]

    async def purge(self, retention_seconds: float) -> int:
        """Forget processed-event records and remembered activity older than the retention."""
        async with self._pool.acquire() as conn:
            a = await conn.fetchval(
                "WITH gone AS (DELETE FROM fraud_processed_events"
                " WHERE processed_at < now() - make_interval(secs => $1) RETURNING 1)"
                " SELECT count(*) FROM gone",
                float(retention_seconds),
            )
            b = await conn.fetchval(
                "WITH gone AS (DELETE FROM fraud_activity"
                " WHERE recorded_at < now() - make_interval(secs => $1) RETURNING 1)"
                " SELECT count(*) FROM gone",
                float(retention_seconds),
            )
        return int(a) + int(b)
