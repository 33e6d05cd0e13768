"""``/metrics`` in the Prometheus text format, and the middleware that observes every request.

Cheap per request: the middleware adds to plain counters in a dict keyed by (method, route
pattern, status) — never the raw path, so the series stay few — and a histogram bucket found by
bisection; no prometheus_client object is touched on the hot path. A custom collector turns those
counters, and the service's own numbers, into metric families when ``/metrics`` is scraped. Each
app has its own registry, so two apps in one process (the tests) never clash.

Series (all prefixed ``wallet_``):
- ``http_requests_total`` and ``http_request_duration_seconds`` by method, route, status;
- ``live_wallet_actors``; the flush writer's ``flush_transactions_total``,
  ``flush_wallet_batches_total``, ``flush_commands_total``, ``flush_failures_total``,
  ``version_conflicts_total``, ``flush_queue_depth`` (average batch sizes are ratios of rates);
- ``balance_cache_hits_total``/``misses_total``, ``db_reads_total`` by pool (primary, replica);
- ``outbox_pending`` and ``outbox_lag_seconds``, ``saga_states`` by state, ``fraud_alerts`` by
  rule and severity: queried (the ``outbox`` table, the saga store's ``count_by_state()``, the
  ``fraud_alerts`` table), each bounded by a timeout, absent when their source is. A scrape does
  no I/O: it shows the last values and, when they are older than
  ``settings.metrics_refresh_seconds``, starts one refresh in the background (only the first
  scrape waits for one). However many scrape, the tables are counted at most once an interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from aiohttp.hdrs import SERVER
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from wallet.http.chain import Handler, Step, call_handler
from wallet.http.openapi import operation
from wallet.http.serving import SERVER_NAME
from wallet.logging_setup import ACCESS_LOGGER, CURRENT_REQUEST, access_log_enabled

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "<unmatched>"
SCRAPE_TIMEOUT_SECONDS = 1.0
SAGA_STATES = ("PENDING", "DEBITED", "COMPLETED", "COMPENSATED", "FAILED")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

access_log = logging.getLogger(ACCESS_LOGGER)


class RequestStats:
    """Per (method, route, status): [sum of seconds, count per bucket..., count above the last]."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, str, int], list[float]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = [0.0] * (len(BUCKETS) + 2)
        series[0] += seconds
        series[bisect_left(BUCKETS, seconds) + 1] += 1


def observe_middleware(stats: RequestStats, inner: Step = call_handler) -> Middleware:
    """The app's one middleware: request metrics, the request in the logging context, the DEBUG
    access log (decided once, when the app is made); ``inner`` (the rest of the chain, see
    ``wallet.http.chain``) runs inside it."""
    perf_counter = time.perf_counter
    set_request = CURRENT_REQUEST.set
    reset_request = CURRENT_REQUEST.reset
    observe = stats.observe
    log_access = access_log_enabled()

    @web.middleware
    async def observe_request(request: web.Request, handler: Handler) -> web.StreamResponse:
        token = set_request(request)
        started = perf_counter()
        status = 500
        try:
            response = await inner(request, handler)
            status = response.status
            response.headers[SERVER] = SERVER_NAME  # not aiohttp's, which names versions
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = 499  # the client went away
            raise
        finally:
            elapsed = perf_counter() - started
            resource = request.match_info.route.resource
            route = UNMATCHED if resource is None else resource.canonical
            observe(request.method, route, status, elapsed)
            if log_access:
                access_log.debug(
                    "request", extra={"route": route, "status": status, "duration_ms": elapsed * 1000}
                )
            reset_request(token)

    return observe_request


class ServiceCollector(Collector):
    """Reads the counters and the service when scraped; ``refresh()`` first fetches the values
    that need I/O (outbox, sagas, alerts)."""

    def __init__(self, service: Any, stats: RequestStats, refresh_seconds: float = 15.0) -> None:
        self._service = service
        self._stats = stats
        self._scraped: dict[str, Any] = {}
        self._refresh_seconds = refresh_seconds
        self._refreshed_at: float | None = None  # monotonic time the last refresh started
        self._refreshing: asyncio.Task[None] | None = None

    async def before_scrape(self) -> None:
        """Wait for the first refresh; later, start one in the background when the values are
        older than the interval and none is running."""
        now = time.monotonic()
        if self._refreshed_at is None:
            self._refreshed_at = now
            await self.refresh()
        elif now - self._refreshed_at >= self._refresh_seconds and self._refreshing is None:
            self._refreshed_at = now
            self._refreshing = asyncio.create_task(self._refresh_in_background())

    async def _refresh_in_background(self) -> None:
        try:
            await self.refresh()
        finally:
            self._refreshing = None

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refreshing

    async def refresh(self) -> None:
        sources = {
            "outbox": self._outbox(),
            "sagas": self._sagas(),
            "alerts": self._alerts(),
        }
        results = await asyncio.gather(
            *(asyncio.wait_for(c, SCRAPE_TIMEOUT_SECONDS) for c in sources.values()),
            return_exceptions=True,
        )
        self._scraped = {
            name: result
            for name, result in zip(sources, results, strict=True)
            if not isinstance(result, BaseException) and result is not None
        }

    async def _outbox(self) -> tuple[int, float] | None:
        pool = getattr(self._service, "pool", None)
        if pool is None:
            return None
        async with pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT count(*) AS n, extract(epoch FROM clock_timestamp() - min(created_at)) AS age"
                " FROM outbox WHERE published_at IS NULL"
            )
        return int(row["n"]), float(row["age"] or 0.0)

    async def _sagas(self) -> dict[str, int] | None:
        store = getattr(self._service, "saga_store", None)
        count = getattr(store, "count_by_state", None)
        if count is None:
            return None
        counts: dict[str, int] = await count()
        return counts

    async def _alerts(self) -> list[tuple[str, str, int]] | None:
        pool = getattr(self._service, "pool", None)
        if pool is None:
            return None
        async with pool.acquire() as conn:
            if await conn.fetchval("SELECT to_regclass('fraud_alerts') IS NULL"):
                return None
            rows = await conn.fetch("SELECT rule, severity, count(*) AS n FROM fraud_alerts GROUP BY 1, 2")
        return [(r["rule"], r["severity"], int(r["n"])) for r in rows]

    def collect(self) -> Iterator[Metric]:
        yield from self._http()
        yield from self._service_metrics()
        yield from self._scraped_metrics()

    def _http(self) -> Iterator[Metric]:
        labels = ["method", "route", "status"]
        requests = CounterMetricFamily("wallet_http_requests", "HTTP requests answered", labels=labels)
        durations = HistogramMetricFamily(
            "wallet_http_request_duration_seconds", "HTTP request latency", labels=labels
        )
        for (method, route, status), series in list(self._stats.series.items()):
            label_values = [method, route, str(status)]
            cumulative = 0.0
            buckets = []
            for bound, count in zip(BUCKETS, series[1:], strict=False):
                cumulative += count
                buckets.append((repr(bound), cumulative))
            cumulative += series[-1]
            buckets.append(("+Inf", cumulative))
            requests.add_metric(label_values, cumulative)
            durations.add_metric(label_values, buckets, series[0])
        yield requests
        yield durations

    def _service_metrics(self) -> Iterator[Metric]:
        service = self._service
        directory = getattr(service, "directory", None)
        if directory is not None:
            yield GaugeMetricFamily("wallet_live_wallet_actors", "Wallet actors alive", value=len(directory))
        writer = getattr(service, "writer", None)
        stats = getattr(writer, "stats", None)
        if stats is not None:
            for field, help_text in (
                ("transactions", "Flush transactions committed"),
                ("wallet_batches", "Wallet batches written (wallets per flush = this / transactions)"),
                ("commands", "Commands committed (commands per wallet batch = this / wallet batches)"),
                ("version_conflicts", "Wallet batches refused on a version conflict"),
                ("failures", "Flush transactions that failed"),
            ):
                value = getattr(stats, field, None)
                if value is not None:
                    name = (
                        "wallet_version_conflicts"
                        if field == "version_conflicts"
                        else f"wallet_flush_{field}"
                    )
                    yield CounterMetricFamily(name, help_text, value=value)
            queued = getattr(writer, "queued", None)
            if isinstance(queued, int):
                yield GaugeMetricFamily(
                    "wallet_flush_queue_depth", "Wallet batches waiting to be flushed", value=queued
                )
        read_side = getattr(service, "read_side", None)
        cache = getattr(read_side, "cache", None)
        if cache is not None:
            yield CounterMetricFamily(
                "wallet_balance_cache_hits", "Balance reads answered by Redis", value=cache.hits
            )
            yield CounterMetricFamily(
                "wallet_balance_cache_misses", "Balance reads Redis did not answer", value=cache.misses
            )
            yield CounterMetricFamily(
                "wallet_balance_cache_read_batches",
                "MGET round trips (lookups per trip = hits+misses / this)",
                value=cache.read_batches,
            )
            yield GaugeMetricFamily(
                "wallet_balance_cache_available",
                "1 unless the cache's breaker skips Redis",
                value=1 if cache.breaker.closed() else 0,
            )
        router = getattr(read_side, "router", None)
        if router is not None:
            reads = CounterMetricFamily("wallet_db_reads", "Reads answered by each pool", labels=["pool"])
            for pool in ("primary", "replica"):
                reads.add_metric([pool], router.served.get(pool, 0))
            yield reads

    def _scraped_metrics(self) -> Iterator[Metric]:
        scraped = self._scraped
        outbox = scraped.get("outbox")
        if outbox is not None:
            pending, lag = outbox
            yield GaugeMetricFamily("wallet_outbox_pending", "Outbox rows not yet published", value=pending)
            yield GaugeMetricFamily(
                "wallet_outbox_lag_seconds", "Age of the oldest unpublished outbox row", value=lag
            )
        sagas = scraped.get("sagas")
        if sagas is not None:
            family = GaugeMetricFamily("wallet_saga_states", "Transfer sagas by state", labels=["state"])
            for state, count in (dict.fromkeys(SAGA_STATES, 0) | sagas).items():
                family.add_metric([state], count)
            yield family
        alerts = scraped.get("alerts")
        if alerts is not None:
            family = GaugeMetricFamily(
                "wallet_fraud_alerts", "Fraud alerts stored", labels=["rule", "severity"]
            )
            for rule, severity, count in alerts:
                family.add_metric([rule, severity], count)
            yield family


METRICS = web.AppKey("wallet_metrics", ServiceCollector)
REGISTRY = web.AppKey("wallet_metrics_registry", CollectorRegistry)


@operation(
    summary="Prometheus metrics (text format)",
    tags=["ops"],
    path=None,
    errors=(),
    produces=["text/plain"],
    responses={"200": {"description": "Prometheus text exposition format 0.0.4"}},
)
async def metrics(request: web.Request) -> web.Response:
    collector = request.app[METRICS]
    with contextlib.suppress(Exception):
        await collector.before_scrape()
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def setup_metrics(app: web.Application, service: Any, inner: Step = call_handler) -> Middleware:
    """Register ``/metrics`` and the per-app registry; return the observing middleware, which
    runs ``inner`` (the rest of the chain) inside it."""
    stats = RequestStats()
    settings = getattr(service, "settings", None)
    collector = ServiceCollector(service, stats, getattr(settings, "metrics_refresh_seconds", 15.0))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    app[METRICS] = collector
    app[REGISTRY] = registry
    app.router.add_get("/metrics", metrics)

    async def close_collector(app: web.Application) -> None:
        await collector.close()

    app.on_cleanup.append(close_collector)
    return observe_middleware(stats, inner)
