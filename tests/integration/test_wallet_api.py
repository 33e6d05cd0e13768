"""The single-wallet REST API against the real database: contract, validation, exactness."""

from __future__ import annotations

import pytest

from tests.helpers import assert_projection_matches_events, balance_cents, post

# The API under both EVENT_LOOP settings.
pytestmark = pytest.mark.both_event_loops


async def test_deposit_withdraw_balance_history(client, db, wallet_id):
    assert await post(client, f"/v1/wallet/{wallet_id}/deposit", {"amount": 100}) == (
        200,
        {"walletId": wallet_id, "balance": 100},
    )
    assert await post(client, f"/wallet/{wallet_id}/withdraw", {"amount": "30.5"}) == (
        200,
        {"walletId": wallet_id, "balance": 69.5},
    )
    response = await client.get(f"/v1/wallet/{wallet_id}")
    assert response.status == 200
    body = await response.json()
    assert body | {} == {
        "walletId": wallet_id,
        "balance": 69.5,
        "currency": "USD",
        "status": "ACTIVE",
        "version": 3,
        "dailyWithdrawalLimit": None,
    }
    history = await (await client.get(f"/wallet/{wallet_id}/history?limit=10&offset=1")).json()
    assert [(h["eventType"], h["amount"]) for h in history] == [
        ("FUNDS_DEPOSITED", 100),
        ("FUNDS_WITHDRAWN", 30.5),
    ]
    assert set(history[0]) == {"id", "eventType", "amount", "metadata", "createdAt"}
    await assert_projection_matches_events(db, wallet_id)


async def test_exact_decimal_sums(client, db, wallet_id):
    await post(client, f"/v1/wallet/{wallet_id}/deposit", {"amount": 0.1})
    status, body = await post(client, f"/v1/wallet/{wallet_id}/deposit", {"amount": 0.2})
    assert status == 200
    assert body["balance"] == 0.3  # JSON 0.3, not 0.30000000000000004
    raw = await (await client.get(f"/v1/wallet/{wallet_id}")).text()
    assert '"balance": 0.3' in raw or '"balance":0.3' in raw
    assert await balance_cents(db, wallet_id) == 30


@pytest.mark.parametrize(
    "body",
    [
        {"amount": 1.001},
        {"amount": "0.005"},
        {"amount": -1},
        {"amount": 0},
        {"amount": "abc"},
        {"amount": True},
        {},
        {"amount": None},
        {"amount": 1_000_000_000_000.01},
        {"amount": 1, "extra": 1},
        [1],
        "12",
    ],
)
async def test_bad_amounts_are_400(client, wallet_id, body):
    status, error = await post(client, f"/v1/wallet/{wallet_id}/deposit", body)
    assert status == 400
    assert error["error"] == "ValidationError"
    assert set(error) == {"statusCode", "error", "message", "timestamp", "path", "requestId"}


async def test_bad_json_and_bad_ids_are_400(client):
    response = await client.post(
        "/v1/wallet/x/deposit", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    huge = b'{"amount": ' + b"1" * 5000 + b"}"  # past Python's int conversion limit: still a 400
    response = await client.post(
        "/v1/wallet/x/deposit", data=huge, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    long_id = "a" * 65
    assert (await post(client, f"/v1/wallet/{long_id}/deposit", {"amount": 1}))[0] == 400
    assert (await client.get(f"/v1/wallet/{long_id}")).status == 400
    assert (await post(client, "/v1/wallet/bad%20id/deposit", {"amount": 1}))[0] == 400
    assert (await client.get("/v1/wallet/x/history?limit=0")).status == 400
    assert (await client.get("/v1/wallet/x/history?limit=1001")).status == 400
    assert (await client.get("/v1/wallet/x/history?offset=-1")).status == 400
    response = await client.post(
        "/v1/wallet/x/deposit", json={"amount": 1}, headers={"X-Request-ID": "k" * 256}
    )
    assert response.status == 400


async def test_unknown_wallet_is_404(client, wallet_id):
    for method, path, body in [
        ("post", f"/v1/wallet/{wallet_id}/withdraw", {"amount": 1}),
        ("post", f"/v1/wallet/{wallet_id}/freeze", {"reason": "x"}),
        ("put", f"/v1/wallet/{wallet_id}/limits", {"dailyWithdrawalLimit": 5}),
        ("get", f"/v1/wallet/{wallet_id}", None),
        ("get", f"/v1/wallet/{wallet_id}/history", None),
    ]:
        response = await getattr(client, method)(path, json=body)
        assert response.status == 404, path
        assert (await response.json())["error"] == "WalletNotFoundError"


async def test_lifecycle_and_limits(client, db, wallet_id):
    await post(client, f"/v1/wallet/{wallet_id}/deposit", {"amount": 50})
    status, body = await post(client, f"/v1/wallet/{wallet_id}/freeze", {"reason": "suspicious"})
    assert (status, body["status"]) == (200, "FROZEN")
    status, body = await post(client, f"/v1/wallet/{wallet_id}/withdraw", {"amount": 1})
    assert (status, body["error"]) == (422, "WalletNotActiveError")
    assert (await post(client, f"/v1/wallet/{wallet_id}/unfreeze", {"reason": "ok"}))[1]["status"] == "ACTIVE"
    response = await client.put(f"/v1/wallet/{wallet_id}/limits", json={"dailyWithdrawalLimit": 20})
    assert (await response.json())["dailyWithdrawalLimit"] == 20
    assert (await post(client, f"/v1/wallet/{wallet_id}/withdraw", {"amount": 15}))[0] == 200
    status, body = await post(client, f"/v1/wallet/{wallet_id}/withdraw", {"amount": 6})
    assert (status, body["error"]) == (422, "WithdrawalLimitExceededError")
    status, body = await post(client, f"/v1/wallet/{wallet_id}/close", {"reason": "bye"})
    assert (status, body["error"]) == (422, "BalanceNotZeroError")
    await client.put(f"/v1/wallet/{wallet_id}/limits", json={"dailyWithdrawalLimit": None})
    assert (await post(client, f"/v1/wallet/{wallet_id}/withdraw", {"amount": 35}))[0] == 200
    assert (await post(client, f"/v1/wallet/{wallet_id}/close", {"reason": "bye"}))[1]["status"] == "CLOSED"
    assert (await post(client, f"/v1/wallet/{wallet_id}/deposit", {"amount": 1}))[0] == 422
    await assert_projection_matches_events(db, wallet_id)


async def test_currency_is_fixed_per_wallet(client, wallet_id):
    status, _ = await post(client, f"/v1/wallet/{wallet_id}/deposit", {"amount": 1, "currency": "EUR"})
    assert status == 200
    assert (await (await client.get(f"/v1/wallet/{wallet_id}")).json())["currency"] == "EUR"
    status, body = await post(client, f"/v1/wallet/{wallet_id}/deposit", {"amount": 1, "currency": "USD"})
    assert (status, body["error"]) == (422, "CurrencyMismatchError")


async def test_unknown_route_has_the_error_shape(client):
    response = await client.get("/v1/nothing-here")
    assert response.status == 404
    assert set(await response.json()) == {"statusCode", "error", "message", "timestamp", "path", "requestId"}
