"""One entry point for both kinds of credential: API keys (``wk_...``) and JWTs (three parts)."""

from __future__ import annotations

import logging

from wallet.auth.jwt_verifier import JwtVerifier
from wallet.auth.key_verifier import MISS, ApiKeyVerifier, Miss
from wallet.auth.principal import Principal
from wallet.auth.tokens import PREFIX
from wallet.config import Settings
from wallet.persistence.api_key_store import ApiKeyStore

log = logging.getLogger(__name__)


class Authenticator:
    def __init__(self, keys: ApiKeyVerifier, jwts: JwtVerifier | None = None) -> None:
        self.keys = keys
        self.jwts = jwts if jwts is not None and jwts.enabled else None

    @classmethod
    def from_settings(cls, settings: Settings, store: ApiKeyStore) -> Authenticator:
        jwts = JwtVerifier(settings)
        if (settings.auth_jwks_url or settings.auth_jwt_secret) and not jwts.enabled:
            log.error("JWTs are refused: AUTH_JWT_ISSUER and AUTH_JWT_AUDIENCE must both be set")
        keys = ApiKeyVerifier(store, poll_seconds=settings.auth_revocation_poll_seconds)
        return cls(keys, jwts)

    def cached(self, credential: str) -> Principal | Miss | None:
        """From the caches alone (no I/O): the principal, None if refused, or MISS."""
        if credential.startswith(PREFIX):
            return self.keys.cached(credential)
        if self.jwts is not None and credential.count(".") == 2:
            return self.jwts.cached(credential) or MISS
        return None

    async def authenticate(self, credential: str) -> Principal | None:
        """The principal, or None if the credential is refused. Raises if PostgreSQL is needed and
        cannot be reached."""
        if credential.startswith(PREFIX):
            return await self.keys.verify(credential)
        if self.jwts is not None and credential.count(".") == 2:
            return await self.jwts.verify(credential)
        return None

    def start(self) -> None:
        self.keys.start()

    async def stop(self) -> None:
        await self.keys.stop()
        if self.jwts is not None:
            await self.jwts.close()
