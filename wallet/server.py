"""The processes: the API (HTTP server plus the wallet service), the outbox relay and the fraud
worker, each built by ``wallet.bootstrap`` and stopped cleanly on SIGTERM/SIGINT.

A dependency whose URL is not set is embedded (wallet/embedded.py); with no RABBITMQ_URL the fraud
worker runs here too, on the in-process bus."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal

from aiohttp import web

from wallet import bootstrap
from wallet.config import Settings
from wallet.embedded import Embedded
from wallet.http.serving import WalletAppRunner
from wallet.messaging.inprocess import InProcessBus

log = logging.getLogger(__name__)


def tune_garbage_collector() -> None:
    """Keep the cyclic GC off the hot path (DESIGN.md §8 has the figures).

    Start-up leaves many long-lived objects (libraries, app, pools) that every full collection
    would scan again. ``gc.freeze()`` moves them out of the collector's sight, and a larger young
    generation makes the per-request garbage (mostly acyclic, freed by reference counting) cost
    fewer passes.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT; then answer in-flight requests, stop every actor, exit."""
    stop = _stop_on_signals()  # from the start: embedded servers are stopped too
    embedded = await Embedded.start(settings)
    try:
        await _serve(embedded.settings, embedded.bus, stop)
    finally:
        await embedded.stop()


async def _serve(settings: Settings, bus: InProcessBus | None, stop: asyncio.Event) -> None:
    api = await bootstrap.start_api(settings, bus=bus)
    timeout = settings.shutdown_timeout_seconds
    runner = WalletAppRunner(api.app, settings, access_log=None, shutdown_timeout=timeout)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, backlog=1024)
    await site.start()
    tune_garbage_collector()
    log.info("listening on http://%s:%d", settings.host, settings.port)
    try:
        await stop.wait()
        log.info("shutting down: draining requests")
    finally:
        await runner.cleanup()  # stops accepting, waits for in-flight handlers
        await api.stop()
        log.info("stopped")


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def run_relay(settings: Settings) -> None:
    """``wallet relay``: the outbox relay as its own process (API instances then run with
    ``OUTBOX_RELAY_ENABLED=false``), so publishing costs no CPU in the request-serving process.
    Until SIGTERM/SIGINT."""
    stop = _stop_on_signals()
    relay = await bootstrap.start_relay(settings)
    log.info("outbox relay running (exchange %s)", settings.rabbitmq_exchange)
    try:
        await stop.wait()
    finally:
        await relay.stop()


async def run_worker(settings: Settings) -> None:
    """``wallet worker``: migrate, consume until SIGTERM or SIGINT, then stop cleanly."""
    await bootstrap.migrate_database(settings)
    worker = bootstrap.build_worker(settings)
    stop = _stop_on_signals()
    loop = asyncio.get_running_loop()
    start = loop.create_task(worker.start())
    stopped = loop.create_task(stop.wait())
    await asyncio.wait({start, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not start.done():  # a signal while still waiting for the broker
        start.cancel()
        await asyncio.gather(start, return_exceptions=True)
        return
    start.result()
    try:
        await stop.wait()
        log.info("fraud worker stopping")
    finally:
        await worker.stop()
        log.info("fraud worker stopped")
