"""docker-compose.yml against the Compose Specification JSON Schema, plus the promises
docs/operations.md makes about it. No Docker engine here: the file is validated offline.

The schema is the one check-jsonschema (PyPI) vendors as its builtin
``vendor.compose-spec`` (from the compose-spec project via SchemaStore). It is read
as a data file, without importing check_jsonschema.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from opsutil import ROOT

from tool_checks import require_tool

COMPOSE = ROOT / "docker-compose.yml"


def _schema_path() -> Path | None:
    spec = importlib.util.find_spec("check_jsonschema")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "builtin_schemas/vendor/compose-spec.json"
    return path if path.is_file() else None


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_is_valid_against_the_compose_specification():
    path = _schema_path()
    if path is None:
        pytest.fail("check-jsonschema (test extra) must be installed: it ships the schema")
    schema = json.loads(path.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    errors = sorted(cls(schema).iter_errors(_compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_schema_catches_a_broken_file():
    """The validator is not vacuous: a misspelt key and a wrong type are refused."""
    schema = json.loads(_schema_path().read_text())
    bad = _compose()
    bad["services"]["monitor"]["comand"] = ["monitor"]
    bad["services"]["redis"]["ports"] = {"6379": 6379}
    errors = list(jsonschema.validators.validator_for(schema)(schema).iter_errors(bad))
    assert len(errors) >= 2


def test_the_stack_has_every_service():
    services = _compose()["services"]
    for name in (
        "kafka",
        "redis",
        "prometheus",
        "alertmanager",
        "grafana",
        "monitor",
        "labels",
        "status",
    ):
        assert name in services, name
    assert services["demo"]["profiles"] == ["demo"]
    assert services["monitor"]["command"] == ["monitor"]
    assert services["labels"]["command"] == ["labels"]
    assert services["status"]["command"][0] == "serve"


def test_compose_builds_the_image_from_the_dockerfile():
    """Every Driftline service runs the one image compose builds from ./Dockerfile
    (compose builds a shared tag once); k8s/ uses the same reference (test_k8s)."""
    services = _compose()["services"]
    images = set()
    for name in ("monitor", "labels", "retrain", "status", "demo"):
        svc = services[name]
        assert svc["build"]["context"] == "." and (ROOT / svc["build"]["dockerfile"]).is_file()
        images.add(svc["image"])
    assert len(images) == 1, images
    assert images.pop().startswith("${DRIFTLINE_IMAGE:-"), "the tag must be overridable"


def _published(svc: dict) -> list[str]:
    return [str(p) for p in svc.get("ports", [])]


def test_admin_endpoints_stay_off_host_ports():
    """Nothing without authentication listens on the host's public interfaces:
    Prometheus (no lifecycle or admin API at all), Alertmanager (its API silences
    alerts) and the status page publish on 127.0.0.1 only; Grafana has a login."""
    services = _compose()["services"]
    flags = " ".join(services["prometheus"]["command"])
    assert "--web.enable-lifecycle" not in flags and "--web.enable-admin-api" not in flags
    for name, svc in services.items():
        for port in _published(svc):
            if name == "grafana":
                continue
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
    for name in ("prometheus", "alertmanager", "status"):
        assert _published(services[name]), f"{name} should be reachable from the host"
    assert services["grafana"]["environment"]["GF_USERS_ALLOW_SIGN_UP"] == "false"


def test_healthchecks_use_the_health_endpoints():
    services = _compose()["services"]
    for name in ("monitor", "labels", "retrain"):
        probe = " ".join(services[name]["healthcheck"]["test"])
        assert "127.0.0.1:9108/livez" in probe, name
    assert "127.0.0.1:9109/healthz" in " ".join(services["status"]["healthcheck"]["test"])
    assert "/livez" in (ROOT / "Dockerfile").read_text()


def test_kafka_runs_in_kraft_mode():
    env = _compose()["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "ZOOKEEPER" not in " ".join(env)


def test_driftline_services_scale_without_host_ports():
    services = _compose()["services"]
    for name in ("monitor", "labels", "retrain", "demo"):
        svc = services[name]
        assert "ports" not in svc, f"{name} publishes a host port: --scale would clash"
        assert "container_name" not in svc, name


def test_redis_uses_aof_and_the_documented_acl():
    cmd = " ".join(_compose()["services"]["redis"]["command"])
    assert "--appendonly yes" in cmd and "--appendfsync everysec" in cmd
    assert "--maxmemory-policy noeviction" in cmd and "--user default off" in cmd
    doc = (ROOT / "docs" / "redis.md").read_text()
    line = re.search(r"^user driftline reset on #<sha256-of-password> (.+)$", doc, re.M)
    assert line, "ACL line not found in docs/redis.md"
    for rule in line.group(1).split():
        assert rule.strip('"') in cmd.replace('"', ""), f"ACL rule {rule} missing"


def test_secrets_come_from_the_environment():
    text = COMPOSE.read_text()
    for var in (
        "DRIFTLINE_STATE_SIGNING_KEY",
        "DRIFTLINE_REDIS_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
    ):
        assert f"${{{var}:?" in text, f"{var} must be required, not defaulted"


def test_mounted_files_exist():
    for name, svc in _compose()["services"].items():
        for mount in svc.get("volumes", []):
            src = mount.split(":", 1)[0]
            if src.startswith("./"):
                assert (ROOT / src).exists(), f"{name}: {src} does not exist"


def test_compose_prometheus_config_is_valid(tmp_path):
    promtool = require_tool("promtool")
    cfg = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    cfg["rule_files"] = [str(ROOT / "deploy" / "prometheus" / "driftline-rules.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    res = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr
    jobs = {j["job_name"] for j in cfg["scrape_configs"]}
    assert "driftline" in jobs


def test_compose_alertmanager_config_is_valid():
    amtool = require_tool("amtool")
    res = subprocess.run(
        [amtool, "check-config", str(ROOT / "deploy" / "prometheus" / "alertmanager.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr
