"""Structured logs: one JSON object a line, with the request id of the request being served (the
client's X-Request-ID, or the correlation id generated for it, the one the reply echoes)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from tests.helpers import root_logging_restored
from wallet.http.context import request_context
from wallet.http.errors import answer_errors
from wallet.http.metrics import RequestStats, observe_middleware
from wallet.logging_setup import (
    ACCESS_LOGGER,
    CURRENT_REQUEST,
    access_log_enabled,
    configure_logging,
    get_logger,
)


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    with root_logging_restored():
        yield io.StringIO()


def _lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def test_stdlib_and_structlog_lines_are_json_with_the_request_id(stream):
    configure_logging("info", "json", stream=stream)
    with_id = make_mocked_request("POST", "/v1/wallet/a/deposit", headers={"X-Request-ID": "req-42"})
    without_id = make_mocked_request("GET", "/v1/wallet/a")
    token = CURRENT_REQUEST.set(with_id)
    try:
        logging.getLogger("wallet.test").warning("flush of %d batches failed", 3)
    finally:
        CURRENT_REQUEST.reset(token)
    token = CURRENT_REQUEST.set(without_id)
    try:
        get_logger("wallet.test").error("boom", wallet_id="a")
    finally:
        CURRENT_REQUEST.reset(token)
    logging.getLogger("wallet.test").warning("outside any request")

    first, second, third = _lines(stream)
    assert first["event"] == "flush of 3 batches failed"
    assert first["level"] == "warning" and first["logger"] == "wallet.test"
    assert first["request_id"] == "req-42"
    assert (first["method"], first["path"]) == ("POST", "/v1/wallet/a/deposit")
    assert "timestamp" in first
    # No X-Request-ID: a generated correlation id, the same the reply echoes.
    assert second["request_id"] == request_context(without_id).request_id
    assert second["wallet_id"] == "a"
    assert "request_id" not in third


def test_exceptions_are_rendered_inside_the_json(stream):
    configure_logging("info", "json", stream=stream)
    try:
        raise ValueError("bad")
    except ValueError:
        logging.getLogger("wallet.test").exception("unexpected error")
    (line,) = _lines(stream)
    assert "ValueError: bad" in line["exception"]


def test_no_access_log_at_info_one_at_debug(stream):
    configure_logging("info", "json", stream=stream)
    assert not access_log_enabled()
    configure_logging("debug", "json", stream=stream)
    assert access_log_enabled()
    logging.getLogger(ACCESS_LOGGER).debug("request", extra={"route": "/v1/wallet/{id}", "status": 200})
    (line,) = _lines(stream)
    assert (line["route"], line["status"]) == ("/v1/wallet/{id}", 200)


async def test_a_failing_request_logs_json_with_the_id_it_answers_with(stream, aiohttp_client):
    configure_logging("debug", "json", stream=stream)

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("kaput")

    app = web.Application(middlewares=[observe_middleware(RequestStats(), answer_errors)])
    app.router.add_get("/boom/{id}", boom)
    client = await aiohttp_client(app)
    response = await client.get("/boom/7")
    body = await response.json()
    assert response.status == 500 and "kaput" not in json.dumps(body)
    generated = response.headers["X-Request-ID"]
    assert body["requestId"] == generated
    error, access = _lines(stream)
    assert error["level"] == "error" and "RuntimeError: kaput" in error["exception"]
    assert error["request_id"] == generated
    assert access["logger"] == ACCESS_LOGGER
    assert (access["route"], access["status"], access["request_id"]) == ("/boom/{id}", 500, generated)
    assert access["duration_ms"] >= 0
