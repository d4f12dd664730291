"""tests/tool_checks.py: a missing program or test module fails the test unless the user
explicitly allows skipping; no test skips for a missing tool any other way."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tool_checks import ALLOW_MISSING_ENV, TOOLS, require_module, require_tool

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture
def empty_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH holding only an empty directory: every program is missing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv(ALLOW_MISSING_ENV, raising=False)
    return bin_dir


def test_a_present_program_is_found_under_any_of_its_names(empty_path: Path) -> None:
    program = empty_path / "alertmanager"  # the upstream name of prometheus-alertmanager
    program.write_text("#!/bin/sh\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    assert require_tool("alertmanager") == str(program)


def test_a_missing_program_fails_naming_its_package(empty_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception) as failed:
        require_tool("promtool")
    assert "'promtool'" in str(failed.value)
    assert "apt-get install -y prometheus" in str(failed.value)
    assert ALLOW_MISSING_ENV in str(failed.value)


@pytest.mark.parametrize("value", ["", "0", "yes", "true"])
def test_only_the_explicit_value_allows_skipping(
    empty_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(ALLOW_MISSING_ENV, value)
    with pytest.raises(pytest.fail.Exception):
        require_tool("chromium")


def test_a_missing_program_skips_when_the_user_allows_it(
    empty_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ALLOW_MISSING_ENV, "1")
    with pytest.raises(pytest.skip.Exception) as skipped:
        require_tool("amtool")
    assert "apt-get install -y prometheus-alertmanager" in str(skipped.value)


def test_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    assert require_module("json").dumps([1]) == "[1]"
    monkeypatch.delenv(ALLOW_MISSING_ENV, raising=False)
    with pytest.raises(pytest.fail.Exception) as failed:
        require_module("driftline_no_such_module")
    assert "pip install -e '.[test]'" in str(failed.value)
    monkeypatch.setenv(ALLOW_MISSING_ENV, "1")
    with pytest.raises(pytest.skip.Exception):
        require_module("driftline_no_such_module")


def test_every_program_names_a_debian_package() -> None:
    for name, tool in TOOLS.items():
        assert tool.names and tool.apt_package, name


def test_no_test_skips_for_a_missing_tool_behind_the_helpers_back() -> None:
    """pytest.skip, skipif and importorskip appear nowhere but in tool_checks.py."""
    skip_call = re.compile(r"pytest\s*\.\s*(skip\b|importorskip\b|mark\s*\.\s*skip)")
    offenders = [
        f"{path.relative_to(TESTS)}:{n}"
        for path in sorted(TESTS.rglob("*.py"))
        if path.name not in ("tool_checks.py", Path(__file__).name)
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if skip_call.search(line)
    ]
    assert offenders == [], "route these through tool_checks.require_tool/require_module"


def _test_deps(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = TESTS.parent / "scripts" / "test_deps.py"
    return subprocess.run(
        [sys.executable, str(script), "--check"], env=env, capture_output=True, text=True
    )


def test_the_test_command_names_missing_programs(empty_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != ALLOW_MISSING_ENV}
    env["PATH"] = str(empty_path)
    res = _test_deps(env)
    assert res.returncode == 1, res.stderr
    assert "missing programs: " + ", ".join(TOOLS) in res.stderr
    assert (
        "apt-get install -y chromium prometheus prometheus-alertmanager redis-server redis-tools"
        in res.stderr
    )
    allowed = _test_deps({**env, ALLOW_MISSING_ENV: "1"})
    assert allowed.returncode == 0, allowed.stderr
    assert "will be SKIPPED" in allowed.stderr


def test_the_test_command_passes_where_everything_is_installed() -> None:
    res = _test_deps({k: v for k, v in os.environ.items() if k != ALLOW_MISSING_ENV})
    assert (res.returncode, res.stderr) == (0, "")


def test_the_test_command_installs_missing_programs_with_apt_as_root(empty_path: Path) -> None:
    """A stand-in apt-get on PATH records its calls and "installs" every program."""
    calls = empty_path.parent / "apt-calls"
    programs = " ".join(name for tool in TOOLS.values() for name in tool.names[:1])
    apt = empty_path / "apt-get"
    apt.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {calls}\n'
        f'if [ "$1" = install ]; then for p in {programs}; do\n'
        f'  printf "#!/bin/sh\\n" > {empty_path}/$p; chmod +x {empty_path}/$p; done; fi\n'
    )
    apt.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != ALLOW_MISSING_ENV}  # PATH: empty_path
    (empty_path / "chmod").symlink_to(shutil.which("chmod", path="/usr/bin:/bin"))
    script = TESTS.parent / "scripts" / "test_deps.py"
    res = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True)
    if os.geteuid() != 0:  # not root: nothing installed, the missing programs named
        assert res.returncode == 1 and not calls.exists(), res.stderr
        return
    assert res.returncode == 0, res.stderr
    packages = "chromium prometheus prometheus-alertmanager redis-server redis-tools"
    assert calls.read_text().splitlines() == ["update -qq", f"install -y -qq {packages}"]
