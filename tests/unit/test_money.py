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
        ("1.", 100),
        (".5", 50),
        (Decimal("1.0000000000000000000000000000000000000"), 100),
        (Decimal("0.01000"), 1),
        (Decimal("1E+11"), 10**13),
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
        # only ASCII decimals: what every gateway in front reads alike
        "\u0661\u0662\u0663",
        "\uff11\uff12",
        "1_000",
        "+5",
        "5 ",
        "1e999999999999",
        "1" * 65,
        # more than two places beyond the context's 28 digits (once rounded away)
        Decimal("1.0000000000000000000000000001"),
        # sizes read from the exponent, never expanded
        Decimal("1E+300000"),
        Decimal("-1E+300000"),
        Decimal("1E-300000"),
        Decimal("9E+999999"),
        10**4000,
        -(10**4000),
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


def test_huge_exponents_cost_nothing():
    import time

    started = time.perf_counter()
    for value in (Decimal("1E+999999"), "1e999999999", Decimal("1E+300000"), 10**4000):
        with pytest.raises(AmountError, match="at most 1000000000000"):
            parse_amount(value)
    assert time.perf_counter() - started < 0.05
