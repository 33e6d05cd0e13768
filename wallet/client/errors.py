"""The exceptions of the client: one class per stable ``error`` name of the API, under one base.

An answer's ``error`` field (API.md, "Errors") picks the class; an unknown name falls back to a
class by status (4xx: ``ClientRequestError``, 5xx: ``ServerError``), so a newer server never breaks
an older client. Nothing here holds the API key: it is never part of a message or an attribute.
"""

from __future__ import annotations

from typing import Any


class WalletError(Exception):
    """Every error the client raises.

    ``status``: the HTTP status of the answer that ended the call (None if no answer came);
    ``error``: the API's stable machine name (e.g. ``InsufficientFundsError``); ``message``: the
    server's human message; ``request_id``: the ``X-Request-ID`` the call used (one for all of its
    retries); ``body``: the error body as received; ``replayed``: the answer was the stored answer
    of an earlier request with the same key (``Idempotent-Replayed: true``).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error: str | None = None,
        request_id: str | None = None,
        body: dict[str, Any] | None = None,
        replayed: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error = error or type(self).__name__
        self.request_id = request_id
        self.body: dict[str, Any] = body or {}
        self.replayed = replayed

    @property
    def saga_id(self) -> str | None:
        """The transfer's saga id, when the answer named one (transfers only)."""
        value = self.body.get("sagaId")
        return value if isinstance(value, str) else None

    def __str__(self) -> str:
        where = f" (HTTP {self.status}" if self.status is not None else " ("
        return f"{self.error}: {self.message}{where}, request id {self.request_id})"


# -- answers of the API, by status class ------------------------------------------------------


class ClientRequestError(WalletError):
    """A 4xx the client does not retry: the request itself must change."""


class ServerError(WalletError):
    """A 5xx."""


class ValidationError(ClientRequestError):
    """400: bad JSON, amount, wallet id, field, limit or offset; a transfer to itself."""


class UnauthorizedError(ClientRequestError):
    """401: no, malformed, unknown, revoked or expired credential."""


class ForbiddenError(ClientRequestError):
    """403: the credential lacks the scope the route needs."""


class NotFoundError(ClientRequestError):
    """404 of a route the server does not have."""


class WalletNotFoundError(NotFoundError):
    """404: no such wallet (or one outside the credential's wallet patterns)."""


class TransferNotFoundError(NotFoundError):
    """404: no such transfer (or one outside the credential's wallet patterns)."""


class MethodNotAllowedError(ClientRequestError):
    """405."""


class PayloadTooLargeError(ClientRequestError):
    """413."""


class UnsupportedMediaTypeError(ClientRequestError):
    """415."""


class ConflictError(ClientRequestError):
    """409."""


class IdempotencyKeyInFlightError(ConflictError):
    """409: a request with this key is still being processed (retried by the client)."""


class SagaStepObsoleteError(ConflictError):
    """409: a transfer step met another instance driving the same saga (retried by the client)."""


class BusinessRuleError(ClientRequestError):
    """422: a business rule refused the operation; nothing changed."""


class InsufficientFundsError(BusinessRuleError):
    pass


class WalletNotActiveError(BusinessRuleError):
    """The wallet (or a transfer's destination) is frozen or closed."""


class WithdrawalLimitExceededError(BusinessRuleError):
    pass


class CurrencyMismatchError(BusinessRuleError):
    pass


class BalanceNotZeroError(BusinessRuleError):
    """Closing a wallet that still holds money."""


class BalanceLimitExceededError(BusinessRuleError):
    pass


class IdempotencyKeyReuseError(BusinessRuleError):
    """The ``X-Request-ID`` was already used for a different request."""


class TransferFailedError(BusinessRuleError):
    """A transfer ended FAILED or COMPENSATED without a more precise rule name."""


class RateLimitExceededError(ClientRequestError):
    """429 (retried by the client after ``Retry-After`` while its deadline allows)."""


class InternalServerError(ServerError):
    """500: not retried (the server hit a bug; repeating the request would not help)."""


class ServiceUnavailableError(ServerError):
    """503: a dependency is down (retried by the client)."""


class BadGatewayError(ServerError):
    """502 or 504 from a proxy in front of the service (retried by the client)."""


# -- the client's own ---------------------------------------------------------------------------


class ConnectionFailedError(WalletError):
    """No answer: the connection failed or the attempt timed out (retried by the client)."""


class DeadlineExceededError(WalletError):
    """The call's deadline passed before it had an answer to give. ``__cause__`` (and
    ``last_error``) is the last retryable failure; the effect may or may not have happened:
    calling again with the same ``request_id`` is safe and says which."""

    def __init__(self, message: str, *, last_error: WalletError | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.last_error = last_error


class TransferPendingError(DeadlineExceededError):
    """A transfer was started but had not reached a terminal state by the deadline. ``saga_id``
    names it: follow it with ``WalletClient.get_transfer`` (the server's recovery finishes it)."""

    def __init__(self, message: str, *, saga_id: str, state: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.body.setdefault("sagaId", saga_id)
        self.state = state


_BY_NAME: dict[str, type[WalletError]] = {
    cls.__name__: cls
    for cls in (
        ValidationError,
        UnauthorizedError,
        ForbiddenError,
        NotFoundError,
        WalletNotFoundError,
        TransferNotFoundError,
        MethodNotAllowedError,
        PayloadTooLargeError,
        UnsupportedMediaTypeError,
        IdempotencyKeyInFlightError,
        SagaStepObsoleteError,
        InsufficientFundsError,
        WalletNotActiveError,
        WithdrawalLimitExceededError,
        CurrencyMismatchError,
        BalanceNotZeroError,
        BalanceLimitExceededError,
        IdempotencyKeyReuseError,
        TransferFailedError,
        RateLimitExceededError,
        InternalServerError,
        ServiceUnavailableError,
    )
}
_BY_STATUS: dict[int, type[WalletError]] = {
    400: ValidationError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: BusinessRuleError,
    429: RateLimitExceededError,
    500: InternalServerError,
    502: BadGatewayError,
    503: ServiceUnavailableError,
    504: BadGatewayError,
}


def error_class(status: int, name: str | None) -> type[WalletError]:
    """The class for an answer: by its ``error`` name, else by its status."""
    if name is not None and name in _BY_NAME:
        return _BY_NAME[name]
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else ClientRequestError


def error_from_answer(
    status: int, body: Any, *, request_id: str, replayed: bool = False, fallback: str = ""
) -> WalletError:
    """The exception for an error answer (``body`` as decoded; a proxy's may not be JSON)."""
    fields = body if isinstance(body, dict) else {}
    name = fields.get("error") if isinstance(fields.get("error"), str) else None
    message = fields.get("message")
    if not isinstance(message, str):
        message = fallback or f"HTTP {status}"
    cls = error_class(status, name)
    return cls(message, status=status, error=name, request_id=request_id, body=fields, replayed=replayed)
