"""LoopActor's contract, after pykka's own actor tests (``tests/test_actor.py``).

LoopActor runs pykka's private loop methods (``_actor_loop_setup``, ``_handle_receive``,
``_handle_failure``, ``_actor_loop_teardown``) and re-implements one turn of
``_actor_loop_running``; setup.cfg pins pykka to the minor version these tests pass on. Like pykka's
``runtime`` fixture, every test runs for both kinds: in pykka's registry and out of it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pykka
import pytest

from wallet.actors.loop_actor import MESSAGES_PER_TURN, LoopActor


class Recorder(LoopActor):
    """Records its life and every message; answers ``("echo", message)``; ``"fail"`` raises;
    ``"threads"`` answers the threads it handled messages on."""

    def __init__(self, loop: asyncio.AbstractEventLoop, loop_thread: int, events: list[Any]) -> None:
        super().__init__(loop, loop_thread)
        self.events = events
        self.threads: set[int] = set()

    def on_start(self) -> None:
        self.events.append("start")

    def on_stop(self) -> None:
        self.events.append("stop")

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self.events.append(("failure", exception_type))

    def on_receive(self, message: Any) -> Any:
        self.threads.add(threading.get_ident())
        if message == "threads":
            return self.threads
        if message == "fail":
            raise ValueError("boom")
        self.events.append(message)
        return ("echo", message)


class Registered(Recorder):
    registered = True


class Unregistered(Recorder):
    registered = False


class FailsToStart(Unregistered):
    def on_start(self) -> None:
        raise RuntimeError("no start")


Start = Callable[..., pykka.ActorRef[Any]]


@pytest.fixture(params=[Registered, Unregistered], ids=["registered", "unregistered"])
async def start(request: pytest.FixtureRequest) -> AsyncIterator[Start]:
    """Starts an actor of the kind under test on the running loop; stops it afterwards."""
    loop = asyncio.get_running_loop()
    refs: list[pykka.ActorRef[Any]] = []

    def start_actor(events: list[Any], cls: type[Recorder] | None = None) -> pykka.ActorRef[Any]:
        ref = (cls or request.param).start(loop, threading.get_ident(), events)
        refs.append(ref)
        return ref

    yield start_actor
    for ref in refs:
        if ref.is_alive():
            ref.stop(block=False)
    await until(lambda: not any(ref.is_alive() for ref in refs))


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0)


async def result(future: pykka.Future[Any]) -> Any:
    """A pykka future's value, waited for off the loop (the loop must keep running the actor)."""
    return await asyncio.to_thread(future.get, timeout=5)


async def test_on_start_is_called_before_the_first_message_is_handled(start: Start) -> None:
    events: list[Any] = []
    ref = start(events)
    ref.tell("first")  # before the actor's first turn has run
    await until(lambda: len(events) == 2)
    assert events == ["start", "first"]


async def test_messages_are_handled_on_the_loop_in_the_order_each_sender_told_them(start: Start) -> None:
    events: list[Any] = []
    ref = start(events)

    def tell_from_a_thread() -> None:
        for n in range(1000, 1300):
            ref.tell(n)

    thread = asyncio.create_task(asyncio.to_thread(tell_from_a_thread))
    for n in range(300):
        ref.tell(n)
        if n % 50 == 0:
            await asyncio.sleep(0)
    await thread
    await until(lambda: len(events) == 601)
    numbers = [e for e in events if isinstance(e, int)]
    assert [n for n in numbers if n < 1000] == list(range(300))
    assert [n for n in numbers if n >= 1000] == list(range(1000, 1300))
    assert await result(ref.ask("threads", block=False)) == {threading.get_ident()}  # the loop's only


async def test_ask_returns_the_reply_and_a_failing_ask_fails_only_the_caller(start: Start) -> None:
    events: list[Any] = []
    ref = start(events)
    assert await result(ref.ask("question", block=False)) == ("echo", "question")
    with pytest.raises(ValueError, match="boom"):
        await result(ref.ask("fail", block=False))
    assert ref.is_alive()
    assert await result(ref.ask("again", block=False)) == ("echo", "again")
    assert events == ["start", "question", "again"]  # on_failure is for told messages only


async def test_stop_handles_what_came_before_it_and_fails_the_asks_after_it(start: Start) -> None:
    events: list[Any] = []
    ref = start(events)
    before = ref.ask("before", block=False)
    stopped = ref.stop(block=False)
    after = [ref.ask(f"after-{n}", block=False) for n in range(3)]
    assert await result(before) == ("echo", "before")
    await result(stopped)
    for future in after:
        with pytest.raises(pykka.ActorDeadError):
            await result(future)
    assert events == ["start", "before", "stop"]
    assert not ref.is_alive()
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("late")
    with pytest.raises(pykka.ActorDeadError):
        await result(ref.ask("late", block=False))


async def test_a_failing_told_message_calls_on_failure_and_stops_the_actor(start: Start) -> None:
    events: list[Any] = []
    ref = start(events)
    ref.tell("fail")
    pending = ref.ask("queued behind the failure", block=False)
    with pytest.raises(pykka.ActorDeadError):
        await result(pending)
    assert events == ["start", ("failure", ValueError)]  # on_stop is not called on failure
    assert not ref.is_alive()
    assert ref not in pykka.ActorRegistry.get_all()


async def test_a_failing_on_start_stops_the_actor(start: Start) -> None:
    events: list[Any] = []
    ref = start(events, FailsToStart)
    with pytest.raises(pykka.ActorDeadError):
        await result(ref.ask("never handled", block=False))
    assert events == []
    assert not ref.is_alive()


async def test_a_turn_yields_the_loop_after_messages_per_turn(start: Start) -> None:
    events: list[Any] = []
    ref = start(events)
    await until(lambda: events == ["start"])
    await asyncio.sleep(0)  # the actor's inbox is idle now
    seen_by_other_callbacks: list[int] = []
    for n in range(2 * MESSAGES_PER_TURN + 5):
        ref.tell(n)
    asyncio.get_running_loop().call_soon(lambda: seen_by_other_callbacks.append(len(events) - 1))
    await until(lambda: len(events) == 2 * MESSAGES_PER_TURN + 6)
    assert seen_by_other_callbacks == [MESSAGES_PER_TURN]


async def test_only_registered_actors_are_in_pykkas_registry(start: Start) -> None:
    ref = start([])
    registered = ref in pykka.ActorRegistry.get_all()
    assert registered == ref.actor_class.registered
