"""Offline validation of k8s/: core kinds against the Kubernetes OpenAPI schemas shipped
by ``kubernetes-validate`` (strict: unknown fields are errors); the CRDs
(ServiceMonitor, PrometheusRule, ScaledObject) and the Kustomization structurally,
with small schemas of the fields we use; plus the wiring between the objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from opsutil import ROOT

from driftline.config import Settings
from tool_checks import require_module

K8S = ROOT / "k8s"
KUBE_VERSION = "1.30.0"
CORE_KINDS = {
    "Deployment",
    "Service",
    "ConfigMap",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
}

_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_META = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "minLength": 1}, "labels": _LABELS},
}
_RULE = {
    "type": "object",
    "required": ["alert", "expr", "labels", "annotations"],
    "additionalProperties": False,
    "properties": {
        "alert": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "expr": {"type": "string", "minLength": 1},
        "for": {"type": "string", "pattern": "^[0-9]+[smhdwy]$"},
        "labels": _LABELS,
        "annotations": _LABELS,
    },
}
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "additionalProperties": False,
                "properties": {
                    "jobLabel": {"type": "string"},
                    "selector": {
                        "type": "object",
                        "required": ["matchLabels"],
                        "properties": {"matchLabels": _LABELS},
                    },
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["port"],
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string"},
                                "interval": {"type": "string"},
                                "scrapeTimeout": {"type": "string"},
                                "relabelings": {"type": "array"},
                            },
                        },
                    },
                },
            },
        },
    },
    "PrometheusRule": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "required": ["groups"],
                "properties": {
                    "groups": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["name", "rules"],
                            "properties": {
                                "name": {"type": "string"},
                                "rules": {"type": "array", "minItems": 1, "items": _RULE},
                            },
                        },
                    }
                },
            },
        },
    },
    "ScaledObject": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "required": ["scaleTargetRef", "triggers"],
                "additionalProperties": False,
                "properties": {
                    "scaleTargetRef": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}},
                    },
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "pollingInterval": {"type": "integer"},
                    "cooldownPeriod": {"type": "integer"},
                    "advanced": {"type": "object"},
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["type", "metadata"],
                            "properties": {
                                "type": {"const": "kafka"},
                                # KEDA trigger metadata values are strings.
                                "metadata": {
                                    "type": "object",
                                    "required": [
                                        "bootstrapServers",
                                        "consumerGroup",
                                        "topic",
                                        "lagThreshold",
                                    ],
                                    "additionalProperties": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    "Kustomization": {
        "type": "object",
        "required": ["apiVersion", "kind", "resources"],
        "properties": {
            "apiVersion": {"const": "kustomize.config.k8s.io/v1beta1"},
            "resources": {"type": "array", "items": {"type": "string"}},
            "images": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string"},
                        "newName": {"type": "string"},
                        "newTag": {"type": "string"},
                        "digest": {"type": "string"},
                    },
                },
            },
        },
    },
}


def _docs() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path, doc))
    return out


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in _docs() if d["kind"] == kind]


def test_the_set_is_complete():
    kinds = {d["kind"] for _, d in _docs()}
    assert CORE_KINDS | set(CRD_SCHEMAS) <= kinds
    names = {d["metadata"]["name"] for d in _by_kind("Deployment")}
    assert {"driftline-monitor", "driftline-labels"} <= names


def test_core_kinds_against_the_kubernetes_schemas():
    kv = require_module("kubernetes_validate")
    checked = 0
    for path, doc in _docs():
        if doc["kind"] in CORE_KINDS:
            kv.validate(doc, KUBE_VERSION, strict=True)  # raises on any error
            checked += 1
        else:
            assert doc["kind"] in CRD_SCHEMAS, f"{path.name}: no validation for {doc['kind']}"
    assert checked >= 8


def test_kubernetes_schema_validation_is_not_vacuous():
    kv = require_module("kubernetes_validate")
    bad = _by_kind("Deployment")[0]
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exeq"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, KUBE_VERSION, strict=True)


def test_custom_resources_structurally():
    for path, doc in _docs():
        schema = CRD_SCHEMAS.get(doc["kind"])
        if schema is not None:
            errors = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
            assert not errors, f"{path.name}: " + "; ".join(e.message for e in errors)


def _containers() -> list[dict[str, Any]]:
    return [c for d in _by_kind("Deployment") for c in d["spec"]["template"]["spec"]["containers"]]


def test_workloads_have_requests_probes_and_no_secret_values():
    for dep in _by_kind("Deployment"):
        spec = dep["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        for c in spec["containers"]:
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), c["name"]
            assert "livenessProbe" in c and "readinessProbe" in c, c["name"]
            ports = {p["name"] for p in c["ports"]}
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                http = c.get(probe, {}).get("httpGet")
                if http:
                    assert http["port"] in ports, f"{c['name']} {probe}"
            for env in c.get("env", []):
                assert "value" not in env or "KEY" not in env["name"], env["name"]
                if "PASSWORD" in env["name"] or "SIGNING_KEY" in env["name"]:
                    assert "secretKeyRef" in env["valueFrom"], env["name"]
    assert not _by_kind("Secret"), "no Secret (with values) belongs in the repository"


def test_probes_use_the_health_endpoints():
    """Liveness asks the worker's event loop and consumer (/livez), readiness its
    driftline_ready gauge (/readyz), both on the metrics port; never /metrics, which a
    separate thread serves even when the worker is wedged."""
    for c in _containers():
        assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}, c["name"]
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}, c["name"]
        if "startupProbe" in c:
            assert c["startupProbe"]["httpGet"]["path"] == "/livez", c["name"]


def test_shutdown_fits_the_grace_period():
    """SIGTERM ends a worker within health.shutdown_seconds; the pod waits longer."""
    bound = Settings().health.shutdown_seconds
    for dep in _by_kind("Deployment"):
        grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > bound, dep["metadata"]["name"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name in ("monitor", "labels", "retrain"):
        grace_s = compose["services"][name]["stop_grace_period"]
        assert grace_s.endswith("s") and float(grace_s[:-1]) > bound, name


def test_one_image_reference_for_compose_k8s_and_the_dockerfile():
    """The image compose builds is the one every Deployment runs (kustomize `images:`
    sets the tag), versioned like the package."""
    from driftline import __version__ as version

    ref = f"ghcr.io/driftline/driftline:{version}"
    kust = _by_kind("Kustomization")[0]
    assert kust["images"] == [{"name": "ghcr.io/driftline/driftline", "newTag": version}]
    for c in _containers():
        assert c["image"] == ref, c["name"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    driftline_services = {
        name: svc
        for name, svc in compose["services"].items()
        if "driftline" in str(svc.get("image", ""))
    }
    assert {"monitor", "labels", "retrain", "status", "demo"} <= set(driftline_services)
    for name, svc in driftline_services.items():
        assert svc["image"] == f"${{DRIFTLINE_IMAGE:-{ref}}}", name
        assert svc["build"] == {"context": ".", "dockerfile": "Dockerfile"}, name
    assert f"docker build -t {ref} ." in (ROOT / "Dockerfile").read_text()
    assert kust["labels"][0]["pairs"]["app.kubernetes.io/version"] == version


def test_environment_names_are_real_settings():
    """Every DRIFTLINE_* variable the manifests set maps to a field of Settings."""

    def known(name: str) -> bool:
        parts = name.removeprefix("DRIFTLINE_").lower().split("__")
        model: Any = Settings
        for part in parts:
            field = model.model_fields.get(part)
            if field is None:
                return False
            model = field.annotation
        return True

    names = set(_by_kind("ConfigMap")[0]["data"])
    for c in _containers():
        names |= {e["name"] for e in c.get("env", [])}
    for name in names:
        assert known(name), f"{name} is not a Driftline setting"


def test_objects_are_wired_together():
    deployments = {d["metadata"]["name"]: d for d in _by_kind("Deployment")}
    services = _by_kind("Service")
    for svc in services:
        sel = svc["spec"]["selector"]
        assert any(
            sel.items() <= d["spec"]["template"]["metadata"]["labels"].items()
            for d in deployments.values()
        ), f"service {svc['metadata']['name']} selects no pod"
    sm = _by_kind("ServiceMonitor")[0]
    selected = [
        s
        for s in services
        if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert {s["metadata"]["name"] for s in selected} >= {"driftline-monitor", "driftline-labels"}
    for s in selected:
        assert s["metadata"]["labels"][sm["spec"]["jobLabel"]] == "driftline"  # job="driftline"
    for pdb in _by_kind("PodDisruptionBudget"):
        sel = pdb["spec"]["selector"]["matchLabels"]
        assert any(
            sel.items() <= d["spec"]["selector"]["matchLabels"].items()
            for d in deployments.values()
        )
    so = _by_kind("ScaledObject")[0]
    hpa = _by_kind("HorizontalPodAutoscaler")[0]
    assert so["spec"]["scaleTargetRef"]["name"] in deployments
    assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
    cm = _by_kind("ConfigMap")[0]["data"]
    trigger = so["spec"]["triggers"][0]["metadata"]
    assert trigger["consumerGroup"] == cm["DRIFTLINE_MONITOR__GROUP_ID"]
    assert trigger["topic"] == cm["DRIFTLINE_TOPICS__PREDICTIONS"]
    kust = _by_kind("Kustomization")[0]
    for res in kust["resources"]:
        assert (K8S / res).is_file(), res
