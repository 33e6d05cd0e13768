"""JWTs from an identity provider (PyJWT): pinned algorithms, ``iss``/``aud``/``exp``/``sub`` required.

Keys: the provider's JWKS (``AUTH_JWKS_URL``), fetched with aiohttp (PyJWT's own ``PyJWKClient``
uses urllib and would block the event loop) and cached; fetched again when a token names an
unknown ``kid`` (at most every ``JWKS_MIN_REFRESH_SECONDS``) or after ``JWKS_TTL_SECONDS``. For
development, ``AUTH_JWT_SECRET`` accepts HS256 tokens signed with it. A token's ``alg`` must be
one of those configured for its key source: ``none`` never, and HS256 only with the secret (so
a token "signed" with the public key as an HMAC secret is refused).

Claims: ``sub`` is the principal, ``scope`` its space-separated scopes (unknown ones ignored:
providers add their own), ``wallets`` the list of wallet patterns it may touch.

Verified tokens are cached until their ``exp`` (bounded): a hot client pays the signature check
once, not on every request.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any

import aiohttp
import jwt

from wallet.auth.principal import SCOPES, InvalidPatternError, Principal, WalletPatterns
from wallet.config import Settings

log = logging.getLogger(__name__)

JWKS_TTL_SECONDS = 300.0
JWKS_MIN_REFRESH_SECONDS = 30.0
JWKS_FETCH_TIMEOUT_SECONDS = 5.0
LEEWAY_SECONDS = 5
MAX_CACHED_TOKENS = 10_000
_SYMMETRIC = "HS256"


class JwtVerifier:
    def __init__(self, settings: Settings, *, max_cached: int = MAX_CACHED_TOKENS) -> None:
        self._issuer = settings.auth_jwt_issuer
        self._audience = settings.auth_jwt_audience
        self._secret = settings.auth_jwt_secret
        self._jwks_url = settings.auth_jwks_url
        self._asymmetric = frozenset(a for a in settings.auth_jwt_algorithms if a != _SYMMETRIC)
        self._max_cached = max_cached
        self._verified: dict[str, Principal] = {}
        self._keys: dict[str, jwt.PyJWK] = {}
        self._keys_fetched = -1e9
        self._fetch_lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    @property
    def enabled(self) -> bool:
        """JWTs are accepted only with a key source and both the issuer and audience configured."""
        return bool((self._secret or self._jwks_url) and self._issuer and self._audience)

    # -- the request path --------------------------------------------------------------------

    def cached(self, token: str) -> Principal | None:
        """A token verified before and not expired since, else None (then call ``verify``)."""
        principal = self._verified.get(token)
        if principal is None:
            return None
        if principal.expires_at is not None and principal.expires_at <= time.time():
            del self._verified[token]
            return None
        return principal

    async def verify(self, token: str) -> Principal | None:
        """The token's principal, or None if it is refused for any reason."""
        principal = self.cached(token)
        if principal is not None:
            return principal
        try:
            header = jwt.get_unverified_header(token)
            key = await self._key_for(header)
            if key is None:
                return None
            claims = jwt.decode(
                token,
                key,
                algorithms=[header["alg"]],
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
            principal = self._principal(claims)
        except (jwt.InvalidTokenError, InvalidPatternError, KeyError, TypeError, ValueError):
            return None
        if len(self._verified) >= self._max_cached:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = principal
        return principal

    async def _key_for(self, header: dict[str, Any]) -> Any:
        alg = header.get("alg")
        if alg == _SYMMETRIC:
            return self._secret or None
        if alg not in self._asymmetric or not self._jwks_url:
            return None
        kid = header.get("kid")
        jwk = self._keys.get(kid) if isinstance(kid, str) else None
        stale = time.monotonic() - self._keys_fetched
        if (jwk is None and stale > JWKS_MIN_REFRESH_SECONDS) or stale > JWKS_TTL_SECONDS:
            await self._refresh_keys()
            jwk = self._keys.get(kid) if isinstance(kid, str) else None
        return None if jwk is None else jwk.key

    def _principal(self, claims: dict[str, Any]) -> Principal:
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub:
            raise ValueError("sub must be a non-empty string")
        scope = claims.get("scope", "")
        scopes = frozenset(s for s in scope.split() if s in SCOPES) if isinstance(scope, str) else frozenset()
        wallets = claims.get("wallets") or []
        if not isinstance(wallets, list) or not all(isinstance(w, str) for w in wallets):
            raise ValueError("wallets must be a list of patterns")
        tag = hashlib.sha256(f"{claims['iss']}\x00{sub}".encode()).hexdigest()[:16]
        name = claims.get("name")
        return Principal(
            "jwt",
            sub,
            name if isinstance(name, str) and name else sub,
            scopes,
            WalletPatterns.parse(wallets),
            tag=f"j:{tag}",
            expires_at=float(claims["exp"]),
        )

    # -- the key set -------------------------------------------------------------------------

    async def _refresh_keys(self) -> None:
        async with self._fetch_lock:
            if time.monotonic() - self._keys_fetched < 1.0:
                return  # another request just fetched them
            self._keys_fetched = time.monotonic()
            try:
                if self._session is None:
                    self._session = aiohttp.ClientSession(
                        timeout=aiohttp.ClientTimeout(total=JWKS_FETCH_TIMEOUT_SECONDS)
                    )
                async with self._session.get(self._jwks_url) as response:
                    response.raise_for_status()
                    document = await response.json(content_type=None)
                keys = jwt.PyJWKSet.from_dict(document).keys
            except Exception as exc:
                log.warning("could not fetch the JWKS from %s: %r", self._jwks_url, exc)
                return
            self._keys = {k.key_id: k for k in keys if k.key_id}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
