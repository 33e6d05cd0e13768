"""The aiohttp application factory."""

from __future__ import annotations

from aiohttp import web

from wallet.http import fraud_routes, health_routes, transfer_routes, wallet_routes
from wallet.http.errors import error_middleware
from wallet.http.metrics import setup_metrics
from wallet.http.openapi import setup_openapi
from wallet.http.rate_limit import rate_limiting
from wallet.service import WalletService


def create_app(service: WalletService) -> web.Application:
    """An app around a service the caller starts and stops (tests run two on one database)."""
    app = web.Application(client_max_size=64 * 1024)
    # Outermost first: metrics and the logging context see the final status; rate limit headers
    # go on every answer, errors included (rate limiting off: not installed at all).
    limit = rate_limiting(service.settings, service.read_side.redis)
    app.middlewares.extend(m for m in (setup_metrics(app, service), limit, error_middleware) if m is not None)
    app[wallet_routes.SERVICE] = service
    wallet_routes.add_routes(app)
    transfer_routes.add_routes(app)
    service.transfers.recovery_renderer = transfer_routes.recovery_renderer
    fraud_routes.add_routes(app)
    health_routes.add_routes(app)
    setup_openapi(app)  # last: documents every route registered by then
    return app
