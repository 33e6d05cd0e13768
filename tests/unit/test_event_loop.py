"""EVENT_LOOP: the loop `wallet serve`, `relay` and `worker` run on (wallet/event_loop.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
import uvloop

from wallet import event_loop
from wallet.config import Settings


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_uvloop_is_the_default() -> None:
    assert Settings().event_loop == "uvloop"
    assert Settings.from_env({"EVENT_LOOP": "AsyncIO"}).event_loop == "asyncio"


def test_each_setting_runs_its_own_loop() -> None:
    assert event_loop.run(_loop_type(), "uvloop") is uvloop.Loop
    standard = event_loop.run(_loop_type(), "asyncio")
    assert issubclass(standard, asyncio.BaseEventLoop) and not issubclass(standard, uvloop.Loop)


def test_an_unknown_loop_is_an_error() -> None:
    with pytest.raises(ValueError, match="EVENT_LOOP must be one of uvloop, asyncio"):
        event_loop.loop_factory("tokio")


def test_the_command_refuses_an_unknown_loop_before_it_starts() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "wallet", "relay"],
        env={"EVENT_LOOP": "tokio", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "EVENT_LOOP must be one of uvloop, asyncio" in done.stderr


def test_a_missing_uvloop_is_named_with_the_way_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    with pytest.raises(ValueError, match=r"uvloop is not installed.*EVENT_LOOP=asyncio"):
        event_loop.loop_factory("uvloop")
