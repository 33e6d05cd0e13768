"""LoopActor: a pykka actor whose messages run on the asyncio event loop instead of a thread.

pykka's ``Actor`` leaves the inbox, the future type and the message loop to its subclasses
(``ThreadingActor`` is one). Here the inbox is a deque, and a message arriving in an idle inbox
schedules the actor's turn on the event loop (``call_soon``, or ``call_soon_threadsafe`` from
another thread). A turn handles the queued messages one at a time, in order, through pykka's own
``_handle_receive`` (so ``on_receive``, ``stop()`` and ``on_stop`` behave as usual); an actor
never runs two messages at once, and yields the loop after ``MESSAGES_PER_TURN`` to stay fair.

Why: one OS thread per wallet costs a thread hand-off (and a GIL hand-off) for every message and
a thread for every live wallet (DESIGN.md §2, and §8 for the figures). The rule that comes with
it: a LoopActor must never block. Its I/O runs as tasks on the loop whose results come back as
messages.

``ask()`` works (it returns a pykka ThreadingFuture) but must never be waited on from the loop.

Beyond pykka's three documented extension points this uses its private loop methods, so
``tests/unit/test_loop_actor.py`` holds it to pykka's actor contract and setup.cfg pins pykka's
minor version.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sys
import threading
from typing import Any, ClassVar

import pykka
from pykka import messages as pykka_messages
from pykka._envelope import Envelope

log = logging.getLogger(__name__)

MESSAGES_PER_TURN = 64


class _LoopInbox:
    """The inbox pykka sees: ``put`` from any thread; ``get``/``empty`` for pykka's teardown."""

    __slots__ = ("_actor", "_lock", "_loop", "_loop_thread", "_queue", "scheduled")

    def __init__(self, actor: LoopActor, loop: asyncio.AbstractEventLoop, loop_thread: int) -> None:
        self._actor = actor
        self._loop = loop
        self._loop_thread = loop_thread
        self._queue: collections.deque[Envelope[Any]] = collections.deque()
        self._lock = threading.Lock()
        self.scheduled = True  # until the actor's first turn (on_start) has run

    def put(self, envelope: Envelope[Any], block: bool = True, timeout: float | None = None) -> None:
        self._queue.append(envelope)
        with self._lock:
            if self.scheduled:
                return
            self.scheduled = True
        self.schedule()

    def schedule(self) -> None:
        if threading.get_ident() == self._loop_thread:
            self._loop.call_soon(self._actor._turn)
        else:
            self._loop.call_soon_threadsafe(self._actor._turn)

    def next_or_idle(self) -> Envelope[Any] | None:
        """The next envelope, or None after marking the inbox idle (atomically with ``put``)."""
        try:
            return self._queue.popleft()
        except IndexError:
            pass
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            self.scheduled = False
            return None

    def get(self, block: bool = True, timeout: float | None = None) -> Envelope[Any]:
        return self._queue.popleft()

    def empty(self) -> bool:
        return not self._queue

    def qsize(self) -> int:
        return len(self._queue)


class LoopActor(pykka.Actor):
    """Subclasses pass the event loop to ``__init__`` and must never block in a handler.

    ``registered = False`` keeps an actor out of pykka's ActorRegistry: the registry is a list
    (unregistering is a linear scan), so tens of thousands of short-lived wallet actors would make
    passivation quadratic; the wallet directory is their registry instead.
    """

    registered: ClassVar[bool] = True

    @classmethod
    def start(cls, *args: Any, **kwargs: Any) -> pykka.ActorRef[Any]:
        if cls.registered:
            return super().start(*args, **kwargs)
        actor = cls(*args, **kwargs)
        actor._start_actor_loop()
        return actor.actor_ref

    def __init__(self, loop: asyncio.AbstractEventLoop, loop_thread: int) -> None:
        self._loop = loop
        self._loop_thread = loop_thread
        super().__init__()

    def _create_actor_inbox(self) -> Any:  # type: ignore[override]
        return _LoopInbox(self, self._loop, self._loop_thread)

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return pykka.ThreadingFuture()

    def _start_actor_loop(self) -> None:
        self._started = False
        self.actor_inbox.schedule()  # type: ignore[attr-defined]

    def _turn(self) -> None:
        if not self._started:
            self._started = True
            self._actor_loop_setup()  # pykka: on_start, failures handled
        inbox: _LoopInbox = self.actor_inbox  # type: ignore[assignment]
        for _ in range(MESSAGES_PER_TURN):
            if self.actor_stopped.is_set():
                self._actor_loop_teardown()
                return
            envelope = inbox.next_or_idle()
            if envelope is None:
                return
            self._handle(envelope)
        if self.actor_stopped.is_set():
            self._actor_loop_teardown()
            return
        self._loop.call_soon(self._turn)  # more to do: yield the loop first

    def _handle(self, envelope: Envelope[Any]) -> None:
        """One message, as pykka's ThreadingActor loop handles it."""
        try:
            response = self._handle_receive(envelope.message)
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)
        except Exception:
            if envelope.reply_to is not None:
                envelope.reply_to.set_exception()
            else:
                self._handle_failure(*sys.exc_info())
                try:
                    self.on_failure(*sys.exc_info())
                except Exception:
                    self._handle_failure(*sys.exc_info())
        if isinstance(envelope.message, pykka_messages._ActorStop):
            log.debug("%s stopped", self)
