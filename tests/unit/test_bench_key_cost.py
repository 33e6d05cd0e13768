"""The key's cost in paired windows: the order the variants take turns in, and the figures."""

from __future__ import annotations

from wallet.bench import parse_args
from wallet.bench.key_cost import KeyCostRow, Window, paired_windows
from wallet.bench.report import key_cost_cells


async def test_the_variants_take_turns_in_abba_order() -> None:
    rates = iter([900.0, 1000.0, 1100.0, 1000.0, 950.0, 1000.0])
    order: list[bool] = []

    async def window(keyed: bool) -> Window:
        order.append(keyed)
        return Window(keyed, next(rates), 20.0, 0, True)

    row = await paired_windows("hot", 3, window)
    assert order == [True, False, False, True, True, False]
    assert [w.rps for w in row.windows] == [900.0, 1000.0, 1100.0, 1000.0, 950.0, 1000.0]
    assert row.ratio == (900 + 1000 + 950) / (1000 + 1100 + 1000)
    assert [round(r, 3) for r in row.pair_ratios] == [0.9, round(1000 / 1100, 3), 0.95]
    assert not row.failed


def test_a_window_whose_books_did_not_hold_or_that_had_errors_fails_the_row() -> None:
    row = KeyCostRow("spread", [Window(True, 10.0, 5.0, 0, True), Window(False, 20.0, 7.5, 0, False)])
    assert row.failed
    assert key_cost_cells(row) == ("spread", "1", "10", "20", "0.50", "0.50 to 0.50", "7.5", "0", "MISMATCH")
    errors = KeyCostRow("hot", [Window(True, 10.0, 5.0, 3, True), Window(False, 20.0, 7.5, 0, True)])
    assert errors.failed and key_cost_cells(errors)[-2:] == ("3", "ok")
    assert KeyCostRow("hot").ratio is None and key_cost_cells(KeyCostRow("hot"))[4] == "-"


def test_key_pairs_are_off_unless_asked() -> None:
    assert parse_args([]).key_pairs == 0
    assert parse_args(["--key-pairs", "6"]).key_pairs == 6
