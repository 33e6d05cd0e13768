"""Answering requests that wait too long, without a timer per request.

Every command waits under the same timeout, so deadlines arrive in order: a deque swept by one task
replaces an ``asyncio.timeout`` per request (a timer handle each). The deque holds only a weak
reference to each future: holding the futures (and, through them, replies and request objects)
for the whole timeout kept many objects alive for the garbage collector to scan again and again.
Figures: DESIGN.md §8.
"""

from __future__ import annotations

import asyncio
import collections
import time
import weakref
from typing import Any


class CommandTimedOutError(Exception):
    """Set on a command's future when it was not answered within the timeout."""


class Deadlines:
    def __init__(self, timeout_seconds: float) -> None:
        self._timeout = timeout_seconds
        self._watched: collections.deque[tuple[float, weakref.ref[asyncio.Future[Any]]]] = collections.deque()

    def watch(self, future: asyncio.Future[Any]) -> None:
        """If ``future`` is still pending after the timeout, fail it with ``CommandTimedOutError``."""
        self._watched.append((time.monotonic() + self._timeout, weakref.ref(future)))

    def sweep(self) -> int:
        now = time.monotonic()
        expired = 0
        watched = self._watched
        while watched and watched[0][0] <= now:
            future = watched.popleft()[1]()
            if future is not None and not future.done():
                future.set_exception(CommandTimedOutError())
                expired += 1
        return expired

    async def run(self) -> None:
        period = max(0.01, min(0.25, self._timeout / 10))
        while True:
            await asyncio.sleep(period)
            self.sweep()
