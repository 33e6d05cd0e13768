"""The idempotency gate: one effect per ``X-Request-ID``, whatever the concurrency or retries.

On the event loop. A key seen in this process and still in flight: duplicates wait for the first
one's reply (409 if it takes too long), a different request with it gets 422 at once. A key not in
flight: its stored record, if any, is replayed (or 422 if the request differs). Otherwise the
command goes to its wallet actor carrying the key, and the record is written in the same
transaction as the effect; across instances the database's unique key settles races.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from wallet.actors.messages import IdempotencyKey, Rejected, Reply, key_in_flight, unavailable
from wallet.domain.errors import IdempotencyKeyReuseError
from wallet.persistence.idempotency_store import IdempotencyStore
from wallet.persistence.records import IdempotencyRecord

log = logging.getLogger(__name__)

Render = Callable[[Any], Reply]


def _reuse(render: Render) -> Reply:
    return render(Rejected(IdempotencyKeyReuseError("X-Request-ID was already used for a different request")))


def replay(record: IdempotencyRecord, key: IdempotencyKey, render: Render) -> Reply:
    if record.fingerprint != key.fingerprint:
        return _reuse(render)
    return Reply(record.status, record.body, replayed=True)


class IdempotencyGate:
    def __init__(self, store: IdempotencyStore, wait_seconds: float) -> None:
        self._store = store
        self._wait_seconds = wait_seconds
        self._in_flight: dict[str, tuple[str, asyncio.Future[Reply]]] = {}

    async def run(
        self,
        key: IdempotencyKey,
        render: Render,
        send: Callable[[], asyncio.Future[Reply]],
    ) -> Reply:
        existing = self._in_flight.get(key.key)
        if existing is not None:
            first_fingerprint, first = existing
            if first_fingerprint != key.fingerprint:
                return _reuse(render)
            reply = await self._wait(first, render, duplicate=True)
            return reply if reply.status >= 500 or reply.replayed else replace(reply, replayed=True)

        settled: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._in_flight[key.key] = (key.fingerprint, settled)
        try:
            record = await self._store.find(key.key)
        except Exception as exc:
            log.warning("idempotency lookup failed: %r", exc)
            reply = render(unavailable("database unavailable"))
            self._settle(key.key, settled, reply)
            return reply
        if record is not None:
            reply = replay(record, key, render)
            self._settle(key.key, settled, reply)
            return reply
        sent = send()

        def on_sent(done: asyncio.Future[Reply]) -> None:
            if done.cancelled() or done.exception() is not None:
                if not done.cancelled():
                    log.warning("request with X-Request-ID failed: %r", done.exception())
                reply = render(unavailable("request failed; retry"))
            else:
                reply = done.result()
            self._settle(key.key, settled, reply)  # the key is never left stuck in flight

        sent.add_done_callback(on_sent)
        return await self._wait(settled, render, duplicate=False)

    async def _wait(self, future: asyncio.Future[Reply], render: Render, *, duplicate: bool) -> Reply:
        try:
            return await asyncio.wait_for(asyncio.shield(future), self._wait_seconds)
        except TimeoutError:
            if duplicate:
                return render(key_in_flight("a request with this X-Request-ID is still in flight"))
            return render(unavailable("timed out waiting for the wallet; retry with the same X-Request-ID"))

    def _settle(self, key: str, settled: asyncio.Future[Reply], reply: Reply) -> None:
        if not settled.done():
            settled.set_result(reply)
        if self._in_flight.get(key, (None, None))[1] is settled:
            del self._in_flight[key]
