"""Per-request facts the replies need: the path and the request id (client's or generated)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from wallet.ids import correlation_id

MAX_REQUEST_ID_LENGTH = 255


@dataclass(frozen=True, slots=True)
class RequestContext:
    path: str
    request_id: str
    idempotency_key: str | None  # the client's X-Request-ID, if it sent one


CONTEXT = web.RequestKey("wallet_context", RequestContext)
BAD_REQUEST_ID = web.RequestKey("wallet_bad_request_id", bool)


def request_context(request: web.Request) -> RequestContext:
    ctx = request.get(CONTEXT)
    if ctx is None:
        key = request.headers.get("X-Request-ID")
        key_ok = not (key is not None and not 0 < len(key) <= MAX_REQUEST_ID_LENGTH)
        ctx = RequestContext(
            path=request.path,
            request_id=key if key and key_ok else correlation_id(),
            idempotency_key=key if key_ok else None,
        )
        request[CONTEXT] = ctx
        if not key_ok:
            request[BAD_REQUEST_ID] = True
    return ctx
