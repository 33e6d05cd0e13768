"""An actor that fails leaves the answers of a flight that already committed to the writer."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from wallet.actors.messages import CommandEnvelope, FlushRequest, Reply
from wallet.actors.wallet_actor import WalletActor, WalletActorContext, _Decided, _Flight
from wallet.domain.commands import Freeze
from wallet.persistence.records import WalletBatch


class _Recorder:
    def __init__(self) -> None:
        self.replies: list[Reply] = []

    def from_thread(self, reply: Reply) -> None:
        self.replies.append(reply)

    def on_loop(self, reply: Reply) -> None:
        self.replies.append(reply)


def _flight(actor: WalletActor, token: int, committed: bool) -> tuple[_Flight, _Recorder]:
    recorder = _Recorder()
    envelope = CommandEnvelope(Freeze("r", None), lambda outcome: Reply(503, {}), recorder)  # type: ignore[arg-type]
    decided = _Decided(envelope, Reply(200, {"ok": True}), ())
    batch = WalletBatch(wallet_id="w", expected_version=token, state=None, events=(), keys=())
    request = FlushRequest(batch, [(envelope, decided.reply)], actor.actor_ref, token, committed=committed)
    return _Flight(token, [decided], None, None, request), recorder


async def test_fail_everything_answers_uncommitted_flights_only():
    loop = asyncio.get_running_loop()
    nothing: Any = None
    context = WalletActorContext(loop, threading.get_ident(), nothing, nothing, nothing, lambda r: None)
    actor = WalletActor("w", context)
    committed, committed_client = _flight(actor, 1, committed=True)
    pending, pending_client = _flight(actor, 2, committed=False)
    actor._flights.extend([committed, pending])
    actor._fail_everything("internal error")
    assert committed_client.replies == []  # the writer gives its 200 a loop round later
    assert [r.status for r in pending_client.replies] == [503]
