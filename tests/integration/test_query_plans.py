"""The write path's queries look rows up by index whatever the tables held when they were planned.

A statement's plan is cached per connection (asyncpg prepares it; the flush function's statements
are cached by PL/pgSQL) and, after a few executions, PostgreSQL keeps a generic plan costed on the
table sizes of that moment. Planned on an empty table, a key check written as ``NOT EXISTS`` under
an ``OR``, or as ``IN (SELECT ...)``, became a hash of the *whole* ``idempotency_keys`` table, kept
for the life of the connection: every transfer then read every key ever recorded.

Here every statement is planned generic on a fresh, empty database (``auto_explain`` sends each
plan, the flush function's inner statements included, to this client as a notice), and no plan may
scan a table that grows with the traffic.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import asyncpg
import pytest

from tests.conftest import _create_database, _database_url, _drop_database
from tests.integration.test_flush_guard import batch_on
from wallet.domain.saga import NewSaga, SagaState, SagaTransition
from wallet.persistence.event_store import EventStore
from wallet.persistence.idempotency_store import IdempotencyStore
from wallet.persistence.outbox_store import LEADER_SERVER_SETTINGS, Connect, OutboxStore
from wallet.persistence.records import IdempotencyRecord
from wallet.persistence.saga_store import SagaRecord, SagaStore

GROWING_TABLES = ("idempotency_keys", "transfer_sagas", "wallet_events", "outbox", "wallets")
# Partial indexes of what is still to do: their size is the backlog, not the history, so reading
# one whole is what its statement wants (the relay's fetch of unpublished rows, whose plan this
# test did not see while the fetch ran inside the relay's transaction).
BACKLOG_INDEXES = ("outbox_unpublished",)


@pytest.fixture
async def explained(run_id: str) -> AsyncIterator[tuple[asyncpg.Pool, list[str], Connect]]:
    """A pool on a fresh, empty database whose connections plan generic and report every plan,
    and a way to open one more such connection outside the pool (the relay leader's)."""
    name = f"wallet_test_{run_id}_plans"
    await _create_database(name)
    # The database's own settings, so that a connection a pool has reset (RESET ALL at release)
    # still explains every statement.
    admin = await asyncpg.connect(_database_url(name))
    try:
        for setting in (
            "session_preload_libraries = 'auto_explain'",
            "auto_explain.log_min_duration = 0",
            "auto_explain.log_nested_statements = on",
            "auto_explain.log_level = notice",
            "plan_cache_mode = force_generic_plan",
        ):
            await admin.execute(f'ALTER DATABASE "{name}" SET {setting}')
    finally:
        await admin.close()
    plans: list[str] = []

    def on_notice(_conn: Any, message: Any) -> None:
        plans.append(str(message.message))

    async def explaining(conn: asyncpg.Connection) -> None:
        conn.add_log_listener(on_notice)

    async def connect() -> asyncpg.Connection:
        conn = await asyncpg.connect(_database_url(name), server_settings=LEADER_SERVER_SETTINGS)
        await explaining(conn)
        return conn

    # The listener on every acquire: a pool drops a connection's log listeners when it is released.
    pool = await asyncpg.create_pool(_database_url(name), min_size=1, max_size=4, setup=explaining)
    try:
        yield pool, plans, connect
    finally:
        await pool.close()
        await _drop_database(name)


def scans_of_growing_tables(plans: list[str]) -> list[str]:
    """Plans that read a growing table whole: a sequential scan, or an index scan with no
    condition (what a sequential scan becomes when the planner is told to avoid those)."""
    found = []
    for plan in plans:
        lines = plan.splitlines()
        for n, line in enumerate(lines):
            scanned = next((t for t in GROWING_TABLES if f" on {t}" in line or f" on {t} " in line), None)
            if scanned is None or "Scan" not in line or any(f"using {i} " in line for i in BACKLOG_INDEXES):
                continue
            # An index walk with no condition reads the whole index, unless a Limit right above it
            # stops it and no filter makes it skip rows (the outbox purge's first rows by id).
            bounded = (
                n > 0
                and "Limit" in lines[n - 1]
                and not any("Filter" in later for later in lines[n + 1 : n + 3])
            )
            if "Seq Scan" in line or (
                "Index" in line
                and not bounded
                and not any("Index Cond" in later for later in lines[n + 1 : n + 3])
            ):
                found.append(plan)
                break
    return found


@pytest.mark.filterwarnings("ignore:.*active log listener")  # the listener stays for the pool's life
async def test_no_write_path_statement_scans_a_growing_table(explained) -> None:
    pool, plans, connect = explained
    events, sagas = EventStore(pool), SagaStore(pool)
    wallet_id = f"w-{uuid.uuid4().hex[:12]}"
    key = f"k-{uuid.uuid4()}"
    try:
        # A keyed deposit, then its retry: the flush refuses the taken key and reads its record.
        record = IdempotencyRecord(key, "fp", 200, {"balance": 1})
        first = replace(batch_on(wallet_id, None, None, 100), keys=(record,))
        assert await events.apply([first]) == {}
        again = replace(batch_on(wallet_id, first.state, first.last_event_id, 5), keys=(record,))
        assert await events.apply([again]) == {0: (record,)}
        # A transfer's saga with a fresh key, and one whose key a deposit already took.
        fresh = SagaRecord(
            str(uuid.uuid4()),
            wallet_id,
            f"{wallet_id}-b",
            5,
            None,
            SagaState.PENDING,
            request_key="t-1",
            request_fingerprint="fp",
        )
        reused = replace(fresh, id=str(uuid.uuid4()), request_key=key)
        stored, taken = await sagas.create_many([fresh, reused])
        assert isinstance(stored, SagaRecord) and taken == record
        await sagas.get(fresh.id)
        # A flush of several wallets, applied together: the debit of that saga, a new wallet, a key.
        debit = SagaTransition(fresh.id, SagaState.PENDING, SagaState.DEBITED, currency="USD")
        started = replace(  # a new saga's debit, which writes its row (keyed)
            debit, saga_id=str(uuid.uuid4()), created=NewSaga(f"{wallet_id}-n", wallet_id, 1, "t-2", "fp")
        )
        together = [
            replace(batch_on(wallet_id, first.state, first.last_event_id, 1), saga_transitions=(debit,)),
            replace(
                batch_on(f"{wallet_id}-n", None, None, 1),
                keys=(replace(record, key=f"{key}-n"),),
                saga_transitions=(started,),
            ),
        ]
        assert await events.apply(together) == {}
        # One by one (a single batch): a new saga's debit whose key another request recorded.
        refused = replace(
            started, saga_id=str(uuid.uuid4()), created=replace(started.created, request_key=key)
        )
        alone = replace(batch_on(f"{wallet_id}-o", None, None, 1), saga_transitions=(refused,))
        assert await events.apply([alone]) == {0: ()}
        assert await sagas.key_taken(key) and await sagas.key_taken("t-2")
        async with pool.acquire() as conn:
            await IdempotencyStore.find_many(conn, [key])
        await events.load_many([wallet_id])
        await events.any_event_exists([first.events[0].id])
        outbox = OutboxStore(pool, connect)
        try:
            async with outbox.leader_round() as round_:
                assert round_ is not None
                rows = await round_.fetch(100)
                await round_.mark_published([row["id"] for row in rows])
            # The pool's outbox statements: the lag gauge's oldest row, and the purge.
            await outbox.oldest_age()
            await outbox.purge(0)
        finally:
            await outbox.close()
    finally:
        await events.release_held()
    assert len(plans) > 10, plans
    scans = scans_of_growing_tables(plans)
    assert scans == [], "\n\n".join(scans)
