"""``WalletClient``: the wallet API over aiohttp, with safe retries, typed results and exceptions.

Every call has one ``X-Request-ID`` (made here, or the caller's ``request_id=``) that every retry
of it reuses, so the server applies the call at most once however many attempts it takes (a
retried deposit that did land the first time is answered with the stored answer, ``replayed``).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp

from wallet.client.errors import (
    ConnectionFailedError,
    DeadlineExceededError,
    ForbiddenError,
    NotFoundError,
    TransferPendingError,
    WalletError,
    error_class,
    error_from_answer,
)
from wallet.client.models import (
    Amount,
    Balance,
    FraudAlert,
    HistoryEntry,
    Transfer,
    Wallet,
    amount_json,
    to_amount,
)
from wallet.client.retry import Deadline, RetryPolicy, is_retryable, retry_after_seconds

_TRANSIENT_EXCEPTIONS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)


def new_request_id() -> str:
    """A fresh idempotency key (a random UUID)."""
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: Any
    replayed: bool
    retry_after: str | None
    text: str


class WalletClient:
    """A client of the wallet service.

    ``base_url``: the service's root (``http://host:3000``); the client uses the ``/v1`` routes.
    ``api_key``: sent as ``Authorization: Bearer <api_key>`` on every request (never logged or put
    in an exception). ``session``: an ``aiohttp.ClientSession`` to use (the caller closes it);
    without one the client opens its own, closed by ``async with`` or ``aclose()``.
    ``retry``: deadline, attempt timeout and backoff of every call (``RetryPolicy``).

    Every method takes ``deadline=`` (seconds, overriding the policy's for that call); writes take
    ``request_id=`` (the idempotency key; one is made per call otherwise). Transient failures (503,
    502/504, 409, 429, connection errors, timeouts) are retried with the same key
    until the deadline; other errors raise at once. Errors are ``WalletError`` subclasses named as
    the API's ``error`` field (``InsufficientFundsError``, ``WalletNotFoundError``, ...).

        async with WalletClient("http://localhost:3000", api_key=key) as wallets:
            await wallets.deposit("alice", Decimal("100.50"))
            done = await wallets.transfer("alice", "bob", "25")
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        session: aiohttp.ClientSession | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        root = base_url.rstrip("/")
        self._base = root if root.endswith("/v1") else f"{root}/v1"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._session = session
        self._owns_session = session is None
        self.retry = retry or RetryPolicy()

    def __repr__(self) -> str:  # without the key
        return f"WalletClient({self._base!r}, api_key={'***' if self._headers else None})"

    async def __aenter__(self) -> WalletClient:
        self._ensure_session()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client's own session (not one given to it). (``close`` closes a wallet.)"""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- wallet operations ----------------------------------------------------------------

    async def deposit(
        self,
        wallet_id: str,
        amount: Amount,
        *,
        currency: str | None = None,
        request_id: str | None = None,
        deadline: float | None = None,
    ) -> Balance:
        """Deposit ``amount``; the first deposit creates the wallet (in ``currency``, if given)."""
        body: dict[str, Any] = {"amount": amount_json(to_amount(amount))}
        if currency is not None:
            body["currency"] = currency
        key = request_id or new_request_id()
        answer = await self._call("POST", _wallet_path(wallet_id, "deposit"), key, deadline, body)
        return Balance.from_json(answer.body, key, answer.replayed)

    async def withdraw(
        self, wallet_id: str, amount: Amount, *, request_id: str | None = None, deadline: float | None = None
    ) -> Balance:
        body = {"amount": amount_json(to_amount(amount))}
        key = request_id or new_request_id()
        answer = await self._call("POST", _wallet_path(wallet_id, "withdraw"), key, deadline, body)
        return Balance.from_json(answer.body, key, answer.replayed)

    async def transfer(
        self,
        from_wallet_id: str,
        to_wallet_id: str,
        amount: Amount,
        *,
        request_id: str | None = None,
        deadline: float | None = None,
    ) -> Transfer:
        """Move ``amount``; returns the COMPLETED transfer or raises why it FAILED/COMPENSATED.

        If the service answers that the transfer is under way (503/409 naming its saga), the
        client follows it with ``GET /v1/transfers/{id}`` until it is terminal (or, if the key may
        not read transfers, keeps asking with the POST and its key); if the deadline passes
        first, ``TransferPendingError`` carries the saga id (the service's recovery still
        finishes it: follow it with ``get_transfer``).
        """
        path = _wallet_path(from_wallet_id, "transfer")
        body = {"toWalletId": to_wallet_id, "amount": amount_json(to_amount(amount))}
        key = request_id or new_request_id()
        clock = self._deadline(deadline)
        try:
            answer = await self._call("POST", path, key, clock, body, stop_on=_names_saga)
        except WalletError as exc:
            if isinstance(exc, DeadlineExceededError) or not _names_saga(exc) or exc.saga_id is None:
                raise
            try:
                return await self._follow(exc.saga_id, key, clock)
            except ForbiddenError:  # no transfers:read: the POST's replay gives the end too
                pass
            try:
                answer = await self._call("POST", path, key, clock, body)
            except DeadlineExceededError as late:
                raise _pending(exc.saga_id, None, key, late.last_error) from late
        return Transfer.from_json(answer.body, key, answer.replayed)

    async def wallet(self, wallet_id: str, *, deadline: float | None = None) -> Wallet:
        """The wallet: balance, currency, status, version, daily withdrawal limit."""
        key = new_request_id()
        answer = await self._call("GET", _wallet_path(wallet_id), key, deadline)
        return Wallet.from_json(answer.body, key, answer.replayed)

    async def balance(self, wallet_id: str, *, deadline: float | None = None) -> Decimal:
        """The wallet's balance alone."""
        return (await self.wallet(wallet_id, deadline=deadline)).balance

    async def history(
        self, wallet_id: str, *, page_size: int = 100, offset: int = 0, deadline: float | None = None
    ) -> AsyncIterator[HistoryEntry]:
        """Every event of the wallet from ``offset`` on, oldest first, fetched ``page_size`` at a
        time (1..1000); ``deadline`` applies to each page."""
        while True:
            path = _wallet_path(wallet_id, "history")
            params = {"limit": str(page_size), "offset": str(offset)}
            answer = await self._call("GET", path, new_request_id(), deadline, params=params)
            for item in answer.body:
                yield HistoryEntry.from_json(item)
            if len(answer.body) < page_size:
                return
            offset += len(answer.body)

    async def get_transfer(self, saga_id: str, *, deadline: float | None = None) -> Transfer:
        """A transfer in whatever state it is (PENDING, DEBITED, COMPLETED, FAILED, COMPENSATED)."""
        key = new_request_id()
        answer = await self._call("GET", f"/transfers/{quote(saga_id, safe='')}", key, deadline)
        return Transfer.from_json(answer.body, key, answer.replayed)

    async def freeze(
        self,
        wallet_id: str,
        reason: str = "",
        *,
        request_id: str | None = None,
        deadline: float | None = None,
    ) -> Wallet:
        return await self._lifecycle(wallet_id, "freeze", reason, request_id, deadline)

    async def unfreeze(
        self,
        wallet_id: str,
        reason: str = "",
        *,
        request_id: str | None = None,
        deadline: float | None = None,
    ) -> Wallet:
        return await self._lifecycle(wallet_id, "unfreeze", reason, request_id, deadline)

    async def close(
        self,
        wallet_id: str,
        reason: str = "",
        *,
        request_id: str | None = None,
        deadline: float | None = None,
    ) -> Wallet:
        """Close the wallet (its balance must be zero). To close the client, ``aclose()``."""
        return await self._lifecycle(wallet_id, "close", reason, request_id, deadline)

    async def set_daily_limit(
        self,
        wallet_id: str,
        limit: Amount | None,
        *,
        request_id: str | None = None,
        deadline: float | None = None,
    ) -> Wallet:
        """Set the daily withdrawal limit (``None`` removes it)."""
        value = None if limit is None else amount_json(to_amount(limit, "limit"))
        key = request_id or new_request_id()
        body = {"dailyWithdrawalLimit": value}
        answer = await self._call("PUT", _wallet_path(wallet_id, "limits"), key, deadline, body)
        return Wallet.from_json(answer.body, key, answer.replayed)

    async def fraud_alerts(
        self, wallet_id: str | None = None, *, limit: int = 100, deadline: float | None = None
    ) -> list[FraudAlert]:
        """The fraud worker's alerts, newest first (of one wallet, or all)."""
        params = {"limit": str(limit)} | ({"walletId": wallet_id} if wallet_id else {})
        answer = await self._call("GET", "/fraud/alerts", new_request_id(), deadline, params=params)
        return [FraudAlert.from_json(item) for item in answer.body]

    # -- the retry loop -------------------------------------------------------------------------

    async def _lifecycle(
        self, wallet_id: str, action: str, reason: str, request_id: str | None, deadline: float | None
    ) -> Wallet:
        key = request_id or new_request_id()
        answer = await self._call("POST", _wallet_path(wallet_id, action), key, deadline, {"reason": reason})
        return Wallet.from_json(answer.body, key, answer.replayed)

    def _deadline(self, deadline: float | Deadline | None) -> Deadline:
        if isinstance(deadline, Deadline):
            return deadline
        return Deadline(self.retry.deadline if deadline is None else deadline)

    async def _call(
        self,
        method: str,
        path: str,
        request_id: str,
        deadline: float | Deadline | None,
        body: dict[str, Any] | None = None,
        *,
        params: dict[str, str] | None = None,
        stop_on: Callable[[WalletError], bool] | None = None,
    ) -> _Answer:
        """One call: attempts with the same ``request_id`` until a success (2xx), an error not
        worth retrying (raised), or the deadline (``DeadlineExceededError``). ``stop_on``: a
        retryable error to raise instead of retrying."""
        clock = self._deadline(deadline)
        payload = None if body is None else json.dumps(body)
        retries = 0
        error: WalletError | None = None  # the last retryable failure
        while True:
            timeout = min(self.retry.attempt_timeout, clock.remaining())
            if timeout <= 0:  # the clock ran out during the back-off's sleep
                raise _deadline_error(clock, request_id, retries, error)
            not_before = 0.0
            try:
                answer = await self._attempt(method, path, request_id, payload, params, timeout)
            except _TRANSIENT_EXCEPTIONS as exc:
                detail = str(exc) or "timed out"
                error = ConnectionFailedError(
                    f"{method} {path}: {type(exc).__name__}: {detail}", request_id=request_id
                )
            else:
                if answer.status < 400:
                    return answer
                error = error_from_answer(
                    answer.status,
                    answer.body,
                    request_id=request_id,
                    replayed=answer.replayed,
                    fallback=answer.text[:200],
                )
                if not is_retryable(answer.status, error.error) or (stop_on and stop_on(error)):
                    raise error
                not_before = retry_after_seconds(answer.retry_after) or 0.0
            retries += 1
            wait = max(not_before, self.retry.backoff(retries))
            if wait >= clock.remaining():
                raise _deadline_error(clock, request_id, retries, error) from error
            await asyncio.sleep(wait)

    async def _attempt(
        self,
        method: str,
        path: str,
        request_id: str,
        payload: str | None,
        params: dict[str, str] | None,
        seconds: float,
    ) -> _Answer:
        headers = {"X-Request-ID": request_id, **self._headers}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        session = self._ensure_session()
        async with session.request(
            method,
            self._base + path,
            data=payload,
            params=params,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=seconds),
        ) as response:
            text = await response.text()
            try:
                body = json.loads(text, parse_float=Decimal) if text else None
            except ValueError:
                body = None  # e.g. a proxy's HTML error page
            return _Answer(
                response.status,
                body,
                response.headers.get("Idempotent-Replayed", "").lower() == "true",
                response.headers.get("Retry-After"),
                text,
            )

    async def _follow(self, saga_id: str, request_id: str, clock: Deadline) -> Transfer:
        """Poll a transfer until it is terminal or ``clock`` passes (``TransferPendingError``)."""
        state: str | None = None
        polls = 0
        while True:
            try:
                current = await self.get_transfer(saga_id, deadline=clock.remaining())
            except DeadlineExceededError as exc:
                raise _pending(saga_id, state, request_id, exc.last_error) from exc
            state = current.state
            if current.terminal:
                return _finished(current, request_id)
            polls += 1
            wait = self.retry.backoff(polls)
            if wait >= clock.remaining():
                raise _pending(saga_id, state, request_id, None)
            await asyncio.sleep(wait)

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session


def _wallet_path(wallet_id: str, action: str | None = None) -> str:
    path = f"/wallet/{quote(wallet_id, safe='')}"
    return f"{path}/{action}" if action else path


def _names_saga(error: WalletError) -> bool:
    """A retryable answer to a transfer naming its saga: the transfer exists; follow it."""
    return error.saga_id is not None and error.status is not None and is_retryable(error.status, error.error)


def _deadline_error(
    clock: Deadline, request_id: str, attempts: int, last: WalletError | None
) -> DeadlineExceededError:
    cause = f"; last: {last.error}: {last.message}" if last else ""
    return DeadlineExceededError(
        f"no answer within the {clock.seconds:g} s deadline after {attempts} attempt(s){cause}",
        status=last.status if last else None,
        request_id=request_id,
        last_error=last,
    )


def _pending(
    saga_id: str, state: str | None, request_id: str, last: WalletError | None
) -> TransferPendingError:
    return TransferPendingError(
        f"transfer {saga_id} not terminal by the deadline (last seen {state or 'unknown'})",
        saga_id=saga_id,
        state=state,
        request_id=request_id,
        last_error=last,
    )


def _finished(transfer: Transfer, request_id: str) -> Transfer:
    """A terminal transfer reached by following it: COMPLETED returns, otherwise its error."""
    if transfer.state == "COMPLETED":
        return replace(transfer, request_id=request_id)
    cls = error_class(422, transfer.error or "TransferFailedError")
    raise cls(
        transfer.reason or f"transfer {transfer.state.lower()}",
        status=404 if issubclass(cls, NotFoundError) else 422,
        error=transfer.error or "TransferFailedError",
        request_id=request_id,
        body={"sagaId": transfer.saga_id, "state": transfer.state},
    )
