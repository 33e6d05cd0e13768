"""The OpenAPI document's security: a bearer credential on every route but the open ones, so
Swagger UI at ``/api`` shows the Authorize button; 401 and 403 documented where they can occur."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from wallet.http.auth import policy_for

SCHEME = "bearer"
SECURITY_DEFINITION = {
    "type": "apiKey",  # OpenAPI 2.0 has no bearer scheme: the header is typed whole
    "in": "header",
    "name": "Authorization",
    "description": "`Bearer <credential>`: an API key (`wallet keys create`) or a JWT from the"
    " identity provider",
}
_ERROR = {"$ref": "#/definitions/ErrorResponse"}
AUTH_RESPONSES = {
    "401": {"description": "No, malformed, unknown, revoked or expired credential", "schema": _ERROR},
    "403": {"description": "The credential lacks the route's scope", "schema": _ERROR},
}


def document_security(app: web.Application) -> None:
    """Add the security definition and each operation's requirement (call after setup_openapi)."""
    document: dict[str, Any] = app["swagger_dict"]  # aiohttp-apispec keeps it under a plain key
    document["securityDefinitions"] = {SCHEME: SECURITY_DEFINITION}
    document["security"] = [{SCHEME: []}]
    for path, operations in document.get("paths", {}).items():
        for method, op in operations.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            if policy_for(method.upper(), path).open:
                op["security"] = []
            else:
                op["responses"] = {**AUTH_RESPONSES, **op["responses"]}
                produces = op.get("produces")
                if produces is not None and "application/json" not in produces:
                    op["produces"] = [*produces, "application/json"]  # the refusals' body (/metrics)
