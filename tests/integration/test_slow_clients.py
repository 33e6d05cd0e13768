"""Slow clients (issue 11, item 8): a connection dribbling its headers, or silent, is closed after
the idle timeout; a body dribbling in is answered 408 after the body timeout; the service keeps
answering everyone else meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import replace

from tests.integration.edges import serving

IDLE = 0.5
BODY = 0.5


async def _dribble(writer: asyncio.StreamWriter, data: bytes, every: float) -> None:
    with contextlib.suppress(ConnectionError):
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(every)


async def _closed_after(reader: asyncio.StreamReader, limit: float) -> tuple[float, bytes]:
    """Seconds until the server closed the connection, and what it sent before."""
    started = time.monotonic()
    received = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(reader.read(4096), limit):
            received += chunk
    return time.monotonic() - started, received


async def test_headers_a_byte_at_a_time_and_silent_connections_are_closed(settings):
    slow = replace(settings, http_idle_timeout_seconds=IDLE, http_body_timeout_seconds=BODY)
    async with serving(slow, "slow-headers") as (_, client):
        port = client.server.port
        silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        dribble = asyncio.create_task(
            _dribble(writer, b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100, 0.1)
        )
        # Meanwhile everyone else is served at once.
        started = time.monotonic()
        assert (await client.get("/health/live")).status == 200
        assert time.monotonic() - started < 0.2
        waited, _ = await _closed_after(reader, 10)
        silent_waited, _ = await _closed_after(silent_reader, 10)
        dribble.cancel()
        writer.close()
        silent_writer.close()
    assert waited < IDLE + 2, waited  # not the 10 s the dribble would take, nor an hour
    assert silent_waited < IDLE + 2, silent_waited


async def test_a_body_a_byte_at_a_time_is_408(settings, wallet_id):
    slow = replace(settings, http_idle_timeout_seconds=30.0, http_body_timeout_seconds=BODY)
    async with serving(slow, "slow-body") as (_, client):
        body = b'{"amount": 1}' + b" " * 87
        reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
        writer.write(
            f"POST /v1/wallet/{wallet_id}/deposit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        dribble = asyncio.create_task(_dribble(writer, body, 0.2))  # 20 s for the whole body
        started = time.monotonic()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        waited = time.monotonic() - started
        dribble.cancel()
        writer.close()
        assert head.startswith(b"HTTP/1.1 408"), head
        assert waited < BODY + 2, waited
        length = int(
            next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1]
        )
        error = json.loads(await reader.readexactly(length))
        assert error["error"] == "RequestTimeoutError" and error["statusCode"] == 408
        assert (await client.get(f"/v1/wallet/{wallet_id}")).status == 404  # nothing deposited
