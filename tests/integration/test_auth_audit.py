"""Per-principal idempotency keys and rate limits, and the audit trail: every event's metadata
names its actor and request id, system actors included (authentication ON)."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace
from typing import Any

import jwt

from tests.integration.conftest import JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET, Key
from wallet.domain.saga import SagaState
from wallet.persistence.saga_store import SagaRecord


def wid() -> str:
    return f"audit:{uuid.uuid4().hex[:12]}"


def actor_of(key: Key) -> dict[str, str]:
    return {"type": "api_key", "id": key.record.id, "name": key.record.name}


async def post(client: Any, path: str, key: Key | None, body: Any, request_id: str | None = None) -> Any:
    headers = dict(key.headers) if key else {}
    if request_id:
        headers["X-Request-ID"] = request_id
    response = await client.post(path, json=body, headers=headers)
    return response.status, await response.json(), response.headers


async def test_two_principals_with_the_same_request_id_both_take_effect(auth_client, issue, db):
    alice, bob = await issue(["*"], name="alice"), await issue(["*"], name="bob")
    wallet, request_id = wid(), f"same-{uuid.uuid4().hex[:8]}"
    first = await post(auth_client, f"/v1/wallet/{wallet}/deposit", alice, {"amount": 10}, request_id)
    second = await post(auth_client, f"/v1/wallet/{wallet}/deposit", bob, {"amount": 10}, request_id)
    assert (first[0], second[0]) == (200, 200)
    assert "Idempotent-Replayed" not in second[2]
    assert second[1]["balance"] == 20
    # Within one principal the usual rules hold: a replay, and 422 for a different request.
    again = await post(auth_client, f"/v1/wallet/{wallet}/deposit", alice, {"amount": 10}, request_id)
    assert (again[0], again[1]["balance"], again[2]["Idempotent-Replayed"]) == (200, 10, "true")
    reuse = await post(auth_client, f"/v1/wallet/{wallet}/deposit", alice, {"amount": 11}, request_id)
    assert (reuse[0], reuse[1]["error"]) == (422, "IdempotencyKeyReuseError")
    # Transfers too.
    target = wid()
    for key in (alice, bob):
        status, body, _ = await post(
            auth_client, f"/v1/wallet/{wallet}/transfer", key, {"toWalletId": target, "amount": 1}, "t-1"
        )
        assert status == 200, body
    assert await db.fetchval("SELECT balance FROM wallets WHERE id = $1", target) == 200


async def test_rate_limits_count_per_principal(start_auth_api, auth_settings, issue):
    settings = replace(auth_settings, rate_limit_enabled=True, rate_limit_default="3/minute")
    _, client = await start_auth_api(settings, "test-auth-rl")
    alice, bob = await issue(["*"]), await issue(["*"])
    statuses = [(await client.get(f"/v1/wallet/{wid()}", headers=alice.headers)).status for _ in range(4)]
    assert statuses == [404, 404, 404, 429]
    assert (await client.get(f"/v1/wallet/{wid()}", headers=bob.headers)).status == 404


async def test_every_kind_of_event_records_its_actor_and_request_id(auth_client, auth_service, issue, db):
    key = await issue(["*"], name="ops console")
    wallet, dest, frozen_dest = wid(), wid(), wid()
    steps = [
        (f"/v1/wallet/{wallet}/deposit", {"amount": 100}),  # WALLET_CREATED, FUNDS_DEPOSITED
        (f"/v1/wallet/{wallet}/withdraw", {"amount": 1}),
        (f"/v1/wallet/{wallet}/transfer", {"toWalletId": dest, "amount": 1}),  # DEBITED, CREDITED
        (f"/v1/wallet/{frozen_dest}/deposit", {"amount": 1}),
        (f"/v1/wallet/{frozen_dest}/freeze", {"reason": "x"}),
        (f"/v1/wallet/{wallet}/transfer", {"toWalletId": frozen_dest, "amount": 1}),  # COMPENSATED
        (f"/v1/wallet/{wallet}/limits", {"dailyWithdrawalLimit": 50}),
        (f"/v1/wallet/{wallet}/limits", {"dailyWithdrawalLimit": None}),
        (f"/v1/wallet/{wallet}/freeze", {"reason": "x"}),
        (f"/v1/wallet/{wallet}/unfreeze", {"reason": "x"}),
    ]
    for n, (path, body) in enumerate(steps):
        method = auth_client.put if path.endswith("/limits") else auth_client.post
        response = await method(path, json=body, headers={**key.headers, "X-Request-ID": f"req-{n}"})
        assert response.status in (200, 422), await response.text()
    token = jwt.encode(
        {
            "iss": JWT_ISSUER,
            "aud": JWT_AUDIENCE,
            "sub": "svc-1",
            "exp": 2**31,
            "scope": "*",
            "wallets": ["*"],
        },
        JWT_SECRET,
        algorithm="HS256",
    )
    closing = wid()
    for action, body in (("deposit", {"amount": 1}), ("withdraw", {"amount": 1}), ("close", {"reason": "x"})):
        path = f"/v1/wallet/{closing}/{action}"
        response = await auth_client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})
        assert response.status == 200, await response.text()
    rows = await db.fetch(
        "SELECT event_type, metadata FROM wallet_events WHERE wallet_id = ANY($1::text[])",
        [wallet, dest, frozen_dest, closing],
    )
    kinds: set[str] = set()
    for row in rows:
        metadata = json.loads(row["metadata"])
        kinds.add(row["event_type"])
        assert metadata["actor"]["type"] in ("api_key", "jwt"), row
        assert metadata["requestId"], row
        if metadata["actor"]["type"] == "api_key":
            assert metadata["actor"] == actor_of(key)
            assert metadata["requestId"].startswith("req-")
        else:
            assert metadata["actor"] == {"type": "jwt", "id": "svc-1", "name": "svc-1"}
    assert kinds >= {
        "WALLET_CREATED", "FUNDS_DEPOSITED", "FUNDS_WITHDRAWN", "TRANSFER_DEBITED", "TRANSFER_CREDITED",
        "TRANSFER_COMPENSATED", "WALLET_FROZEN", "WALLET_UNFROZEN", "WALLET_CLOSED",
        "DAILY_WITHDRAWAL_LIMIT_SET", "DAILY_WITHDRAWAL_LIMIT_REMOVED",
    }  # fmt: skip
    # The history shows them.
    history = await (await auth_client.get(f"/v1/wallet/{wallet}/history", headers=key.headers)).json()
    assert history[1]["metadata"]["actor"] == actor_of(key) and history[1]["metadata"]["requestId"] == "req-0"
    # Secrets never reach an event.
    assert key.token[16:] not in json.dumps([dict(r) for r in rows], default=str)
    assert token not in json.dumps([dict(r) for r in rows], default=str)


async def test_saga_recovery_acts_as_a_system_actor(auth_client, auth_service, issue, db):
    key = await issue(["*"])
    source, dest = wid(), wid()
    assert (await post(auth_client, f"/v1/wallet/{source}/deposit", key, {"amount": 10}))[0] == 200
    saga_id = str(uuid.uuid4())
    await auth_service.saga_store.create(SagaRecord(saga_id, source, dest, 300, None, SagaState.PENDING))
    await db.execute(
        "UPDATE transfer_sagas SET updated_at = now() - interval '1 hour' WHERE id = $1", uuid.UUID(saga_id)
    )
    await auth_service.transfers.recover_stuck()

    async def completed() -> bool:
        return (
            await db.fetchval("SELECT state FROM transfer_sagas WHERE id = $1", uuid.UUID(saga_id))
            == "COMPLETED"
        )

    for _ in range(200):
        if await completed():
            break
        await asyncio.sleep(0.05)
    rows = await db.fetch("SELECT metadata FROM wallet_events WHERE metadata->>'sagaId' = $1", saga_id)
    assert len(rows) == 2
    for row in rows:
        metadata = json.loads(row["metadata"])
        assert metadata["actor"] == {
            "type": "system",
            "id": "saga-recovery",
            "name": "transfer saga recovery",
        }
        assert metadata["requestId"] == f"saga:{saga_id}"
