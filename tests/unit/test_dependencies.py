"""Every runtime dependency in pyproject.toml is imported by product code (issue 11).

A declared dependency nothing imports is weight and a false promise; its reason is
written in docs/architecture.md ("Runtime dependencies"). Imports are read with ``ast``
(module level and inside functions), never by importing anything.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Distribution name -> the top-level module it installs, where they differ.
MODULE_OF = {"faust-streaming": "faust", "prometheus-client": "prometheus_client"}


def runtime_dependencies() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0] for d in project["dependencies"]]


def imported_top_levels() -> dict[str, set[str]]:
    """Top-level module -> the src files that import it."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "src" / "driftline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_runtime_dependency_is_imported_by_product_code() -> None:
    deps = runtime_dependencies()
    assert "faust-streaming" in deps and "aiokafka" in deps  # the parse found the list
    imported = imported_top_levels()
    unused = [d for d in deps if MODULE_OF.get(d, d.replace("-", "_")) not in imported]
    assert unused == [], f"declared in pyproject.toml but imported by no module: {unused}"
