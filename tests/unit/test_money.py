from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallet.domain.money import MAX_AMOUNT_CENTS, AmountError, parse_amount, to_json_number


@pytest.mark.parametrize(
    ("value", "cents"),
    [
        (1, 100),
        (Decimal("0.01"), 1),
        ("0.1", 10),
        ("100.10", 10010),
        (Decimal("1.500"), 150),
        ("1e2", 10000),
        (1_000_000_000_000, MAX_AMOUNT_CENTS),
    ],
)
def test_valid_amounts(value, cents):
    assert parse_amount(value) == cents


@pytest.mark.parametrize(
    "value",
    [
        0,
        -1,
        Decimal("-0.01"),
        Decimal("1.005"),
        "1.001",
        True,
        False,
        None,
        "abc",
        "",
        " 1",
        "NaN",
        "Infinity",
        1.5,
        [],
        {},
        1_000_000_000_000.01,
        Decimal("1000000000000.01"),
        "0",
    ],
)
def test_invalid_amounts(value):
    with pytest.raises(AmountError):
        parse_amount(value)


def test_zero_allowed_only_when_asked():
    assert parse_amount(0, allow_zero=True) == 0


@given(st.integers(min_value=0, max_value=10**15 - 1))
def test_json_number_renders_exact_two_place_decimal(cents):
    rendered = to_json_number(cents)
    assert Decimal(repr(rendered)) == Decimal(cents) / 100
    assert len(repr(rendered).partition(".")[2]) <= 2
