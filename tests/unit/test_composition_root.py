"""One composition root: the service's parts are built in ``wallet/bootstrap.py`` and nowhere else,
and the tests build the service, the relay and the worker through it as the processes do."""

from __future__ import annotations

import ast
from pathlib import Path

import wallet

ROOT = Path(wallet.__file__).parent
TESTS = Path(__file__).parents[1]

# The wired parts: built only by the composition root.
PARTS = {
    "WalletService",
    "TransferService",
    "FlushWriter",
    "WalletDirectory",
    "IdempotencyGate",
    "EventStore",
    "IdempotencyStore",
    "SagaStore",
    "OutboxRelay",
    "OutboxStore",
    "BrokerLink",
    "FraudWorker",
    "AutoFreezer",
    "create_app",
    "open_read_side",
}
# What the tests build through the composition root rather than by hand.
PROCESS_PARTS = {"WalletService", "OutboxRelay", "FraudWorker", "AutoFreezer", "create_app"}


def calls(path: Path, names: set[str]) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            name = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
            if name in names:
                found.append(f"{path}:{node.lineno} {name}(...)")
    return found


def test_the_parts_are_built_only_in_wallet_bootstrap() -> None:
    outside = [
        call
        for path in sorted(ROOT.rglob("*.py"))
        if path != ROOT / "bootstrap.py"
        for call in calls(path, PARTS)
    ]
    assert outside == []
    assert {name for name in PARTS if calls(ROOT / "bootstrap.py", {name})} == PARTS


def test_the_tests_build_the_processes_through_the_composition_root() -> None:
    by_hand = [call for path in sorted(TESTS.rglob("*.py")) for call in calls(path, PROCESS_PARTS)]
    assert by_hand == []
