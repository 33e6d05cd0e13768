"""The per-request CPU cost of the authentication step, in µs: ``python -m wallet.bench.auth_cost``.

A request goes through ``Application._handle`` of a small app with the service's request chain
(the observing middleware, error answers) and a route that answers at once, with and without the
authentication step; the difference is the step's cost. Credentials are warm (what a hot client
sees): an API key in the verifier's cache (its revocation poll running against an in-memory
store) and a JWT verified once. No database, no network: only the step's own CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from dataclasses import replace
from typing import Any

import jwt
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from wallet.auth.authenticator import Authenticator
from wallet.auth.jwt_verifier import JwtVerifier
from wallet.auth.key_verifier import ApiKeyVerifier
from wallet.auth.principal import audit
from wallet.auth.tokens import new_key_id, new_token, secret_hash
from wallet.config import Settings
from wallet.http.auth import AuthStep, current_principal
from wallet.http.chain import Step
from wallet.http.errors import answer_errors
from wallet.http.metrics import RequestStats, observe_middleware
from wallet.http.rate_limit import Rule
from wallet.persistence.api_key_store import ApiKeyRecord

SECRET = "auth-cost-secret-of-at-least-32-bytes!"


class MemoryKeys:
    """The two queries the key verifier makes, answered from memory."""

    def __init__(self, record: ApiKeyRecord) -> None:
        self.record = record

    async def find(self, key_id: str) -> ApiKeyRecord | None:
        return self.record if key_id == self.record.id else None

    async def usable(self, key_ids: Any) -> set[str]:
        return {k for k in key_ids if k == self.record.id}


class NeverCounted:
    """Failed-authentication counting: never reached with valid credentials."""

    def client_of(self, request: web.Request) -> str:
        return f"ip:{request.remote}"

    async def check(self, rules: Any, client: str) -> Any:  # pragma: no cover
        raise AssertionError("a valid credential was refused")


async def handler(request: web.Request) -> web.Response:
    # What the wallet routes do with the principal: scope the key, build the audit metadata.
    principal = current_principal(request)
    principal.scoped_key("req-1")
    audit(principal, "req-1")
    return web.Response(text="{}")


def app_with(step: Step | None) -> web.Application:
    """The chain (observing middleware, then ``step`` or the error answers) around ``handler``."""
    app = web.Application()
    app.middlewares.append(observe_middleware(RequestStats(), step or answer_errors))
    app.router.add_get("/v1/wallet/{id}", handler)
    app.freeze()
    return app


async def per_request_us(app: web.Application, headers: dict[str, str], n: int) -> float:
    request = make_mocked_request("GET", "/v1/wallet/w-1", headers=headers, app=app)
    for _ in range(200):
        await app._handle(request)
    gc.collect()
    started = time.process_time()
    for _ in range(n):  # one request object: making a mocked one costs far more than the step
        response = await app._handle(request)
        assert response.status == 200, response.status
    return (time.process_time() - started) / n * 1e6


async def measure(n: int, rounds: int) -> dict[str, float]:
    settings = replace(
        Settings(), auth_jwt_secret=SECRET, auth_jwt_issuer="https://idp/", auth_jwt_audience="wallet"
    )
    key_id = new_key_id()
    token = new_token(key_id)
    record = ApiKeyRecord(key_id, "cost", secret_hash(token), ("*",), ("*",))
    keys = ApiKeyVerifier(MemoryKeys(record), poll_seconds=settings.auth_revocation_poll_seconds)  # type: ignore[arg-type]
    authenticator = Authenticator(keys, JwtVerifier(settings))
    authenticator.start()
    claims = {
        "iss": "https://idp/",
        "aud": "wallet",
        "sub": "cost",
        "exp": int(time.time()) + 3600,
        "scope": "*",
    }
    claims["wallets"] = ["*"]
    token_jwt = jwt.encode(claims, SECRET, algorithm="HS256")
    step = AuthStep(authenticator, NeverCounted(), Rule("x", None))  # type: ignore[arg-type]

    async def auth(request: web.Request, h: Any) -> web.StreamResponse:
        return await step(request, h, answer_errors)

    bare, with_auth = app_with(None), app_with(auth)
    await keys.poll_once()
    samples: dict[str, list[float]] = {"off": [], "key": [], "jwt": []}
    try:
        for _ in range(rounds):
            samples["off"].append(await per_request_us(bare, {}, n))
            samples["key"].append(await per_request_us(with_auth, {"Authorization": f"Bearer {token}"}, n))
            samples["jwt"].append(
                await per_request_us(with_auth, {"Authorization": f"Bearer {token_jwt}"}, n)
            )
    finally:
        await authenticator.stop()
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="per round and variant")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    result = asyncio.run(measure(args.requests, args.rounds))
    off = result["off"]
    print(f"chain without authentication: {off:.1f} µs/request (median of {args.rounds} rounds)")
    for name in ("key", "jwt"):
        print(
            f"with {name:3}: {result[name]:.1f} µs/request, authentication step {result[name] - off:+.1f} µs"
        )


if __name__ == "__main__":
    main()
