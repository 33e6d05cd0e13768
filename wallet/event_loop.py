"""The event loop each of the service's processes runs on: uvloop, or asyncio's own (``EVENT_LOOP``).

uvloop (libuv under asyncio's interface) does a transport's reads and writes, its callbacks and
its timers in C; the loop's own work is a large share of every request here (DESIGN.md §8).
asyncio's loop stays a setting: for a platform without uvloop, and to compare the two.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

LOOPS = ("uvloop", "asyncio")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes the named loop (None: asyncio's default). A name not in ``LOOPS`` is an error."""
    if name == "asyncio":
        return None
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise ValueError(
                "EVENT_LOOP=uvloop but uvloop is not installed: install it, or set EVENT_LOOP=asyncio"
            ) from None
        return uvloop.new_event_loop
    raise ValueError(f"EVENT_LOOP must be one of {', '.join(LOOPS)}, not {name!r}")


def run(main: Coroutine[Any, Any, T], loop: str) -> T:
    """``asyncio.run(main)`` on the named loop."""
    factory = loop_factory(loop)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
