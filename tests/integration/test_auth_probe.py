"""Regressions found by an adversarial review of authentication (API.md), authentication ON, real
PostgreSQL and Redis: a wallet outside the patterns is answered exactly like a missing one, rate
limit included."""

from __future__ import annotations

import inspect
import uuid
from dataclasses import replace

from wallet.http import auth


def wid(prefix: str) -> str:
    return f"{prefix}:{uuid.uuid4().hex[:12]}"


async def test_a_foreign_wallet_is_rate_limited_and_answered_like_a_missing_one(
    start_auth_api, auth_settings, issue
):
    settings = replace(auth_settings, rate_limit_enabled=True, rate_limit_default="4/minute")
    _, client = await start_auth_api(settings, "test-auth-foreign-limit")
    tenant_a = await issue(["*"], ["tenant-a:*"])
    missing, theirs = wid("tenant-a"), wid("tenant-b")
    answers = []
    for wallet in (missing, theirs):
        response = await client.get(f"/v1/wallet/{wallet}", headers=tenant_a.headers)
        body = await response.json()
        answers.append(
            (response.status, body["error"], body["message"].replace(wallet, "ID"), set(response.headers))
        )
    # The same status, body and header names (X-RateLimit-*, ...), bar Date and Content-Length.
    (own, own_headers), (foreign, foreign_headers) = ((a[:3], a[3]) for a in answers)
    assert own == foreign == (404, "WalletNotFoundError", "wallet ID not found")
    assert own_headers - {"Date", "Content-Length"} == foreign_headers - {"Date", "Content-Length"}
    # Asking about other principals' wallets uses up the principal's rate limit too.
    statuses = [(await client.get(f"/v1/wallet/{theirs}", headers=tenant_a.headers)).status for _ in range(3)]
    assert statuses == [404, 404, 429]


async def test_the_blocked_addresses_kept_in_memory_are_bounded(start_auth_api, auth_settings, monkeypatch):
    # Each address over its failure limit is remembered locally (Redis holds the counts); many
    # addresses (an IPv6 range, a trusted proxy's clients) must not grow that memory without bound.
    monkeypatch.setattr(auth, "MAX_BLOCKED_ADDRESSES", 8)
    settings = replace(auth_settings, auth_failure_rate_limit="1/minute", rate_limit_trust_forwarded=True)
    api, client = await start_auth_api(settings, "test-auth-blocked-bound")
    observe = api.app.middlewares[0]
    step = inspect.getclosurevars(inspect.getclosurevars(observe).nonlocals["inner"]).nonlocals["step"]
    assert isinstance(step, auth.AuthStep)
    for n in range(30):
        headers = {"X-Forwarded-For": f"2001:db8::{n:x}"}
        assert [(await client.get("/v1/wallet/x", headers=headers)).status for _ in range(2)] == [401, 429]
    assert len(step._blocked) <= 8
    # The latest stay blocked locally; an earlier one is still refused, through Redis again.
    assert (await client.get("/v1/wallet/x", headers={"X-Forwarded-For": "2001:db8::0"})).status == 429
