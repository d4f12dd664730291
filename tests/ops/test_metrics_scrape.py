"""Metrics that tell the truth: a real monitor, label joiner and retraining trigger
(``driftline`` subprocesses on Tansu and redis-server) and the producer SDK process.

Predictions with RFC 3339 timestamps, a covariate shift and then a concept change, their
delayed labels and one poison record go through the SDK; then every metric of the
catalogue (docs/metrics.md, which equals the registry) and the standard collectors are
scraped from the process that exports them, each with a value in its unit's range; the
counters that must move did move since a scrape before any traffic; and
``promtool check metrics`` finds nothing to say about any scrape.
"""

from __future__ import annotations

import asyncio
import math
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from opsutil import STANDARD, registry_metrics
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from driftline import AsyncPredictionProducer
from driftline.config import Settings
from driftline.core.reference import Policy, TrainingData, build_reference
from driftline.demo.sea import SeaScenario
from driftline.runtime.metrics import REGISTRY
from driftline.runtime.store import StateStore
from support import MonitorProc, monitor_env
from tool_checks import require_tool

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REGIONS = (("eu", 0.5), ("us", 0.3), ("apac", 0.2))


class WorkerProc(MonitorProc):
    """Any ``driftline`` worker command as a child process (MonitorProc's helpers)."""

    def __init__(self, args: list[str], settings: Settings, log_path: Path, **env: str) -> None:
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "driftline", *args],
                env=monitor_env(settings, **env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )


def _rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _with_region(rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """A categorical feature too (chi-square is computed for categorical features)."""
    rng = random.Random(seed)
    names, weights = zip(*REGIONS, strict=True)
    return [{**r, "region": rng.choices(names, weights)[0]} for r in rows]


def _samples(texts: list[str]) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of every scrape, by sample name."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def _total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **want: str) -> float:
    return sum(v for labels, v in samples.get(name, []) if want.items() <= labels.items())


#: The range of each metric's unit: (low, high), inclusive.
RANGES: dict[str, tuple[float, float]] = {
    "driftline_ready": (0, 1),
    "driftline_drift_active": (0, 1),
    "driftline_diagnosis": (0, 1),
    "driftline_drift_ks_statistic": (0, 1),
    "driftline_drift_js_distance": (0, 1),
    "driftline_drift_rate_ratio": (-1, 1),
    "driftline_estimation_error_ratio": (-1, 1),
}


def _check_range(name: str, value: float) -> None:
    assert math.isfinite(value), (name, value)
    if name in RANGES:
        lo, hi = RANGES[name]
    elif name.endswith("_ratio"):
        lo, hi = 0, 1
    else:  # counts, seconds, statistics >= 0 (performance scores: losses and errors)
        lo, hi = 0, math.inf
    assert lo <= value <= hi, f"{name} = {value}, outside [{lo}, {hi}]"


async def _create_topics(s: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka.bootstrap_servers)
    await admin.start()
    try:
        names = [
            s.topics.predictions,
            s.topics.labels,
            s.topics.alerts,
            s.topics.retrain_requests,
            s.topics.dlq(s.topics.predictions),
            s.topics.dlq(s.topics.labels),
        ]
        await admin.create_topics([NewTopic(t, 2, 1) for t in names])
    finally:
        await admin.close()


async def _until(what: str, check: Any, procs: list[MonitorProc], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            assert p.proc.poll() is None, f"{p.log_path.name} exited:\n{p.log()[-3000:]}"
        if await check():
            return
        await asyncio.sleep(0.5)
    logs = "\n".join(f"--- {p.log_path.name}\n{p.log()[-2000:]}" for p in procs)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


async def test_every_catalogued_metric_is_exported_with_a_sane_value(
    settings: Settings, unique: str, tmp_path: Path
) -> None:
    s = settings.model_copy(
        update={
            "topics": settings.topics.model_copy(update={"retrain_requests": f"retrain-{unique}"})
        }
    )
    await _create_topics(s)
    sea = SeaScenario(model_id="churn")
    train = sea.training_data(5000)
    train = TrainingData(
        features=_with_region(train.features, 1),
        predictions=train.predictions,
        scores=train.scores,
        labels=train.labels,
    )
    ref = build_reference(
        train, "churn", "1", policy=Policy(window_events=500), seed=0, created_at=0
    )
    client = aioredis.Redis.from_url(s.redis.url)
    await StateStore.from_settings(client, s.redis, s.monitor.group_id).put_reference(
        "churn", "1", ref.to_bytes()
    )
    await client.aclose()

    env = {
        "DRIFTLINE_TOPICS__LABELS": s.topics.labels,
        "DRIFTLINE_TOPICS__RETRAIN_REQUESTS": s.topics.retrain_requests,
        "DRIFTLINE_LABELS__GROUP_ID": f"labels-{unique}",
        "DRIFTLINE_LABELS__GRACE_SECONDS": "5",
        "DRIFTLINE_LABELS__BUCKET_SECONDS": "10",
        "DRIFTLINE_LABELS__WINDOW_LABELS": "200",
    }
    monitor = WorkerProc(["monitor"], s, tmp_path / "monitor.log", **env)
    labels = WorkerProc(["labels"], s, tmp_path / "labels.log", **env)
    retrain = WorkerProc(
        ["retrain", "--from-start", "--group", f"retrain-{unique}", "--ignore-diagnoses", ""],
        s,
        tmp_path / "retrain.log",
        **env,
    )
    procs = [monitor, labels, retrain]
    try:

        async def all_ready() -> bool:
            got = _samples([await p.scrape() for p in procs])
            return len(got.get("driftline_ready", [])) == 2 and all(
                v == 1 for _, v in got["driftline_ready"]
            )

        await _until("the workers ready", all_ready, procs)
        before = _samples([await p.scrape() for p in procs])

        # Traffic through the SDK: a covariate shift, then a concept change; RFC 3339.
        preds, labs = sea.events(6000, covariate_at=2500, concept_at=4000)
        regions = _with_region([{} for _ in preds], 2)
        for e, r in zip(preds, regions, strict=True):
            e["features"]["region"] = r["region"]
            e["timestamp"] = _rfc3339(e["timestamp"])
        for lab in labs:
            lab["timestamp"] = _rfc3339(lab["timestamp"])
        # The SDK's default: columnar batch records, read by the monitor and the joiner.
        async with AsyncPredictionProducer(s) as producer:
            for e in preds:
                assert producer.send(e)
            assert await producer.flush(60)  # the buffer holds 10 000 events
            for lab in labs:
                assert producer.send_label(lab)
            assert await producer.flush(60)
        raw = AIOKafkaProducer(bootstrap_servers=s.kafka.bootstrap_servers)
        await raw.start()
        await raw.send_and_wait(s.topics.predictions, b"{not json", key=b"churn")
        await raw.stop()

        async def settled() -> bool:
            got = _samples([await p.scrape() for p in procs])
            return (
                _total(got, "driftline_events_total", outcome="processed", worker="monitor")
                >= len(preds)
                and _total(got, "driftline_retrain_requests_total") > 0
                and _total(got, "driftline_labels_total", outcome="joined") > 0.9 * len(labs)
                and "driftline_diagnosis" in got
            )

        await _until("the traffic processed, labels joined, a retraining request", settled, procs)
        # The SDK's metrics from this process's registry; only those: in a full run,
        # in-process tests of other workers leave their series in it too.
        sdk = "".join(
            ln + "\n"
            for ln in generate_latest(REGISTRY).decode().splitlines()
            if "driftline_producer_" in ln
        )
        texts = [await p.scrape() for p in procs] + [sdk]
        after = _samples(texts)

        # 1. Every catalogued metric and the standard collectors are there, in range.
        expected = {n for info in registry_metrics().values() for n in info.sample_names()}
        missing = sorted((expected | STANDARD) - after.keys())
        assert not missing, f"not exported: {missing}"
        for name, samples in after.items():
            if name.startswith("driftline_") and not name.endswith(("_bucket", "_created")):
                for _labels, value in samples:
                    _check_range(name, value)

        # 2. What must move did move.
        def moved(name: str, **want: str) -> bool:
            return _total(after, name, **want) > _total(before, name, **want)

        for name, want in [
            ("driftline_events_total", {"worker": "monitor", "outcome": "processed"}),
            ("driftline_events_total", {"worker": "labels", "outcome": "processed"}),
            ("driftline_model_events_total", {"model": "churn"}),
            ("driftline_windows_closed_total", {"model": "churn", "version": "1"}),
            ("driftline_dead_letters_total", {"stage": "decode"}),
            ("driftline_state_commits_total", {"result": "ok"}),
            ("driftline_batch_duration_seconds_count", {"worker": "monitor"}),
            ("driftline_alerts_total", {"model": "churn", "kind": "input_drift"}),
            ("driftline_producer_sent_total", {"topic": s.topics.predictions}),
            ("driftline_labels_total", {"model": "churn", "outcome": "joined"}),
            ("driftline_join_predictions_total", {"model": "churn", "outcome": "stored"}),
            ("driftline_label_lag_seconds_count", {"model": "churn"}),
            ("driftline_retrain_alerts_total", {}),
            ("driftline_retrain_requests_total", {"model": "churn"}),
            ("process_cpu_seconds_total", {}),
        ]:
            assert moved(name, **want), f"{name}{want} did not move"
        assert _total(after, "driftline_windows_closed_total") >= len(preds) // 500 - 1

        # 3. Processing lag from RFC 3339 timestamps: now minus the newest event time.
        newest = max(datetime.fromisoformat(e["timestamp"]).timestamp() for e in preds)
        lag = _total(after, "driftline_processing_lag_seconds", model="churn", worker="monitor")
        assert 0 < time.time() - newest - lag < 600, (lag, time.time() - newest)

        # 4. Each statistic in its family: KS only for numeric features, chi-square only
        # for the categorical one, PSI for both.
        ks = {lb["feature"] for lb, _ in after["driftline_drift_ks_statistic"]}
        chi2 = {lb["feature"] for lb, _ in after["driftline_drift_chi2_statistic"]}
        psi = {lb["feature"] for lb, _ in after["driftline_drift_psi"]}
        assert {"x0", "x1", "x2"} <= ks and "region" not in ks
        assert chi2 == {"region"}
        assert {"x0", "x1", "x2", "region"} <= psi
        assert _total(after, "driftline_drift_psi", feature="x2") > 0.1  # the shifted one
        assert _total(after, "driftline_drift_active", kind="input_drift") == 1

        # 5. promtool finds nothing wrong with any scrape (names, units, help, types).
        promtool = require_tool("promtool")
        for text in texts:
            res = subprocess.run(
                [promtool, "check", "metrics"], input=text, capture_output=True, text=True
            )
            assert res.returncode == 0 and not res.stdout.strip(), res.stdout + res.stderr

        # 6. SIGTERM stops each worker cleanly.
        for p in procs:
            p.signal(signal.SIGTERM)
        for p in procs:
            assert await p.wait(timeout=60) == 0, p.log()[-2000:]
    finally:
        for p in procs:
            p.kill()
