"""Regressions found by an adversarial review of authentication (API.md), authentication ON, real
PostgreSQL and Redis: a wallet outside the patterns is answered exactly like a missing one, rate
limit included."""

from __future__ import annotations

import asyncio
import inspect
import io
import uuid
from collections.abc import Iterator
from dataclasses import replace

import jwt
import pytest

from tests.helpers import root_logging_restored
from tests.integration.conftest import JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET
from wallet.http import auth
from wallet.logging_setup import configure_logging


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
    step = inspect.getclosurevars(observe).nonlocals["inner"].func  # the AuthStep, bound by a partial
    assert isinstance(step, auth.AuthStep)
    for n in range(30):
        headers = {"X-Forwarded-For": f"2001:db8::{n:x}"}
        assert [(await client.get("/v1/wallet/x", headers=headers)).status for _ in range(2)] == [401, 429]
    assert len(step._blocked) <= 8
    # The latest stay blocked locally; an earlier one is still refused, through Redis again.
    assert (await client.get("/v1/wallet/x", headers={"X-Forwarded-For": "2001:db8::0"})).status == 429


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """The service's own log format (structlog JSON, as ``wallet serve`` sets it) into a buffer."""
    with root_logging_restored():
        out = io.StringIO()
        configure_logging("debug", "json", stream=out)
        yield out


async def send_raw(client, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5.0)
    writer.close()
    return answer


async def test_a_credential_in_a_malformed_header_line_never_reaches_the_log(auth_client, issue, log_stream):
    # aiohttp refuses a header line with a control character (a key pasted with a stray byte, a
    # CRLF file read whole) and logs the line quoted whole in its error: the secret with it.
    key = await issue(["*"])
    token = jwt.encode(
        {"iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "sub": "probe", "exp": 4102444800}, JWT_SECRET, "HS256"
    )
    for credential in (key.token, token):
        for stray in (b"\x01", b"\x7f", b"\x00"):
            line = b"Authorization: Bearer " + credential.encode() + stray
            answer = await send_raw(
                auth_client, b"GET /v1/wallet/x HTTP/1.1\r\nHost: t\r\n" + line + b"\r\n\r\n"
            )
            assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n", 1)[0]
    logged = log_stream.getvalue()
    assert "Invalid header value char" in logged  # the refusals were logged ...
    assert key.token[16:] not in logged and token.split(".")[2] not in logged  # ... without the secrets
    assert "Authorization: [REDACTED]" in logged
