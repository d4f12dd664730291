"""Fixtures of the UI tests: pages rendered in headless Chromium, checked as a person
would see them. A missing Chromium (Debian's ``chromium``) fails them (tool_checks.py).
Screenshots are kept under ``test-artifacts/ui/`` (gitignored).

Imported by the test modules (``from ui_fixtures import browser as browser``) rather
than kept in a ``conftest.py``: other test folders import their own ``conftest`` by
module name, and a second module of that name would shadow theirs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cdp import Browser

from tool_checks import require_tool

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def browser() -> Iterator[Browser]:
    b = Browser(require_tool("chromium"), width=1400, height=1000)
    try:
        yield b
    finally:
        b.close()
