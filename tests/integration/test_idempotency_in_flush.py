"""X-Request-ID checked by the flush that records it, not by a lookup per request (issue 12).

A keyed request goes straight to its wallet actor; the flush function refuses a wallet batch whose
keys are already recorded and reports their stored answers, and the actor replays (or refuses)
just those commands and decides the others again. Both flush pipeline depths.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest

from tests.helpers import WalletTestServer, assert_projection_matches_events, balance_cents, post
from wallet.bootstrap import start_api
from wallet.persistence.idempotency_store import IdempotencyStore
from wallet.persistence.records import IdempotencyRecord


def key() -> str:
    return f"k-{uuid.uuid4()}"


@pytest.fixture(params=[1, 2], ids=["depth1", "depth2"])
async def depth_client(request, aiohttp_client, settings, monkeypatch):  # type: ignore[no-untyped-def]
    """A service at flush pipeline depth 1 or 2 that never looks a key up before the flush."""

    async def no_lookup(self: IdempotencyStore, key: str) -> IdempotencyRecord | None:
        raise AssertionError(f"a keyed request looked its key up on its own: {key}")

    monkeypatch.setattr(IdempotencyStore, "find", no_lookup)
    settings = replace(settings, flush_pipeline_depth=request.param)
    api = await start_api(settings, name="keys-in-flush", run_migrations=False)
    try:
        yield await aiohttp_client(WalletTestServer(api.app))
    finally:
        await api.stop()


async def deposit(client: Any, wallet_id: str, amount: Any, request_id: str) -> tuple[int, Any, bool]:
    response = await client.post(
        f"/v1/wallet/{wallet_id}/deposit", json={"amount": amount}, headers={"X-Request-ID": request_id}
    )
    return response.status, await response.json(), response.headers.get("Idempotent-Replayed") == "true"


async def test_retries_in_a_busy_batch_replay_and_the_others_take_effect_once(depth_client, db, wallet_id):
    """Retried keys arrive among new ones on one wallet: the retries get their first answers
    (replayed), each new key takes effect once, and nothing is counted twice."""
    old = [key() for _ in range(5)]
    first = [await deposit(depth_client, wallet_id, 1, k) for k in old]
    assert [status for status, _, _ in first] == [200] * 5
    new = [key() for _ in range(40)]
    results = await asyncio.gather(
        *(deposit(depth_client, wallet_id, 2, k) for k in new),
        *(deposit(depth_client, wallet_id, 1, k) for k in old),
    )
    fresh, retried = results[:40], results[40:]
    assert Counter((status, replayed) for status, _, replayed in fresh) == {(200, False): 40}
    assert [(status, body, replayed) for status, body, replayed in retried] == [
        (status, body, True) for status, body, _ in first
    ]
    assert await balance_cents(db, wallet_id) == 5 * 100 + 40 * 200
    await assert_projection_matches_events(db, wallet_id)


async def test_a_reused_key_is_refused_in_the_flush(depth_client, db, wallet_id):
    k = key()
    assert (await deposit(depth_client, wallet_id, 5, k))[0] == 200
    others = [key() for _ in range(10)]
    results = await asyncio.gather(
        *(deposit(depth_client, wallet_id, 1, o) for o in others),
        deposit(depth_client, wallet_id, 6, k),  # same key, other amount
        deposit(depth_client, f"{wallet_id}-b", 5, k),  # same key, other wallet (a new one)
    )
    assert [r[0] for r in results[:10]] == [200] * 10
    for status, body, _ in results[10:]:
        assert (status, body["error"]) == (422, "IdempotencyKeyReuseError")
    assert await balance_cents(db, wallet_id) == 500 + 10 * 100
    assert await db.fetchval("SELECT count(*) FROM wallets WHERE id = $1", f"{wallet_id}-b") == 0


async def test_concurrent_duplicates_take_effect_once(depth_client, db, wallet_id):
    k = key()
    results = await asyncio.gather(*(deposit(depth_client, wallet_id, 3, k) for _ in range(30)))
    assert Counter(status for status, _, _ in results) == {200: 30}
    assert sum(not replayed for _, _, replayed in results) == 1
    assert await balance_cents(db, wallet_id) == 300


async def test_a_key_recorded_on_one_instance_replays_on_another(aiohttp_client, settings, db, wallet_id):
    a = await start_api(settings, name="keys-a", run_migrations=False)
    b = await start_api(settings, name="keys-b", run_migrations=False)
    try:
        client_a = await aiohttp_client(WalletTestServer(a.app))
        client_b = await aiohttp_client(WalletTestServer(b.app))
        k = key()
        first = await deposit(client_a, wallet_id, 7, k)
        again = await deposit(client_b, wallet_id, 7, k)
        assert first[0] == again[0] == 200 and again[1] == first[1] and again[2]
        status, body, _ = await deposit(client_b, wallet_id, 8, k)
        assert (status, body["error"]) == (422, "IdempotencyKeyReuseError")
        assert await balance_cents(db, wallet_id) == 700
    finally:
        await a.stop()
        await b.stop()


async def test_a_deposit_key_used_again_for_a_transfer_is_refused(client, db, wallet_id):
    """The transfer's key check rides on the saga's INSERT: a key a deposit recorded refuses the
    transfer (nothing moves), and the same transfer retried after it ran replays."""
    k = key()
    assert (await post(client, f"/v1/wallet/{wallet_id}/deposit", {"amount": 50}, **{"X-Request-ID": k}))[
        0
    ] == 200
    body = {"toWalletId": f"{wallet_id}-to", "amount": 10}
    status, error = await post(client, f"/v1/wallet/{wallet_id}/transfer", body, **{"X-Request-ID": k})
    assert (status, error["error"]) == (422, "IdempotencyKeyReuseError")
    assert await balance_cents(db, wallet_id) == 5000
    assert await db.fetchval("SELECT count(*) FROM transfer_sagas WHERE request_key = $1", k) == 0


@pytest.mark.parametrize("depth", [1, 2], ids=["depth1", "depth2"])
async def test_one_keyed_transfer_sent_to_two_instances_at_once_moves_money_once(
    aiohttp_client, settings, db, wallet_id, depth
):
    """A new saga's row is written by its debit, holding the key: each instance's debit races for
    it, the loser's flush is refused, and it follows the winner's saga (the same answer, once)."""
    settings = replace(settings, flush_pipeline_depth=depth)
    a = await start_api(settings, name="saga-keys-a", run_migrations=False)
    b = await start_api(settings, name="saga-keys-b", run_migrations=False)
    try:
        clients = [await aiohttp_client(WalletTestServer(api.app)) for api in (a, b)]
        assert (await post(clients[0], f"/v1/wallet/{wallet_id}/deposit", {"amount": 100}))[0] == 200
        destination = f"{wallet_id}-to"
        keys = [key() for _ in range(20)]

        async def transfer(client: Any, k: str) -> tuple[int, Any]:
            body = {"toWalletId": destination, "amount": 1}
            return await post(client, f"/v1/wallet/{wallet_id}/transfer", body, **{"X-Request-ID": k})

        results = await asyncio.gather(*(transfer(c, k) for k in keys for c in clients for _ in range(2)))
        assert Counter(status for status, _ in results) == {200: 80}, results
        by_key: dict[str, set[str]] = {}
        for (_, body), k in zip(results, (k for k in keys for _ in range(4)), strict=True):
            by_key.setdefault(k, set()).add(body["sagaId"])
        assert all(len(ids) == 1 for ids in by_key.values()), by_key  # one saga per key
        sagas = await db.fetch(
            "SELECT request_key, state FROM transfer_sagas WHERE from_wallet_id = $1", wallet_id
        )
        assert sorted(r["request_key"] for r in sagas) == sorted(keys)
        assert {r["state"] for r in sagas} == {"COMPLETED"}
        assert (await balance_cents(db, wallet_id), await balance_cents(db, destination)) == (8000, 2000)
    finally:
        await a.stop()
        await b.stop()
