"""The import boundaries of src/driftline (docs/architecture.md, issue 11).

The module graph is read from the source with ``ast`` (every ``import`` and
``from ... import``, at module level or inside functions, including ``TYPE_CHECKING``
blocks), never by importing anything. The rules:

* no import cycles;
* direction: ``contract`` <- ``core`` <- ``runtime`` <- ``views`` <- ``cli``/``demo``:
  a layer imports only layers to its left (and itself);
* ``offline`` may import ``contract``, ``core`` and ``views`` (and the base modules),
  and nothing it reaches imports aiokafka (replay and reports from files run without
  Kafka); only ``cli``, ``demo`` and the package facade import ``offline``;
* ``core`` and ``contract`` import none of aiokafka, redis, prometheus_client, faust;
* no product module imports ``driftline.cli`` or ``driftline.demo`` (the demo is
  imported by the CLI only; ``__main__`` is the CLI's entry point);
* ``producer`` (the SDK) imports only the contract, config, errors and runtime.metrics;
* the base modules (``config``, ``errors``, ``_version``) import only each other.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "driftline"

#: Layers in import order: a module may import its own layer and those before it.
LAYERS = ("contract", "core", "runtime", "views", "cli")
#: The demo sits beside the CLI (its rank), but only the CLI may import it.
RANK = {name: i for i, name in enumerate(LAYERS)} | {"demo": LAYERS.index("cli")}
#: Top-level modules everything may import (they import only each other).
BASE = frozenset({"driftline.config", "driftline.errors", "driftline._version"})
OFFLINE_MAY_IMPORT = frozenset({"contract", "core", "views", "offline"})
OFFLINE_IMPORTERS = frozenset({"cli", "demo", "offline", "driftline"})
PURE = ("contract", "core")
IO_LIBRARIES = ("aiokafka", "redis", "prometheus_client", "faust")
PRODUCER_MAY_IMPORT = frozenset(
    {"driftline.config", "driftline.errors", "driftline.runtime.metrics"}
)


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The driftline module a dotted name refers to (a module, or its package)."""
    known = modules()
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


@cache
def imports(module: str) -> tuple[tuple[str, int], ...]:
    """``(imported name, line)`` for every import in ``module``, absolute and dotted.

    ``from a.b import c`` yields ``a.b.c`` (a submodule or a name in ``a.b``).
    """
    path = modules()[module]
    is_package = path.name == "__init__.py"
    out: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.extend((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                anchor = parts if is_package else parts[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            out.extend((f"{base}.{a.name}", node.lineno) for a in node.names)
    return tuple(out)


@cache
def edges() -> dict[str, dict[str, int]]:
    """Module -> {imported driftline module: first line of the import}."""
    graph: dict[str, dict[str, int]] = {}
    for mod in modules():
        targets: dict[str, int] = {}
        for name, line in imports(mod):
            if name != "driftline" and not name.startswith("driftline."):
                continue
            target = _resolve(name)
            if target is not None and target != mod:
                targets.setdefault(target, line)
        graph[mod] = targets
    return graph


def group(module: str) -> str:
    """``driftline.core.stats`` -> ``core``; top-level modules are their own group."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "driftline"


def where(module: str, line: int) -> str:
    return f"{modules()[module].relative_to(SRC.parent)}:{line}"


def violations(rule: str, pairs: Iterable[tuple[str, str, int]]) -> list[str]:
    return [f"{where(src, line)}: {src} imports {dst} ({rule})" for src, dst, line in pairs]


def all_edges() -> Iterable[tuple[str, str, int]]:
    for src, targets in edges().items():
        for dst, line in targets.items():
            yield src, dst, line


def test_the_graph_is_read() -> None:
    # A guard against a test that passes on an empty graph.
    assert "driftline.core.fastloop.process" in modules()
    assert "driftline.contract.decode" in edges()["driftline.runtime.monitor"]


def find_cycle() -> list[str] | None:
    graph = edges()
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycles() -> None:
    cycle = find_cycle()
    if cycle:
        steps = [
            f"  {a} -> {b}  ({where(a, edges()[a][b])})"
            for a, b in zip(cycle, cycle[1:], strict=False)
        ]
        pytest.fail("import cycle:\n" + "\n".join(steps))


def test_layers_import_only_layers_to_their_left() -> None:
    bad = []
    for src, dst, line in all_edges():
        s, d = group(src), group(dst)
        if s in RANK and d in RANK and RANK[d] > RANK[s]:
            bad.append((src, dst, line))
        elif s in RANK and d == "offline" and s not in OFFLINE_IMPORTERS:
            bad.append((src, dst, line))
    assert not bad, "\n".join(
        violations("direction: contract <- core <- runtime <- views <- cli/demo", bad)
    )


def test_pure_layers_import_no_io_library() -> None:
    bad = []
    for mod in modules():
        if group(mod) not in PURE:
            continue
        for name, line in imports(mod):
            if name.split(".")[0] in IO_LIBRARIES:
                bad.append((mod, name, line))
    assert not bad, "\n".join(violations("the pure core and contract do no I/O", bad))


def test_nothing_but_the_cli_imports_the_cli_or_the_demo() -> None:
    bad = []
    for src, dst, line in all_edges():
        s, d = group(src), group(dst)
        if d == "cli" and s != "cli" and src != "driftline.__main__":
            bad.append((src, dst, line))
        if d == "demo" and s not in ("cli", "demo"):
            bad.append((src, dst, line))
    assert not bad, "\n".join(violations("only the CLI imports the CLI and the demo", bad))


def reachable(start: str) -> dict[str, list[str]]:
    """Every module ``start`` imports, directly or not, with one path to it."""
    paths = {start: [start]}
    todo = [start]
    while todo:
        mod = todo.pop()
        for nxt in sorted(edges()[mod]):
            if nxt not in paths:
                paths[nxt] = [*paths[mod], nxt]
                todo.append(nxt)
    return paths


def test_offline_imports_contract_core_views_and_never_kafka() -> None:
    bad = []
    for src, dst, line in all_edges():
        if group(src) == "offline" and group(dst) not in OFFLINE_MAY_IMPORT and dst not in BASE:
            bad.append((src, dst, line))
    problems = violations("offline imports contract, core and views only", bad)
    for mod in (m for m in modules() if group(m) == "offline"):
        for other, path in reachable(mod).items():
            kafka = [(n, ln) for n, ln in imports(other) if n.split(".")[0] == "aiokafka"]
            if kafka:
                problems.append(
                    f"{where(other, kafka[0][1])}: {other} imports aiokafka and offline reaches "
                    f"it: {' -> '.join(path)}"
                )
    assert not problems, "\n".join(problems)


def test_the_producer_sdk_imports_only_the_contract_config_errors_and_metrics() -> None:
    bad = [
        (src, dst, line)
        for src, dst, line in all_edges()
        if src == "driftline.producer"
        and group(dst) != "contract"
        and dst not in PRODUCER_MAY_IMPORT
    ]
    assert not bad, "\n".join(violations("the SDK stays small", bad))


def test_base_modules_import_only_each_other() -> None:
    bad = [(src, dst, line) for src, dst, line in all_edges() if src in BASE and dst not in BASE]
    assert not bad, "\n".join(violations("config, errors and _version are the base", bad))


def test_every_module_belongs_to_a_known_place() -> None:
    top_level = {"driftline", "driftline.__main__", "driftline.producer", *BASE}
    unknown = [m for m in modules() if m not in top_level and group(m) not in {*RANK, "offline"}]
    assert not unknown, f"modules outside the layout of docs/architecture.md: {unknown}"
