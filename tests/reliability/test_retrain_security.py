"""The retraining trigger (a faust worker) over SASL/SCRAM + TLS Kafka, leaking no secret.

Proves the one mapping of driftline's Kafka settings onto faust's
(``retrain_app.faust_settings``) end to end: the worker authenticates through the test
proxy in front of Tansu (``scram_proxy.py``), creates its state topic, restores, joins
the group and publishes its request; the password and the signing key appear in no log
line and no record.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest
from test_security import _kafka, pki, scram_broker  # noqa: F401 - fixtures

import driftline
from driftline.config import Settings
from driftline.contract.events import (
    DriftAlert,
    make_alert_id,
)
from driftline.runtime.retrain import RetrainRequest
from driftline.runtime.worker import ensure_topics
from support import read_records

pytestmark = pytest.mark.integration


def _alert() -> dict[str, object]:
    """A critical concept-drift alert of model churn (qualifies under the default policy)."""
    return DriftAlert(
        alert_id=make_alert_id("churn", "3", "", "concept_drift", 1, "firing"),
        model_id="churn",
        model_version="3",
        kind="concept_drift",
        status="firing",
        severity="critical",
        feature=None,
        detector="test",
        statistic=0.3,
        threshold=0.1,
        p_value=None,
        window={"start": 0, "end": 1000, "count": 500},
        reference="churn:3:x",
        detected_at=1000,
        episode=1,
        diagnosis="concept_drift",
    ).model_dump(mode="json")


async def _records(kafka: object, topic: str) -> list[bytes]:
    return [r.value for r in await read_records(kafka.client_kwargs(), topic)]


async def test_retrain_over_sasl_ssl_kafka_leaks_no_secret(
    scram_broker: tuple[str, dict[str, str]],  # noqa: F811
    pki: dict[str, str],  # noqa: F811
) -> None:
    from aiokafka import AIOKafkaProducer

    bootstrap, users = scram_broker
    password = users["driftline"]
    kafka = _kafka(bootstrap, pki["ca"], "driftline", password)
    u = uuid.uuid4().hex[:10]
    signing_key = f"retrain-test-signing-key-{u}"
    s = Settings(kafka=kafka, topics={"alerts": f"alerts-{u}", "retrain_requests": f"rr-{u}"})
    await ensure_topics(s, [s.topics.alerts], partitions=2)
    trigger = _alert()
    prod = AIOKafkaProducer(**kafka.client_kwargs())
    await prod.start()
    try:
        await prod.send_and_wait(s.topics.alerts, orjson.dumps(trigger), key=b"churn")
    finally:
        await prod.stop()

    env = {
        **os.environ,
        "PYTHONPATH": str(Path(driftline.__file__).parents[1]),
        "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "DRIFTLINE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "DRIFTLINE_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "DRIFTLINE_KAFKA__SASL_USERNAME": "driftline",
        "DRIFTLINE_KAFKA__SASL_PASSWORD": password,
        "DRIFTLINE_KAFKA__SSL_CAFILE": pki["ca"],
        "DRIFTLINE_REDIS__STATE_SIGNING_KEY": signing_key,
        "DRIFTLINE_TOPICS__ALERTS": s.topics.alerts,
        "DRIFTLINE_TOPICS__RETRAIN_REQUESTS": s.topics.retrain_requests,
        "DRIFTLINE_LOG_LEVEL": "DEBUG",
    }
    args = ["retrain", "--from-start", "--group", f"rt-{u}", "--idle-exit", "3", "--no-metrics"]
    res = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "driftline", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "after 1 alerts, 1 requests" in res.stderr

    published = [
        RetrainRequest.model_validate_json(v)
        for v in await _records(kafka, s.topics.retrain_requests)
    ]
    assert [r.trigger_alert_id for r in published] == [trigger["alert_id"]]
    state = await _records(kafka, s.topics.retrain_state())
    assert state, "the state table wrote its changelog through the secured connection"
    for secret in (password, signing_key):
        assert secret not in res.stderr and secret not in res.stdout
        assert all(secret.encode() not in v for v in state)
