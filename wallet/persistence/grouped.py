"""Calls that arrive together share one round trip (group commit for small writes)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Failed:
    """A per-item failure in ``call_many``'s results: that call raises ``error``, the others
    of its round still get their results."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class GroupedCalls(Generic[Item, Result]):
    """On the event loop: each call queues its item; one worker sends every queued item to
    ``call_many`` at once (at most ``max_batch``), and the calls that arrive meanwhile go in the
    next round. ``call_many`` answers with one result per item, in order (a ``Failed`` for an
    item that failed alone); if it raises, every call of that round raises the same exception."""

    def __init__(
        self, call_many: Callable[[list[Item]], Awaitable[Sequence[Result | Failed]]], *, max_batch: int = 500
    ) -> None:
        self._call_many = call_many
        self._max_batch = max_batch
        self._queue: list[tuple[Item, asyncio.Future[Result]]] = []
        self._worker: asyncio.Task[None] | None = None

    async def __call__(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._queue.append((item, future))
        if self._worker is None:
            self._worker = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        try:
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                try:
                    results = await self._call_many([item for item, _ in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"{len(results)} results for {len(batch)} calls")
                except Exception as exc:
                    _fail(batch, exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, Failed):
                        future.set_exception(result.error)
                    else:
                        future.set_result(result)
                batch = []
        except BaseException:  # cancelled (loop teardown): no caller is left waiting
            queued, self._queue = self._queue, []
            _fail(batch + queued, RuntimeError("grouped calls stopped"))
            raise
        finally:
            self._worker = None


def _fail(calls: list[tuple[Item, asyncio.Future[Result]]], error: BaseException) -> None:
    for _, future in calls:
        if not future.done():
            future.set_exception(error)
