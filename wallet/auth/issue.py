"""Issuing an API key: a random secret, stored only as its hash; the token is returned once."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from wallet.auth.principal import WalletPatterns, parse_scopes
from wallet.auth.tokens import new_key_id, new_token, secret_hash
from wallet.persistence.api_key_store import ApiKeyRecord, ApiKeyStore


async def issue_key(
    store: ApiKeyStore,
    name: str,
    scopes: Iterable[str],
    wallets: Iterable[str],
    expires_in_days: float | None = None,
) -> tuple[ApiKeyRecord, str]:
    """Store a new key; return its record and its token (the only time the secret exists in
    the clear). Raises ValueError for unknown scopes, bad wallet patterns or a bad name."""
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise ValueError("a key's name is 1-200 characters")
    if expires_in_days is not None and expires_in_days <= 0:
        raise ValueError("--expires-in-days must be positive")
    checked_scopes = sorted(parse_scopes(scopes))
    if not checked_scopes:
        raise ValueError("give at least one scope")
    patterns = WalletPatterns.parse(wallets).as_list()
    key_id = new_key_id()
    token = new_token(key_id)
    expires_at = None
    if expires_in_days is not None:
        expires_at = datetime.now(UTC) + timedelta(days=expires_in_days)
    record = ApiKeyRecord(
        key_id, name, secret_hash(token), tuple(checked_scopes), tuple(patterns), None, expires_at
    )
    await store.insert(record)
    return record, token
