"""Per-request facts the replies need: the path and the request id (client's or generated)."""

from __future__ import annotations

import re
from contextvars import ContextVar
from dataclasses import dataclass

from aiohttp import web

from wallet.ids import correlation_id

MAX_REQUEST_ID_LENGTH = 255
# 1-255 visible ASCII characters: the key is echoed in a header and the logs and stored as text,
# so raw bytes, spaces and control characters are refused, not escaped.
REQUEST_ID_PATTERN = re.compile(r"[!-~]{1,255}", re.ASCII)
BAD_REQUEST_ID = "X-Request-ID must be 1-255 visible ASCII characters"


@dataclass(frozen=True, slots=True)
class RequestContext:
    path: str
    request_id: str
    idempotency_key: str | None  # the client's X-Request-ID, if it sent one
    bad_request_id: bool = False  # an X-Request-ID was sent but is not 1-255 visible ASCII


# aiohttp runs each request in its own task, so a context variable holds one request's context.
# (``request.get(...)`` goes through ``Mapping.get`` and a KeyError, visible in profiles: DESIGN.md §8.)
_current: ContextVar[tuple[web.Request, RequestContext] | None] = ContextVar("wallet_request", default=None)


def request_context(request: web.Request) -> RequestContext:
    """This request's context, made on first use (the same request id for the reply and the logs)."""
    current = _current.get()
    if current is not None and current[0] is request:
        return current[1]
    key = request.headers.get("X-Request-ID")
    key_ok = key is None or REQUEST_ID_PATTERN.fullmatch(key) is not None
    ctx = RequestContext(
        path=request.path,
        request_id=key if key and key_ok else correlation_id(),
        idempotency_key=key if key_ok else None,
        bad_request_id=not key_ok,
    )
    _current.set((request, ctx))
    return ctx
