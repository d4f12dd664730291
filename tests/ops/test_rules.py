"""The alerting rules: promtool check + unit tests covering every rule, the k8s copy,
runbook anchors and metric names."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from typing import get_args

import pytest
import yaml
from opsutil import ROOT, all_sample_names, promql_metric_names

from driftline.contract.events import AlertKind
from driftline.runtime.metrics import DRIFT_ACTIVE
from tool_checks import require_tool

RULES = ROOT / "deploy" / "prometheus" / "driftline-rules.yml"
RULE_TESTS = sorted((ROOT / "deploy" / "prometheus" / "tests").glob("*.yml"))
RUNBOOKS = ROOT / "docs" / "runbooks.md"


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool")


def _rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_promtool_check_rules(promtool):
    res = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=lambda p: p.name)
def test_promtool_rule_unit_tests(promtool, test_file):
    res = subprocess.run(
        [promtool, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_rule_has_a_firing_and_a_quiet_unit_test():
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for t in case.get("alert_rule_test", []):
                (fires if t.get("exp_alerts") else quiet).add(t["alertname"])
    names = {r["alert"] for r in _rules()}
    assert names - fires == set(), f"rules never shown to fire: {sorted(names - fires)}"
    assert names - quiet == set(), f"rules never shown to stay quiet: {sorted(names - quiet)}"


def test_every_rule_has_severity_summary_description_and_runbook():
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", RUNBOOKS.read_text(), flags=re.M)
    }
    bases = set()
    for r in _rules():
        assert r["labels"]["severity"] in ("warning", "critical"), r["alert"]
        ann = r["annotations"]
        assert ann["summary"] and ann["description"], r["alert"]
        base, _, anchor = ann["runbook_url"].rpartition("#")
        bases.add(base)
        assert anchor == r["alert"].lower(), r["alert"]
        assert anchor in anchors, f"{r['alert']}: no anchor in docs/runbooks.md"
    # One base for every rule, set by make_prometheusrule.py --runbook-base; the one
    # shipped is the runbooks' real path in this repository.
    assert bases == {"docs/runbooks.md"}, bases


#: A drift rule's expression: the kind and the severity of the series it pages on.
_DRIFT_KIND = re.compile(r'driftline_drift_active\{kind="(\w+)",severity="(\w+)"\}')


def test_each_drift_kind_pages_with_the_severity_of_its_alert_events():
    """Two rules per alert kind, one per severity of the series, each carrying it: the
    workers label driftline_drift_active with the episode's severity, the one its alert
    events carry (tests/unit/test_drift_flags.py), so Alertmanager and the alert topic
    agree. Fixed severities disagreed: 'warning' for input drift the core had made
    critical, 'critical' for a concept drift the core called a warning. A critical
    episode pages after 1m: one that escalated while firing paged only after another
    5m (the promtool tests show both timings)."""
    kinds: dict[str, dict[str, str]] = {}
    for r in _rules():
        for kind, severity in _DRIFT_KIND.findall(r["expr"]):
            assert r["labels"]["severity"] == severity, r["alert"]
            kinds.setdefault(kind, {})[severity] = r["for"]
    assert set(kinds) == set(get_args(AlertKind))
    assert all(v == {"warning": "5m", "critical": "1m"} for v in kinds.values()), kinds
    assert "severity" in DRIFT_ACTIVE._labelnames
    # Alertmanager routes what the rule forwards: critical pages, the rest to the team.
    am = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alertmanager.yml").read_text())
    assert [r["matchers"] for r in am["route"]["routes"]] == [['severity="critical"']]


def test_runbook_base_is_set_in_one_command(promtool, tmp_path):
    """--runbook-base rewrites the rules, their promtool tests and the k8s copy (run on a
    copy of the tree), and the rewritten unit tests still pass."""
    for sub in ("deploy/prometheus", "k8s"):
        shutil.copytree(ROOT / sub, tmp_path / sub)
    tool = tmp_path / "deploy" / "prometheus" / "make_prometheusrule.py"
    base = "https://docs.example.org/driftline/0.1.0/runbooks.html"
    res = subprocess.run(
        [sys.executable, str(tool), "--runbook-base", base],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    rules = tmp_path / "deploy" / "prometheus" / "driftline-rules.yml"
    urls = re.findall(r"runbook_url: \"?([^\"\n]+)", rules.read_text())
    assert urls and all(u.startswith(base + "#") for u in urls)
    k8s = (tmp_path / "k8s" / "prometheus-rule.yaml").read_text()
    assert k8s.count(base + "#") == len(urls) and "docs/runbooks.md#" not in k8s
    check = subprocess.run([sys.executable, str(tool), "--check"], capture_output=True, timeout=60)
    assert check.returncode == 0
    for test in sorted((tmp_path / "deploy" / "prometheus" / "tests").glob("*.yml")):
        run = subprocess.run(
            [promtool, "test", "rules", str(test)], capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stdout + run.stderr
    bad = subprocess.run(
        [sys.executable, str(tool), "--runbook-base", "x#y"], capture_output=True, timeout=60
    )
    assert bad.returncode == 1


def test_rule_expressions_use_only_declared_metrics():
    known = all_sample_names()
    for r in _rules():
        used = promql_metric_names(r["expr"])
        assert used, r["alert"]
        assert used <= known, f"{r['alert']}: unknown metrics {sorted(used - known)}"


def test_k8s_prometheus_rule_is_generated_from_the_rules_file():
    res = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "prometheus" / "make_prometheusrule.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    k8s = yaml.safe_load((ROOT / "k8s" / "prometheus-rule.yaml").read_text())
    assert k8s["kind"] == "PrometheusRule"
    assert k8s["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
