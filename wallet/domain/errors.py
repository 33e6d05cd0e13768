"""Domain errors. Each has the stable machine name of API.md and the HTTP status it maps to."""

from __future__ import annotations


class DomainError(Exception):
    """A business rule refused a command. Deciders return these; they do not raise them."""

    name = "DomainError"
    status = 422

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.message == self.message  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self.message))


class WalletNotFoundError(DomainError):
    name = "WalletNotFoundError"
    status = 404


class InsufficientFundsError(DomainError):
    name = "InsufficientFundsError"


class WalletNotActiveError(DomainError):
    name = "WalletNotActiveError"


class WithdrawalLimitExceededError(DomainError):
    name = "WithdrawalLimitExceededError"


class CurrencyMismatchError(DomainError):
    name = "CurrencyMismatchError"


class BalanceNotZeroError(DomainError):
    name = "BalanceNotZeroError"


class BalanceLimitExceededError(DomainError):
    name = "BalanceLimitExceededError"


class IdempotencyKeyReuseError(DomainError):
    name = "IdempotencyKeyReuseError"
