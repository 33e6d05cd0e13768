"""The idempotency gate: one effect per ``X-Request-ID``, whatever the concurrency or retries.

On the event loop, for the keys in flight in this process: a duplicate with the same fingerprint
waits for the first request's reply and gets it (409 if it takes too long); a different request
with the key gets 422 at once. A key not in flight goes straight to its wallet actor: the gate
does not look for a stored record. The flush that would record the key is what checks it (the
flush function refuses a batch whose keys are already recorded and reports their stored answers,
which the actor replays, or refuses with 422 for a different request). So a keyed request costs
no round trip of its own, and across instances the database's unique key settles races.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from wallet.actors.messages import IdempotencyKey, Rejected, Reply, key_in_flight, unavailable
from wallet.domain.errors import IdempotencyKeyReuseError
from wallet.service.deadlines import CommandTimedOutError, Deadlines

log = logging.getLogger(__name__)

Render = Callable[[Any], Reply]


def _reuse(render: Render) -> Reply:
    return render(Rejected(IdempotencyKeyReuseError("X-Request-ID was already used for a different request")))


class IdempotencyGate:
    def __init__(self, deadlines: Deadlines) -> None:
        self._deadlines = deadlines  # how long a request, or a duplicate, waits for its reply
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

        # Settled by the command's own outcome, never by a timeout: the key stays in flight until
        # then, so a retry cannot start a second effect while the first may still commit.
        settled: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._in_flight[key.key] = (key.fingerprint, settled)
        try:
            sent = send()
        except BaseException:
            self._settle(key.key, settled, render(unavailable("request failed; retry")))
            raise

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
        """``future``'s reply, or a refusal once the command timeout has passed. A waiter future
        watched by the shared deadline sweeper, not a timer per request."""
        if future.done():
            return future.result()
        waiter: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()

        def relay(done: asyncio.Future[Reply]) -> None:
            if not waiter.done():
                waiter.set_result(done.result())

        future.add_done_callback(relay)
        self._deadlines.watch(waiter)
        try:
            return await waiter
        except CommandTimedOutError:
            future.remove_done_callback(relay)
            if duplicate:
                return render(key_in_flight("a request with this X-Request-ID is still in flight"))
            return render(unavailable("timed out waiting for the wallet; retry with the same X-Request-ID"))

    def _settle(self, key: str, settled: asyncio.Future[Reply], reply: Reply) -> None:
        if not settled.done():
            settled.set_result(reply)
        if self._in_flight.get(key, (None, None))[1] is settled:
            del self._in_flight[key]
