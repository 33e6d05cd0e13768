"""The aiohttp application factory."""

from __future__ import annotations

from aiohttp import web

from wallet.auth.authenticator import Authenticator
from wallet.http import fraud_routes, health_routes, transfer_routes, wallet_routes
from wallet.http.auth import authentication
from wallet.http.auth_docs import document_security
from wallet.http.errors import answer_errors
from wallet.http.metrics import setup_metrics
from wallet.http.openapi import setup_openapi
from wallet.http.rate_limit import rate_limiting
from wallet.http.validation import BODY_TIMEOUT
from wallet.service import WalletService


def create_app(service: WalletService, authenticator: Authenticator | None) -> web.Application:
    """An app around a service the caller starts and stops (tests run two on one database).
    ``authenticator``: who may call what (wallet.http.auth); None only with AUTH_ENABLED=false."""
    app = web.Application(client_max_size=64 * 1024)
    # One middleware (wallet.http.chain): metrics and the logging context outermost, so they see
    # the final status; then authentication (wallet.http.auth; off: not in the chain at all);
    # then the rate limit, per principal (its headers go on every answer, errors included; off:
    # not in the chain at all); then error answers around the route's handler.
    inner = rate_limiting(service.settings, service.read_side.redis, then=answer_errors) or answer_errors
    if authenticator is not None:
        inner = authentication(service.settings, authenticator, service.read_side.redis, then=inner)
    app.middlewares.append(setup_metrics(app, service, inner))
    app[wallet_routes.SERVICE] = service
    app[BODY_TIMEOUT] = service.settings.http_body_timeout_seconds
    wallet_routes.add_routes(app)
    transfer_routes.add_routes(app)
    fraud_routes.add_routes(app)
    health_routes.add_routes(app)
    setup_openapi(app)  # last: documents every route registered by then
    document_security(app)
    return app
