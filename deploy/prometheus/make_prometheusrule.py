"""Generate k8s/prometheus-rule.yaml (a prometheus-operator PrometheusRule) from
deploy/prometheus/driftline-rules.yml, the one source of the alerting rules, and set
the base of the rules' runbook links.

    python3 deploy/prometheus/make_prometheusrule.py            # rewrite the k8s file
    python3 deploy/prometheus/make_prometheusrule.py --check    # exit 1 if it is stale
    python3 deploy/prometheus/make_prometheusrule.py --runbook-base URL

Every rule's ``runbook_url`` is ``<runbook base>#<alert name in lower case>``, one base
for all rules. The base shipped is ``docs/runbooks.md``, the runbooks' path in this
repository; ``--runbook-base`` replaces it with wherever the documentation is served
(e.g. ``https://git.example.com/ops/driftline/-/blob/v0.1.0/docs/runbooks.md``) in the
rules file and in the promtool tests that expect it, then regenerates the k8s copy.

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
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests"
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


def runbook_base(rules_text: str) -> str:
    """The one base of every ``runbook_url`` in ``rules_text``.

    Raises ``ValueError`` when a rule has no runbook link, a link's anchor is not the
    alert's name in lower case, or two rules use different bases.
    """
    bases = set()
    for group in yaml.safe_load(rules_text)["groups"]:
        for rule in group["rules"]:
            url = rule.get("annotations", {}).get("runbook_url", "")
            base, _, anchor = url.rpartition("#")
            if not base or anchor != rule["alert"].lower():
                raise ValueError(f"{rule['alert']}: runbook_url {url!r} is not <base>#{anchor}")
            bases.add(base)
    if len(bases) != 1:
        raise ValueError(f"the rules use {len(bases)} runbook bases: {sorted(bases)}")
    return bases.pop()


def set_runbook_base(new: str) -> list[Path]:
    """Replace the runbook base in the rules file and its promtool tests."""
    if not new or any(c in new for c in '#"\n'):
        raise ValueError(f"not a usable runbook base: {new!r}")
    old = runbook_base(RULES.read_text())
    changed = []
    for path in [RULES, *sorted(RULE_TESTS.glob("*.yml"))]:
        text = path.read_text()
        updated = text.replace(f'"{old}#', f'"{new}#')
        if updated != text:
            path.write_text(updated)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="fail if the k8s file is stale")
    p.add_argument(
        "--runbook-base",
        metavar="URL",
        help="set the base of every runbook link (the runbooks page, without '#')",
    )
    args = p.parse_args(argv)
    try:
        runbook_base(RULES.read_text())
        if args.runbook_base is not None and not args.check:
            for path in set_runbook_base(args.runbook_base):
                print(f"wrote {path}")
    except ValueError as exc:
        print(f"{RULES.name}: {exc}", file=sys.stderr)
        return 1
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
