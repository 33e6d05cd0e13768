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
import functools
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


def _reply_of(done: asyncio.Future[Reply], render: Render) -> Reply:
    """The reply a settled command future stands for: its result, or 503 if it failed."""
    if done.cancelled() or done.exception() is not None:
        return render(unavailable("request failed; retry"))
    return done.result()


class IdempotencyGate:
    def __init__(self, deadlines: Deadlines) -> None:
        self._deadlines = deadlines  # how long a request, or a duplicate, waits for its reply
        # Each key in flight: the first request's fingerprint and its command's own future, which
        # only the command's outcome settles (never a timeout), so the key stays in flight till then.
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
            reply = await self._wait(first, render)
            return reply if reply.status >= 500 or reply.replayed else replace(reply, replayed=True)

        sent = send()
        # What this request awaits: answered when ``sent`` settles, or failed by the deadline
        # sweeper, which must not touch ``sent`` itself (a duplicate may still be following it).
        answer: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._in_flight[key.key] = (key.fingerprint, sent)
        sent.add_done_callback(functools.partial(self._settled, key.key, answer, render))
        self._deadlines.watch(answer)
        try:
            return await answer
        except CommandTimedOutError:
            return render(unavailable("timed out waiting for the wallet; retry with the same X-Request-ID"))

    def _settled(
        self, key: str, answer: asyncio.Future[Reply], render: Render, sent: asyncio.Future[Reply]
    ) -> None:
        if not sent.cancelled() and sent.exception() is not None:
            log.warning("request with X-Request-ID failed: %r", sent.exception())
        if not answer.done():
            answer.set_result(_reply_of(sent, render))
        if self._in_flight.get(key, (None, None))[1] is sent:
            del self._in_flight[key]  # the key is never left stuck in flight

    async def _wait(self, first: asyncio.Future[Reply], render: Render) -> Reply:
        """A duplicate's reply: ``first``'s, or 409 once the command timeout has passed."""
        if first.done():
            return _reply_of(first, render)
        waiter: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()

        def relay(done: asyncio.Future[Reply]) -> None:
            if not waiter.done():
                waiter.set_result(_reply_of(done, render))

        first.add_done_callback(relay)
        self._deadlines.watch(waiter)
        try:
            return await waiter
        except CommandTimedOutError:
            first.remove_done_callback(relay)
            return render(key_in_flight("a request with this X-Request-ID is still in flight"))
