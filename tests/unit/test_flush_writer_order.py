"""The flush writer tells the actors before it answers the clients, so a wallet's next batch goes
to the database while the previous batch's responses are being written (no idle gap)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from wallet.actors.messages import Flushed, FlushRequest, FlushResult, Reply
from wallet.actors.writer import FlushWriter
from wallet.persistence.records import WalletBatch


class _Answer:
    """Like a client's future: answering it wakes the request's task, which runs later."""

    def __init__(self, log: list[str], name: str) -> None:
        self._log, self._name = log, name

    def answer_on_loop(self, reply: Reply) -> None:
        asyncio.get_running_loop().call_soon(self._log.append, f"answer {self._name}")


class _Actor:
    """Like a wallet actor on the loop: on Flushed, its next turn sends the batch waiting."""

    def __init__(self, log: list[str], writer_box: list[FlushWriter], waiting: list[FlushRequest]) -> None:
        self._log, self._writer_box, self._waiting = log, writer_box, waiting

    def tell(self, message: Any) -> None:
        assert isinstance(message, Flushed) and message.result is FlushResult.COMMITTED
        self._log.append(f"flushed {message.token}")
        if self._waiting:
            asyncio.get_running_loop().call_soon(self._writer_box[0].submit, self._waiting.pop(0))


def _request(log: list[str], actor: _Actor, token: int) -> FlushRequest:
    batch = WalletBatch(wallet_id="w", expected_version=token - 1, state=None, events=(), keys=())
    answers: list[Any] = [(_Answer(log, f"{token}.{n}"), Reply(200, {})) for n in range(3)]
    return FlushRequest(batch, answers, actor, token)  # type: ignore[arg-type]


async def test_the_next_batch_is_applied_before_the_previous_answers_go_out():
    log: list[str] = []

    async def apply(batches: Sequence[WalletBatch]) -> dict[int, tuple[Any, ...]]:
        log.append(f"apply {batches[0].expected_version + 1}")
        await asyncio.sleep(0.001)
        return {}

    writer_box: list[FlushWriter] = []
    waiting: list[FlushRequest] = []
    actor = _Actor(log, writer_box, waiting)
    writer = FlushWriter(asyncio.get_running_loop(), apply, concurrency=1, max_wallets=10)
    writer_box.append(writer)
    waiting.append(_request(log, actor, 2))
    writer.start()
    writer.submit(_request(log, actor, 1))
    async with asyncio.timeout(5):
        while sum(e.startswith("answer") for e in log) < 6:
            await asyncio.sleep(0.001)
    await writer.stop()
    assert log[:3] == ["apply 1", "flushed 1", "apply 2"]
    assert log.index("apply 2") < log.index("answer 1.0")
    assert [e for e in log if e.startswith("answer")] == [f"answer {t}.{n}" for t in (1, 2) for n in range(3)]


class _Recorder:
    """An actor that records how its batch ended."""

    def __init__(self) -> None:
        self.results: list[FlushResult] = []

    def tell(self, message: Any) -> None:
        self.results.append(message.result)


def _plain(token: int, actor: Any) -> FlushRequest:
    batch = WalletBatch(wallet_id=f"w{token}", expected_version=token, state=None, events=(), keys=())
    return FlushRequest(batch, [], actor, token)


async def test_each_batch_is_fenced_before_its_flush_and_the_next_fence_overlaps_a_flush():
    """The cache's fences must land before the transaction that may change those wallets; the
    fence of the batches that arrive during a flush is sent during that flush, not after it."""
    log: list[str] = []
    writer_box: list[FlushWriter] = []
    actor = _Recorder()

    async def fence(batches: Sequence[WalletBatch]) -> None:
        names = ",".join(str(b.expected_version) for b in batches)
        log.append(f"fence {names}")
        await asyncio.sleep(0.002)
        log.append(f"fenced {names}")

    async def apply(batches: Sequence[WalletBatch]) -> dict[int, tuple[Any, ...]]:
        names = ",".join(str(b.expected_version) for b in batches)
        log.append(f"apply {names}")
        if names == "1":  # batch 2 arrives while batch 1's transaction runs
            writer_box[0].submit(_plain(2, actor))
        await asyncio.sleep(0.01)
        log.append(f"applied {names}")
        return {}

    writer = FlushWriter(
        asyncio.get_running_loop(), apply, concurrency=1, max_wallets=10, before_commit=fence
    )
    writer_box.append(writer)
    writer.start()
    writer.submit(_plain(1, actor))
    async with asyncio.timeout(5):
        while len(actor.results) < 2:
            await asyncio.sleep(0.001)
    await writer.stop()
    assert log == [
        "fence 1",
        "fenced 1",
        "apply 1",
        "fence 2",
        "fenced 2",
        "applied 1",
        "apply 2",
        "applied 2",
    ]
    assert actor.results == [FlushResult.COMMITTED] * 2


async def test_a_batch_whose_fence_failed_is_not_written_and_the_writer_goes_on():
    applied: list[int] = []
    actor = _Recorder()

    async def fence(batches: Sequence[WalletBatch]) -> None:
        if batches[0].expected_version == 1:
            raise RuntimeError("a bug in the hook")

    async def apply(batches: Sequence[WalletBatch]) -> dict[int, tuple[Any, ...]]:
        applied.extend(b.expected_version for b in batches)
        return {}

    writer = FlushWriter(
        asyncio.get_running_loop(), apply, concurrency=1, max_wallets=10, before_commit=fence
    )
    writer.start()
    writer.submit(_plain(1, actor))
    async with asyncio.timeout(5):
        while not actor.results:
            await asyncio.sleep(0.001)
    writer.submit(_plain(2, actor))
    async with asyncio.timeout(5):
        while len(actor.results) < 2:
            await asyncio.sleep(0.001)
    await writer.stop()
    assert actor.results == [FlushResult.FAILED, FlushResult.COMMITTED]
    assert applied == [2]
