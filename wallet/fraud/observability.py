"""The fraud worker's metrics and its small HTTP server (``FRAUD_WORKER_PORT``; 0: none).

- ``/metrics``: Prometheus text. ``wallet_fraud_events_total{outcome}`` (processed, duplicate,
  failed), ``wallet_fraud_alerts_total``, ``wallet_fraud_batch_size`` and
  ``wallet_fraud_batch_seconds`` (histograms), ``wallet_fraud_lag_seconds`` (age of the oldest
  event received and not yet processed; 0 when idle) and ``wallet_fraud_queue_depth`` (messages
  ready in the queue, read from the broker every few seconds).
- ``/health``: 200 ``{"status": "ok", ...}``, or 503 ``"lagging"`` when the lag is above
  ``FRAUD_LAG_THRESHOLD_SECONDS`` (docs/OPERATIONS.md says what to do).
- ``/health/live``: 200 while the process serves (for a liveness probe: a lagging worker needs
  help, not a restart).
"""

from __future__ import annotations

import logging
from typing import Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger(__name__)

BATCH_SIZES = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000)
BATCH_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class LagSource(Protocol):
    def lag_seconds(self) -> float: ...

    @property
    def queue_depth(self) -> int | None: ...


class WorkerMetrics:
    """Prometheus metrics of one worker, in a registry of its own."""

    def __init__(self, lag: LagSource) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter(
            "wallet_fraud_events",
            "Events handled by the fraud worker, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.alerts = Counter("wallet_fraud_alerts", "Alerts raised", registry=self.registry)
        self.batch_size = Histogram(
            "wallet_fraud_batch_size", "Events per batch", buckets=BATCH_SIZES, registry=self.registry
        )
        self.batch_seconds = Histogram(
            "wallet_fraud_batch_seconds",
            "Time to process a batch (transaction and alert publishing)",
            buckets=BATCH_SECONDS,
            registry=self.registry,
        )
        lag_gauge = Gauge(
            "wallet_fraud_lag_seconds",
            "Age of the oldest event received and not yet processed (0 when idle)",
            registry=self.registry,
        )
        lag_gauge.set_function(lag.lag_seconds)
        depth = Gauge(
            "wallet_fraud_queue_depth",
            "Messages ready in the worker's queue (-1: unknown)",
            registry=self.registry,
        )
        depth.set_function(lambda: -1.0 if lag.queue_depth is None else float(lag.queue_depth))

    def batch(self, size: int, seconds: float, processed: int, duplicates: int, alerts: int) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)
        if processed:
            self.events.labels("processed").inc(processed)
        if duplicates:
            self.events.labels("duplicate").inc(duplicates)
        if alerts:
            self.alerts.inc(alerts)

    def failed(self, count: int) -> None:
        self.events.labels("failed").inc(count)


def health_body(lag: LagSource, threshold_seconds: float) -> tuple[int, dict[str, object]]:
    seconds = lag.lag_seconds()
    lagging = seconds > threshold_seconds
    body: dict[str, object] = {
        "status": "lagging" if lagging else "ok",
        "lagSeconds": round(seconds, 3),
        "lagThresholdSeconds": threshold_seconds,
        "queueDepth": lag.queue_depth,
    }
    return (503 if lagging else 200), body


def health_app(metrics: WorkerMetrics, lag: LagSource, threshold_seconds: float) -> web.Application:
    async def health(_request: web.Request) -> web.Response:
        status, body = health_body(lag, threshold_seconds)
        return web.json_response(body, status=status)

    async def live(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def prometheus(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/health/live", live)
    app.router.add_get("/metrics", prometheus)
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:  # the port taken, say: stop what the app's start-up started
        await runner.cleanup()
        raise
    log.info("fraud worker: health and metrics on %s:%d", host, port)
    return runner
