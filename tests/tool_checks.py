"""The programs and test-only modules the suite needs, and the one way a test asks for one.

A test that needs a program (promtool, chromium, ...) or a module of the ``test`` extra
calls :func:`require_tool` or :func:`require_module`. When it is missing the test FAILS,
naming what to install: a suite that passes with tests skipped for a missing tool proves
nothing. Setting ``DRIFTLINE_ALLOW_MISSING_TOOLS=1`` turns those failures into skips, for
a developer who knowingly runs without, say, Chromium.

Standard library only at import time: ``scripts/test_deps.py`` reads :data:`TOOLS` before
pytest may even be installed.
"""

from __future__ import annotations

import importlib
import os
import shutil
from dataclasses import dataclass
from types import ModuleType
from typing import NoReturn

ALLOW_MISSING_ENV = "DRIFTLINE_ALLOW_MISSING_TOOLS"


@dataclass(frozen=True)
class Tool:
    """A program the tests run: the names it goes by on PATH and its Debian package."""

    names: tuple[str, ...]
    apt_package: str


#: Every program the tests or the dev stack run, by the name tests ask for.
TOOLS: dict[str, Tool] = {
    "redis-server": Tool(("redis-server",), "redis-server"),
    "redis-cli": Tool(("redis-cli",), "redis-tools"),
    "promtool": Tool(("promtool",), "prometheus"),
    "prometheus": Tool(("prometheus",), "prometheus"),
    "alertmanager": Tool(("prometheus-alertmanager", "alertmanager"), "prometheus-alertmanager"),
    "amtool": Tool(("amtool",), "prometheus-alertmanager"),
    "chromium": Tool(("chromium", "chromium-browser", "google-chrome"), "chromium"),
}


def find_tool(name: str) -> str | None:
    """Path of the program ``name`` (a key of :data:`TOOLS`), or None when missing."""
    for candidate in TOOLS[name].names:
        path = shutil.which(candidate)
        if path:
            return path
    return None


def missing_allowed() -> bool:
    """True when the user asked to skip, rather than fail, tests whose tools are missing."""
    return os.environ.get(ALLOW_MISSING_ENV, "") == "1"


def _missing(what: str, install: str) -> NoReturn:
    import pytest

    message = f"{what} is missing: {install}"
    if missing_allowed():
        pytest.skip(f"{message} ({ALLOW_MISSING_ENV}=1)")
    pytest.fail(f"{message} (or set {ALLOW_MISSING_ENV}=1 to skip such tests)", pytrace=False)


def require_tool(name: str) -> str:
    """Path of the program ``name``; fails the calling test when it is missing.

    Skips instead when ``DRIFTLINE_ALLOW_MISSING_TOOLS=1``.
    """
    path = find_tool(name)
    if path is None:
        _missing(f"program {name!r}", f"apt-get install -y {TOOLS[name].apt_package}")
    return path


def require_module(name: str) -> ModuleType:
    """The module ``name`` from the ``test`` extra; fails the calling test when missing.

    Skips instead when ``DRIFTLINE_ALLOW_MISSING_TOOLS=1``.
    """
    try:
        return importlib.import_module(name)
    except ImportError:
        _missing(f"Python module {name!r}", "pip install -e '.[test]'")
