"""The event store: one round trip applies many wallets' batches; loads rebuild an actor's state."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from wallet.domain.saga import SagaTransition
from wallet.domain.wallet import WalletState, WalletStatus
from wallet.persistence.db import discard, is_connection_failure, retrying
from wallet.persistence.records import IdempotencyRecord, Refusals, StoredWallet, WalletBatch


class FlushOutcomeUnknownError(Exception):
    """A flush lost its connection (or timed out) before the server answered: its transaction
    may still commit. ``backend_pid`` is the server process that ran it (see ``wait_for_backend``)."""

    def __init__(self, backend_pid: int | None) -> None:
        super().__init__(f"flush outcome unknown (server process {backend_pid})")
        self.backend_pid = backend_pid


def _batch_json(batch: WalletBatch) -> dict[str, Any]:
    state = batch.state
    return {
        "w": batch.wallet_id,
        "ev": batch.expected_version,
        "pe": batch.previous_event_id,
        "le": batch.last_event_id,
        "s": None
        if state is None or not batch.events
        else {
            "currency": state.currency,
            "balance": state.balance,
            "version": state.version,
            "status": state.status.value,
            "limit": state.daily_limit,
            "oday": state.outflow_day.isoformat() if state.outflow_day else None,
            "otoday": state.outflow_today,
        },
        "e": [
            {
                "id": stored.id,
                "v": stored.version,
                "t": stored.event.type.value,
                "a": stored.event.amount,
                "bal": stored.balance_after,
                "m": stored.event.metadata,
                "at": stored.event.occurred_at,
            }
            for stored in batch.events
        ],
        "k": [{"k": rec.key, "f": rec.fingerprint, "s": rec.status, "r": rec.body} for rec in batch.keys],
        "g": [_saga_json(t) for t in batch.saga_transitions],
    }


def _saga_json(t: SagaTransition) -> dict[str, Any]:
    change: dict[str, Any] = {
        "id": t.saga_id,
        "from": t.from_state.value,
        "to": t.to_state.value,
        "cur": t.currency,
        "err": t.error,
        "why": t.reason,
    }
    if (new := t.created) is not None:  # "from" null: the row is inserted, in state "to"
        change["from"] = None
        change["src"] = new.from_wallet_id
        change["dst"] = new.to_wallet_id
        change["amt"] = new.amount
        change["rk"] = new.request_key
        change["rf"] = new.request_fingerprint
    return change


def _uuid(value: Any) -> uuid.UUID | None:
    """asyncpg's own UUID type as the standard one (orjson writes only the latter)."""
    return None if value is None else uuid.UUID(bytes=value.bytes)


def encode_batches(batches: Sequence[WalletBatch]) -> str:
    # orjson: a third of the CPU of json.dumps here, and it writes UUIDs and datetimes itself.
    return orjson.dumps([_batch_json(b) for b in batches]).decode()


def decode_refusals(text: str) -> Refusals:
    """The flush function's answer: ``[{"p": position, "t": [taken key records]}]``, "t" absent
    for a conflict; ``[]`` when every batch committed."""
    if text == "[]":
        return {}
    return {
        item["p"] - 1: tuple(IdempotencyRecord(t["k"], t["f"], t["s"], t["r"]) for t in item.get("t") or ())
        for item in orjson.loads(text)
    }


class EventStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._held: list[asyncpg.Connection] = []
        self._orphans: dict[int, asyncio.Future[None]] = {}  # server pid -> its watch

    async def apply(self, batches: Sequence[WalletBatch]) -> Refusals:
        """Write the batches in one transaction; return those (by 0-based position) that did not
        commit: conflicts, and batches with X-Request-IDs already taken, with their records.

        Flushes keep their connections (no pool acquire and release per flush; the release's
        reset round trip is gone anyway with ``PooledConnection``; DESIGN.md §8).
        A connection that fails is discarded (its state is unknown). A lost connection raises
        ``FlushOutcomeUnknownError`` with the server process that may still commit.
        """
        payload = encode_batches(batches)
        conn = await self._connection()
        pid = conn.get_server_pid()  # known before the connection can fail
        try:
            refused = await conn.fetchval("SELECT wallet_apply_batches($1::jsonb)", payload)
        except asyncpg.PostgresConnectionError as exc:  # lost (class 08): the server may still COMMIT
            discard(conn)
            raise FlushOutcomeUnknownError(pid) from exc
        except (asyncpg.PostgresError, asyncio.CancelledError) as exc:
            # The server reported an error: the statement's transaction rolled back.
            if is_connection_failure(exc):  # "terminating connection": this one is done for
                discard(conn)
            else:
                await self._pool.release(conn)
            raise
        except Exception as exc:  # the connection failed, a timeout: the server may still COMMIT
            discard(conn)
            raise FlushOutcomeUnknownError(pid) from exc
        self._held.append(conn)
        return decode_refusals(refused)

    async def _connection(self) -> asyncpg.Connection:
        """A held connection still open, or one from the pool. A held connection whose server
        process was terminated meanwhile has been closed (and taken back) by asyncpg: skip it."""
        while self._held:
            conn = self._held.pop()
            try:
                if not conn.is_closed():
                    return conn
            except asyncpg.InterfaceError:  # released to the pool when it closed
                continue
            await self._pool.release(conn)  # closed: the pool replaces it
        return await self._pool.acquire()

    async def wait_for_backend(self, pid: int, *, grace_s: float = 2.0) -> None:
        """Return once the server process of a flush whose outcome is unknown has ended: its
        transaction has then committed or rolled back for good, and a check of its events is
        final. A process still running after ``grace_s`` (stuck on a lock, say) is terminated,
        which settles it the same way. Raises TimeoutError if it will not end. Every wallet of
        that flush asks; they share one watch."""
        watch = self._orphans.get(pid)
        if watch is None:
            watch = self._orphans[pid] = asyncio.ensure_future(self._watch_backend(pid, grace_s))
            watch.add_done_callback(lambda _: self._orphans.pop(pid, None))
        await asyncio.shield(watch)

    async def _watch_backend(self, pid: int, grace_s: float) -> None:
        await retrying(self._pool, lambda conn: self._watch_on(conn, pid, grace_s))

    @staticmethod
    async def _watch_on(conn: asyncpg.Connection, pid: int, grace_s: float, poll_s: float = 0.02) -> None:
        loop = asyncio.get_running_loop()
        started = await conn.fetchval("SELECT backend_start FROM pg_stat_activity WHERE pid = $1", pid)
        if started is None:
            return
        terminate_at = loop.time() + grace_s
        give_up_at = terminate_at + 5.0
        terminated = False
        while await conn.fetchval(
            "SELECT true FROM pg_stat_activity WHERE pid = $1 AND backend_start = $2", pid, started
        ):
            now = loop.time()
            if not terminated and now >= terminate_at:
                await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
                terminated = True
            elif now >= give_up_at:
                raise TimeoutError(f"server process {pid} did not end")
            await asyncio.sleep(poll_s)

    async def release_held(self) -> None:
        while self._held:
            await self._pool.release(self._held.pop())

    async def load(self, wallet_id: str) -> StoredWallet | None:
        return (await self.load_many([wallet_id])).get(wallet_id)

    async def load_many(self, wallet_ids: Sequence[str]) -> dict[str, StoredWallet]:
        """The stored wallets among ``wallet_ids``, by id (one query for all)."""
        rows = await retrying(
            self._pool,
            lambda conn: conn.fetch(
                # One index probe per id (the lateral OFFSET 0): as ``id = ANY($1)``, the generic
                # plan made while the table was small scanned all of it (test_query_plans.py).
                "SELECT w.id, w.currency, w.balance, w.version, w.status, w.daily_withdrawal_limit,"
                " w.outflow_day, w.outflow_today, w.last_event_id FROM unnest($1::text[]) AS wanted(id)"
                " CROSS JOIN LATERAL (SELECT * FROM wallets x WHERE x.id = wanted.id OFFSET 0) w",
                list(wallet_ids),
            ),
        )
        return {
            row["id"]: StoredWallet(
                WalletState(
                    wallet_id=row["id"],
                    currency=row["currency"],
                    balance=row["balance"],
                    version=row["version"],
                    status=WalletStatus(row["status"]),
                    daily_limit=row["daily_withdrawal_limit"],
                    outflow_day=row["outflow_day"],
                    outflow_today=row["outflow_today"],
                ),
                _uuid(row["last_event_id"]),
            )
            for row in rows
        }

    async def any_event_exists(self, event_ids: Sequence[uuid.UUID]) -> bool:
        found = await retrying(
            self._pool,
            lambda conn: conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM unnest($1::uuid[]) AS wanted(id) CROSS JOIN LATERAL"
                " (SELECT 1 FROM wallet_events e WHERE e.id = wanted.id OFFSET 0) e)",
                list(event_ids),
            ),
        )
        return bool(found)
