"""Generate k8s/prometheus-rule.yaml (a prometheus-operator PrometheusRule) from
deploy/prometheus/driftline-rules.yml, the one source of the alerting rules.

    python3 deploy/prometheus/make_prometheusrule.py            # rewrite the k8s file
    python3 deploy/prometheus/make_prometheusrule.py --check    # exit 1 if it is stale

tests/ops/test_rules.py runs the check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "driftline-rules.yml"
TARGET = ROOT / "k8s" / "prometheus-rule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/driftline-rules.yml by
# deploy/prometheus/make_prometheusrule.py: edit the rules file, then regenerate.
# The `release` label must match your Prometheus' ruleSelector (kube-prometheus-stack:
# the Helm release name).
"""


class _Dumper(yaml.SafeDumper):
    """Block style; multi-line strings as literal blocks."""


def _str(dumper: yaml.SafeDumper, data: str) -> Any:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def render() -> str:
    """The PrometheusRule manifest for the current rules file."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "driftline",
            "labels": {
                "app.kubernetes.io/name": "driftline",
                "app.kubernetes.io/component": "alerting",
                "release": "prometheus",
            },
        },
        "spec": {"groups": groups},
    }
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True)
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="fail if the k8s file is stale")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        if TARGET.read_text() != text:
            print(f"{TARGET} is stale: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
