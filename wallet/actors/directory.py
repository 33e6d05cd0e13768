"""The wallet directory: spawns wallet actors on demand, passivates idle ones, caps how many live.

Every message to a wallet actor goes through ``tell``, and an actor is told ``Passivate`` only
after it has been removed from the directory, both on the event loop's thread (calls from other
threads are handed to the loop), so no message can reach an actor that is stopping (pykka drops
those, and their callers would wait forever). An actor that still has work when passivated
finishes it before it stops; a new actor for the same wallet may load meanwhile, which the version
check makes safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pykka

from wallet.actors.messages import PASSIVATE

log = logging.getLogger(__name__)

Spawn = Callable[[str], pykka.ActorRef[Any]]


class DirectoryClosedError(Exception):
    """The service is shutting down and takes no more commands."""


class WalletDirectory:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        spawn: Spawn,
        *,
        max_live: int,
        idle_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._spawn = spawn
        self._max_live = max_live
        self._idle_seconds = idle_seconds
        self._clock = clock
        self._loop = loop
        self._loop_thread = threading.get_ident()  # made on the loop it serves
        # wallet id -> [actor ref, last use]; least recently used first.
        self._live: OrderedDict[str, list[Any]] = OrderedDict()
        self._closed = False
        self.spawned = 0
        self.passivated = 0

    def tell(self, wallet_id: str, message: Any) -> None:
        if self._closed:
            raise DirectoryClosedError("service is shutting down")
        if threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self._tell_later, wallet_id, message)
            return
        now = self._clock()
        entry = self._live.get(wallet_id)
        if entry is not None:
            self._live.move_to_end(wallet_id)
            entry[1] = now
            try:
                entry[0].tell(message)
                return
            except pykka.ActorDeadError:  # it failed; a fresh one takes over
                del self._live[wallet_id]
        while len(self._live) >= self._max_live:
            self._passivate_oldest()
        ref = self._spawn(wallet_id)
        self.spawned += 1
        self._live[wallet_id] = [ref, now]
        ref.tell(message)

    def _tell_later(self, wallet_id: str, message: Any) -> None:
        try:
            self.tell(wallet_id, message)
        except DirectoryClosedError:
            log.warning("message for wallet %s dropped at shutdown: %r", wallet_id, message)

    def passivate_idle(self) -> int:
        """Passivate the actors unused for ``idle_seconds``; return how many."""
        count = 0
        deadline = self._clock() - self._idle_seconds
        while self._live:
            _, last_use = next(iter(self._live.values()))
            if last_use > deadline:
                break
            self._passivate_oldest()
            count += 1
        return count

    def close(self) -> list[pykka.ActorRef[Any]]:
        """Take no more commands; return the live actors for the caller to stop."""
        self._closed = True
        refs = [entry[0] for entry in self._live.values()]
        self._live.clear()
        return refs

    def __len__(self) -> int:
        return len(self._live)

    def _passivate_oldest(self) -> None:
        _, (ref, _) = self._live.popitem(last=False)
        self.passivated += 1
        with contextlib.suppress(pykka.ActorDeadError):
            ref.tell(PASSIVATE)
