"""Health against the real services: 200 when PostgreSQL, RabbitMQ and Redis answer; 503 within
3 s when one is unreachable or hung; liveness never looks at dependencies."""

from __future__ import annotations

import time
from dataclasses import replace

import asyncpg

from tests.integration.edges import closed_port_url, serving, silent_server

DEPENDENCIES = {"database", "rabbitmq", "redis"}


async def test_all_up_is_200_with_a_response_time_each(settings):
    async with serving(settings) as (_, client):
        for path in ("/health", "/health/ready"):
            response = await client.get(path)
            body = await response.json()
            assert response.status == 200, body
            assert body["status"] == "ok"
            assert body["error"] == {}
            assert set(body["info"]) == DEPENDENCIES
            for check in body["info"].values():
                assert check["status"] == "up"
                assert isinstance(check["responseTime"], int) and check["responseTime"] >= 0
        live = await client.get("/health/live")
        assert (live.status, await live.json()) == (200, {"status": "ok"})


async def test_redis_hung_is_503_within_3_seconds(settings):
    async with silent_server() as port:
        own = replace(settings, redis_url=f"redis://127.0.0.1:{port}/0")
        async with serving(own) as (_, client):
            started = time.monotonic()
            response = await client.get("/health")
            elapsed = time.monotonic() - started
            body = await response.json()
            assert response.status == 503, body
            assert elapsed < 3.0
            assert body["status"] == "error"
            assert body["error"]["redis"]["status"] == "down"
            assert {"database", "rabbitmq"} <= set(body["info"])
            # Liveness does not wait on anyone.
            started = time.monotonic()
            assert (await client.get("/health/live")).status == 200
            assert time.monotonic() - started < 0.5


async def test_redis_refusing_connections_is_503_at_once(settings):
    own = replace(settings, redis_url=closed_port_url())
    async with serving(own) as (_, client):
        started = time.monotonic()
        response = await client.get("/health/ready")
        assert response.status == 503
        assert time.monotonic() - started < 1.0
        assert (await response.json())["error"]["redis"]["status"] == "down"


async def test_database_hung_is_503_within_3_seconds(settings, monkeypatch):
    async with silent_server() as port, serving(settings) as (service, client):
        hung = await asyncpg.create_pool(f"postgresql://postgres@127.0.0.1:{port}/x", min_size=0, max_size=1)
        monkeypatch.setattr(service, "pool", hung)  # what the database check reads
        started = time.monotonic()
        response = await client.get("/health")
        elapsed = time.monotonic() - started
        monkeypatch.undo()
        await hung.close()
        body = await response.json()
        assert response.status == 503, body
        assert elapsed < 3.0
        assert body["error"]["database"]["status"] == "down"
        assert body["info"]["redis"]["status"] == "up"


async def test_an_optional_dependency_down_is_reported_not_fatal(settings):
    own = replace(settings, redis_url=closed_port_url(), health_required=("database", "rabbitmq"))
    async with serving(own) as (_, client):
        response = await client.get("/health")
        body = await response.json()
        assert response.status == 200, body
        assert body["status"] == "ok"
        assert body["error"]["redis"]["status"] == "down"
