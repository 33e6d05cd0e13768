"""When to try again and how long to wait: a deadline, capped exponential backoff with full
jitter, and ``Retry-After``. Pure; the loop that uses it is ``WalletClient._call``."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# Answers worth another attempt with the same X-Request-ID: the server (or a proxy) could not
# take the request now. A 409 is a request with the key still in flight (API.md), or a transfer
# step that met another instance driving the same saga (SagaStepObsoleteError): both settle.
RETRYABLE_STATUSES = frozenset({409, 429, 502, 503, 504})


def is_retryable(status: int, error: str | None = None) -> bool:
    return status in RETRYABLE_STATUSES


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``deadline``: seconds a whole call may take, retries, waits and a transfer's follow-up
    included (a call may override it). ``attempt_timeout``: the most one attempt may take (cut to
    what is left of the deadline). Waits: ``initial`` doubling up to ``cap``, each drawn uniformly
    from [0, that] ("full jitter", so many clients that failed together do not retry together);
    never shorter than the server's ``Retry-After``."""

    deadline: float = 30.0
    attempt_timeout: float = 10.0
    initial: float = 0.05
    cap: float = 2.0
    multiplier: float = 2.0

    def backoff(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """The wait before retry number ``retry`` (1 for the first retry)."""
        ceiling = min(self.cap, self.initial * self.multiplier ** max(0, retry - 1))
        return ceiling * rand()


class Deadline:
    """A point in time (monotonic clock) a call must end by."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.seconds = seconds
        self.at = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self.at - self._clock())

    @property
    def passed(self) -> bool:
        return self.remaining() <= 0.0


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP date (RFC 9110); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
