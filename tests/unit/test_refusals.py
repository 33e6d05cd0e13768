"""Each refusal has one named constructor in wallet/actors/messages.py, and only those build one."""

from __future__ import annotations

import ast
from pathlib import Path

import wallet
from wallet.actors.messages import Refused, internal_error, key_in_flight, saga_step_obsolete, unavailable

ROOT = Path(wallet.__file__).parent


def test_each_refusal_has_its_status_and_name() -> None:
    assert unavailable("m") == Refused(503, "ServiceUnavailableError", "m")
    assert key_in_flight("m") == Refused(409, "IdempotencyKeyInFlightError", "m")
    assert saga_step_obsolete("m") == Refused(409, "SagaStepObsoleteError", "m")
    assert internal_error("m") == Refused(500, "InternalServerError", "m")


def test_only_the_named_constructors_build_a_refusal() -> None:
    built = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in sorted(ROOT.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Refused"
    ]
    assert [where.split(":")[0] for where in built] == ["actors/messages.py"] * 4, built
