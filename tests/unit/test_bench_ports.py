"""The bench never measures a server it did not start: a port already listened on is refused, and
a bench stopped by SIGTERM stops the servers it started."""

from __future__ import annotations

import asyncio
import os
import signal
import socket

import pytest

from wallet.bench import cancelled_on_sigterm
from wallet.bench.services import StartError, ensure_port_free, spawn


def test_a_server_is_not_started_on_a_port_another_process_listens_on() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:  # a server left by a run
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(StartError, match=f"port {port}, where ceiling would listen, is taken"):
            spawn("ceiling", ["-c", "raise SystemExit('must not start')"], port)
        # A process that listens on nothing (the relay, a worker) starts whatever holds the port.
        relay = spawn("relay", ["-c", "pass"], port, listens=False)
        assert relay.proc.wait(30) == 0
        relay.stop()
    ensure_port_free(port, "ceiling")  # free again once its holder is gone


async def test_sigterm_cancels_the_bench_so_its_cleanup_runs() -> None:
    cleaned_up = asyncio.Event()

    async def bench() -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill <bench>` would, mid-run
            await asyncio.sleep(30)
        finally:
            cleaned_up.set()  # where the bench stops its servers and drops its database

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(cancelled_on_sigterm(bench()), 10)
    assert cleaned_up.is_set()
    # The handler is gone with the run: SIGTERM means what it meant before.
    assert not asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
