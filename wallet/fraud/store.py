"""The fraud worker's tables: processed events, remembered activity, alerts (0003_fraud.sql).

``process_batch`` is the heart of "once per event": in ONE transaction it records a batch of
events as processed (a redelivered event finds its record and goes no further), remembers the
withdrawals for the window rules, runs the pure rules over the batch and inserts their alerts (at
most one per event and rule). Three statements whatever the batch size: the per-wallet advisory
locks, one statement that inserts the records and reads the remembered neighbours of the new
withdrawals, one that inserts the alerts.

The locks (of the batch's withdrawal wallets, taken in one sorted order so two workers cannot
deadlock) serialise a wallet's window across consumers and worker processes: the statement after
them sees every concurrently processed withdrawal of those wallets, committed before the locks
were granted. Rows are inserted in event-id order, so two transactions inserting the same events
(a duplicate delivered to two workers) wait for each other in one order too.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from wallet.fraud.messages import AlertMessage, WalletEventMessage
from wallet.fraud.rules import Alert, Movement, RuleConfig, evaluate_batch, neighbours_needed, remembered

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


def _source(alert: Alert, events: dict[uuid.UUID, WalletEventMessage]) -> WalletEventMessage:
    """The batch event whose processing raised ``alert``: its own event if in the batch, else
    (a late event made an earlier withdrawal rapid) the newest new event of its wallet."""
    own = events.get(uuid.UUID(alert.event.event_id))
    if own is not None:
        return own
    same = [e for e in events.values() if e.wallet_id == alert.event.wallet_id]
    return max(same, key=lambda e: (e.occurred_at, e.version))


def _movement(row: asyncpg.Record) -> Movement:
    return Movement(
        event_id=str(row["event_id"]),
        wallet_id=row["wallet_id"],
        event_type=row["event_type"],
        amount=row["amount"],
        occurred_at=row["occurred_at"],
        version=row["version"],
    )


# The new events' processed records and remembered withdrawals, and the remembered
# withdrawals nearest to each new one (``$9`` on either side within the window ``$8``). The
# SELECT sees the tables as they were when the statement began: not this batch's rows.
_PROCESS_SQL = """
WITH batch AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                         $6::timestamptz[], $7::bool[])
        AS b(event_id, wallet_id, event_type, version, amount, occurred_at, remember)
), fresh AS (
    INSERT INTO fraud_processed_events (event_id, wallet_id, event_type)
    SELECT event_id, wallet_id, event_type FROM batch ORDER BY event_id
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
), remembered AS (
    INSERT INTO fraud_activity (event_id, wallet_id, event_type, version, amount, occurred_at)
    SELECT b.event_id, b.wallet_id, b.event_type, b.version, b.amount, b.occurred_at
    FROM batch b JOIN fresh USING (event_id) WHERE b.remember ORDER BY b.event_id
    ON CONFLICT (event_id) DO NOTHING
)
SELECT true AS fresh, event_id, NULL::text AS wallet_id, NULL::text AS event_type,
       NULL::bigint AS version, NULL::bigint AS amount, NULL::timestamptz AS occurred_at
FROM fresh
UNION ALL
SELECT DISTINCT false, n.event_id, n.wallet_id, n.event_type, n.version, n.amount, n.occurred_at
FROM batch b JOIN fresh USING (event_id)
CROSS JOIN LATERAL (
    (SELECT a.event_id, a.wallet_id, a.event_type, a.version, a.amount, a.occurred_at
     FROM fraud_activity a
     WHERE a.wallet_id = b.wallet_id AND a.occurred_at >= b.occurred_at - $8::interval
       AND (a.occurred_at, a.version) < (b.occurred_at, b.version)
     ORDER BY a.occurred_at DESC, a.version DESC LIMIT $9)
    UNION ALL
    (SELECT a.event_id, a.wallet_id, a.event_type, a.version, a.amount, a.occurred_at
     FROM fraud_activity a
     WHERE a.wallet_id = b.wallet_id AND a.occurred_at <= b.occurred_at + $8::interval
       AND (a.occurred_at, a.version) > (b.occurred_at, b.version)
     ORDER BY a.occurred_at, a.version LIMIT $9)
) n
WHERE b.remember
"""

_INSERT_ALERTS_SQL = f"""
INSERT INTO fraud_alerts (id, wallet_id, rule, severity, event_id, source_event_id, amount, currency,
                          reason, details, occurred_at)
SELECT id, wallet_id, rule, severity, event_id, source_event_id, amount, currency, reason,
       details::jsonb, occurred_at
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::uuid[], $7::bigint[],
            $8::text[], $9::text[], $10::text[], $11::timestamptz[])
    AS a(id, wallet_id, rule, severity, event_id, source_event_id, amount, currency, reason, details,
         occurred_at)
ORDER BY id
ON CONFLICT (event_id, rule) DO NOTHING
RETURNING {_ALERT_COLUMNS}
"""

# Locks the wallets named in $2 (each once, in ascending key order).
_LOCK_SQL = (
    "SELECT count(pg_advisory_xact_lock($1, k))"
    " FROM (SELECT DISTINCT hashtext(w) AS k FROM unnest($2::text[]) AS w ORDER BY k) AS keys"
)


@dataclass(frozen=True, slots=True)
class BatchResult:
    fresh: frozenset[uuid.UUID]  # the batch's events processed for the first time
    duplicates: frozenset[uuid.UUID]  # processed before (a redelivery)
    alerts: tuple[StoredAlert, ...] = ()  # the alerts this batch inserted


class FraudStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def process_batch(self, events: Sequence[WalletEventMessage], config: RuleConfig) -> BatchResult:
        """Process a batch of events in one transaction (see the module docstring). An event
        present twice in the batch counts once."""
        unique = list({e.event_id: e for e in events}.values())
        movements = {e.event_id: e.movement() for e in unique}
        remember = [m is not None and remembered(m) for m in movements.values()]
        locked = sorted({e.wallet_id for e, r in zip(unique, remember, strict=True) if r})
        async with self._pool.acquire() as conn, conn.transaction():
            if locked:
                await conn.execute(_LOCK_SQL, WALLET_LOCK_CLASS, locked)
            rows = await conn.fetch(
                _PROCESS_SQL,
                [e.event_id for e in unique],
                [e.wallet_id for e in unique],
                [e.event_type for e in unique],
                [e.version for e in unique],
                [e.amount for e in unique],
                [e.occurred_at for e in unique],
                remember,
                config.rapid_window,
                neighbours_needed(config),
            )
            fresh = frozenset(r["event_id"] for r in rows if r["fresh"])
            known = [_movement(r) for r in rows if not r["fresh"]]
            new = [m for event_id, m in movements.items() if m is not None and event_id in fresh]
            alerts = evaluate_batch(new, known, config)
            sources = {e.event_id: e for e in unique if e.event_id in fresh}
            stored = await self._insert_alerts(conn, alerts, sources) if alerts else []
        duplicates = frozenset(e.event_id for e in unique) - fresh
        return BatchResult(fresh, duplicates, tuple(stored))

    @staticmethod
    async def _insert_alerts(
        conn: asyncpg.Connection, alerts: list[Alert], events: dict[uuid.UUID, WalletEventMessage]
    ) -> list[StoredAlert]:
        """Insert the alerts (one per event and rule; existing ones are left alone)."""
        unique = {alert_id(a.event.event_id, a.rule.value): a for a in alerts}
        sources = [_source(a, events) for a in unique.values()]
        rows = await conn.fetch(
            _INSERT_ALERTS_SQL,
            list(unique),
            [a.event.wallet_id for a in unique.values()],
            [a.rule.value for a in unique.values()],
            [a.severity.value for a in unique.values()],
            [uuid.UUID(a.event.event_id) for a in unique.values()],
            [s.event_id for s in sources],
            [a.event.amount for a in unique.values()],
            # One wallet, one currency: the source event's when the alert's event has none.
            [a.event.currency or s.currency for a, s in zip(unique.values(), sources, strict=True)],
            [a.reason for a in unique.values()],
            [json.dumps(dict(a.details)) for a in unique.values()],
            [a.event.occurred_at for a in unique.values()],
        )
        return [_stored(r) for r in rows]

    async def publish_pending(
        self,
        publish: Callable[[StoredAlert], Awaitable[None]],
        *,
        source_event_ids: Collection[uuid.UUID] | None = None,
        older_than: float = 0.0,
        limit: int = 1000,
    ) -> int:
        """Publish the alerts not yet published (raised by the given source events, or all older
        than ``older_than`` seconds) and mark them, holding their rows locked meanwhile:
        concurrent callers (duplicate deliveries, the sweep) skip them, so each alert event goes
        out once (again only if a publish was confirmed and the mark then failed). The publishes
        run concurrently (their confirms are awaited together). Returns how many."""
        async with self._pool.acquire() as conn, conn.transaction():
            if source_event_ids is not None:
                rows = await conn.fetch(
                    f"SELECT {_ALERT_COLUMNS} FROM fraud_alerts"
                    " WHERE source_event_id = ANY($1::uuid[]) AND published_at IS NULL"
                    " ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED",
                    list(source_event_ids),
                    limit,
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
            await asyncio.gather(*map(publish, alerts))
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
