"""A flush of several wallets is applied together (a few statements for all) or, at the first
refusal, rolled back and applied one by one; either way the result is the one-by-one result.

Each scenario runs both ways on the same database state (each inside a transaction rolled back
afterwards) and compares what the function answered and every row it left.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from tests.integration.test_flush_guard import batch_on
from wallet.domain.commands import Freeze
from wallet.domain.saga import NewSaga, SagaState, SagaTransition
from wallet.domain.wallet import decide, evolve
from wallet.ids import new_uuid
from wallet.persistence.event_store import EventStore, encode_batches
from wallet.persistence.records import IdempotencyRecord, StoredEvent, WalletBatch
from wallet.persistence.saga_store import SagaRecord, SagaStore

SNAPSHOT = {
    "wallets": "SELECT id, currency, balance, version, status, daily_withdrawal_limit, outflow_day,"
    " outflow_today, last_event_id FROM wallets"
    " WHERE id LIKE $1 || '%' ORDER BY id",
    "wallet_events": "SELECT id, wallet_id, version, event_type, amount, balance_after, metadata"
    " FROM wallet_events WHERE wallet_id LIKE $1 || '%' ORDER BY wallet_id, version",
    "outbox": "SELECT event_id, wallet_id, routing_key, event_type, body::text AS body FROM outbox"
    " WHERE wallet_id LIKE $1 || '%' ORDER BY id",
    "idempotency_keys": "SELECT key, fingerprint, status_code, response FROM idempotency_keys"
    " WHERE key LIKE $1 || '%' ORDER BY key",
    "transfer_sagas": "SELECT id, state, currency, failure_error, failure_reason, request_key,"
    " request_fingerprint, amount FROM transfer_sagas"
    " WHERE from_wallet_id LIKE $1 || '%' ORDER BY id",
}


class Scene:
    """Wallets (and a saga) under one fresh prefix, stored; batches built on them."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.prefix = f"t-{uuid.uuid4().hex[:10]}-"
        self.events = EventStore(pool)
        self.saga: SagaRecord | None = None

    async def stored_wallets(self, count: int) -> list[WalletBatch]:
        """``count`` wallets written (a deposit each); returns the batch that made each."""
        made = [batch_on(f"{self.prefix}{i}", None, None, 100) for i in range(count)]
        assert await self.events.apply(made) == {}
        return made

    def next_on(self, made: WalletBatch, cents: int = 5, **changes: Any) -> WalletBatch:
        return replace(batch_on(made.wallet_id, made.state, made.last_event_id, cents), **changes)

    @staticmethod
    def frozen(made: WalletBatch) -> WalletBatch:
        """A freeze on the state ``made`` led to: an event that moves no money (amount NULL)."""
        state, events = made.state, []
        for event in decide(made.wallet_id, made.state, Freeze("checks", datetime.now(UTC))):
            state = evolve(state, event)
            events.append(StoredEvent(new_uuid(), state.version, state.balance, event))
        assert state is not None and made.state is not None
        return WalletBatch(
            made.wallet_id, made.state.version, state, tuple(events), (), previous_event_id=made.last_event_id
        )

    def key(self, name: str, status: int = 200) -> IdempotencyRecord:
        return IdempotencyRecord(f"{self.prefix}{name}", f"fp-{name}", status, {"name": name})

    async def pending_saga(self, source: str, destination: str, key: str | None = None) -> SagaTransition:
        saga = SagaRecord(str(uuid.uuid4()), source, destination, 5, None, SagaState.PENDING, request_key=key)
        stored = (await SagaStore(self.pool).create_many([saga]))[0]
        assert isinstance(stored, SagaRecord)
        return SagaTransition(saga.id, SagaState.PENDING, SagaState.DEBITED, currency="USD")

    def new_saga(
        self, source: str, destination: str, key: str | None = None, fails: bool = False
    ) -> SagaTransition:
        """A new saga's debit: its row written by the flush, DEBITED (or FAILED)."""
        created = NewSaga(source, destination, 5, key, "fp-saga" if key else None)
        if fails:
            return SagaTransition(
                str(uuid.uuid4()),
                SagaState.PENDING,
                SagaState.FAILED,
                error="E",
                reason="no",
                created=created,
            )
        return SagaTransition(
            str(uuid.uuid4()), SagaState.PENDING, SagaState.DEBITED, currency="USD", created=created
        )

    async def both_ways(self, batches: list[WalletBatch]) -> tuple[Any, Any]:
        """(answer, rows) of the dispatcher and of the one-by-one function, from the same state."""
        payload = encode_batches(batches)
        results = []
        async with self.pool.acquire() as conn:
            for function in ("wallet_apply_batches", "wallet_apply_batches_one_by_one"):
                transaction = conn.transaction()
                await transaction.start()
                try:
                    answer = await conn.fetchval(f"SELECT {function}($1::jsonb)::text", payload)
                    rows = {
                        name: [dict(r) for r in await conn.fetch(sql, self.prefix)]
                        for name, sql in SNAPSHOT.items()
                    }
                    results.append((answer, rows))
                finally:
                    await transaction.rollback()
        return results[0], results[1]

    async def together_raises(self, batches: list[WalletBatch]) -> str | None:
        """The SQLSTATE the together function raises for ``batches`` (None: it applied them)."""
        async with self.pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            try:
                await conn.fetchval(
                    "SELECT wallet_apply_batches_together($1::jsonb)", encode_batches(batches)
                )
                return None
            except asyncpg.PostgresError as exc:
                return str(exc.sqlstate)
            finally:
                await transaction.rollback()


@pytest.fixture
async def scene(database_url: str):  # type: ignore[no-untyped-def]
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    made = Scene(pool)
    try:
        yield made
    finally:
        await made.events.release_held()
        await pool.close()


async def test_a_clean_flush_applies_together_as_one_by_one_would(scene: Scene) -> None:
    a, b, c = await scene.stored_wallets(3)
    debit = await scene.pending_saga(a.wallet_id, b.wallet_id)
    batches = [
        scene.next_on(a, keys=(scene.key("a1"), scene.key("a2", 422)), saga_transitions=(debit,)),
        scene.frozen(b),
        replace(scene.next_on(c), state=None, events=(), keys=(scene.key("c1", 422),)),  # a refusal
        batch_on(f"{scene.prefix}new", None, None, 300),
        # A refusal on a wallet that does not exist: it writes nothing, and checks it still doesn't.
        WalletBatch(f"{scene.prefix}none", 0, None, (), (scene.key("none", 404),)),
    ]
    assert await scene.together_raises(batches) is None
    together, one_by_one = await scene.both_ways(batches)
    assert together == one_by_one
    answer, rows = together
    assert answer == "[]"
    assert [(w["version"], w["status"]) for w in rows["wallets"]] == [
        (3, "ACTIVE"),
        (3, "FROZEN"),
        (2, "ACTIVE"),
        (2, "ACTIVE"),
    ]
    assert [o["body"] for o in rows["outbox"] if o["event_type"] == "WALLET_FROZEN"] != []
    assert [r["state"] for r in rows["transfer_sagas"]] == ["DEBITED"]
    assert len(rows["outbox"]) == 6 + 4  # two events per stored wallet, then the four new ones


async def test_new_sagas_are_written_by_their_debits_together_as_one_by_one_would(scene: Scene) -> None:
    """A debit that starts a saga writes its row, keyed or not, DEBITED or FAILED (a FAILED one
    records its own key's reply in the same batch: its key check must not find that record)."""
    a, b, c = await scene.stored_wallets(3)
    debited = scene.new_saga(a.wallet_id, b.wallet_id, f"{scene.prefix}k-debit")
    failed = scene.new_saga(b.wallet_id, c.wallet_id, f"{scene.prefix}k-failed", fails=True)
    keyless = scene.new_saga(c.wallet_id, a.wallet_id)
    own_reply = IdempotencyRecord(f"{scene.prefix}k-failed", "fp-saga", 422, {"error": "E"})
    batches = [
        scene.next_on(a, saga_transitions=(debited,)),
        replace(scene.next_on(b), state=None, events=(), keys=(own_reply,), saga_transitions=(failed,)),
        scene.next_on(c, saga_transitions=(keyless,)),
    ]
    assert await scene.together_raises(batches) is None
    together, one_by_one = await scene.both_ways(batches)
    assert together == one_by_one
    answer, rows = together
    assert answer == "[]"
    sagas = {str(r["id"]): r for r in rows["transfer_sagas"]}
    assert (sagas[debited.saga_id]["state"], sagas[debited.saga_id]["currency"]) == ("DEBITED", "USD")
    assert sagas[debited.saga_id]["request_key"] == f"{scene.prefix}k-debit"
    assert (sagas[failed.saga_id]["state"], sagas[failed.saga_id]["failure_error"]) == ("FAILED", "E")
    assert (sagas[keyless.saga_id]["state"], sagas[keyless.saga_id]["request_key"]) == ("DEBITED", None)
    assert [k["key"] for k in rows["idempotency_keys"]] == [f"{scene.prefix}k-failed"]


@pytest.mark.parametrize(
    "refusal",
    [
        "stale version",
        "other history",
        "taken key",
        "saga moved on",
        "saga twice",
        "wallet twice",
        "new wallet exists",
        "new saga's key held by a saga",
        "new saga's key recorded by a request",
        "new saga exists",
    ],
)
async def test_a_refusal_rolls_the_flush_back_and_applies_it_one_by_one(scene: Scene, refusal: str) -> None:
    a, b, c = await scene.stored_wallets(3)
    batches = [scene.next_on(a), scene.next_on(b, 7), scene.next_on(c, 9)]
    expected_state = "WV001"
    if refusal == "stale version":
        batches[1] = replace(batches[1], expected_version=1)
    elif refusal == "other history":
        batches[1] = replace(batches[1], previous_event_id=uuid.uuid4())
    elif refusal == "taken key":
        await scene.events.apply([scene.next_on(c, 1, keys=(scene.key("taken"),))])
        batches[1] = replace(batches[1], keys=(scene.key("fresh"), scene.key("taken")))
        expected_state = "23505"
    elif refusal == "saga moved on":
        debit = await scene.pending_saga(a.wallet_id, b.wallet_id)
        moved = replace(debit, from_state=SagaState.DEBITED, to_state=SagaState.COMPLETED)
        batches[1] = replace(batches[1], saga_transitions=(moved,))
        expected_state = "WV002"
    elif refusal == "saga twice":
        debit = await scene.pending_saga(a.wallet_id, b.wallet_id)
        batches[0] = replace(batches[0], saga_transitions=(debit,))
        batches[1] = replace(batches[1], saga_transitions=(debit,))
        expected_state = "WV002"
    elif refusal == "new saga's key held by a saga":
        held = await scene.pending_saga(a.wallet_id, b.wallet_id, key=f"{scene.prefix}held")
        new = scene.new_saga(b.wallet_id, c.wallet_id, f"{scene.prefix}held")
        batches[1] = replace(batches[1], saga_transitions=(new,))
        assert held.saga_id != new.saga_id
        expected_state = "23505"
    elif refusal == "new saga's key recorded by a request":
        await scene.events.apply([scene.next_on(c, 1, keys=(scene.key("recorded"),))])
        new = scene.new_saga(b.wallet_id, c.wallet_id, f"{scene.prefix}recorded")
        batches[1] = replace(batches[1], saga_transitions=(new,))
        batches[2] = replace(batches[2], expected_version=1)  # c moved on: its batch conflicts too
        expected_state = "WV002"
    elif refusal == "new saga exists":
        existing = await scene.pending_saga(a.wallet_id, b.wallet_id)
        new = replace(scene.new_saga(b.wallet_id, c.wallet_id), saga_id=existing.saga_id)
        batches[1] = replace(batches[1], saga_transitions=(new,))
        expected_state = "23505"
    elif refusal == "wallet twice":
        batches.insert(2, scene.next_on(batches[1]))
    elif refusal == "new wallet exists":
        batches[1] = batch_on(b.wallet_id, None, None, 1)
    if refusal == "taken key":  # c moved on: its batch now conflicts too
        batches[2] = replace(batches[2], expected_version=1)
    assert await scene.together_raises(batches) == expected_state
    together, one_by_one = await scene.both_ways(batches)
    assert together == one_by_one
    assert together[0] != "[]" or refusal == "wallet twice"
