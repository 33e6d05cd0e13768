"""Who is asking, and what they may do: principals, scopes and wallet patterns (API.md). Pure.

A principal is an API key, a JWT's subject, or the service itself (a system actor: the fraud
auto-freeze, saga recovery). ``scopes`` say which routes it may call; ``wallets`` which wallets
it may touch: an exact id, a prefix ending in ``*`` (``tenant-a:*``), or ``*`` for every wallet.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

WALLETS_READ = "wallets:read"
WALLETS_DEPOSIT = "wallets:deposit"
WALLETS_WITHDRAW = "wallets:withdraw"
TRANSFERS_WRITE = "transfers:write"
TRANSFERS_READ = "transfers:read"
WALLETS_ADMIN = "wallets:admin"
FRAUD_READ = "fraud:read"
OPS_READ = "ops:read"
ALL = "*"
SCOPES = frozenset(
    {
        WALLETS_READ,
        WALLETS_DEPOSIT,
        WALLETS_WITHDRAW,
        TRANSFERS_WRITE,
        TRANSFERS_READ,
        WALLETS_ADMIN,
        FRAUD_READ,
        OPS_READ,
        ALL,
    }
)

_ID_CHARS = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_PREFIX_CHARS = re.compile(r"[A-Za-z0-9_.:-]{0,63}")


class InvalidPatternError(ValueError):
    """A wallet pattern that is neither an id, a prefix ending in ``*``, nor ``*``."""


@dataclass(frozen=True, slots=True)
class WalletPatterns:
    """The wallets a principal may touch. ``allows`` is a set lookup and one ``startswith``."""

    everything: bool = False
    exact: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, patterns: Iterable[str]) -> WalletPatterns:
        everything, exact, prefixes = False, set(), []
        for pattern in patterns:
            if pattern == ALL:
                everything = True
            elif pattern.endswith("*") and _PREFIX_CHARS.fullmatch(pattern[:-1]):
                prefixes.append(pattern[:-1])
            elif _ID_CHARS.fullmatch(pattern):
                exact.add(pattern)
            else:
                raise InvalidPatternError(f"not a wallet pattern: {pattern!r}")
        return cls(everything, frozenset(exact), tuple(sorted(set(prefixes))))

    def allows(self, wallet_id: str) -> bool:
        return self.everything or wallet_id in self.exact or wallet_id.startswith(self.prefixes)

    def as_list(self) -> list[str]:
        return ([ALL] if self.everything else []) + sorted(self.exact) + [p + "*" for p in self.prefixes]


EVERY_WALLET = WalletPatterns(everything=True)


def parse_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """Known scopes only; an unknown one is an error (a typo must not silently grant nothing)."""
    found = frozenset(s for s in scopes if s)
    unknown = found - SCOPES
    if unknown:
        raise ValueError(f"unknown scopes: {', '.join(sorted(unknown))}; known: {', '.join(sorted(SCOPES))}")
    return found


@dataclass(frozen=True, slots=True)
class Principal:
    """``kind``: "api_key", "jwt", "system" or (authentication off) "anonymous". ``tag`` is
    short and unique per principal: it scopes idempotency keys and rate limits.
    ``expires_at``: epoch seconds, or None."""

    kind: str
    id: str
    name: str
    scopes: frozenset[str]
    wallets: WalletPatterns
    tag: str
    expires_at: float | None = None
    actor: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        self.actor.update({"type": self.kind, "id": self.id, "name": self.name})

    def has(self, scope: str) -> bool:
        return scope in self.scopes or ALL in self.scopes

    def may_touch(self, wallet_id: str) -> bool:
        return self.wallets.allows(wallet_id)

    def scoped_key(self, request_id: str) -> str:
        """An X-Request-ID as this principal's own idempotency key (two principals never share one)."""
        return f"{self.tag}|{request_id}" if self.tag else request_id


_SCOPED_KEY = re.compile(r"[kj]:[0-9a-f]{12,16}\|")


def request_id_of(scoped_key: str) -> str:
    """The client's X-Request-ID inside a key made by ``Principal.scoped_key``."""
    found = _SCOPED_KEY.match(scoped_key)
    return scoped_key[found.end() :] if found else scoped_key


def system_principal(actor_id: str, name: str) -> Principal:
    return Principal("system", actor_id, name, frozenset({ALL}), EVERY_WALLET, tag="")


# With authentication off every request is this one (no scoping of idempotency keys).
ANONYMOUS = Principal("anonymous", "anonymous", "authentication disabled", frozenset({ALL}), EVERY_WALLET, "")
FRAUD_AUTO_FREEZE = system_principal("fraud-auto-freeze", "fraud worker auto-freeze")
SAGA_RECOVERY = system_principal("saga-recovery", "transfer saga recovery")


def audit(principal: Principal, request_id: str) -> dict[str, Any]:
    """What every event caused by this request records in its metadata (API.md)."""
    return {"actor": principal.actor, "requestId": request_id}
