"""Imports point one way: no module imports a layer above its own, and no two modules import each
other, even through a ``TYPE_CHECKING`` block or an import inside a function.

The layers, lowest first (DESIGN.md, "Layers"). A module belongs to the layer of its longest
listed prefix; a new top-level module must be placed here before the suite passes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import wallet

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # The Python client of the API: stands alone (aiohttp and the standard library), so it may
    # import nothing of the project outside itself.
    ("client", ("wallet.client",)),
    # Settings and ids: leaves that every layer may use.
    ("foundation", ("wallet.config", "wallet.ids")),
    # No I/O: the wallet decider and the fraud rules and message formats.
    # Principals, scopes, wallet patterns and API key tokens are pure too.
    (
        "domain",
        (
            "wallet.domain",
            "wallet.fraud",
            "wallet.fraud.rules",
            "wallet.fraud.messages",
            "wallet.auth.principal",
            "wallet.auth.tokens",
        ),
    ),
    ("persistence", ("wallet.persistence", "wallet.fraud.store")),
    ("actors", ("wallet.actors",)),
    # The event stream: the outbox relay (an actor over the outbox table) and the broker.
    ("messaging", ("wallet.messaging",)),
    # Application services: the API's commands, the fraud worker, the auto-freezer.
    # Authentication (the key and JWT verifiers) is a service the HTTP edge calls.
    (
        "service",
        (
            "wallet.service",
            "wallet.fraud.worker",
            "wallet.fraud.observability",
            "wallet.fraud.auto_freeze",
            "wallet.auth",
        ),
    ),
    # The HTTP edge, with its request-aware log configuration.
    ("http", ("wallet.http", "wallet.logging_setup")),
    # Composition and entry points: they build everything else and nothing imports them back.
    (
        "entry",
        (
            "wallet",
            "wallet.__main__",
            "wallet.bootstrap",
            "wallet.server",
            "wallet.cli",
            "wallet.auth.cli",
            "wallet.embedded",
            "wallet.audit",
            "wallet.bench",
        ),
    ),
]

Graph = dict[str, set[str]]


def layer_of(module: str) -> int:
    best, best_length = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    if best < 0:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")
    return best


def import_graph() -> Graph:
    """Every module of the package and every project module it imports, wherever the import is."""
    root = Path(wallet.__file__).parent
    files = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: Graph = {}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(module, is_package, node)
                for alias in node.names:  # ``from wallet.http import app`` imports a module
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in files else base)
        graph[module] = {t for t in targets if t in files and t != module}
    return graph


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def upward_imports(graph: Graph) -> list[str]:
    return [
        f"{source} ({LAYERS[layer_of(source)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for source, targets in sorted(graph.items())
        for target in sorted(targets)
        if layer_of(target) > layer_of(source)
    ]


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_a_layer_above_its_own() -> None:
    assert upward_imports(import_graph()) == []


def test_no_modules_import_each_other() -> None:
    assert cycles(import_graph()) == []


def test_the_checks_catch_the_old_auto_freeze_cycle() -> None:
    """The cycle issue 16 removed, hidden behind TYPE_CHECKING and a function-level import."""
    graph = import_graph()
    graph["wallet.fraud.auto_freeze"].add("wallet.service")
    graph["wallet.service.wallet_service"].add("wallet.fraud.auto_freeze")
    assert any({"wallet.fraud.auto_freeze", "wallet.service"} <= set(c) for c in cycles(graph))
    graph["wallet.domain.wallet"].add("wallet.persistence.records")
    assert upward_imports(graph) == [
        "wallet.domain.wallet (domain) imports wallet.persistence.records (persistence)"
    ]
