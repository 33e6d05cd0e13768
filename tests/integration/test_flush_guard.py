"""The flush function applies a batch only on the exact state it was decided on."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import asyncpg

from wallet.domain.commands import Deposit
from wallet.domain.wallet import WalletState, decide, evolve
from wallet.ids import new_uuid
from wallet.persistence.event_store import EventStore
from wallet.persistence.records import IdempotencyRecord, StoredEvent, WalletBatch


def batch_on(wallet_id: str, base: WalletState | None, previous_event_id, cents: int) -> WalletBatch:
    state, events = base, []
    for event in decide(wallet_id, base, Deposit(cents, datetime.now(UTC))):
        state = evolve(state, event)
        events.append(StoredEvent(new_uuid(), state.version, state.balance, event))
    return WalletBatch(
        wallet_id, base.version if base else 0, state, tuple(events), (), previous_event_id=previous_event_id
    )


async def test_same_version_but_another_history_is_a_conflict(database_url, wallet_id):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    store = EventStore(pool)
    try:
        first = batch_on(wallet_id, None, None, 100)  # version 2
        assert await store.apply([first]) == {}
        base = first.state
        # Two writers both decided on version 2; one wrote two events (version 4) ...
        mine = batch_on(wallet_id, base, first.last_event_id, 5)
        theirs = batch_on(wallet_id, base, first.last_event_id, 7)
        assert await store.apply([theirs]) == {}
        # ... and a batch built on a version-3 state that never existed must not land on
        # theirs, although the version numbers line up: its previous event id differs.
        forged = batch_on(wallet_id, mine.state, mine.last_event_id, 1)
        assert forged.expected_version == theirs.state.version
        assert await store.apply([forged]) == {0: ()}
        # Two batches of one wallet in one transaction chain up in order.
        loaded = await store.load(wallet_id)
        assert loaded is not None and loaded.last_event_id == theirs.last_event_id
        a = batch_on(wallet_id, loaded.state, loaded.last_event_id, 1)
        b = batch_on(wallet_id, a.state, a.last_event_id, 1)
        assert await store.apply([a, b]) == {}
        final = await store.load(wallet_id)
        assert final is not None and final.state.balance == 100_00 // 100 + 7 + 1 + 1
    finally:
        await store.release_held()
        await pool.close()


async def test_a_batch_with_a_taken_key_is_refused_with_the_stored_answer(database_url, wallet_id):
    """One round trip checks the keys: the batch whose key is recorded writes nothing and comes
    back with the stored record; the other batches of the same call commit."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    store = EventStore(pool)
    key = f"flush-key-{wallet_id}"
    record = IdempotencyRecord(key, "fp-first", 200, {"balance": 1})
    try:
        first = replace(batch_on(wallet_id, None, None, 100), keys=(record,))
        assert await store.apply([first]) == {}
        again = batch_on(wallet_id, first.state, first.last_event_id, 5)
        again = replace(again, keys=(IdempotencyRecord(key, "fp-other", 200, {"balance": 2}),))
        other = batch_on(f"{wallet_id}-o", None, None, 3)
        assert await store.apply([again, other]) == {0: (record,)}
        loaded = await store.load(wallet_id)
        assert loaded is not None and loaded.state == first.state
        assert await store.load(f"{wallet_id}-o") is not None
    finally:
        await store.release_held()
        await pool.close()
