"""Transfers as sagas against the real database: contract, concurrency, compensation."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import replace

from tests.helpers import assert_projection_matches_events, balance_cents, post
from wallet.actors.messages import IdempotencyKey
from wallet.bootstrap import start_api, start_service
from wallet.domain.saga import SagaState
from wallet.persistence.saga_store import SagaRecord


async def fund(client, wallet_id, amount):
    status, _ = await post(client, f"/v1/wallet/{wallet_id}/deposit", {"amount": amount})
    assert status == 200


async def test_transfer_completes_and_creates_the_destination(client, db, wallet_id):
    await fund(client, wallet_id, 100)
    dest = f"{wallet_id}-to"
    status, body = await post(
        client, f"/v1/wallet/{wallet_id}/transfer", {"toWalletId": dest, "amount": 30.25}
    )
    assert status == 200, body
    assert body == {
        "sagaId": body["sagaId"],
        "state": "COMPLETED",
        "fromWalletId": wallet_id,
        "toWalletId": dest,
        "amount": 30.25,
    }
    assert await balance_cents(db, wallet_id) == 6975
    assert await balance_cents(db, dest) == 3025
    saga = await (await client.get(f"/v1/transfers/{body['sagaId']}")).json()
    assert saga["state"] == "COMPLETED" and saga["currency"] == "USD"
    history = await (await client.get(f"/v1/wallet/{dest}/history")).json()
    assert [h["eventType"] for h in history] == ["WALLET_CREATED", "TRANSFER_CREDITED"]
    metadata = history[1]["metadata"]
    assert metadata == {
        "sagaId": body["sagaId"],
        "fromWalletId": wallet_id,
        "actor": {"type": "anonymous", "id": "anonymous", "name": "authentication disabled"},
        "requestId": metadata["requestId"],
    }
    await assert_projection_matches_events(db, wallet_id)
    await assert_projection_matches_events(db, dest)


async def test_transfer_refusals(client, db, wallet_id):
    await fund(client, wallet_id, 10)
    path = f"/v1/wallet/{wallet_id}/transfer"
    assert (await post(client, path, {"toWalletId": wallet_id, "amount": 1}))[0] == 400
    assert (await post(client, path, {"toWalletId": "x" * 65, "amount": 1}))[0] == 400
    assert (await post(client, path, {"toWalletId": "ok", "amount": 0}))[0] == 400
    status, body = await post(
        client, f"/v1/wallet/{wallet_id}-nobody/transfer", {"toWalletId": "b", "amount": 1}
    )
    assert (status, body["error"]) == (404, "WalletNotFoundError")
    status, body = await post(client, path, {"toWalletId": f"{wallet_id}-b", "amount": 11})
    assert (status, body["error"], body["state"]) == (422, "InsufficientFundsError", "FAILED")
    saga = await (await client.get(f"/v1/transfers/{body['sagaId']}")).json()
    assert saga["state"] == "FAILED" and saga["error"] == "InsufficientFundsError"
    await post(client, f"/v1/wallet/{wallet_id}/freeze", {"reason": "x"})
    status, body = await post(client, path, {"toWalletId": f"{wallet_id}-b", "amount": 1})
    assert (status, body["error"]) == (422, "WalletNotActiveError")
    assert await balance_cents(db, wallet_id) == 1000
    assert (await client.get(f"/v1/transfers/{uuid.uuid4()}")).status == 404
    assert (await client.get("/v1/transfers/not-a-uuid")).status == 400


async def test_transfer_to_a_frozen_wallet_is_compensated(client, db, wallet_id):
    dest = f"{wallet_id}-frozen"
    await fund(client, wallet_id, 50)
    await fund(client, dest, 1)
    await post(client, f"/v1/wallet/{dest}/freeze", {"reason": "investigation"})
    status, body = await post(client, f"/v1/wallet/{wallet_id}/transfer", {"toWalletId": dest, "amount": 20})
    assert (status, body["error"], body["state"]) == (422, "WalletNotActiveError", "COMPENSATED")
    assert await balance_cents(db, wallet_id) == 5000
    assert await balance_cents(db, dest) == 100
    saga = await (await client.get(f"/v1/transfers/{body['sagaId']}")).json()
    assert saga["state"] == "COMPENSATED"
    assert saga["error"] == "WalletNotActiveError"
    assert saga["reason"] == "the destination wallet cannot receive transfers"  # not its status
    source_history = await (await client.get(f"/v1/wallet/{wallet_id}/history")).json()
    assert [h["eventType"] for h in source_history][-2:] == ["TRANSFER_DEBITED", "TRANSFER_COMPENSATED"]
    dest_history = await (await client.get(f"/v1/wallet/{dest}/history")).json()
    assert "TRANSFER_CREDITED" not in [h["eventType"] for h in dest_history]
    await assert_projection_matches_events(db, wallet_id)


async def test_currency_mismatch_is_422_and_money_stays(client, db, wallet_id):
    dest = f"{wallet_id}-eur"
    await fund(client, wallet_id, 10)
    await post(client, f"/v1/wallet/{dest}/deposit", {"amount": 1, "currency": "EUR"})
    status, body = await post(client, f"/v1/wallet/{wallet_id}/transfer", {"toWalletId": dest, "amount": 5})
    assert (status, body["error"]) == (422, "CurrencyMismatchError")
    assert await balance_cents(db, wallet_id) == 1000
    assert await balance_cents(db, dest) == 100


async def test_500_each_way_concurrently(client, db, wallet_id):
    a, b = f"{wallet_id}-a", f"{wallet_id}-b"
    await fund(client, a, 1000)
    await fund(client, b, 1000)
    results = await asyncio.gather(
        *(post(client, f"/v1/wallet/{a}/transfer", {"toWalletId": b, "amount": 1}) for _ in range(500)),
        *(post(client, f"/v1/wallet/{b}/transfer", {"toWalletId": a, "amount": 1}) for _ in range(500)),
    )
    assert Counter(status for status, _ in results) == {200: 1000}
    assert await balance_cents(db, a) + await balance_cents(db, b) == 200_000
    assert await balance_cents(db, a) == 100_000
    await assert_projection_matches_events(db, a)
    await assert_projection_matches_events(db, b)


async def test_concurrent_transfers_out_of_one_wallet_never_overdraw(client, db, wallet_id):
    await fund(client, wallet_id, 25)
    results = await asyncio.gather(
        *(
            post(
                client,
                f"/v1/wallet/{wallet_id}/transfer",
                {"toWalletId": f"{wallet_id}-{i % 7}", "amount": 1},
            )
            for i in range(60)
        )
    )
    statuses = Counter(status for status, _ in results)
    assert statuses == {200: 25, 422: 35}
    assert await balance_cents(db, wallet_id) == 0
    total = await db.fetchval("SELECT sum(balance) FROM wallets WHERE id LIKE $1", f"{wallet_id}-%")
    assert total == 2500
    await assert_projection_matches_events(db, wallet_id)


async def test_transfer_idempotency(client, db, wallet_id):
    await fund(client, wallet_id, 10)
    key = f"t-{uuid.uuid4()}"
    body = {"toWalletId": f"{wallet_id}-d", "amount": 3}
    results = await asyncio.gather(
        *(post(client, f"/v1/wallet/{wallet_id}/transfer", body, **{"X-Request-ID": key}) for _ in range(10))
    )
    assert {status for status, _ in results} == {200}
    assert len({r["sagaId"] for _, r in results}) == 1
    again = await client.post(f"/v1/wallet/{wallet_id}/transfer", json=body, headers={"X-Request-ID": key})
    assert again.status == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert (await again.json())["sagaId"] == results[0][1]["sagaId"]
    status, error = await post(
        client, f"/v1/wallet/{wallet_id}/transfer", body | {"amount": 4}, **{"X-Request-ID": key}
    )
    assert (status, error["error"]) == (422, "IdempotencyKeyReuseError")
    assert await balance_cents(db, wallet_id) == 700


async def test_concurrent_saga_creates_share_a_statement_and_respect_request_keys(service, db):
    store = service.saga_store
    taken = f"k-{uuid.uuid4()}"
    first = await store.create(_saga("a", "b", request_key=taken))

    def sagas() -> list[SagaRecord]:
        fresh = [_saga(f"a{n}", f"b{n}") for n in range(20)]
        shared = f"k-{uuid.uuid4()}"
        return [*fresh, *(_saga("a", "b", request_key=shared) for _ in range(3)), _saga("x", "y", taken)]

    batch = sagas()
    stored = await asyncio.gather(*(store.create(s) for s in batch))
    assert [r.id for r in stored[:20]] == [s.id for s in batch[:20]]  # each new saga is itself
    assert all(r.state is SagaState.PENDING and r.created_at is not None for r in stored)
    shared_ids = {r.id for r in stored[20:23]}
    assert len(shared_ids) == 1 and shared_ids <= {s.id for s in batch[20:23]}  # the first one wins
    assert stored[23].id == first.id  # a key taken earlier: its saga, not a new one
    rows = await db.fetchval(
        "SELECT count(*) FROM transfer_sagas WHERE id = ANY($1::uuid[])", [s.id for s in batch]
    )
    assert rows == 21


def _saga(source: str, destination: str, request_key: str | None = None) -> SagaRecord:
    return SagaRecord(
        id=str(uuid.uuid4()),
        from_wallet_id=source,
        to_wallet_id=destination,
        amount=1,
        currency=None,
        state=SagaState.PENDING,
        request_key=request_key,
        request_fingerprint="f" if request_key else None,
    )


async def test_a_transfer_recovery_finishes_records_the_reply_its_client_would_have_got(
    settings, aiohttp_client, db, wallet_id
):
    """Recovery runs in a service that never built an HTTP app; the key then replays the whole
    transfer reply (not a stand-in), through another instance's API."""
    recovering = await start_service(
        replace(settings, saga_stuck_threshold_seconds=0.2), name="test-recovery", run_migrations=False
    )
    serving = await start_api(settings, name="test-serving", run_migrations=False)
    try:
        client = await aiohttp_client(serving.app)
        await fund(client, wallet_id, 10)
        destination, key = f"{wallet_id}-d", f"t-{uuid.uuid4()}"
        body = {"toWalletId": destination, "amount": 3}
        request = IdempotencyKey.for_request(
            key, "transfer", wallet_id, {"toWalletId": destination, "amount": 300}
        )
        saga = _saga(wallet_id, destination, request_key=key)
        saga = replace(saga, amount=300, request_fingerprint=request.fingerprint)
        await recovering.saga_store.create(saga)  # as if its instance died right after recording it

        async def recorded() -> bool:
            return await db.fetchval("SELECT 1 FROM idempotency_keys WHERE key = $1", key) is not None

        deadline = asyncio.get_running_loop().time() + 10
        while not await recorded():
            assert asyncio.get_running_loop().time() < deadline, "recovery did not finish the transfer"
            await asyncio.sleep(0.05)
        assert recovering.transfers.recovered >= 1
        again = await client.post(
            f"/v1/wallet/{wallet_id}/transfer", json=body, headers={"X-Request-ID": key}
        )
        assert again.status == 200 and again.headers["Idempotent-Replayed"] == "true"
        assert await again.json() == {
            "sagaId": saga.id,
            "state": "COMPLETED",
            "fromWalletId": wallet_id,
            "toWalletId": destination,
            "amount": 3,
        }
        assert await balance_cents(db, destination) == 300
    finally:
        await serving.stop()
        await recovering.stop()
