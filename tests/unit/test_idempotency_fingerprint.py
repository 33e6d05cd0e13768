"""A request's idempotency fingerprint keeps the exact bytes it has always been computed from:
a retry sent across an upgrade must still match the fingerprint stored with its key."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from wallet.actors.messages import IdempotencyKey

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.text(),
    st.datetimes(timezones=st.just(UTC)),
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3)
)


def stored_fingerprint(operation: str, wallet_id: str, params: dict[str, Any]) -> str:
    """How the fingerprints already stored were made."""
    canonical = json.dumps([operation, wallet_id, params], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@given(st.text(), st.text(), st.dictionaries(st.text(), values, max_size=5))
def test_the_fingerprint_is_the_stored_form(operation: str, wallet_id: str, params: dict[str, Any]) -> None:
    key = IdempotencyKey.for_request("k", operation, wallet_id, params)
    assert key.fingerprint == stored_fingerprint(operation, wallet_id, params)


def test_the_fingerprint_of_a_deposit_and_a_transfer() -> None:
    deposit = {"amount": Decimal("12.50"), "currency": None, "description": "café ☕"}
    transfer = {"toWalletId": "b:2", "amount": Decimal("1"), "at": datetime(2026, 12, 7, tzinfo=UTC)}
    for operation, params in (("deposit", deposit), ("transfer", transfer)):
        key = IdempotencyKey.for_request("k", operation, "a:1", params)
        assert key.fingerprint == stored_fingerprint(operation, "a:1", params)
    # The same request in another key order is the same request.
    assert (
        IdempotencyKey.for_request(
            "k", "deposit", "a:1", {"currency": None, "amount": Decimal("1")}
        ).fingerprint
        == IdempotencyKey.for_request(
            "k", "deposit", "a:1", {"amount": Decimal("1"), "currency": None}
        ).fingerprint
    )


@given(st.text(), st.text(), st.integers())
def test_the_fingerprint_of_an_amount_only_body_is_the_stored_form(
    operation: str, wallet_id: str, amount: int
) -> None:
    # ``{"amount": n}`` takes a shortcut past the encoder; its bytes must be the encoder's.
    key = IdempotencyKey.for_request("k", operation, wallet_id, {"amount": amount})
    assert key.fingerprint == stored_fingerprint(operation, wallet_id, {"amount": amount})
    for other in ({"amount": True}, {"amount": amount, "currency": None}, {"amount": Decimal(amount)}):
        key = IdempotencyKey.for_request("k", operation, wallet_id, other)
        assert key.fingerprint == stored_fingerprint(operation, wallet_id, other)
