"""FastLoader must accept and refuse exactly what the marshmallow schema does."""

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from wallet.http.schemas import (
    DepositRequest,
    LifecycleRequest,
    LimitsRequest,
    TransferRequest,
    WithdrawRequest,
)
from wallet.http.validation import _DECODER, FastLoader

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
@settings(deadline=None)
@given(body=bodies)
def test_same_results_as_marshmallow(schema_class, body):
    schema = schema_class()
    assert outcome(FastLoader(schema), body) == outcome(schema, body)


def test_examples():
    assert FastLoader(DepositRequest()).load({"amount": Decimal("0.10")}) == {"amount": 10}
    assert FastLoader(LifecycleRequest()).load({}) == {"reason": ""}


whitespace = st.sampled_from(["", "", "", "", " ", "\n", "\t", "\r", "\x0c"])  # mostly JSON whitespace
amount_texts = st.one_of(
    st.from_regex(r"-?[0-9]{1,14}(\.[0-9]{1,3})?([eE][+-]?[0-9])?", fullmatch=True),
    st.from_regex(r"[1-9][0-9]{0,12}(\.[0-9]{1,2})?", fullmatch=True),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
    st.sampled_from(["0", "00", "01", "1.", ".5", "1..2", "0.00", "1000000000000", "1000000000000.01"]),
    st.integers(10**12, 10**40).map(str),  # beyond the maximum, and beyond the shortcut's digits
    # what a gateway in front would read differently, or what took seconds to expand
    st.sampled_from(["\u0661\u0662\u0663", "\uff11\uff12", "1_000", "+5", "1e300000", "9e-999999"]),
    st.from_regex(r"[0-9\u0660-\u0669\uff10-\uff19_]{1,6}", fullmatch=True),
)
raw_bodies = st.builds(
    lambda ws, amount, quoted, extra: (
        f'{ws[0]}{{{ws[1]}"amount"{ws[2]}:{ws[3]}{chr(34) if quoted else ""}{amount}'
        f"{chr(34) if quoted else ''}{ws[4]}{extra}}}{ws[5]}"
    ).encode(),
    st.lists(whitespace, min_size=6, max_size=6),
    amount_texts,
    st.booleans(),
    st.sampled_from(
        ["", "", "", ', "currency": "EUR"', ', "other": 1', ', "amount": 5', ', "\\u0061mount": 1']
    ),
)


@pytest.mark.parametrize("schema_class", SCHEMAS)
@settings(max_examples=300, deadline=None)
@given(raw=raw_bodies)
def test_the_amount_only_shortcut_agrees_with_the_full_path(schema_class, raw):
    """Where the shortcut answers, the JSON decoder and the schema give the same result."""
    loader = FastLoader(schema_class())
    shortcut = loader.load_amount_only(raw)
    if shortcut is None:
        return
    try:
        decoded = _DECODER.decode(raw.decode())
    except ValueError as exc:  # duplicate keys, a number out of range: the shortcut must not answer
        raise AssertionError(f"the shortcut answered {shortcut} where the full path refuses: {exc}") from None
    assert outcome(loader, decoded) == ("ok", shortcut)


def test_the_shortcut_answers_the_bench_and_client_bodies():
    deposit = FastLoader(DepositRequest())
    assert deposit.load_amount_only(b'{"amount": 0.01}') == {"amount": 1}
    assert deposit.load_amount_only(b'{"amount":"12.50"}') == {"amount": 1250}
    assert deposit.load_amount_only(b'{"amount": 01}') is None  # not JSON: the decoder refuses it
    assert deposit.load_amount_only(b'{"amount": 0.001}') is None  # refused: the full path's message
    assert FastLoader(TransferRequest()).load_amount_only(b'{"amount": 1}') is None  # toWalletId missing
    assert deposit.load_amount_only(b'{"amount": ' + b"1" * 5000 + b"}") is None  # the full path: 400


def test_the_shortcut_and_the_full_path_refuse_the_same_loose_bodies():
    deposit = FastLoader(DepositRequest())
    for raw in (
        b'{"amount": 1, "amount": 1000}',
        b'{"amount": "1_000"}',
        '{"amount": "\u0661\u0662\u0663"}'.encode(),
        b'{"amount": 1e300000}',
        b'{"amount": "+5"}',
    ):
        assert deposit.load_amount_only(raw) is None, raw
        try:
            result = outcome(deposit, _DECODER.decode(raw.decode()))
        except ValueError:
            continue  # refused by the decoder
        assert result[0] == "error", raw
