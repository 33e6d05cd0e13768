"""GroupedCalls: calls made together share one round; a failing round fails only its own calls."""

from __future__ import annotations

import asyncio

import pytest

from wallet.persistence.grouped import GroupedCalls


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
