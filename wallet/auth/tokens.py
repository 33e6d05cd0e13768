"""API key secrets: ``wk_<12 hex key id>_<43 url-safe chars>`` (32 random bytes). Pure.

Only the SHA-256 of the secret part is stored. A slow password hash is not needed: the secret
is 256 random bits, not something a person chose, so it cannot be guessed from its hash.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIX = "wk_"
KEY_ID_LENGTH = 12
SECRET_BYTES = 32
_SECRET_START = len(PREFIX) + KEY_ID_LENGTH + 1
_HEX = frozenset("0123456789abcdef")


def new_key_id() -> str:
    return secrets.token_hex(KEY_ID_LENGTH // 2)


def new_token(key_id: str) -> str:
    return f"{PREFIX}{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"


def secret_hash(token: str) -> bytes:
    # surrogateescape: a header's undecodable bytes arrive as lone surrogates; hash them, never raise
    return hashlib.sha256(token[_SECRET_START:].encode("utf-8", "surrogateescape")).digest()


def key_id_of(token: str) -> str | None:
    """The key id of a well-formed API key token, else None."""
    if len(token) <= _SECRET_START or not token.startswith(PREFIX) or token[_SECRET_START - 1] != "_":
        return None
    key_id = token[len(PREFIX) : _SECRET_START - 1]
    return key_id if _HEX.issuperset(key_id) else None


def matches(token: str, stored_hash: bytes) -> bool:
    return hmac.compare_digest(secret_hash(token), stored_hash)
