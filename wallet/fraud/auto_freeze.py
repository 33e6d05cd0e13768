"""Auto-freeze (``FRAUD_AUTO_FREEZE``, off by default), in the API process.

Consumes the critical fraud alerts the worker publishes (``fraud.alert.critical``, queue
``FRAUD_ALERT_QUEUE``) and freezes the wallet through the service's own command path,
``execute(wallet_id, Freeze(...), render, key)``, given at construction: the wallet actor
decides, the event is written, published and cached like any other. The idempotency key is
derived from the alert id, so a redelivered alert replays the first freeze's reply instead of
freezing again (a wallet that an operator unfroze meanwhile stays unfrozen). A wallet already
frozen or closed, or unknown, is answered 4xx and the alert is done; a 503 (or anything
unexpected) is retried with back-off.

It connects in the background and never stops the service from starting or serving. Given an
``InProcessBus`` (embedded mode, no ``RABBITMQ_URL``) it consumes the alerts from the bus instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aio_pika.abc import AbstractRobustConnection

from wallet.actors.messages import Accepted, IdempotencyKey, Outcome, Refused, Rejected, Reply
from wallet.auth.principal import FRAUD_AUTO_FREEZE, audit
from wallet.config import Settings
from wallet.domain.commands import Freeze, WalletCommand
from wallet.fraud.messages import parse_alert
from wallet.fraud.rules import Severity
from wallet.messaging.connection import connect_robust_retrying
from wallet.messaging.consumer import RetryingConsumer
from wallet.messaging.inprocess import Delivery, InProcessBus, Subscription
from wallet.messaging.topology import alert_topology

log = logging.getLogger(__name__)

# How the auto-freezer runs its command: the service's own ``execute``.
# (wallet id, command, render, idempotency key, audit metadata: the actor and request id)
Execute = Callable[
    [str, WalletCommand, Callable[[Outcome], Reply], IdempotencyKey | None, dict[str, Any] | None],
    Awaitable[Reply],
]


class FreezeFailedError(Exception):
    """The freeze command did not go through; the alert will be retried."""


def render(outcome: Outcome) -> Reply:
    if isinstance(outcome, Accepted):
        state = outcome.state
        return Reply(
            200, {"walletId": state.wallet_id, "status": str(state.status), "version": state.version}
        )
    if isinstance(outcome, Rejected):
        return Reply(outcome.error.status, {"error": outcome.error.name, "message": outcome.error.message})
    assert isinstance(outcome, Refused)
    return Reply(outcome.status, {"error": outcome.name, "message": outcome.message})


class AutoFreezer:
    def __init__(
        self, execute: Execute, settings: Settings, *, name: str, bus: InProcessBus | None = None
    ) -> None:
        self._execute = execute
        self._name = name
        self._settings = settings
        self._bus = bus
        self._task: asyncio.Task[None] | None = None
        self._connection: AbstractRobustConnection | None = None
        self._consumer: RetryingConsumer | Subscription | None = None
        self.frozen = 0
        self.ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="fraud-auto-freeze")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._connection.close(), 5.0)

    async def _run(self) -> None:
        s = self._settings
        if self._bus is not None:
            self._consumer = self._bus.subscribe(alert_topology(s), self.handle, name="auto-freeze")
            self.ready.set()
            log.info("auto-freeze consuming %s (in-process bus)", s.fraud_alert_queue)
            return
        self._connection = await connect_robust_retrying(
            s.rabbitmq_url, name=f"{self._name}-auto-freeze", max_backoff=s.outbox_backoff_max_seconds
        )
        channel = await self._connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=8)
        consumer = RetryingConsumer(channel, alert_topology(s), self.handle, name="auto-freeze")
        self._consumer = consumer
        await consumer.start()
        self.ready.set()
        log.info("auto-freeze consuming %s", s.fraud_alert_queue)

    async def handle(self, message: Delivery) -> None:
        alert = parse_alert(message.body)
        if alert.severity != Severity.CRITICAL:
            return
        reason = f"fraud alert {alert.rule} {alert.alert_id}: {alert.reason}"[:500]
        params: dict[str, Any] = {"reason": reason}
        key = IdempotencyKey.for_request(f"fraud-freeze:{alert.alert_id}", "freeze", alert.wallet_id, params)
        command = Freeze(reason, datetime.now(UTC))
        request_id = f"fraud-alert:{alert.alert_id}"
        reply = await self._execute(
            alert.wallet_id, command, render, key, audit(FRAUD_AUTO_FREEZE, request_id)
        )
        if reply.status == 200:
            if not reply.replayed:
                self.frozen += 1
                log.warning(
                    "wallet %s frozen by fraud alert %s (%s)", alert.wallet_id, alert.alert_id, alert.rule
                )
            return
        if 400 <= reply.status < 500 and reply.status not in (408, 409, 429):
            log.info("fraud alert %s: wallet %s not frozen: %s", alert.alert_id, alert.wallet_id, reply.body)
            return
        raise FreezeFailedError(f"freeze of {alert.wallet_id} answered {reply.status}: {reply.body}")
