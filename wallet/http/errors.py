"""The chain step that gives every failure API.md's error body (``wallet.service.replies``)."""

from __future__ import annotations

import json
import logging

from aiohttp import web

from wallet.http.chain import Handler
from wallet.http.context import request_context
from wallet.service.replies import error_body

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A request the API refuses before it reaches a wallet (validation, unknown route, ...)."""

    def __init__(self, status: int, name: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.name = name
        self.message = message


def validation_error(message: str) -> ApiError:
    return ApiError(400, "ValidationError", message)


def error_response(request: web.Request, status: int, name: str, message: str) -> web.Response:
    ctx = request_context(request)
    body = error_body(status, name, message, ctx.path, ctx.request_id)
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/json",
        headers={"X-Request-ID": ctx.request_id},
    )


UNSUPPORTED_MEDIA_TYPE = "UnsupportedMediaTypeError"
HTTP_NAMES = {
    400: "BadRequestError",
    404: "NotFoundError",
    408: "RequestTimeoutError",
    405: "MethodNotAllowedError",
    413: "PayloadTooLargeError",
    415: UNSUPPORTED_MEDIA_TYPE,
    431: "RequestHeaderFieldsTooLargeError",
}
# Headers of an aiohttp HTTPException that its error body keeps (405's Allow, 413's none, ...).
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


async def answer_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A step of the chain (``wallet.http.chain``): every failure as API.md's error body."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(request, exc.status, exc.name, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        name = HTTP_NAMES.get(exc.status, "HttpError")
        response = error_response(request, exc.status, name, exc.reason)
        for header in _KEPT_HEADERS:
            if header in exc.headers:
                response.headers[header] = exc.headers[header]
        return response
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(request, 500, "InternalServerError", "unexpected error")
