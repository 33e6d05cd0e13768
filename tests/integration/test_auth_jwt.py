"""JWTs beside API keys (API.md), authentication ON: the HS256 development secret and an RS256
identity provider whose JWKS the service fetches over HTTP; every refusal the contract names."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import replace
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.integration.conftest import JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": JWT_ISSUER,
        "aud": JWT_AUDIENCE,
        "sub": f"user-{uuid.uuid4().hex[:8]}",
        "exp": now + 300,
        "iat": now,
        "scope": "openid wallets:read wallets:deposit",
        "wallets": ["jwt:*"],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def wid() -> str:
    return f"jwt:{uuid.uuid4().hex[:12]}"


async def test_an_hs256_development_token_is_accepted_with_its_scopes_and_wallets(auth_client):
    token = jwt.encode(claims(), JWT_SECRET, algorithm="HS256")
    wallet = wid()
    response = await auth_client.post(
        f"/v1/wallet/{wallet}/deposit", json={"amount": 5}, headers=bearer(token)
    )
    assert response.status == 200, await response.text()
    assert (await auth_client.get(f"/v1/wallet/{wallet}", headers=bearer(token))).status == 200
    refused = await auth_client.post(
        f"/v1/wallet/{wallet}/withdraw", json={"amount": 1}, headers=bearer(token)
    )
    assert refused.status == 403  # no wallets:withdraw in its scope
    outside = await auth_client.get("/v1/wallet/other:1", headers=bearer(token))
    assert outside.status == 404


async def test_expired_wrong_audience_wrong_issuer_none_and_unsigned_tokens_are_refused(auth_client):
    now = int(time.time())
    unsigned = jwt.encode(claims(), key=None, algorithm="none")
    refused = {
        "expired": jwt.encode(claims(exp=now - 60, iat=now - 120), JWT_SECRET, algorithm="HS256"),
        "no exp": jwt.encode(claims(exp=None), JWT_SECRET, algorithm="HS256"),
        "wrong audience": jwt.encode(claims(aud="someone-else"), JWT_SECRET, algorithm="HS256"),
        "wrong issuer": jwt.encode(claims(iss="https://evil.test/"), JWT_SECRET, algorithm="HS256"),
        "alg none": unsigned,
        "wrong secret": jwt.encode(claims(), "another-secret-of-at-least-32-bytes!!", algorithm="HS256"),
        "tampered": _tamper(jwt.encode(claims(), JWT_SECRET, algorithm="HS256")),
        "bad wallets claim": jwt.encode(claims(wallets="jwt:*"), JWT_SECRET, algorithm="HS256"),
    }
    for why, token in refused.items():
        response = await auth_client.get(f"/v1/wallet/{wid()}", headers=bearer(token))
        assert response.status == 401, why
        assert (await response.json())["error"] == "UnauthorizedError", why


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    data = json.loads(jwt.utils.base64url_decode(payload))
    data["scope"] = "*"
    forged = jwt.utils.base64url_encode(json.dumps(data).encode()).decode()
    return f"{header}.{forged}.{signature}"


@pytest.fixture
async def identity_provider(aiohttp_server: Any) -> Any:
    """A JWKS endpoint with one RSA key; ``.sign(claims)`` makes tokens with it."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    jwk |= {"kid": "k1", "alg": "RS256", "use": "sig"}
    fetches = []

    async def jwks(request: web.Request) -> web.Response:
        fetches.append(time.monotonic())
        return web.json_response({"keys": [jwk]})

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", jwks)
    server = await aiohttp_server(app)

    class Provider:
        url = str(server.make_url("/.well-known/jwks.json"))
        public_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        fetched = fetches

        @staticmethod
        def sign(payload: dict[str, Any]) -> str:
            return jwt.encode(payload, private, algorithm="RS256", headers={"kid": "k1"})

    return Provider


@pytest.fixture
async def idp_client(start_auth_api, auth_settings, identity_provider) -> Any:
    # The JWKS only: no HS256 secret, so an HS256 token cannot be accepted whatever its key.
    settings = replace(auth_settings, auth_jwks_url=identity_provider.url, auth_jwt_secret="")
    _, client = await start_auth_api(settings, "test-auth-idp")
    return client


async def test_an_rs256_token_from_the_jwks_is_accepted_and_cached(
    idp_client, identity_provider, monkeypatch
):
    token = identity_provider.sign(claims(scope="*"))
    wallet = wid()
    assert (
        await idp_client.post(f"/v1/wallet/{wallet}/deposit", json={"amount": 1}, headers=bearer(token))
    ).status == 200
    decodes = 0
    original = jwt.decode

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal decodes
        decodes += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    for _ in range(10):
        assert (await idp_client.get(f"/v1/wallet/{wallet}", headers=bearer(token))).status == 200
    assert decodes == 0  # verified once, then cached until its exp
    assert len(identity_provider.fetched) == 1


async def test_hs256_signed_with_the_public_key_and_unknown_kid_are_refused(idp_client, identity_provider):
    # The classic confusion attack: the public key (which anyone has) used as an HMAC secret.
    forged = _hmac_token(claims(scope="*"), identity_provider.public_pem)
    response = await idp_client.get(f"/v1/wallet/{wid()}", headers=bearer(forged))
    assert response.status == 401
    unknown_kid = jwt.encode(
        claims(), _other_rsa_key(), algorithm="RS256", headers={"kid": "not-in-the-jwks"}
    )
    assert (await idp_client.get(f"/v1/wallet/{wid()}", headers=bearer(unknown_kid))).status == 401


def _hmac_token(payload: dict[str, Any], secret: bytes) -> str:
    """HS256 by hand: PyJWT itself refuses to use a PEM public key as an HMAC secret."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(b'{"alg":"HS256","typ":"JWT","kid":"k1"}') + "." + b64(json.dumps(payload).encode())
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def _other_rsa_key() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


async def test_a_flood_of_unknown_kids_does_not_make_the_service_fetch_the_jwks_each_time(
    idp_client, identity_provider
):
    # Unknown kids cost one fetch per JWKS_MIN_REFRESH_SECONDS at most, not one per token: the
    # service must not become an amplifier against the identity provider.
    valid = identity_provider.sign(claims(scope="*"))
    assert (await idp_client.get(f"/v1/wallet/{wid()}", headers=bearer(valid))).status == 404
    other = _other_rsa_key()
    for n in range(20):
        token = jwt.encode(claims(scope="*"), other, algorithm="RS256", headers={"kid": f"unknown-{n}"})
        assert (await idp_client.get(f"/v1/wallet/{wid()}", headers=bearer(token))).status == 401
    assert len(identity_provider.fetched) == 1
