"""Exact money: amounts are integers of minor units (cents); Decimal only at the edges.

A float never touches an amount: JSON is parsed with ``parse_float=Decimal`` and amounts are
converted to cents here, after checking they have at most two decimal places.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

MINOR_UNITS_PER_MAJOR = 100
MAX_AMOUNT_CENTS = 1_000_000_000_000 * MINOR_UNITS_PER_MAJOR
# Balances stay below 10**15 cents (15 significant digits), so every balance renders exactly.
MAX_BALANCE_CENTS = 10**15 - 1
_CENT = Decimal(1) / MINOR_UNITS_PER_MAJOR


class AmountError(ValueError):
    """An amount that is not a positive number of cents within the limits."""


def parse_amount(value: object, *, allow_zero: bool = False) -> int:
    """Return the amount in cents, or raise AmountError with a message a client can act on."""
    if isinstance(value, bool) or value is None:
        raise AmountError("amount must be a number")
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, Decimal):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if not text or text != value:
            raise AmountError("amount must be a number")
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise AmountError("amount must be a number") from None
    else:
        raise AmountError("amount must be a number")
    if not number.is_finite():
        raise AmountError("amount must be a finite number")
    cents = number * MINOR_UNITS_PER_MAJOR
    if cents != cents.to_integral_value():
        raise AmountError("amount must have at most 2 decimal places")
    result = int(cents)
    if result < 0 or (result == 0 and not allow_zero):
        raise AmountError("amount must be greater than 0")
    if result > MAX_AMOUNT_CENTS:
        raise AmountError("amount must be at most 1000000000000")
    return result


def to_decimal(cents: int) -> Decimal:
    """The amount as an exact Decimal with two places."""
    return Decimal(cents) * _CENT


def to_json_number(cents: int) -> int | float:
    """The amount as a JSON number with no float artefacts.

    Whole amounts are ints. Others are floats: below 10**15 cents a value has at most 15
    significant digits, so the correctly rounded ``cents / 100`` has the exact two-place decimal
    as its shortest repr (100.1, never 100.09999).
    """
    if cents % MINOR_UNITS_PER_MAJOR == 0:
        return cents // MINOR_UNITS_PER_MAJOR
    if abs(cents) > MAX_BALANCE_CENTS:
        raise OverflowError("amount too large to render exactly")
    return cents / MINOR_UNITS_PER_MAJOR
