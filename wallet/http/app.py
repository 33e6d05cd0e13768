"""The aiohttp application factory."""

from __future__ import annotations

from aiohttp import web

from wallet.http import health_routes, transfer_routes, wallet_routes
from wallet.http.errors import error_middleware
from wallet.service import WalletService


def create_app(service: WalletService) -> web.Application:
    """An app around a service the caller starts and stops (tests run two on one database)."""
    app = web.Application(middlewares=[error_middleware], client_max_size=64 * 1024)
    app[wallet_routes.SERVICE] = service
    wallet_routes.add_routes(app)
    transfer_routes.add_routes(app)
    service.transfers.recovery_renderer = transfer_routes.recovery_renderer
    health_routes.add_routes(app)
    return app
