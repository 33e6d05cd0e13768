"""Exact money: amounts are integers of minor units (cents); Decimal only at the edges.

A float never touches an amount: JSON is parsed with ``parse_float=Decimal`` and amounts are
converted to cents here, after checking they have at most two decimal places.
"""

from __future__ import annotations

import re
from decimal import Decimal

MINOR_UNITS_PER_MAJOR = 100
MAX_AMOUNT_MAJOR = 1_000_000_000_000
MAX_AMOUNT_CENTS = MAX_AMOUNT_MAJOR * MINOR_UNITS_PER_MAJOR
# Balances stay below 10**15 cents (15 significant digits), so every balance renders exactly.
MAX_BALANCE_CENTS = 10**15 - 1
_CENT = Decimal(1) / MINOR_UNITS_PER_MAJOR
_MAX_INTEGER_DIGITS = 13  # 1000000000000 has 13
# A decimal string: ASCII digits, "." and an exponent only (Decimal() alone also takes other
# scripts' digits, "_", "+", spaces, NaN and Infinity). Longer texts are refused unread.
_DECIMAL_TEXT = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]{1,9})?", re.ASCII)
_MAX_TEXT_LENGTH = 64


class AmountError(ValueError):
    """An amount that is not a positive number of cents within the limits."""


def parse_amount(value: object, *, allow_zero: bool = False) -> int:
    """Return the amount in cents, or raise AmountError with a message a client can act on.

    The size is read from the exponent (``adjusted()``) before any arithmetic: ``1e300000``
    costs no more than ``1`` (expanding it took seconds of the event loop), and what follows
    works on at most 13 integer digits, exactly. A string is an ASCII decimal (no other scripts'
    digits, no ``_``, no sign but ``-``, no spaces), so that a gateway in front reads the same."""
    if type(value) is int and 0 < value <= MAX_AMOUNT_MAJOR:  # the common case, at once
        return value * MINOR_UNITS_PER_MAJOR
    number = value if type(value) is Decimal else _as_decimal(value)
    if not number.is_finite():
        raise AmountError("amount must be a finite number")
    if number and number.adjusted() >= _MAX_INTEGER_DIGITS:  # |number| >= 10**13, any digits
        if number.is_signed():
            raise AmountError("amount must be greater than 0")
        raise AmountError("amount must be at most 1000000000000")
    # Exact comparisons: no context precision can round a third decimal place away.
    cents_value = number.quantize(_CENT)
    if cents_value != number:
        raise AmountError("amount must have at most 2 decimal places")
    result = int(cents_value.scaleb(2))
    if result < 0 or (result == 0 and not allow_zero):
        raise AmountError("amount must be greater than 0")
    if result > MAX_AMOUNT_CENTS:
        raise AmountError("amount must be at most 1000000000000")
    return result


def _as_decimal(value: object) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise AmountError("amount must be a number")
    if isinstance(value, int):
        if value.bit_length() > 64:  # huge: refused before a slow conversion (sign decides the message)
            return Decimal(-1 if value < 0 else 10**20)
        return Decimal(value)
    if isinstance(value, Decimal):
        return value
    if isinstance(value, str):
        if len(value) > _MAX_TEXT_LENGTH or not _DECIMAL_TEXT.fullmatch(value):
            raise AmountError("amount must be a number")
        return Decimal(value)
    raise AmountError("amount must be a number")


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
