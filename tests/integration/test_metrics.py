"""/metrics: the listed series are exposed and move when traffic flows; two apps never clash."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import post
from tests.integration.edges import eventually, serving


async def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


DEPOSIT = {"method": "POST", "route": "/v1/wallet/{id}/deposit", "status": "200"}


async def test_series_are_exposed_and_move_with_traffic(settings, db, wallet_id):
    async with serving(replace(settings, metrics_refresh_seconds=0.0)) as (_, client):
        before = await scrape(client)
        for name in (
            "wallet_live_wallet_actors",
            "wallet_flush_transactions_total",
            "wallet_flush_wallet_batches_total",
            "wallet_flush_commands_total",
            "wallet_version_conflicts_total",
            "wallet_outbox_pending",
            "wallet_outbox_lag_seconds",
        ):
            assert (name, ()) in before, name
        assert ("wallet_saga_states", (("state", "COMPLETED"),)) in before

        other = f"{wallet_id}-to"
        await post(client, f"/v1/wallet/{wallet_id}/deposit", {"amount": 5})
        await post(client, f"/v1/wallet/{wallet_id}/deposit", {"amount": 5})
        await post(client, f"/v1/wallet/{wallet_id}/transfer", {"toWalletId": other, "amount": 1})
        await client.get(f"/v1/wallet/{wallet_id}")
        await client.get(f"/v1/wallet/{wallet_id}")
        await client.get("/v1/wallet/w-missing-one")
        await client.get("/no/such/route")
        await db.execute(
            "INSERT INTO fraud_alerts (id, wallet_id, rule, severity, event_id, source_event_id, amount,"
            " currency, reason, occurred_at) VALUES ($1, $2, 'HIGH_VALUE_TRANSACTION', 'HIGH', $3, $3,"
            " 2000000, 'USD', 'test', $4)",
            uuid.uuid4(),
            wallet_id,
            uuid.uuid4(),
            datetime.now(UTC),
        )
        after = await scrape(client)

        # Requests by route pattern and status, never by raw path.
        assert (
            value(after, "wallet_http_requests_total", **DEPOSIT)
            - value(before, "wallet_http_requests_total", **DEPOSIT)
            == 2
        )
        assert value(after, "wallet_http_request_duration_seconds_count", **DEPOSIT) == value(
            after, "wallet_http_requests_total", **DEPOSIT
        )
        assert value(after, "wallet_http_request_duration_seconds_sum", **DEPOSIT) > 0
        assert value(after, "wallet_http_request_duration_seconds_bucket", le="+Inf", **DEPOSIT) == 2
        get = {"method": "GET", "route": "/v1/wallet/{id}"}
        assert value(after, "wallet_http_requests_total", status="200", **get) == 2
        assert value(after, "wallet_http_requests_total", status="404", **get) == 1
        assert (
            value(after, "wallet_http_requests_total", method="GET", route="<unmatched>", status="404") == 1
        )
        routes = {dict(labels).get("route") for (_, labels) in after}
        assert not any(wallet_id in (route or "") for route in routes)

        # The service's own numbers.
        assert after[("wallet_live_wallet_actors", ())] >= 2
        for name in ("wallet_flush_transactions_total", "wallet_flush_commands_total"):
            assert after[(name, ())] > before[(name, ())], name
        # Counted in the background: a later scrape shows them.
        alerts = (("rule", "HIGH_VALUE_TRANSACTION"), ("severity", "HIGH"))

        async def counted() -> bool:
            later = await scrape(client)
            return (
                value(later, "wallet_saga_states", state="COMPLETED") >= 1
                and value(later, "wallet_fraud_alerts", **dict(alerts)) >= 1
            )

        await eventually(counted)
        assert after[("wallet_outbox_pending", ())] >= 0
        assert value(after, "wallet_balance_cache_hits_total") >= 1
        assert value(after, "wallet_db_reads_total", pool="primary") >= 1


async def test_version_conflicts_are_counted(settings, wallet_id):
    """Two instances write one wallet in turn: each write of the stale one conflicts first."""
    async with serving(settings, "met-a") as (a, client_a), serving(settings, "met-b") as (_, client_b):
        url = f"/v1/wallet/{wallet_id}/deposit"
        for client in (client_a, client_b, client_a, client_b, client_a):
            assert (await post(client, url, {"amount": 1}))[0] == 200
        samples = await scrape(client_a)
        assert samples[("wallet_version_conflicts_total", ())] == a.writer.stats.version_conflicts >= 1


async def test_two_apps_in_one_process_do_not_clash(settings, wallet_id):
    async with serving(settings, "met-1") as (_, one), serving(settings, "met-2") as (_, two):
        await post(one, f"/v1/wallet/{wallet_id}/deposit", {"amount": 1})
        first, second = await scrape(one), await scrape(two)
        assert value(first, "wallet_http_requests_total", **DEPOSIT) == 1
        assert value(second, "wallet_http_requests_total", **DEPOSIT) == 0


async def test_a_scrape_does_no_io_however_many_scrape(settings, db):
    """The tables /metrics counts are locked: every scrape after the first is still answered at
    once (each used to wait for its count(*) queries, up to their timeout)."""
    async with serving(replace(settings, metrics_refresh_seconds=0.0), "met-lock") as (_, client):
        await scrape(client)  # the first one waits for a refresh
        async with db.transaction():
            await db.execute("LOCK TABLE fraud_alerts, outbox, transfer_sagas IN ACCESS EXCLUSIVE MODE")
            slowest = 0.0
            for _ in range(5):
                started = time.perf_counter()
                scrapes = await asyncio.gather(*(scrape(client) for _ in range(4)))  # four scrapers
                slowest = max(slowest, time.perf_counter() - started)
                assert all(("wallet_outbox_pending", ()) in samples for samples in scrapes)
        assert slowest < 0.2, slowest
