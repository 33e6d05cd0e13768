"""``OutboxActor``: drives the outbox relay's rounds one at a time, off the event loop.

A pykka ``ThreadingActor``: each ``Wake`` runs rounds on the loop with
``asyncio.run_coroutine_threadsafe(...).result(timeout)`` until a round finds less than a full
batch. The loop never waits on the actor (no deadlock); the relay stops it from an executor thread
so the loop can finish the round it may be in. Wakes coalesce in the relay (``OutboxRelay.wake``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import pykka

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Wake:
    """Told to the OutboxActor: there may be rows to publish."""


WAKE = Wake()


class Round(Protocol):
    @property
    def more(self) -> bool:
        """A full batch was published: run again at once."""
        ...


class OutboxActor(pykka.ThreadingActor):
    use_daemon_thread = True  # a safety net only: OutboxRelay.stop() stops it
    MAX_ROUNDS_PER_WAKE = 20  # then yield the mailbox (a Stop may be waiting) and go on

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        run_round: Callable[[], Coroutine[Any, Any, Round]],
        *,
        wake_taken: Callable[[], None],
        wake: Callable[[], None],
        round_timeout: float,
    ) -> None:
        super().__init__()
        self._loop = loop
        self._run_round = run_round
        self._wake_taken = wake_taken
        self._wake = wake
        self._round_timeout = round_timeout

    def on_receive(self, message: Any) -> None:
        if not isinstance(message, Wake):
            log.warning("outbox actor: unknown message %r", message)
            return
        self._wake_taken()
        for _ in range(self.MAX_ROUNDS_PER_WAKE):
            future = asyncio.run_coroutine_threadsafe(self._run_round(), self._loop)
            try:
                result = future.result(self._round_timeout)
            except TimeoutError:
                future.cancel()
                log.warning("outbox round took more than %.1f s; cancelled", self._round_timeout)
                return
            except Exception:
                log.exception("outbox round failed")
                return
            if not result.more:
                return
        self._wake()
