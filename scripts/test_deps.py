"""Check, and where it can, install what the test command needs (standard library only).

Python packages: Driftline's dependencies and its ``test`` extra, read from
pyproject.toml. When Driftline itself is not installed (a fresh clone), the checkout is
installed with ``pip install -e '.[test]'``; otherwise only the missing or too-old
requirements are installed, so an existing editable install is never re-pointed.

Programs (redis-server, promtool, chromium, ...; the table is tests/tool_checks.py):
installed with apt-get when running as root on a machine that has it; otherwise the
script fails and names them. ``DRIFTLINE_ALLOW_MISSING_TOOLS=1`` turns missing programs
into a warning (the tests that need them then skip, saying so).

Usage: ``python3 scripts/test_deps.py [--check]`` (``--check``: install nothing).
Exit status 0 when everything is there, 1 when something is missing.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from tool_checks import ALLOW_MISSING_ENV, TOOLS, find_tool, missing_allowed  # noqa: E402


def _say(message: str) -> None:
    print(f"test_deps: {message}", file=sys.stderr, flush=True)


def _requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["test"]]


def _unsatisfied(requirement: str) -> bool:
    """True when ``requirement`` (a PEP 508 string) is not installed in a fitting version."""
    name = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return True
    try:  # pip's own dependency; without it only presence is checked
        from packaging.requirements import Requirement
    except ImportError:
        return False
    return not Requirement(requirement).specifier.contains(version, prereleases=True)


def _pip_install(args: list[str]) -> None:
    _say("pip install " + " ".join(args))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], check=True)


def python_packages(install: bool) -> list[str]:
    """Requirements still missing, after installing them when ``install``."""
    try:
        importlib.metadata.version("driftline")
    except importlib.metadata.PackageNotFoundError:
        if not install:
            return ["driftline (this checkout)", *filter(_unsatisfied, _requirements())]
        _pip_install(["-e", f"{ROOT}[test]"])
    missing = list(filter(_unsatisfied, _requirements()))
    if missing and install:
        _pip_install(missing)
        missing = list(filter(_unsatisfied, _requirements()))
    return missing


def programs(install: bool) -> list[str]:
    """Missing programs after installing them (apt, as root) when ``install``."""
    missing = [name for name in TOOLS if find_tool(name) is None]
    can_apt = os.geteuid() == 0 and shutil.which("apt-get") is not None
    if missing and install and can_apt:
        packages = sorted({TOOLS[name].apt_package for name in missing})
        _say("apt-get install " + " ".join(packages))
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", *packages],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        missing = [name for name in TOOLS if find_tool(name) is None]
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="install nothing, only report")
    args = parser.parse_args(argv)
    status = 0
    packages = python_packages(install=not args.check)
    if packages:
        _say("missing Python packages: " + ", ".join(packages))
        _say(f"  install them with: {sys.executable} -m pip install -e '.[test]'")
        status = 1
    missing = programs(install=not args.check)
    if missing:
        apt = sorted({TOOLS[name].apt_package for name in missing})
        _say("missing programs: " + ", ".join(missing))
        _say("  install them with: apt-get install -y " + " ".join(apt))
        if missing_allowed():
            _say(f"  {ALLOW_MISSING_ENV}=1: the tests that need them will be SKIPPED")
        else:
            _say(f"  (or set {ALLOW_MISSING_ENV}=1 to run the rest and skip those tests)")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
