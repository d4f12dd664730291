"""`driftline alerts`: history with --since (offsets_for_times), filters, dedupe by
alert_id, follow mode; against the real Tansu broker. Plus the pure helpers."""

from __future__ import annotations

import asyncio
import html
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

import driftline
from driftline.contract.events import (
    DriftAlert,
    make_alert_id,
)
from driftline.errors import DriftlineError
from driftline.offline.replay import Replayer
from driftline.views.alerts import alert_matches, follow_alerts, format_alert, parse_since_ms
from driftline.views.report.build import _num
from driftline.views.report.render import _alert_row
from report_scenarios import churn_events, churn_reference

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _alert(
    model: str, kind: str, severity: str, status: str = "firing", episode: int = 1, at: int = NOW
) -> DriftAlert:
    return DriftAlert(
        alert_id=make_alert_id(model, "1", "", kind, episode, status),
        model_id=model,
        model_version="1",
        kind=kind,
        status=status,
        severity=severity,
        feature="f03" if kind == "input_drift" else None,
        detector="window_ks_psi",
        statistic=0.42,
        threshold=0.1,
        p_value=0.001,
        window={"start": at - 5000, "end": at, "count": 500},
        reference="churn:1:abc",
        detected_at=at,
        episode=episode,
        diagnosis="covariate_shift_harmful" if kind == "input_drift" else "undetermined",
        top_features=[{"feature": "f03", "score": 0.42, "contribution": 1.0, "statistic": "psi"}],
    )


# ---------------------------------------------------------------------------- pure


def test_parse_since_accepts_iso_epoch_and_durations():
    assert parse_since_ms("1h", now_ms=NOW) == NOW - 3_600_000
    assert parse_since_ms("30m", now_ms=NOW) == NOW - 1_800_000
    assert parse_since_ms("7d", now_ms=NOW) == NOW - 7 * 86_400_000
    assert parse_since_ms("2026-01-01T00:00:00Z", now_ms=0) == NOW
    assert parse_since_ms("2026-01-01T01:00:00+01:00", now_ms=0) == NOW
    assert parse_since_ms("2026-01-01T00:00:00", now_ms=0) == NOW  # naive = UTC
    assert parse_since_ms(str(NOW), now_ms=0) == NOW
    with pytest.raises(DriftlineError):
        parse_since_ms("yesterday-ish", now_ms=NOW)


def test_filters_take_values_or_comma_lists():
    a = _alert("churn", "input_drift", "critical").model_dump(mode="json")
    assert alert_matches(a)
    assert alert_matches(a, model="churn", kind="input_drift,output_drift", severity="critical")
    assert alert_matches(a, severity=["warning", "critical"])
    assert not alert_matches(a, model="fraud")
    assert not alert_matches(a, kind="data_quality")
    assert not alert_matches(a, severity="warning")


def test_format_alert_is_one_readable_line():
    line = format_alert(_alert("churn", "input_drift", "critical").model_dump(mode="json"))
    assert line.startswith("2026-01-01T00:00:00Z [FIRING  ] critical input_drift")
    assert "model=churn:1" in line and "top=[f03=PSI 0.42]" in line
    assert "stat=PSI 0.42 thr=0.1 " in line  # a window test names its statistic
    assert "diagnosis=covariate_shift_harmful" in line and "\n" not in line
    quiet = format_alert(_alert("churn", "output_drift", "warning").model_dump(mode="json"))
    assert "diagnosis" not in quiet  # "undetermined" is not worth printing
    grown = _alert("churn", "input_drift", "critical", status="updated").model_dump(mode="json")
    assert "[UPDATED ] critical input_drift" in format_alert(grown)
    over = _alert("churn", "input_drift", "warning", status="resolved").model_dump(mode="json")
    assert "[resolved] warning" in format_alert(over)


def test_format_alert_names_output_signals_as_the_report_does():
    """The terminal line names an output signal as the report's alert timeline does
    (``class mix`` where the event says ``__class__``): the report's rendered row is the
    oracle. The alert event itself is not changed."""
    a = _alert("churn", "output_drift", "warning").model_dump(mode="json")
    a["feature"] = "__class__"
    a["top_features"] = [
        {"feature": "__class__", "score": 0.5, "contribution": 0.7, "statistic": "share:0"},
        {"feature": "__low_confidence__", "score": 0.25, "contribution": 0.3, "statistic": "x"},
    ]
    before = orjson.dumps(a)
    line = format_alert(a)
    assert orjson.dumps(a) == before
    cells = re.findall(r"<td[^>]*>(.*?)</td>", _alert_row(a))
    feature, top = cells[4], cells[8]  # the report's feature and top-features columns
    assert "__" not in feature + top and "__" not in line
    assert f'feature="{feature}"' in line  # quoted: the name has a space
    shown = [t.rsplit(" ", 1)[0] for t in top.split("; ")]
    assert f"top=[{shown[0]}=0.5; {shown[1]}=0.25]" in line
    # A feature's own name stays as it is; an alert without a feature has no feature field.
    a["feature"] = "age"
    assert " feature=age " in format_alert(a)
    a["feature"] = None
    assert "feature=" not in format_alert(a)


def test_a_reading_with_a_comma_stays_one_entry_of_the_top_features():
    """A feature whose mean and spread both moved reads "mean down, spread up"; joined
    with ", ", the top features of a critical alert read "visits spread up 4.36 sd,
    tenure mean down 0.846 sd, age mean down, spread up 0.667 sd" on the report and the
    status page: an "age mean down" without a figure and a "spread up 0.667 sd" of no
    feature. Each entry is split back whole, on the terminal line and in the table."""
    a = _alert("churn", "input_drift", "critical").model_dump(mode="json")
    a.update(detector="cusum", feature="visits", statistic=4.36, threshold=0.5)
    readings = [("visits", 4.36, "spread up"), ("tenure", 0.846, "mean down")]
    readings.append(("age", 0.667, "mean down, spread up"))
    a["top_features"] = [
        {"feature": f, "score": v, "contribution": 0.3, "statistic": s} for f, v, s in readings
    ]
    line = format_alert(a)
    listed = line.split("top=[", 1)[1].split("]", 1)[0]
    assert [e.split("=", 1)[0] for e in listed.split("; ")] == ["visits", "tenure", "age"]
    assert "age=mean down, spread up 0.667 sd" in listed
    cells = re.findall(r"<td[^>]*>(.*?)</td>", _alert_row(a))
    entries = cells[8].split("; ")
    assert entries == [
        "visits spread up 4.36 sd",
        "tenure mean down 0.846 sd",
        "age mean down, spread up 0.667 sd",
    ]


def test_the_sequential_detectors_figures_read_in_standard_deviations():
    """The cusum alert's statistic and scores are effects in the reference's sd of the
    channel; bare ('stat=0.983 ... top=[f03=0.983]') they read as the PSI the runbook
    spoke of. The line says 'sd'. Oracle: numpy's shift of f03 over the alert's window,
    in sd of the events before the drift (the stream shifts f03 by 1 sd)."""
    events = churn_events()
    alerts = [
        a.model_dump(mode="json")
        for a in Replayer({("churn", "1"): churn_reference()}).feed(events).alerts
    ]
    a = next(a for a in alerts if a["severity"] == "critical" and a["kind"] == "input_drift")
    top = a["top_features"][0]
    assert a["detector"] == "cusum" and top["feature"] == "f03" and top["statistic"] == "mean up"
    start, end = a["window"]["start"], a["detected_at"]
    before = np.array([e["features"]["f03"] for e in events if e["timestamp"] < start])
    window = np.array([e["features"]["f03"] for e in events if start <= e["timestamp"] <= end])
    shift = (window.mean() - before.mean()) / before.std()
    assert abs(shift - top["score"]) < 0.1, (shift, top["score"])
    line = format_alert(a)
    # and what moved, which way (a 1 sd mean shift: not its spread)
    assert f"stat=mean up {a['statistic']:.3g} sd thr={a['threshold']:.3g} sd" in line
    assert f"top=[f03=mean up {top['score']:.3g} sd;" in line
    # The report's and the status page's alert table say it as well.
    cells = re.findall(r"<td[^>]*>(.*?)</td>", _alert_row(a))
    assert cells[6].endswith(" sd") and " sd / " in cells[6]
    assert cells[6].startswith("mean up ")
    assert cells[8].startswith("f03 mean up ") and cells[8].split(";")[0].endswith(" sd")
    # Window tests keep their own figures (a PSI is not in sd).
    psi = _alert("churn", "input_drift", "warning").model_dump(mode="json")
    assert " sd" not in format_alert(psi) and " sd" not in _alert_row(psi)


def _figures_cell(a: dict) -> str:
    return re.findall(r"<td[^>]*>(.*?)</td>", _alert_row(a))[6]


def test_every_detectors_statistic_says_what_it_is():
    """The statistic column printed bare numbers for all but the sequential detector:
    'stat=0.174 thr=0.0793' (an error rate), 'stat=0.844' (an accuracy), 'stat=0.05' (a
    rate). Each says what it measures or its unit, the same text in the terminal line
    and in the report's and status page's alert tables (one function), escaped.
    Alerts of the real cores: SEA's concept switch through the slow loop (adwin's error
    level, the accuracy's drop) and the churn stream through the fast loop (cusum)."""
    from driftline.config import LabelsSettings
    from driftline.core.reference import build_reference
    from driftline.core.slowloop import (
        DriftIndex,
        MemoryRecords,
        UnitState,
        join_batch,
        plan_lookups,
    )
    from driftline.demo.sea import SeaScenario, interleave

    sea = build_reference(SeaScenario().training_data(5000), "sea", "1", seed=0, created_at=0)
    settings = LabelsSettings()
    preds, labels = SeaScenario(model_id="sea").events(8_000, concept_at=4_000)
    stream = interleave(preds, labels)
    unit, mem, drift, slow = UnitState(), MemoryRecords(), DriftIndex(), []
    for i in range(0, len(stream), 2_000):
        p = [e for k, e in stream[i : i + 2_000] if k == "p"]
        lab = [e for k, e in stream[i : i + 2_000] if k == "l"]
        plan = plan_lookups(p, lab, unit, settings)
        res = join_batch(p, lab, plan, mem.lookup(plan), unit, lambda m, v: sea, drift, settings)
        mem.apply(res)
        slow += [a.model_dump(mode="json") for a in res.alerts]
    fast = [
        a.model_dump(mode="json")
        for a in Replayer({("churn", "1"): churn_reference()}).feed(churn_events()).alerts
    ]
    by_detector = {a["detector"]: a for a in [*slow, *fast]}
    assert {"adwin", "window_accuracy", "cusum"} <= set(by_detector)

    concept = by_detector["adwin"]
    stat, thr = f"error {_num(concept['statistic'])}", _num(concept["threshold"])
    assert f"stat={stat} thr={thr} " in format_alert(concept)
    assert _figures_cell(concept) == f"{stat} / {thr}"

    acc = by_detector["window_accuracy"]
    drop = 100 * (acc["statistic"] - acc["threshold"])
    assert drop < 0
    stat = f"acc {acc['statistic']:.1%} ({-drop:.1f} pts below the threshold)"
    assert f"stat={stat} thr={acc['threshold']:.1%} " in format_alert(acc)
    assert _figures_cell(acc) == html.escape(f"{stat} / {acc['threshold']:.1%}")

    cusum = by_detector["cusum"]
    named = next(t["statistic"] for t in cusum["top_features"] if t["feature"] == cusum["feature"])
    stat = f"{named} {_num(cusum['statistic'])} sd"
    assert _figures_cell(cusum) == f"{stat} / {_num(cusum['threshold'])} sd"

    # The shapes the other detectors' alerts have (core/fastloop/episodes.py, quality.py).
    quality = _alert("churn", "data_quality", "warning").model_dump(mode="json")
    quality.update(detector="data_quality", feature="age", statistic=0.12, threshold=0.05)
    quality["top_features"] = [
        {"feature": "age", "score": 0.12, "contribution": 0.8, "statistic": "missing_rate_excess"},
        {"feature": "plan", "score": 0.3, "contribution": 0.2, "statistic": "unseen_category_rate"},
    ]
    line = format_alert(quality)
    assert "stat=missing +12 pts thr=5 pts " in line
    assert "top=[age=missing +12 pts; plan=unseen 30%]" in line
    assert _figures_cell(quality) == "missing +12 pts / 5 pts"
    joint = _alert("churn", "input_drift", "warning").model_dump(mode="json")
    joint.update(detector="multivariate", statistic=17.295, threshold=15.76)
    joint["top_features"] = [
        {"feature": "f03", "score": 3.1, "contribution": 1.0, "statistic": "joint_change"}
    ]
    assert "stat=joint CUSUM 17.3 thr=15.8 " in format_alert(joint)
    assert "top=[f03=z 3.1]" in format_alert(joint)
    mae = _alert("churn", "performance", "warning").model_dump(mode="json")
    mae.update(detector="window_mae", statistic=3.21, threshold=2.9, top_features=[])
    assert _figures_cell(mae) == "MAE 3.21 / 2.9"


# ---------------------------------------------------------------------------- Tansu


async def _publish(settings, records: list[tuple[DriftAlert, int]]) -> None:
    bootstrap = settings.kafka.bootstrap_servers
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if settings.topics.alerts not in await admin.list_topics():
            await admin.create_topics([NewTopic(settings.topics.alerts, 2, 1)])
    finally:
        await admin.close()
    prod = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await prod.start()
    try:
        for alert, ts in records:
            await prod.send_and_wait(
                settings.topics.alerts,
                alert.to_json(),
                key=alert.model_id.encode(),
                timestamp_ms=ts,
            )
    finally:
        await prod.stop()


async def _history(settings, **kw) -> list[str]:
    lines: list[str] = []
    await asyncio.wait_for(
        follow_alerts(
            settings,
            kw.pop("from_start", False),
            asyncio.Event(),
            follow=False,
            emit=lines.append,
            **kw,
        ),
        30,
    )
    return lines


@pytest.mark.integration
async def test_history_since_filters_and_dedupe_then_follow(settings):
    now = int(time.time() * 1000)
    old = _alert("churn", "input_drift", "warning", episode=1)
    new = _alert("churn", "input_drift", "critical", episode=2)
    dq = _alert("fraud", "data_quality", "warning")
    out = _alert("churn", "output_drift", "warning")
    await _publish(
        settings,
        [
            (old, now - 3 * 3_600_000),
            (new, now - 1_800_000),
            (new, now - 1_700_000),  # the outbox published it twice
            (dq, now - 1_600_000),
            (out, now - 1_500_000),
        ],
    )

    since = await _history(settings, since_ms=now - 3_600_000)
    ids = [line.rsplit("id=", 1)[1] for line in since]
    assert sorted(ids) == sorted(a.alert_id[:12] for a in (new, dq, out))

    everything = await _history(settings, from_start=True)
    assert len(everything) == 4  # the duplicate is shown once

    only = await _history(settings, since_ms=now - 3_600_000, model="churn", severity="critical")
    assert len(only) == 1 and new.alert_id[:12] in only[0]
    kinds = await _history(settings, from_start=True, kind="input_drift,data_quality")
    assert len(kinds) == 3

    nothing_new = await _history(settings, since_ms=now + 60_000)
    assert nothing_new == []

    # Follow: starts at the end, prints what is published afterwards, until stopped.
    lines: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(follow_alerts(settings, False, stop, emit=lines.append))
    await asyncio.sleep(2.0)  # assigned and positioned at the end
    late = _alert("churn", "concept_drift", "critical")
    await _publish(settings, [(late, int(time.time() * 1000)), (new, int(time.time() * 1000))])
    deadline = time.monotonic() + 15
    while len(lines) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert [line.rsplit("id=", 1)[1] for line in lines] == [
        late.alert_id[:12],
        new.alert_id[:12],
    ]


@pytest.mark.integration
async def test_cli_since_no_follow(settings):
    now = int(time.time() * 1000)
    recent = _alert("churn", "input_drift", "critical", episode=5)
    await _publish(
        settings,
        [(_alert("churn", "input_drift", "warning", episode=4), now - 7_200_000), (recent, now)],
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(driftline.__file__).parents[1]),
        "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "DRIFTLINE_TOPICS__ALERTS": settings.topics.alerts,
    }
    res = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "driftline",
            "alerts",
            "--since",
            "1h",
            "--no-follow",
            "--model",
            "churn",
            "--severity",
            "critical",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1 and recent.alert_id[:12] in lines[0], res.stdout
    assert "1 alerts" in res.stderr


@pytest.mark.integration
async def test_history_shows_every_alert_of_one_produce_batch(settings):
    """The monitor publishes a batch's alerts together: one record batch of three. Tansu
    then reports the partition's end offset as 1; the history still shows all three."""
    three = [
        _alert("churn", "input_drift", "warning", episode=7),
        _alert("churn", "output_drift", "warning", episode=7),
        _alert("churn", "input_drift", "critical", status="updated", episode=7),
    ]
    await _publish(settings, [])  # the topic
    prod = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=200)
    await prod.start()
    try:
        sent = [await prod.send(settings.topics.alerts, a.to_json(), key=b"churn") for a in three]
        await asyncio.gather(*sent)
    finally:
        await prod.stop()
    lines = await _history(settings, from_start=True)
    assert [line.rsplit("id=", 1)[1] for line in lines] == [a.alert_id[:12] for a in three]


@pytest.mark.integration
async def test_follow_started_before_the_alert_topic_exists_prints_its_alerts(settings):
    """README's order: `driftline alerts --since-start` beside a fresh monitor, before the
    first alert creates the topic. The follower waited for the topic on the consumer's
    metadata of its start, which aiokafka's topics() does not refresh: it printed nothing,
    ever. Oracle: each line is format_alert of the record as published."""
    lines: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(follow_alerts(settings, True, stop, emit=lines.append))
    await asyncio.sleep(1.5)  # started, waiting for a topic that does not exist yet
    fired = [
        _alert("churn", "input_drift", "warning", episode=3),
        _alert("churn", "input_drift", "critical", status="updated", episode=3),
    ]
    await _publish(settings, [(a, int(time.time() * 1000)) for a in fired])
    deadline = time.monotonic() + 20
    while len(lines) < len(fired) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert lines == [format_alert(orjson.loads(a.to_json())) for a in fired]


@pytest.mark.integration
async def test_dead_letters_say_which_producer_sent_what_and_why(settings):
    """An event from another language's producer is refused (a trailing comma, a field
    missing): the runbook's only way to read why was `kafka-console-consumer.sh`, which
    `driftline dev up` does not have. `driftline dead-letters` prints one line a dead
    letter: its key, stage and reason and the start of the original bytes. Oracle: the
    contract's own decode of those bytes gives the reason each line names."""
    from driftline.contract.decode import decode_record
    from driftline.errors import ContractError
    from driftline.runtime.monitor import MonitorWorker
    from support import run_until

    bad = [
        b'{"prediction_id": "go-1", "model_id": "fraud", "model_version": "1", "timestamp": 0,'
        b' "features": {"amount": 12.5}, "prediction": 0,}',
        orjson.dumps({"prediction_id": "go-2", "model_id": "fraud", "timestamp": 0}),
    ]
    reasons = []
    for value in bad:
        with pytest.raises(ContractError) as refused:
            decode_record(value)
        exc = refused.value
        reasons.append(f"stage={exc.stage} {type(exc).__name__}: {exc}")
    prod = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await prod.start()
    try:
        for value in bad:
            await prod.send_and_wait(settings.topics.predictions, value, key=b"fraud")
    finally:
        await prod.stop()
    worker = MonitorWorker(settings, name="test")
    await worker.start()
    try:
        await run_until(worker, lambda: worker.dead_letters >= len(bad))
    finally:
        await worker.close()
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(driftline.__file__).parents[1]),
        "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "DRIFTLINE_TOPICS__PREDICTIONS": settings.topics.predictions,
        "DRIFTLINE_TOPICS__LABELS": settings.topics.labels,
    }
    res = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "driftline", "dead-letters", "--since-start", "--no-follow"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 2 and "2 dead letters" in res.stderr, res.stdout
    for line, value, reason in zip(lines, bad, reasons, strict=True):
        assert f"{settings.topics.predictions}.dlq key=fraud {reason}  from=" in line, line
        assert line.endswith(f"value={value.decode()}")


@pytest.mark.integration
async def test_history_of_an_alert_topic_that_does_not_exist_yet_is_empty(settings):
    """`driftline alerts --no-follow` before the first alert ever (no topic yet) ended
    with 'internal error: CancelledError' (exit 1): aiokafka's stop() right after
    start() awaited a task it had cancelled before it ran. It prints '0 alerts', exit 0;
    `driftline dead-letters` with no dead-letter topic yet too."""
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(driftline.__file__).parents[1]),
        "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "DRIFTLINE_TOPICS__ALERTS": settings.topics.alerts,
        "DRIFTLINE_TOPICS__PREDICTIONS": settings.topics.predictions,
        "DRIFTLINE_TOPICS__LABELS": settings.topics.labels,
    }
    for command, said in (("alerts", "0 alerts"), ("dead-letters", "0 dead letters")):
        res = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "driftline", command, "--since-start", "--no-follow"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 0 and said in res.stderr, res.stderr
        assert res.stdout == ""
