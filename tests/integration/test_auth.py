"""Authentication and authorisation with API keys (API.md), authentication ON, real PostgreSQL
and Redis: every row of the scope table allowed and refused, each cause of 401, 404 for another
principal's wallet on every wallet route, revocation seen by a second instance within a second."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace
from typing import Any

from aiohttp.test_utils import TestClient

from tests.integration.conftest import Key
from wallet.auth.principal import SCOPES
from wallet.persistence.api_key_store import ApiKeyStore


def wid(prefix: str = "a") -> str:
    return f"{prefix}:{uuid.uuid4().hex[:12]}"


async def call(
    client: TestClient, method: str, path: str, key: Key | None, body: Any = None
) -> tuple[int, Any]:
    headers = key.headers if key else {}
    response = await client.request(method, path, json=body, headers=headers)
    text = await response.text()
    return response.status, (await response.json() if text.startswith(("{", "[")) else text)


async def test_open_routes_need_no_credential_and_everything_else_does(auth_client):
    for path in ("/health/live", "/health/ready", "/api/openapi.json", "/api"):
        assert (await auth_client.get(path)).status in (200, 503), path  # ready may report a dependency
    for method, path in (
        ("GET", "/v1/wallet/x"),
        ("GET", "/wallet/x/history"),
        ("POST", "/v1/wallet/x/deposit"),
        ("GET", "/metrics"),
        ("GET", "/health"),
        ("GET", "/v1/fraud/alerts"),
        ("GET", "/v1/no-such-route"),
    ):
        response = await auth_client.request(method, path, json={"amount": 1})
        assert response.status == 401, (method, path)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await response.json())["error"] == "UnauthorizedError"


async def test_every_row_of_the_scope_table_allowed_and_refused(auth_client, issue):
    admin = await issue(["*"])
    main, other, closing = wid(), wid(), wid()
    assert (await call(auth_client, "POST", f"/v1/wallet/{main}/deposit", admin, {"amount": 100}))[0] == 200
    assert (await call(auth_client, "POST", f"/v1/wallet/{closing}/deposit", admin, {"amount": 1}))[0] == 200
    status, body = await call(
        auth_client, "POST", f"/v1/wallet/{main}/transfer", admin, {"toWalletId": other, "amount": 1}
    )
    assert status == 200, body
    saga = body["sagaId"]
    assert (await call(auth_client, "POST", f"/v1/wallet/{closing}/withdraw", admin, {"amount": 1}))[0] == 200
    rows: list[tuple[str, str, str, Any]] = [
        ("wallets:read", "GET", f"/v1/wallet/{main}", None),
        ("wallets:read", "GET", f"/v1/wallet/{main}/history", None),
        ("wallets:deposit", "POST", f"/v1/wallet/{main}/deposit", {"amount": 5}),
        ("wallets:withdraw", "POST", f"/v1/wallet/{main}/withdraw", {"amount": 1}),
        ("transfers:write", "POST", f"/v1/wallet/{main}/transfer", {"toWalletId": other, "amount": 1}),
        ("transfers:read", "GET", f"/v1/transfers/{saga}", None),
        ("wallets:admin", "POST", f"/v1/wallet/{main}/freeze", {"reason": "check"}),
        ("wallets:admin", "POST", f"/v1/wallet/{main}/unfreeze", {"reason": "ok"}),
        ("wallets:admin", "PUT", f"/v1/wallet/{main}/limits", {"dailyWithdrawalLimit": 500}),
        ("wallets:admin", "POST", f"/v1/wallet/{closing}/close", {"reason": "done"}),
        ("fraud:read", "GET", "/v1/fraud/alerts", None),
        ("ops:read", "GET", "/metrics", None),
        ("ops:read", "GET", "/health", None),
    ]
    for scope, method, path, body in rows:
        others = await issue(sorted(SCOPES - {scope, "*"}))
        status, answer = await call(auth_client, method, path, others, body)
        assert (status, answer["error"]) == (403, "ForbiddenError"), (scope, path, status, answer)
        assert scope in answer["message"]
        only = await issue([scope])
        status, answer = await call(auth_client, method, path, only, body)
        assert status == 200 or (path == "/health" and status == 503), (scope, path, status, answer)
    # The unprefixed routes follow the same table.
    read_only = await issue(["wallets:read"])
    assert (await call(auth_client, "GET", f"/wallet/{main}", read_only))[0] == 200
    assert (await call(auth_client, "POST", f"/wallet/{main}/withdraw", read_only, {"amount": 1}))[0] == 403


async def test_each_cause_of_401(auth_client, auth_service, issue):
    key = await issue(["*"])
    revoked = await issue(["*"])
    assert await ApiKeyStore(auth_service.pool).revoke(revoked.record.id)
    expired = await issue(["*"])
    await auth_service.pool.execute(
        "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1", expired.record.id
    )
    path = f"/v1/wallet/{wid()}"
    wrong_secret = key.token[:-4] + ("AAAA" if not key.token.endswith("AAAA") else "BBBB")
    unknown = "wk_" + "0" * 12 + "_" + key.token[16:]
    cases = {
        "no header": {},
        "not bearer": {"Authorization": f"Basic {key.token}"},
        "empty bearer": {"Authorization": "Bearer "},
        "malformed": {"Authorization": "Bearer not-a-credential"},
        "malformed key": {"Authorization": "Bearer wk_zz_short"},
        "malformed jwt": {"Authorization": "Bearer a.b.c"},
        "unknown key": {"Authorization": f"Bearer {unknown}"},
        "wrong secret": {"Authorization": f"Bearer {wrong_secret}"},
        "revoked": revoked.headers,
        "expired": expired.headers,
    }
    for cause, headers in cases.items():
        response = await auth_client.get(path, headers=headers)
        assert response.status == 401, cause
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), cause
        body = await response.json()
        assert body["error"] == "UnauthorizedError", cause
        assert key.token[16:] not in await response.text()
    assert (await auth_client.get(path, headers=key.headers)).status == 404  # the valid key: no such wallet
    # Bytes that are not UTF-8, a huge token: still a 401 with the error body, never a 5xx.
    for value in (
        b"Bearer wk_" + key.record.id.encode() + b"_\xff\xfe\x80",
        b"Bearer \xff.\xfe.\x80",
        b"Bearer " + b"a." * 3000,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", auth_client.server.port)
        writer.write(
            b"GET "
            + path.encode()
            + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: "
            + value
            + b"\r\n\r\n"
        )
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 401") and b"UnauthorizedError" in answer, answer[:200]


async def test_a_wallet_outside_the_patterns_is_404_exactly_like_a_missing_one(
    auth_client, auth_service, issue
):
    admin = await issue(["*"])
    tenant_a = await issue(["*"], ["tenant-a:*", "shared-1"])
    theirs, mine, missing = wid("tenant-b"), wid("tenant-a"), wid("tenant-a")
    for wallet in (theirs, mine, "shared-1"):
        assert (await call(auth_client, "POST", f"/v1/wallet/{wallet}/deposit", admin, {"amount": 50}))[
            0
        ] == 200
    routes = [
        ("GET", "/v1/wallet/{}", None),
        ("GET", "/v1/wallet/{}/history", None),
        ("GET", "/wallet/{}", None),
        ("POST", "/v1/wallet/{}/withdraw", {"amount": 1}),
        ("POST", "/v1/wallet/{}/transfer", {"toWalletId": mine, "amount": 1}),
        ("POST", "/v1/wallet/{}/freeze", {"reason": "x"}),
        ("POST", "/v1/wallet/{}/unfreeze", {"reason": "x"}),
        ("POST", "/v1/wallet/{}/close", {"reason": "x"}),
        ("PUT", "/v1/wallet/{}/limits", {"dailyWithdrawalLimit": 10}),
    ]
    for method, template, body in routes:
        status, other = await call(auth_client, method, template.format(theirs), tenant_a, body)
        _, absent = await call(auth_client, method, template.format(missing), tenant_a, body)
        assert status == 404, (template, other)
        assert (other["error"], other["message"].replace(theirs, "ID")) == (
            absent["error"],
            absent["message"].replace(missing, "ID"),
        ), template
    # A deposit cannot create a wallet outside the patterns either.
    status, body = await call(
        auth_client, "POST", f"/v1/wallet/{wid('tenant-b')}/deposit", tenant_a, {"amount": 1}
    )
    assert (status, body["error"]) == (404, "WalletNotFoundError")
    # Transfers: the source must be the principal's; the destination may be anyone's.
    status, body = await call(
        auth_client, "POST", f"/v1/wallet/{mine}/transfer", tenant_a, {"toWalletId": theirs, "amount": 1}
    )
    assert status == 200, body
    mine_to_theirs = body["sagaId"]
    status, body = await call(
        auth_client,
        "POST",
        f"/v1/wallet/{theirs}/transfer",
        admin,
        {"toWalletId": wid("tenant-c"), "amount": 1},
    )
    strangers = body["sagaId"]
    assert (await call(auth_client, "GET", f"/v1/transfers/{mine_to_theirs}", tenant_a))[0] == 200
    status, body = await call(auth_client, "GET", f"/v1/transfers/{strangers}", tenant_a)
    assert (status, body["error"]) == (404, "TransferNotFoundError")
    assert (await call(auth_client, "GET", "/v1/wallet/shared-1", tenant_a))[0] == 200
    # Fraud alerts: only those of the principal's wallets.
    await auth_service.pool.executemany(
        "INSERT INTO fraud_alerts (id, wallet_id, rule, severity, event_id, source_event_id, reason,"
        " occurred_at) VALUES ($1, $2, 'HIGH_VALUE_TRANSACTION', 'HIGH', $3, $3, 'test', now())",
        [(uuid.uuid4(), w, uuid.uuid4()) for w in (theirs, mine)],
    )
    _, listed = await call(auth_client, "GET", "/v1/fraud/alerts?limit=1000", tenant_a)
    assert mine in {a["walletId"] for a in listed} and theirs not in {a["walletId"] for a in listed}
    assert (await call(auth_client, "GET", f"/v1/fraud/alerts?walletId={theirs}", tenant_a))[1] == []
    _, everything = await call(auth_client, "GET", "/v1/fraud/alerts?limit=1000", admin)
    assert {mine, theirs} <= {a["walletId"] for a in everything}
    # No patterns: no wallet at all.
    nothing = await issue(["*"], [])
    assert (await call(auth_client, "GET", f"/v1/wallet/{mine}", nothing))[0] == 404


async def test_a_cached_key_costs_no_database_round_trip_per_request(auth_client, issue, monkeypatch):
    key = await issue(["wallets:read"])
    finds = 0
    original = ApiKeyStore.find

    async def counting(self: ApiKeyStore, key_id: str) -> Any:
        nonlocal finds
        finds += 1
        return await original(self, key_id)

    monkeypatch.setattr(ApiKeyStore, "find", counting)
    await asyncio.gather(*(auth_client.get(f"/v1/wallet/{wid()}", headers=key.headers) for _ in range(20)))
    for _ in range(30):
        assert (await auth_client.get(f"/v1/wallet/{wid()}", headers=key.headers)).status == 404
    assert finds == 1


async def test_revocation_and_expiry_are_seen_by_a_second_instance_within_a_second(
    start_auth_api, auth_settings, auth_service, auth_client, issue
):
    second, other = await start_auth_api(auth_settings, "test-auth-b")
    key = await issue(["wallets:read"])
    soon = await issue(["wallets:read"], days=1.5 / 86400)  # expires in 1.5 s
    path = f"/v1/wallet/{wid()}"
    for client in (auth_client, other):  # both instances have the keys cached
        for k in (key, soon):
            assert (await client.get(path, headers=k.headers)).status == 404
    revoked_at = time.monotonic()
    assert await ApiKeyStore(second.service.pool).revoke(key.record.id)  # (what `wallet keys revoke` runs)
    seen: dict[int, float] = {}

    async def refused_everywhere() -> bool:
        for n, client in enumerate((auth_client, other)):
            if n not in seen and (await client.get(path, headers=key.headers)).status == 401:
                seen[n] = time.monotonic() - revoked_at
        return len(seen) == 2

    await wait_until_async(refused_everywhere, 3.0)
    assert max(seen.values()) < 1.0, seen
    await asyncio.sleep(max(0.0, 1.6 - (time.monotonic() - revoked_at)))
    for client in (auth_client, other):
        assert (await client.get(path, headers=soon.headers)).status == 401


async def wait_until_async(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_method_an_open_path_does_not_serve_is_405_and_no_failed_authentication(
    start_auth_api, auth_settings
):
    settings = replace(auth_settings, auth_failure_rate_limit="2/minute", rate_limit_trust_forwarded=True)
    _, client = await start_auth_api(settings, "test-auth-open-405")
    someone = {"X-Forwarded-For": "203.0.113.9"}
    for _ in range(3):  # more than the failure budget: none of these counts against it
        response = await client.post("/health/live", headers=someone)
        assert response.status == 405 and (await response.json())["error"] == "MethodNotAllowedError"
        assert (await client.get("/api/no-such-page", headers=someone)).status == 404
    assert (await client.get("/v1/wallet/x", headers=someone)).status == 401  # not 429


async def test_failed_authentications_are_rate_limited_per_address(start_auth_api, auth_settings, issue):
    settings = replace(auth_settings, auth_failure_rate_limit="3/minute", rate_limit_trust_forwarded=True)
    _, client = await start_auth_api(settings, "test-auth-fail")
    key = await issue(["*"])
    attacker = {"X-Forwarded-For": "203.0.113.7", "Authorization": "Bearer wk_000000000000_guess"}
    statuses = [(await client.get("/v1/wallet/x", headers=attacker)).status for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
    response = await client.get("/v1/wallet/x", headers={**key.headers, "X-Forwarded-For": "203.0.113.7"})
    assert response.status == 429 and int(response.headers["Retry-After"]) >= 1
    honest = {**key.headers, "X-Forwarded-For": "198.51.100.1"}
    assert (await client.get("/v1/wallet/x", headers=honest)).status == 404


async def test_a_refused_transfer_tells_nothing_of_a_destination_the_sender_may_not_see(auth_client, issue):
    """A transfer may go to anyone's wallet, but its refusal (and the saga's failure reason, which
    the sender reads back) names only the rule: not that the stranger's wallet is FROZEN or CLOSED,
    nor the currency it holds."""
    admin, tenant_a = await issue(["*"]), await issue(["*"], ["tenant-a:*"])
    mine, frozen, euros = wid("tenant-a"), wid("tenant-b"), wid("tenant-b")
    for wallet, body in (
        (mine, {"amount": 100}),
        (frozen, {"amount": 1}),
        (euros, {"amount": 1, "currency": "EUR"}),
    ):
        assert (await call(auth_client, "POST", f"/v1/wallet/{wallet}/deposit", admin, body))[0] == 200
    assert (await call(auth_client, "POST", f"/v1/wallet/{frozen}/freeze", admin, {}))[0] == 200
    for destination, error, secret in (
        (frozen, "WalletNotActiveError", "FROZEN"),
        (euros, "CurrencyMismatchError", "EUR"),
    ):
        status, body = await call(
            auth_client,
            "POST",
            f"/v1/wallet/{mine}/transfer",
            tenant_a,
            {"toWalletId": destination, "amount": 1},
        )
        assert (status, body["error"], body["state"]) == (422, error, "COMPENSATED"), body
        status, saga = await call(auth_client, "GET", f"/v1/transfers/{body['sagaId']}", tenant_a)
        assert status == 200 and saga["error"] == error
        for text in (str(body), str(saga)):
            assert secret not in text.upper(), text
    status, body = await call(auth_client, "GET", f"/v1/wallet/{mine}", tenant_a)
    assert body["balance"] == 100  # both refunded
