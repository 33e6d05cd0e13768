"""Turning a raw request into validated values, or a 400 with a message a client can act on."""

from __future__ import annotations

import asyncio
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import hdrs, web
from marshmallow import Schema, missing
from marshmallow import ValidationError as SchemaError

from wallet.domain.money import AmountError, parse_amount
from wallet.http.errors import UNSUPPORTED_MEDIA_TYPE, ApiError, validation_error
from wallet.http.schemas import WALLET_ID_PATTERN, Amount

DEFAULT_BODY_TIMEOUT_SECONDS = 10.0
# The app's bound on the wait for a body still arriving (settings.http_body_timeout_seconds).
BODY_TIMEOUT = web.AppKey("wallet_body_timeout", float)
_UTF8 = frozenset({"utf-8", "utf8"})


def wallet_id_from(request: web.Request, name: str = "id") -> str:
    wallet_id = request.match_info[name]
    if not WALLET_ID_PATTERN.fullmatch(wallet_id):
        raise validation_error("wallet id must be 1-64 characters of [A-Za-z0-9_.:-]")
    return wallet_id


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not a number")


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:  # an exponent beyond even Decimal's range (1e99999999999999999999)
        raise ValueError("number out of range") from None


class DuplicateKeyError(ValueError):
    """A JSON object names a key twice: parsers disagree on which one counts, so neither does."""


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise DuplicateKeyError(f"duplicate key {json.dumps(twice)}")
    return result


class FastLoader:
    """Loads a body with a marshmallow schema's own fields, without ``Schema.load``'s machinery.

    Same fields, parsers, validators and messages; unknown fields refused as with ``RAISE``. It
    skips hooks (the request schemas have none). Cheaper than ``Schema.load``, which showed in the
    profiles of deposits (DESIGN.md §8).
    """

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._fields = list(schema.load_fields.items())
        self._names = frozenset(name for name, _ in self._fields)
        # Does ``{"amount": x}`` alone load to ``{"amount": cents}``? (an Amount field, every
        # other field optional with no default: deposits and withdrawals)
        fields = dict(self._fields)
        amount = fields.pop("amount", None)
        self._amount_only = (
            isinstance(amount, Amount)
            and not amount.allow_zero
            and not amount.validators
            and all(not f.required and f.load_default is missing for f in fields.values())
        )

    def load_amount_only(self, raw: bytes) -> dict[str, Any] | None:
        """The commonest body, ``{"amount": <number or decimal string>}``, loaded without the JSON
        decoder and the field machinery; None when ``raw`` is anything else (or is refused: the
        full path then gives the error). The value reaching ``parse_amount`` is the one the
        full path gives it: an int or a ``Decimal`` for a JSON number, the text for a string."""
        if not self._amount_only:
            return None
        match = _AMOUNT_ONLY.fullmatch(raw)
        if match is None:
            return None
        number, text = match.groups()
        value: int | Decimal | str
        try:
            if number is not None:
                value = Decimal(number.decode()) if b"." in number else int(number)
            else:
                value = text.decode()
            return {"amount": parse_amount(value)}
        except (AmountError, ValueError):  # ValueError: an int too long to convert
            return None

    def load(self, data: dict[str, Any]) -> dict[str, Any]:
        errors: dict[str, Any] = {name: ["Unknown field."] for name in data if name not in self._names}
        result: dict[str, Any] = {}
        for name, field in self._fields:
            if name in data:
                try:
                    result[name] = field.deserialize(data[name], name, data)
                except SchemaError as exc:
                    errors[name] = exc.messages
            elif field.required:
                errors[name] = ["Missing data for required field."]
            elif field.load_default is not missing:
                default = field.load_default
                result[name] = default() if callable(default) else default
        if errors:
            raise SchemaError(errors)
        return result


# One decoder for all requests (json.loads with options builds a new one per call). Numbers
# become Decimals, integers too: ``int()`` of a long digit string is slow and capped at 4300
# digits; ``parse_amount`` reads a Decimal's size from its exponent.
_DECODER = json.JSONDecoder(
    parse_float=_decimal,
    parse_int=Decimal,
    parse_constant=_reject_constant,
    object_pairs_hook=_object_without_duplicates,
)

# ``{"amount": <JSON number without exponent> | "<digits and dots>"}`` with JSON whitespace only,
# short numbers only (longer ones are refused anyway; the full path words the error).
_WS = rb"[ \t\n\r]*"
_AMOUNT_ONLY = re.compile(
    _WS
    + rb"\{"
    + _WS
    + rb'"amount"'
    + _WS
    + rb":"
    + _WS
    + rb'(?:(-?(?:0|[1-9][0-9]{0,19})(?:\.[0-9]{1,20})?)|"([0-9.]{1,40})")'
    + _WS
    + rb"\}"
    + _WS
)


async def json_body(request: web.Request, schema: Schema | FastLoader) -> dict[str, Any]:
    """The body parsed with exact decimals (a float never appears) and validated by ``schema``."""
    raw = await _read_json(request)
    if isinstance(schema, FastLoader):
        shortcut = schema.load_amount_only(raw)
        if shortcut is not None:
            return shortcut
    if not raw.strip():
        data: Any = {}
    else:
        try:
            data = _DECODER.decode(raw.decode())
        except DuplicateKeyError as exc:
            raise validation_error(f"body is not valid JSON: {exc}") from None
        except (ValueError, UnicodeDecodeError):
            raise validation_error("body is not valid JSON") from None
        except RecursionError:
            raise validation_error("body is nested too deeply") from None
    if not isinstance(data, dict):
        raise validation_error("body must be a JSON object")
    try:
        result: dict[str, Any] = schema.load(data)  # type: ignore[assignment]
    except SchemaError as exc:
        raise validation_error(_describe(exc.messages)) from None
    return result


async def _read_json(request: web.Request) -> bytes:
    """The body, if it is JSON as sent: a body of another media type, charset or content coding
    is refused (415) rather than guessed at. A body still arriving is awaited for at most
    ``BODY_TIMEOUT`` seconds (408): a client sending a byte a second holds no handler for long."""
    if request.body_exists:
        encoding = request.headers.get(hdrs.CONTENT_ENCODING)
        if encoding is not None and encoding.strip().lower() != "identity":
            raise ApiError(
                415, UNSUPPORTED_MEDIA_TYPE, "Content-Encoding is not supported: send the body as is"
            )
        if not _is_json_utf8(request):
            raise ApiError(415, UNSUPPORTED_MEDIA_TYPE, "the body must be application/json (UTF-8)")
    try:
        if request.content.is_eof():  # all of it arrived with the headers (the common case)
            return await request.read()
        async with asyncio.timeout(request.app.get(BODY_TIMEOUT, DEFAULT_BODY_TIMEOUT_SECONDS)):
            return await request.read()
    except TimeoutError:
        raise ApiError(408, "RequestTimeoutError", "the body did not arrive in time") from None
    except web.RequestPayloadError:
        raise validation_error("the body could not be read as sent") from None


def _is_json_utf8(request: web.Request) -> bool:
    if request.headers.get(hdrs.CONTENT_TYPE) == "application/json":  # the commonest: no parsing
        return True
    return request.content_type == "application/json" and (request.charset or "utf-8") in _UTF8


def _describe(messages: Any) -> str:
    if isinstance(messages, dict):
        parts = []
        for field, problems in messages.items():
            text = "; ".join(problems) if isinstance(problems, list) else str(problems)
            parts.append(f"{field}: {text}")
        return ", ".join(parts)
    return str(messages)


def int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _QUERY_INTEGER.fullmatch(raw):
        raise validation_error(f"{name} must be an integer (ASCII digits)")
    value = int(raw)
    if not low <= value <= high:
        raise validation_error(f"{name} must be between {low} and {high}")
    return value


# Only what every parser reads alike: no "+", "_", spaces or other scripts' digits (int() takes them).
_QUERY_INTEGER = re.compile(r"-?[0-9]{1,19}", re.ASCII)
