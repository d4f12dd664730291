"""The Grafana dashboard and its provisioning: JSON parses, the panels the operators
need are there, every PromQL expression parses and selects metrics metrics.py declares."""

from __future__ import annotations

import json
import subprocess

import yaml
from opsutil import ROOT, all_sample_names, promql_metric_names

from tool_checks import require_tool

DASHBOARD = ROOT / "deploy" / "grafana" / "driftline-dashboard.json"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
#: Series Prometheus itself creates.
BUILTIN = {"ALERTS", "up"}


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _exprs(dash: dict) -> list[str]:
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["query"]["query"])
    return exprs


def _concrete(expr: str) -> str:
    """Grafana variables replaced by values, so the expression is plain PromQL."""
    for k, v in {"$__rate_interval": "1m", "$model": "churn", "$version": ".*"}.items():
        expr = expr.replace(k, v)
    if expr.startswith("label_values("):  # Grafana's templating function, not PromQL
        inner = expr[len("label_values(") : -1]
        expr = inner.rsplit(",", 1)[0]
    return expr


def test_dashboard_parses_and_has_the_panels_operators_need():
    dash = _dashboard()
    assert dash["uid"] == "driftline-overview" and dash["title"] == "Driftline"
    names = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "model", "version"} <= names
    titles = {p["title"] for p in dash["panels"]}
    for needed in (
        "Drift score by feature (PSI)",
        "KS statistic and JS distance by feature",
        "Chi-square statistic by feature (categorical)",
        "Data-quality and output rates",
        "Worker memory (RSS)",
        "Active alerts",
        "Accuracy vs estimated accuracy",
        "Label coverage",
        "Throughput (events/s)",
        "Consumer lag (events)",
    ):
        assert needed in titles
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["targets"], p["title"]
            assert p["datasource"]["uid"] == "${datasource}", p["title"]


def test_every_expression_selects_declared_metrics():
    known = all_sample_names() | BUILTIN
    for expr in _exprs(_dashboard()):
        used = promql_metric_names(expr) | ({"ALERTS"} if "ALERTS{" in expr else set())
        assert used, f"no metric in {expr!r}"
        assert used <= known, f"unknown metrics {sorted(used - known)} in {expr!r}"


def test_per_model_panels_filter_on_the_model_variable():
    for p in _dashboard()["panels"]:
        for t in p.get("targets", []):
            if any(m in t["expr"] for m in ("driftline_drift_", "accuracy", "coverage")):
                assert '$model"' in t["expr"], f"{p['title']}: not filtered by $model"


def test_every_expression_is_valid_promql(tmp_path):
    promtool = require_tool("promtool")
    rules = [
        {"record": f"driftline:dashboard_check:{i}", "expr": _concrete(e)}
        for i, e in enumerate(_exprs(_dashboard()))
    ]
    path = tmp_path / "exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    res = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_provisioning_files():
    ds = yaml.safe_load((PROVISIONING / "datasources" / "driftline.yml").read_text())
    assert any(d["type"] == "prometheus" for d in ds["datasources"])
    prov = yaml.safe_load((PROVISIONING / "dashboards" / "driftline.yml").read_text())
    path = prov["providers"][0]["options"]["path"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    target = f"{path}/driftline-dashboard.json"
    assert f"./deploy/grafana/driftline-dashboard.json:{target}:ro" in mounts, mounts
    home = compose["services"]["grafana"]["environment"][
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"
    ]
    assert home == target
