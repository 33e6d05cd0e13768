"""Running the service: HTTP server plus the wallet service, with a clean SIGTERM/SIGINT shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from wallet.config import Settings
from wallet.http.app import create_app
from wallet.service import WalletService

log = logging.getLogger(__name__)


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT; then answer in-flight requests, stop every actor, exit."""
    service = WalletService(settings)
    await service.start()
    app = create_app(service)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=settings.shutdown_timeout_seconds)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, backlog=1024)
    await site.start()
    log.info("listening on http://%s:%d", settings.host, settings.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("shutting down: draining requests")
    finally:
        await runner.cleanup()  # stops accepting, waits for in-flight handlers
        await service.stop()
        log.info("stopped")
