"""Messages between the HTTP layer, the wallet actors and the flush writer."""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import pykka

from wallet.domain.commands import WalletCommand
from wallet.domain.errors import DomainError, IdempotencyKeyReuseError
from wallet.domain.wallet import WalletState
from wallet.persistence.records import IdempotencyRecord, StoredEvent, WalletBatch


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer ready to send: HTTP status and JSON body.

    ``recordable``: stored under the request's X-Request-ID when it commits (a saga step that is
    not the transfer's last gives a non-recordable reply). ``outcome``: the decision itself, for
    a saga coordinator; never serialised.
    """

    status: int
    body: Any
    replayed: bool = False
    recordable: bool = True
    outcome: Any = None


@dataclass(frozen=True, slots=True)
class Accepted:
    """The command was decided and (once its flush commits) holds; ``state`` is the state after it."""

    state: WalletState
    events: tuple[StoredEvent, ...] = ()


@dataclass(frozen=True, slots=True)
class Rejected:
    error: DomainError


@dataclass(frozen=True, slots=True)
class Refused:
    """Not a business rule: the service could not take the command (503) or not yet (409)."""

    status: int
    name: str
    message: str


# The refusals, one constructor each; nothing else builds a Refused.


def unavailable(message: str) -> Refused:
    """503: the service cannot take the command now; the client retries (same X-Request-ID)."""
    return Refused(503, "ServiceUnavailableError", message)


def key_in_flight(message: str) -> Refused:
    """409: a request with this X-Request-ID is still being answered."""
    return Refused(409, "IdempotencyKeyInFlightError", message)


def saga_step_obsolete(message: str) -> Refused:
    """409: a saga step arrived for a saga already past that step (recovery or a retry sent it again)."""
    return Refused(409, "SagaStepObsoleteError", message)


def internal_error(message: str) -> Refused:
    """500: a reply the service cannot interpret (a bug, not a client's doing)."""
    return Refused(500, "InternalServerError", message)


Outcome = Accepted | Rejected | Refused


# The fingerprint's canonical JSON, encoded by one encoder made once (``json.dumps`` with these
# options makes one a call). The bytes are ``json.dumps(..., sort_keys=True, default=str)``'s, as
# every stored fingerprint's were, so a retry sent across an upgrade still matches its record.
_CANONICAL = json.JSONEncoder(sort_keys=True, default=str, check_circular=False)
_json_string = json.encoder.encode_basestring_ascii  # a str as that encoder writes it (ASCII-escaped)


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """``key``: the identity the record is stored under, an opaque string the service composes
    from the request (today the X-Request-ID itself); ``fingerprint``: what the request asked."""

    key: str
    fingerprint: str

    @classmethod
    def for_request(cls, key: str, operation: str, wallet_id: str, params: dict[str, Any]) -> IdempotencyKey:
        """The key of a request: its fingerprint is operation, wallet and validated parameters."""
        amount = params.get("amount")
        if type(amount) is int and len(params) == 1:  # {"amount": n}, the commonest: the same text
            canonical = f'[{_json_string(operation)}, {_json_string(wallet_id)}, {{"amount": {amount}}}]'
        else:
            canonical = _CANONICAL.encode([operation, wallet_id, params])
        return cls(key, hashlib.sha256(canonical.encode()).hexdigest())


def replay(record: IdempotencyRecord, key: IdempotencyKey, render: Callable[[Outcome], Reply]) -> Reply:
    """The answer to a request whose key is already recorded: the stored answer again if it is
    the same request, else 422 (the key was used for a different one)."""
    if record.fingerprint == key.fingerprint:
        return Reply(record.status, record.body, replayed=True)
    error = IdempotencyKeyReuseError("X-Request-ID was already used for a different request")
    return render(Rejected(error))


def _settle(future: asyncio.Future[Reply], reply: Reply) -> None:
    if not future.done():
        future.set_result(reply)


class ReplyTo(Protocol):
    """Where a command's reply goes. Both methods are safe to call from their named thread."""

    def from_thread(self, reply: Reply) -> None: ...

    def on_loop(self, reply: Reply) -> None: ...


@dataclass(frozen=True, slots=True)
class FutureReply:
    """The bridge to asyncio: an asyncio future of ``loop``, completed thread-safely.

    Actor threads complete it only through ``loop.call_soon_threadsafe``; code on the loop
    completes it directly. Nothing on the loop ever waits on a pykka future.
    """

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Reply]

    def from_thread(self, reply: Reply) -> None:
        self.loop.call_soon_threadsafe(_settle, self.future, reply)

    def on_loop(self, reply: Reply) -> None:
        _settle(self.future, reply)


@dataclass(frozen=True, slots=True)
class StepReply:
    """A wallet's answer to a saga step, told to the coordinator."""

    saga_id: str
    reply: Reply


@dataclass(frozen=True, slots=True)
class ActorReply:
    """Reply by telling an actor (the transfer coordinator) a ``StepReply``."""

    actor: pykka.ActorRef[Any]
    saga_id: str

    def from_thread(self, reply: Reply) -> None:
        self.actor.tell(StepReply(self.saga_id, reply))

    def on_loop(self, reply: Reply) -> None:
        self.actor.tell(StepReply(self.saga_id, reply))


@dataclass(slots=True)
class CommandEnvelope:
    """A command on its way to a wallet actor, with everything needed to answer it.

    ``render`` turns the outcome into the reply (it belongs to the HTTP layer and runs in the actor,
    because an idempotency record stores the rendered reply in the same transaction as the effect).
    """

    command: WalletCommand
    render: Callable[[Outcome], Reply]
    reply_to: ReplyTo
    idempotency: IdempotencyKey | None = None
    # Flushes of this command that failed for want of a connection and were ruled out (not
    # committed): the actor decides it again, up to a bound, instead of answering 503.
    failed_writes: int = 0
    # Who caused the command and the request it came with (``actor``, ``requestId``): merged
    # into the metadata of every event it causes.
    audit: dict[str, Any] | None = None

    def answer_from_thread(self, reply: Reply) -> None:
        self.reply_to.from_thread(reply)

    def answer_on_loop(self, reply: Reply) -> None:
        self.reply_to.on_loop(reply)


class FlushResult(enum.Enum):
    COMMITTED = "committed"
    CONFLICT = "conflict"
    KEYS_TAKEN = "keys taken"  # not applied: some of its X-Request-IDs were already recorded
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Flush:
    """Told by a wallet actor to itself: write what has been decided so far."""


@dataclass(frozen=True, slots=True)
class Flushed:
    """Told by the writer to a wallet actor when its batch's transaction ended."""

    result: FlushResult
    error: BaseException | None = None
    token: int = 0  # which of the actor's batches
    taken: tuple[IdempotencyRecord, ...] = ()  # KEYS_TAKEN: the stored records of those keys


@dataclass(frozen=True, slots=True)
class Passivate:
    """Told by the directory after removing the actor: stop once nothing is in flight."""


@dataclass(slots=True)
class FlushRequest:
    """One wallet's batch for the writer, with the answers to send once it commits."""

    batch: WalletBatch
    answers: list[tuple[CommandEnvelope, Reply]]
    actor: pykka.ActorRef[Any]
    token: int = 0
    # Set by the writer at COMMIT, before the answers go out (a loop round later): from then on
    # these answers are the writer's to give, whatever happens to the actor meanwhile.
    committed: bool = False


FLUSH = Flush()
PASSIVATE = Passivate()
