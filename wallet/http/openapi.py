"""The OpenAPI document (aiohttp-apispec, OpenAPI 2.0) at ``/api/openapi.json``, Swagger UI at ``/api``.

Handlers are documented with ``operation(...)`` (aiohttp-apispec's decorators underneath) next to
their code. The document is built when the app starts, from the routes the app has then, so routes
added by other modules are in it too: a route with no decorators gets its known description from
``KNOWN_ROUTES`` if it has one, else a generic one (its path parameters, a success and the error
body). Two fixes over aiohttp-apispec's own registration: a handler's documentation is copied, not
consumed, so a handler mounted under two prefixes (``/v1`` and none) or in two apps is documented
each time; and the HEAD twin of every GET route is left out.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.web_exceptions import NotAppKeyWarning
from aiohttp_apispec import (
    AiohttpApiSpec,
    docs,
    match_info_schema,
    querystring_schema,
    request_schema,
    response_schema,
)
from aiohttp_apispec.aiohttp_apispec import NAME_SWAGGER_DOCS, NAME_SWAGGER_SPEC, NAME_SWAGGER_STATIC
from aiohttp_apispec.utils import get_path
from marshmallow import RAISE, Schema

from wallet.http.context import REQUEST_ID_PATTERN
from wallet.http.schemas import (
    AlertsQuery,
    ErrorResponse,
    FraudAlertResponse,
    SagaPath,
    TransferRecordResponse,
    TransferRequest,
    TransferResponse,
    WalletPath,
)

F = TypeVar("F", bound=Callable[..., Any])

SPEC_URL = "/api/openapi.json"
UI_PATH = "/api"
STATIC_PATH = "/api/static"
TITLE = "Wallet service"
VERSION = "1.0.0"

ERROR_DESCRIPTIONS = {
    400: "Validation failed (bad JSON, amount, wallet id, unknown field, query parameter)",
    404: "Unknown wallet (or transfer)",
    409: "The same X-Request-ID is still in flight",
    408: "The body did not arrive in time",
    413: "Body too large",
    415: "The body is not application/json (UTF-8, no Content-Encoding)",
    422: "Business rule refused it (insufficient funds, wallet not active, limit, currency, key reuse)",
    429: "Rate limited: see Retry-After and the X-RateLimit-* headers",
    500: "Unexpected error (never a stack trace)",
    503: "A dependency is down or the command timed out",
}

# What any operation with a body may answer besides its own errors (wallet.http.validation).
BODY_ERRORS = (408, 413, 415)

REQUEST_ID_HEADER = {
    "in": "header",
    "name": "X-Request-ID",
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "pattern": f"^{REQUEST_ID_PATTERN.pattern}$",
    "required": False,
    "description": "Idempotency key (visible ASCII): the same key and request get the original answer again",
}


def error_responses(codes: Iterable[int]) -> dict[str, dict[str, Any]]:
    return {str(code): {"description": ERROR_DESCRIPTIONS[code], "schema": ErrorResponse} for code in codes}


def operation(
    *,
    summary: str,
    tags: Iterable[str] = ("wallet",),
    body: type[Schema] | None = None,
    path: type[Schema] | None = WalletPath,
    query: type[Schema] | None = None,
    response: Schema | type[Schema] | None = None,
    errors: Iterable[int] = (400, 429, 500),
    idempotent_key: bool = False,
    description: str = "",
    produces: Iterable[str] = ("application/json",),
    responses: dict[str, dict[str, Any]] | None = None,
) -> Callable[[F], F]:
    """Document a handler: its body, path and query parameters, success and error responses."""

    def decorate(handler: F) -> F:
        parameters = [dict(REQUEST_ID_HEADER)] if idempotent_key else []
        handler = docs(
            tags=list(tags),
            summary=summary,
            description=description,
            parameters=parameters,
            produces=list(produces),
            responses=error_responses(sorted({*errors, *(BODY_ERRORS if body else ())})) | (responses or {}),
        )(handler)
        if body is not None:
            handler = request_schema(body, required=True)(handler)
        if path is not None:
            handler = match_info_schema(path)(handler)
        if query is not None:
            handler = querystring_schema(query)(handler)
        if response is not None:
            handler = response_schema(response, 200, description="Success")(handler)
        return handler

    return decorate


def _operation_data(**kwargs: Any) -> dict[str, Any]:
    """What ``operation`` attaches to a handler, for a route whose handler lacks it."""

    async def handler(request: web.Request) -> web.StreamResponse:  # pragma: no cover
        raise NotImplementedError

    data: dict[str, Any] = operation(**kwargs)(handler).__apispec__  # type: ignore[attr-defined]
    return data


# Routes of other modules, documented here until their handlers carry ``operation(...)``.
# Keyed by (method, canonical path without the /v1 prefix).
KNOWN_ROUTES: dict[tuple[str, str], Callable[[], dict[str, Any]]] = {
    ("post", "/wallet/{id}/transfer"): lambda: _operation_data(
        summary="Transfer to another wallet (a saga; the destination is created if new)",
        tags=["transfers"],
        body=TransferRequest,
        response=TransferResponse,
        errors=(400, 404, 409, 422, 429, 500, 503),
        idempotent_key=True,
    ),
    ("get", "/transfers/{saga_id}"): lambda: _operation_data(
        summary="A transfer's saga: state, amounts, wallets, timestamps, failure reason",
        tags=["transfers"],
        path=SagaPath,
        response=TransferRecordResponse,
        errors=(400, 404, 429, 500),
    ),
    ("get", "/fraud/alerts"): lambda: _operation_data(
        summary="Fraud alerts, newest first (optionally of one wallet)",
        tags=["fraud"],
        path=None,
        query=AlertsQuery,
        response=FraudAlertResponse(many=True),
        errors=(400, 429, 500),
    ),
}


def _generic(view: Any, method: str, path: str) -> dict[str, Any]:
    doc = (getattr(view, "__doc__", None) or "").strip().splitlines()
    return {
        "schemas": [],
        "parameters": [],
        "summary": doc[0] if doc else f"{method.upper()} {path}",
        "tags": [path.removeprefix("/v1").strip("/").split("/", 1)[0] or "other"],
        "produces": ["application/json"],
        "responses": {
            200: {"description": "Success"},
            "default": {"description": "Error (the body of API.md)", "schema": ErrorResponse},
        },
    }


class WalletApiSpec(AiohttpApiSpec):  # type: ignore[misc]
    def _register_route(self, route: web.AbstractRoute, method: str, view: Any) -> None:
        if method == "head" or route.name in (NAME_SWAGGER_SPEC, NAME_SWAGGER_DOCS, NAME_SWAGGER_STATIC):
            return
        url_path = get_path(route)
        if not url_path or url_path.startswith(UI_PATH) or isinstance(route.resource, web.StaticResource):
            return
        own = getattr(view, "__apispec__", None)
        if own is None:
            known = KNOWN_ROUTES.get((method, url_path.removeprefix("/v1")))
            data = known() if known is not None else _generic(view, method, url_path)
        else:  # a copy: aiohttp-apispec consumes what it documents
            data = {
                **own,
                "schemas": list(own["schemas"]),
                "parameters": list(own["parameters"]),
                "responses": dict(own["responses"]),
            }
        self._update_paths(data, method, self.prefix + url_path)


def setup_openapi(app: web.Application) -> None:
    """Serve the document and Swagger UI; the document is built now, from every route the app
    has: call this last."""
    with warnings.catch_warnings():  # aiohttp-apispec keeps its state under plain string keys
        warnings.simplefilter("ignore", NotAppKeyWarning)
        _spec(app)


def _spec(app: web.Application) -> None:
    spec = WalletApiSpec(
        url=SPEC_URL,
        app=app,
        in_place=True,
        swagger_path=UI_PATH,
        static_path=STATIC_PATH,
        title=TITLE,
        version=VERSION,
        info={
            "description": "Actor-based wallet service: deposits, withdrawals, transfers (sagas), "
            "balances from a Redis cache, history, health and metrics. Errors share one body "
            "(ErrorResponse); amounts are exact decimals with at most two places."
        },
        produces=["application/json"],
        consumes=["application/json"],
    )
    document: dict[str, Any] = app["swagger_dict"]
    strict = {cls.__name__ for cls in _all_subclasses(Schema) if _refuses_unknown(cls)}
    for name, definition in document.get("definitions", {}).items():
        if name in strict:  # the body schemas refuse unknown fields
            definition["additionalProperties"] = False
    del spec


def _all_subclasses(cls: type) -> set[type]:
    found: set[type] = set(cls.__subclasses__())
    for sub in list(found):
        found |= _all_subclasses(sub)
    return found


def _refuses_unknown(cls: type) -> bool:
    return getattr(getattr(cls, "Meta", None), "unknown", None) == RAISE
