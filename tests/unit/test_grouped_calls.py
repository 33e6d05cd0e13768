"""GroupedCalls: calls made together share one round; a failing round fails only its own calls."""

from __future__ import annotations

import asyncio

import pytest

from wallet.persistence.grouped import Failed, GroupedCalls


async def test_calls_made_together_share_a_round_and_get_their_own_results():
    rounds: list[list[int]] = []

    async def double_all(items: list[int]) -> list[int]:
        rounds.append(items)
        await asyncio.sleep(0.01)
        return [2 * i for i in items]

    grouped = GroupedCalls(double_all, max_batch=4)
    results = await asyncio.gather(*(grouped(i) for i in range(10)))
    assert results == [2 * i for i in range(10)]
    assert rounds == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert await grouped(21) == 42  # the worker starts again after going idle


async def test_a_failing_round_fails_its_calls_and_the_next_round_goes_on():
    async def flaky(items: list[str]) -> list[str]:
        await asyncio.sleep(0)
        if "bad" in items:
            raise ValueError("round failed")
        return items

    grouped = GroupedCalls(flaky)
    first = [asyncio.ensure_future(grouped(x)) for x in ("a", "bad")]
    await asyncio.sleep(0)  # the first round (a, bad) is sent
    later = asyncio.ensure_future(grouped("c"))
    for future in first:
        with pytest.raises(ValueError):
            await future
    assert await later == "c"


async def test_a_wrong_number_of_results_is_an_error_not_a_mismatch():
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    grouped = GroupedCalls(short)
    with pytest.raises(RuntimeError, match="2 results for 3 calls"):
        await asyncio.gather(*(grouped(i) for i in range(3)))


async def test_an_item_that_fails_alone_fails_only_its_call():
    async def some_fail(items: list[int]) -> list[int | Failed]:
        return [Failed(KeyError(i)) if i % 2 else i for i in items]

    grouped = GroupedCalls(some_fail)
    results = await asyncio.gather(*(grouped(i) for i in range(4)), return_exceptions=True)
    assert results[0] == 0 and results[2] == 2
    assert isinstance(results[1], KeyError) and isinstance(results[3], KeyError)


async def test_a_cancelled_worker_leaves_no_call_waiting():
    started = asyncio.Event()

    async def forever(items: list[int]) -> list[int]:
        started.set()
        await asyncio.sleep(3600)
        return items

    grouped = GroupedCalls(forever, max_batch=1)
    calls = [asyncio.ensure_future(grouped(i)) for i in range(3)]  # one in the round, two queued
    await started.wait()
    assert grouped._worker is not None
    grouped._worker.cancel()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
