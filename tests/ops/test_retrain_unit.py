"""The retraining trigger's pure decision logic."""

from __future__ import annotations

import pytest

from driftline.contract.events import DriftAlert, make_alert_id
from driftline.errors import ConfigError
from driftline.runtime.retrain import (
    RetrainPolicy,
    RetrainRequest,
    RetrainTrigger,
    parse_duration_ms,
    request_id,
)

H = 3_600_000
T0 = 1_767_225_600_000


def alert(
    model="churn",
    kind="concept_drift",
    severity="critical",
    status="firing",
    episode=1,
    at=T0,
    diagnosis="concept_drift",
    version="3",
):
    a = DriftAlert(
        alert_id=make_alert_id(model, version, "", kind, episode, status),
        model_id=model,
        model_version=version,
        kind=kind,
        status=status,
        severity=severity,
        feature=None,
        detector="test",
        statistic=0.3,
        threshold=0.1,
        p_value=None,
        window={"start": at - 1000, "end": at, "count": 500},
        reference=f"{model}:{version}:x",
        detected_at=at,
        episode=episode,
        diagnosis=diagnosis,
    )
    return a.model_dump(mode="json")


def test_a_qualifying_alert_makes_one_request_with_its_evidence():
    trig = RetrainTrigger(RetrainPolicy())
    dq = alert(kind="data_quality", severity="warning", diagnosis="data_quality")
    a = alert()
    d1 = trig.feed(dq)
    d2 = trig.feed(a)
    assert d1.outcome == "filtered" and d2.outcome == "requested"
    req = d2.request
    assert req is not None and req.status == "requested"
    assert req.request_id == request_id("churn", "3", a["alert_id"])
    assert req.trigger_alert_id == a["alert_id"] and req.requested_at == T0
    assert req.diagnosis == "concept_drift" and req.kind == "concept_drift"
    # The triggering alert first, then the model's other firing alerts (context).
    assert [x["alert_id"] for x in req.alerts] == [a["alert_id"], dq["alert_id"]]
    assert req.policy["debounce_ms"] == 24 * H
    assert RetrainRequest.model_validate_json(req.to_json()) == req


def test_request_ids_are_deterministic_across_replays():
    alerts = [alert(), alert(model="fraud", version="7")]
    one = [d.request.request_id for d in RetrainTrigger().feed_all(alerts) if d.request]
    two = [d.request.request_id for d in RetrainTrigger().feed_all(alerts) if d.request]
    assert one == two and len(set(one)) == 2


def test_debounce_per_model_in_event_time():
    trig = RetrainTrigger(RetrainPolicy(debounce_ms=6 * H))
    out = [
        trig.feed(alert(episode=1, at=T0)).outcome,
        trig.feed(alert(model="fraud", episode=1, at=T0 + H)).outcome,  # other model
        trig.feed(alert(episode=2, at=T0 + 5 * H)).outcome,  # within 6h
        trig.feed(alert(episode=3, at=T0 + 6 * H)).outcome,  # 6h later
    ]
    assert out == ["requested", "requested", "debounced", "requested"]


def test_filters_kind_severity_and_diagnosis():
    pol = RetrainPolicy(
        kinds=frozenset({"concept_drift", "input_drift"}),
        severities=frozenset({"critical"}),
        debounce_ms=0,
    )
    trig = RetrainTrigger(pol)
    assert trig.feed(alert(kind="output_drift", diagnosis="output_drift")).outcome == "filtered"
    assert trig.feed(alert(severity="warning", episode=2)).outcome == "filtered"
    benign = alert(kind="input_drift", diagnosis="input_drift_benign", episode=3)
    assert trig.feed(benign).outcome == "filtered"
    harmful = alert(kind="input_drift", diagnosis="covariate_shift_harmful", episode=4)
    assert trig.feed(harmful).outcome == "requested"
    undetermined = alert(kind="input_drift", diagnosis="undetermined", episode=5, at=T0 + 1)
    assert trig.feed(undetermined).outcome == "requested"  # debounce 0


def test_duplicates_and_resolved_never_trigger_and_resolved_closes_context():
    trig = RetrainTrigger(RetrainPolicy(debounce_ms=0))
    inp = alert(kind="input_drift", diagnosis="undetermined", severity="warning")
    assert trig.feed(inp).outcome == "requested"
    assert trig.feed(inp).outcome == "duplicate"
    res = alert(kind="input_drift", diagnosis="undetermined", severity="warning", status="resolved")
    assert trig.feed(res).outcome == "resolved"
    d = trig.feed(alert(at=T0 + 1))
    assert d.outcome == "requested"
    assert [x["kind"] for x in d.request.alerts] == ["concept_drift"]  # input episode closed


def test_approval_marks_requests_pending():
    d = RetrainTrigger(RetrainPolicy(require_approval=True)).feed(alert())
    assert d.request.status == "pending_approval"


def test_state_restored_from_published_requests():
    first = RetrainTrigger().feed(alert()).request
    restarted = RetrainTrigger()
    restarted.remember(first)
    assert restarted.feed(alert()).outcome == "duplicate"  # re-read after a crash
    assert restarted.feed(alert(episode=2, at=T0 + H)).outcome == "debounced"
    assert restarted.feed(alert(episode=3, at=T0 + 25 * H)).outcome == "requested"


def test_seen_ids_are_bounded():
    trig = RetrainTrigger(RetrainPolicy(debounce_ms=0), max_seen=10)
    for i in range(50):
        trig.feed(alert(episode=i, at=T0 + i))
    assert len(trig.seen) == 10


def test_parse_duration():
    assert parse_duration_ms("24h") == 24 * H
    assert parse_duration_ms("90s") == 90_000
    assert parse_duration_ms("30m") == 1_800_000
    assert parse_duration_ms("7d") == 7 * 24 * H
    assert parse_duration_ms("15") == 15_000
    assert parse_duration_ms("0") == 0
    with pytest.raises(ConfigError):
        parse_duration_ms("soon")
