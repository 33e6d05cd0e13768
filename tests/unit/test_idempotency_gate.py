"""The idempotency gate on its own: a key stays in flight until its command's outcome, whatever the
timeouts, so a retry never starts a second effect; duplicates get the first reply, replayed."""

from __future__ import annotations

import asyncio
from typing import Any

from wallet.actors.messages import IdempotencyKey, Refused, Rejected, Reply
from wallet.service.deadlines import Deadlines
from wallet.service.idempotency import IdempotencyGate

KEY = IdempotencyKey("k|gate", "fingerprint-a")


def render(outcome: Any) -> Reply:
    if isinstance(outcome, Rejected):
        return Reply(422, {"error": type(outcome.error).__name__})
    assert isinstance(outcome, Refused)
    return Reply(outcome.status, {"error": outcome.name, "message": outcome.message})


class Commands:
    """``send`` for the gate: counts the commands started and hands out their futures."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[Reply]] = []

    def send(self) -> asyncio.Future[Reply]:
        self.futures.append(asyncio.get_running_loop().create_future())
        return self.futures[-1]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def started(gate: IdempotencyGate, commands: Commands) -> asyncio.Future[Reply]:
    """A request with ``KEY`` in a task of its own, run until it waits."""
    request = asyncio.ensure_future(gate.run(KEY, render, commands.send))
    await settle()
    return request


async def test_a_duplicate_in_flight_gets_the_first_reply_replayed_and_starts_nothing() -> None:
    gate, commands = IdempotencyGate(Deadlines(30.0)), Commands()
    first = await started(gate, commands)
    duplicate = await started(gate, commands)
    commands.futures[0].set_result(Reply(200, {"balance": "1.00"}))
    assert (await first) == Reply(200, {"balance": "1.00"})
    assert (await duplicate) == Reply(200, {"balance": "1.00"}, replayed=True)
    assert len(commands.futures) == 1


async def test_another_request_with_a_key_in_flight_is_refused_at_once() -> None:
    gate, commands = IdempotencyGate(Deadlines(30.0)), Commands()
    first = await started(gate, commands)
    other = await asyncio.wait_for(
        gate.run(IdempotencyKey(KEY.key, "fingerprint-b"), render, commands.send), 1
    )
    assert (other.status, other.body["error"]) == (422, "IdempotencyKeyReuseError")
    commands.futures[0].set_result(Reply(200, {}))
    await first
    assert len(commands.futures) == 1


async def test_a_timed_out_request_leaves_its_key_in_flight_until_the_command_settles() -> None:
    deadlines = Deadlines(0.0)  # every wait is past its deadline at the next sweep
    gate, commands = IdempotencyGate(deadlines), Commands()
    first = await started(gate, commands)
    deadlines.sweep()
    timed_out = await first
    assert (timed_out.status, timed_out.body["error"]) == (503, "ServiceUnavailableError")
    assert not commands.futures[0].done()  # the command itself is untouched

    retry = await started(gate, commands)
    deadlines.sweep()
    in_flight = await retry
    assert (in_flight.status, in_flight.body["error"]) == (409, "IdempotencyKeyInFlightError")
    assert len(commands.futures) == 1  # no second effect while the first may still commit

    commands.futures[0].set_result(Reply(200, {"balance": "1.00"}))
    await settle()
    after = await started(gate, commands)
    assert len(commands.futures) == 2  # settled: the key left the gate (the flush replays it)
    commands.futures[1].set_result(Reply(200, {"balance": "1.00"}, replayed=True))
    assert (await after).replayed


async def test_a_failed_command_answers_503_to_everyone_and_frees_its_key() -> None:
    gate, commands = IdempotencyGate(Deadlines(30.0)), Commands()
    first = await started(gate, commands)
    duplicate = await started(gate, commands)
    commands.futures[0].set_exception(RuntimeError("connection lost"))
    answers = [await first, await duplicate]
    assert [(a.status, a.replayed) for a in answers] == [(503, False), (503, False)]
    retry = await started(gate, commands)
    commands.futures[1].set_result(Reply(200, {}))
    assert (await retry).status == 200 and len(commands.futures) == 2


async def test_a_cancelled_request_does_not_cancel_its_command() -> None:
    gate, commands = IdempotencyGate(Deadlines(30.0)), Commands()
    first = await started(gate, commands)
    first.cancel()
    await settle()
    assert not commands.futures[0].cancelled()
    duplicate = await started(gate, commands)
    commands.futures[0].set_result(Reply(200, {}))
    assert (await duplicate).replayed and len(commands.futures) == 1


async def test_a_cancelled_command_answers_503_to_everyone_and_frees_its_key() -> None:
    gate, commands = IdempotencyGate(Deadlines(30.0)), Commands()
    first = await started(gate, commands)
    duplicate = await started(gate, commands)
    commands.futures[0].cancel()
    answers = await asyncio.wait_for(asyncio.gather(first, duplicate), 1)
    assert [(a.status, a.replayed) for a in answers] == [(503, False), (503, False)]
    retry = await started(gate, commands)
    commands.futures[1].set_result(Reply(200, {}))
    assert (await retry).status == 200


async def test_a_command_run_as_a_task_is_followed_as_a_future_is() -> None:
    """As transfers use the gate: ``send`` starts a task, which no timeout may cancel."""
    deadlines = Deadlines(0.0)
    gate, release = IdempotencyGate(deadlines), asyncio.Event()

    async def transfer() -> Reply:
        await release.wait()
        return Reply(200, {"state": "COMPLETED"})

    tasks: list[asyncio.Task[Reply]] = []

    def send() -> asyncio.Future[Reply]:
        tasks.append(asyncio.ensure_future(transfer()))
        return tasks[-1]

    first = asyncio.ensure_future(gate.run(KEY, render, send))
    await settle()
    deadlines.sweep()
    assert (await first).status == 503 and not tasks[0].done()
    duplicate = asyncio.ensure_future(gate.run(KEY, render, send))
    await settle()
    release.set()
    assert (await duplicate) == Reply(200, {"state": "COMPLETED"}, replayed=True)
    assert len(tasks) == 1
