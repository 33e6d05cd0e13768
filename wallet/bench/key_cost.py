"""What the X-Request-ID costs a write workload, measured where the machine's swings cancel out.

Separate runs of the keyed and the key-less variant meet the machine at different minutes, and on a
shared machine its speed moves by more than the key costs (DESIGN.md §8). So the variants take turns
on one service and one database, window after window in ABBA order (keyed, key-less, key-less,
keyed, ...), each pair within two windows' time of itself (about 25 s with 10 s windows and their
warm-ups), and the cost is the ratio of the sums.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Window:
    """One measured window of a workload: keyed or not, its rate, its tail, its errors (non-200
    answers and socket errors, warm-up included), and whether the books held after it."""

    keyed: bool
    rps: float
    p99_ms: float
    errors: int
    books_ok: bool


@dataclass
class KeyCostRow:
    name: str
    windows: list[Window] = field(default_factory=list)

    def rates(self, keyed: bool) -> list[float]:
        """The keyed (or key-less) windows' requests per second, in the order they ran."""
        return [w.rps for w in self.windows if w.keyed is keyed]

    @property
    def ratio(self) -> float | None:
        """Keyed ÷ key-less requests per second, of the sums over all windows."""
        keyless = sum(self.rates(False))
        return sum(self.rates(True)) / keyless if keyless > 0 else None

    @property
    def pair_ratios(self) -> list[float]:
        return [k / n for k, n in zip(self.rates(True), self.rates(False), strict=False) if n > 0]

    @property
    def failed(self) -> bool:
        return any(w.errors or not w.books_ok for w in self.windows)


async def paired_windows(name: str, pairs: int, window: Callable[[bool], Awaitable[Window]]) -> KeyCostRow:
    """``pairs`` pairs of windows of workload ``name`` in ABBA order; ``window(keyed)`` runs one."""
    row = KeyCostRow(name)
    for pair in range(pairs):
        for keyed in (True, False) if pair % 2 == 0 else (False, True):
            row.windows.append(await window(keyed))
    return row
