"""Turning a raw request into validated values, or a 400 with a message a client can act on."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from aiohttp import web
from marshmallow import Schema
from marshmallow import ValidationError as SchemaError

from wallet.http.errors import validation_error
from wallet.http.schemas import WALLET_ID_PATTERN


def wallet_id_from(request: web.Request, name: str = "id") -> str:
    wallet_id = request.match_info[name]
    if not WALLET_ID_PATTERN.fullmatch(wallet_id):
        raise validation_error("wallet id must be 1-64 characters of [A-Za-z0-9_.:-]")
    return wallet_id


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not a number")


async def json_body(request: web.Request, schema: Schema) -> dict[str, Any]:
    """The body parsed with exact decimals (a float never appears) and validated by ``schema``."""
    raw = await request.read()
    if not raw.strip():
        data: Any = {}
    else:
        try:
            data = json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError):
            raise validation_error("body is not valid JSON") from None
    if not isinstance(data, dict):
        raise validation_error("body must be a JSON object")
    try:
        result: dict[str, Any] = schema.load(data)
    except SchemaError as exc:
        raise validation_error(_describe(exc.messages)) from None
    return result


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
    try:
        value = int(raw)
    except ValueError:
        raise validation_error(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise validation_error(f"{name} must be between {low} and {high}")
    return value
