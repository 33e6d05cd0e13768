"""FastLoader must accept and refuse exactly what the marshmallow schema does."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from marshmallow import ValidationError

from wallet.http.schemas import (
    DepositRequest,
    LifecycleRequest,
    LimitsRequest,
    TransferRequest,
    WithdrawRequest,
)
from wallet.http.validation import FastLoader

SCHEMAS = [DepositRequest, WithdrawRequest, TransferRequest, LifecycleRequest, LimitsRequest]
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**13),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
    st.text(max_size=6),
    st.sampled_from(["USD", "eur", "1.50", "x" * 70, "ok-wallet"]),
)
bodies = st.dictionaries(
    st.sampled_from(["amount", "currency", "toWalletId", "reason", "dailyWithdrawalLimit", "other"]),
    values,
    max_size=3,
)


def outcome(loader, body):
    try:
        return "ok", loader.load(body)
    except ValidationError as exc:
        return "error", exc.messages


@pytest.mark.parametrize("schema_class", SCHEMAS)
@given(body=bodies)
def test_same_results_as_marshmallow(schema_class, body):
    schema = schema_class()
    assert outcome(FastLoader(schema), body) == outcome(schema, body)


def test_examples():
    assert FastLoader(DepositRequest()).load({"amount": Decimal("0.10")}) == {"amount": 10}
    assert FastLoader(LifecycleRequest()).load({}) == {"reason": ""}
