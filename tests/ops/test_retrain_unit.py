"""The retraining trigger's pure decision logic."""

from __future__ import annotations

import pytest

from driftline.contract.codec import pack
from driftline.contract.events import (
    DriftAlert,
    make_alert_id,
)
from driftline.errors import ConfigError, StateCorrupt
from driftline.runtime.retrain import (
    STATE_TAG,
    STATE_VERSION,
    ModelState,
    RetrainPolicy,
    RetrainRequest,
    RetrainTrigger,
    decide,
    parse_duration_ms,
    request_id,
)
from driftline.runtime.retrain_app import faust_settings

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


def test_an_update_refreshes_the_context_and_triggers_only_when_the_policy_says():
    """An ``updated`` alert is the open episode's latest state (another feature started
    drifting, or it became critical): it replaces the episode's alert in the context of
    a later request, and is not a new trigger unless ``trigger_on_updates``."""
    warning = alert(kind="input_drift", diagnosis="undetermined", severity="warning")
    critical = {
        **alert(kind="input_drift", diagnosis="undetermined", severity="critical", at=T0 + 5),
        "status": "updated",
        "alert_id": make_alert_id("churn", "3", "", "input_drift", 1, "updated", 1),
    }
    only_critical = RetrainPolicy(severities=frozenset({"critical"}), debounce_ms=0)
    trig = RetrainTrigger(only_critical)
    assert trig.feed(warning).outcome == "filtered"
    d = trig.feed(critical)
    assert d.outcome == "updated" and d.request is None
    req = trig.feed(alert(at=T0 + 10)).request  # a concept-drift alert triggers
    assert req is not None
    assert [(a["kind"], a["status"]) for a in req.alerts[1:]] == [("input_drift", "updated")]
    # With trigger_on_updates the escalation itself is a trigger (through the filters).
    trig = RetrainTrigger(RetrainPolicy(**{**only_critical.__dict__, "trigger_on_updates": True}))
    assert trig.feed(warning).outcome == "filtered"
    d = trig.feed(critical)
    assert d.outcome == "requested" and d.request is not None
    assert d.request.policy["trigger_on_updates"] is True


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


# ------------------------------------------------------------- one model's state, faust settings


def _mixed_alerts():
    """Three models; firing, resolved, duplicated, filtered and debounced alerts."""
    out = []
    for i in range(60):
        model = ("churn", "fraud", "eta")[i % 3]
        kind = ("concept_drift", "input_drift", "data_quality", "performance")[i % 4]
        diagnosis = {"data_quality": "data_quality", "performance": None}.get(kind, "undetermined")
        status = "resolved" if i % 5 == 4 else "firing"
        a = alert(
            model=model,
            kind=kind,
            severity=("warning", "critical")[i % 2],
            status=status,
            episode=i // 6,
            at=T0 + i * 2 * H,
            diagnosis=diagnosis,
        )
        out.append(a)
        if i % 7 == 0:
            out.append(a)  # published twice by an outbox
    return out


def test_decide_on_per_model_states_equals_one_trigger():
    policy = RetrainPolicy(debounce_ms=13 * H)
    one = RetrainTrigger(policy)
    states: dict[str, ModelState] = {}
    alerts = _mixed_alerts()
    for a in alerts:
        expected = one.feed(a)
        before = states.get(a["model_id"], ModelState())
        # Through bytes, as the state table stores it.
        restored = ModelState.from_bytes(before.to_bytes())
        assert restored == before
        got, states[a["model_id"]] = decide(policy, restored, a, max_seen=1000)
        assert got == expected
    outcomes = {d.outcome for d in RetrainTrigger(policy).feed_all(alerts)}
    assert outcomes == {"requested", "debounced", "filtered", "resolved", "duplicate"}
    assert sum(s.requests for s in states.values()) == sum(
        d.outcome == "requested" for d in RetrainTrigger(policy).feed_all(alerts)
    )
    for model, s in states.items():
        assert s.last_request_ms == one.last_request_ms[model]
        assert dict(s.open_alerts) == one.open_alerts[model]


def test_model_state_seen_ids_are_bounded_per_model():
    state = ModelState()
    for i in range(30):
        _, state = decide(
            RetrainPolicy(debounce_ms=0), state, alert(episode=i, at=T0 + i), max_seen=8
        )
    assert len(state.seen) == 8 and state.requests == 30
    assert state.seen[-1] == alert(episode=29, at=T0 + 29)["alert_id"]


@pytest.mark.parametrize(
    "fields",
    [
        {"last_request_ms": "1", "requests": 0, "open": [], "seen": []},
        {"last_request_ms": None, "requests": 0, "open": [["3", "", "x"]], "seen": []},
        {"last_request_ms": None, "requests": 0, "open": [], "seen": [1]},
        {"last_request_ms": None, "open": [], "seen": []},
    ],
)
def test_model_state_refuses_records_of_the_wrong_shape(fields):
    with pytest.raises(StateCorrupt):
        ModelState.from_bytes(pack(STATE_TAG, STATE_VERSION, fields))
    with pytest.raises(StateCorrupt):
        ModelState.from_bytes(pack(STATE_TAG, STATE_VERSION + 1, {}))


def test_faust_settings_map_the_config_object(monkeypatch, tmp_path):
    import faust

    from driftline.config import Settings

    s = Settings(
        kafka={"bootstrap_servers": "k1:9092, k2:9093", "client_id": "dl-test"},
        retrain={"session_timeout_ms": 6000},
    )
    conf = faust_settings(s, group_id="g", partitions=3, from_start=True)
    assert conf["id"] == "g" and conf["broker_client_id"] == "dl-test"
    assert conf["broker_credentials"] is None and conf["topic_partitions"] == 3
    assert conf["consumer_auto_offset_reset"] == "earliest"
    assert conf["broker_session_timeout"] == 6.0 and conf["stream_wait_empty"] is False
    # faust's own environment variables never override the config object.
    monkeypatch.setenv("BROKER_URL", "kafka://elsewhere:1")
    monkeypatch.setenv("APP_DATADIR", str(tmp_path / "nope"))
    app = faust.App(**conf)
    assert [u.host for u in app.conf.broker] == ["k1", "k2"]
    assert [u.port for u in app.conf.broker] == [9092, 9093]
    assert app.conf.datadir != tmp_path / "nope"

    sasl = Settings(
        kafka={
            "bootstrap_servers": "k1:9092",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "driftline",
            "sasl_password": "s3cret-pw",
        }
    )
    cred = faust_settings(sasl, group_id="g", partitions=1, from_start=False)["broker_credentials"]
    assert isinstance(cred, faust.SASLCredentials)
    assert cred.protocol.value == "SASL_SSL" and cred.mechanism.value == "SCRAM-SHA-512"
    assert cred.username == "driftline" and cred.password == "s3cret-pw"
    assert cred.ssl_context is not None and "s3cret" not in repr(cred)

    tls = Settings(kafka={"bootstrap_servers": "k1:9092", "security_protocol": "SSL"})
    cred = faust_settings(tls, group_id="g", partitions=1, from_start=False)["broker_credentials"]
    assert isinstance(cred, faust.SSLCredentials) and cred.protocol.value == "SSL"
