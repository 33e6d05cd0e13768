"""Wallet patterns, scopes and API key tokens (wallet.auth.principal, wallet.auth.tokens)."""

from __future__ import annotations

import pytest

from wallet.auth.principal import (
    ANONYMOUS,
    InvalidPatternError,
    Principal,
    WalletPatterns,
    parse_scopes,
    request_id_of,
)
from wallet.auth.tokens import key_id_of, matches, new_key_id, new_token, secret_hash


def test_patterns_exact_prefix_everything_and_none():
    patterns = WalletPatterns.parse(["tenant-a:*", "shared-1"])
    assert patterns.allows("tenant-a:1") and patterns.allows("shared-1")
    assert (
        not patterns.allows("tenant-b:1")
        and not patterns.allows("shared-10")
        and not patterns.allows("tenant-a")
    )
    assert WalletPatterns.parse(["*"]).allows("anything")
    assert not WalletPatterns.parse([]).allows("anything")  # no patterns: no wallet
    assert patterns.as_list() == ["shared-1", "tenant-a:*"]
    for bad in ("a*b", "*x", "bad id", "", "a" * 65, "x**"):
        with pytest.raises(InvalidPatternError):
            WalletPatterns.parse([bad])


def test_scopes_are_checked_and_star_allows_all():
    assert parse_scopes(["wallets:read", ""]) == {"wallets:read"}
    with pytest.raises(ValueError, match="unknown scopes"):
        parse_scopes(["wallets:reed"])
    p = Principal("api_key", "k", "n", frozenset({"*"}), WalletPatterns(), "k:k")
    assert p.has("ops:read") and not p.may_touch("w")
    assert p.actor == {"type": "api_key", "id": "k", "name": "n"}


def test_idempotency_keys_are_scoped_per_principal():
    p = Principal("api_key", "0123456789ab", "n", frozenset(), WalletPatterns(), "k:0123456789ab")
    assert p.scoped_key("req|1") == "k:0123456789ab|req|1"
    assert request_id_of(p.scoped_key("req|1")) == "req|1"
    assert ANONYMOUS.scoped_key("req|1") == "req|1" and request_id_of("req|1") == "req|1"


def test_tokens_carry_their_key_id_and_only_the_hash_checks_them():
    key_id = new_key_id()
    token = new_token(key_id)
    assert key_id_of(token) == key_id and len(token) >= 3 + 12 + 1 + 43
    assert matches(token, secret_hash(token)) and not matches(token[:-1] + "x", secret_hash(token))
    for bad in (
        "",
        "wk_",
        "wk_0123456789ab",
        "wk_0123456789abXsecret",
        "wk_ZZZZZZZZZZZZ_secret",
        "xx_0123456789ab_s",
    ):
        assert key_id_of(bad) is None, bad


def test_hostile_token_text_never_raises():
    for token in ("wk_0123456789ab_\udcff\udcfe", "wk_0123456789ab_é" * 100, "wk_0123456789ab_\x00"):
        assert key_id_of(token) == "0123456789ab"
        assert not matches(token, secret_hash("wk_0123456789ab_other"))
