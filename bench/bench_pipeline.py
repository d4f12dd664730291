"""End to end: what the Driftline monitor costs next to the bare minimum (issue 6).

Run (one command, prints the tables; a few minutes, ``--quick`` well under one)::

    python bench/bench_pipeline.py [--quick] [--events N] [--rounds R] [--json FILE]

It starts its own Tansu broker and redis-server (``driftline.runtime.devstack``), publishes the
same simulated predictions (``driftline.demo.simulate.SimulatedModel``: 20 numeric and 3
categorical features, 3 classes with scores, a 0.5 sd shift of ``f03`` at 60%) once as
single JSON events and as columnar batches of 500 (``prediction_batch.v1``, JSON, and
``prediction_batch.v2``, numeric columns as a binary block: what the SDK sends by
default since round thirteen), and measures side by side, each
case in a fresh process (so peak memory is its own), ``--rounds`` times interleaved:

* ``raw``: aiokafka ``getmany`` + ``orjson.loads`` of every record, nothing else (the
  physical floor; ``raw-batch`` does the same on the batch topic);
* ``monitor``: the real ``MonitorWorker`` against Tansu and Redis (contract checks,
  state commits with fencing, alert outbox and topic, window history, metrics), on
  single events and on batches of both versions;
* ``naive``: river's PageHinkley per numeric feature and ADWIN on the confidence, event
  by event in a Python loop (consume + decode included);
* ``monitor`` with the previous single-event decoder (orjson and bulk checks, the typed
  decoder's fallback), beside the typed one;
* ``monitor`` with the compiled core (``monitor.compiled_core: on``, numba: the
  ``driftline[compiled]`` extra) on single events and on binary batches, when numba is
  installed; every other monitor case runs the numpy pass (``off``), the default
  install's;
* ``labels``: the label joiner (``driftline.runtime.labels``) on the same predictions
  plus one label each (labels/s): single JSON predictions and single JSON labels, then
  batched predictions and label batches (``label_batch.v1``: what the SDK sends by
  default; ``labels-batch2`` with the predictions as binary batches); ``labels-later``:
  the steady state, where labels come after their predictions: the predictions are
  stored first (not timed), then label batches are joined against them; ``pending``:
  batched
  predictions without labels, then ``MEMORY USAGE`` of the pending-prediction hashes
  per prediction.

The last table puts issue 14's bars beside this run's figures.

Rates are steady state: the clock starts when the first fetched batch arrives (group
join, leases and connection set-up excluded) and stops when the last event is processed
(committed, for the workers; the monitor's close is not counted). ``cpu us/ev`` is the
process's CPU time per event over the same span, less disturbed by other work on a
shared machine than wall time. The monitor's first batch also pays fixed costs (its
reference read and parsed, the core's plans, new states: about 20-30 ms): a run of
40 000 events (``--quick``) counts them as 0.5-0.7 us an event, so the monitor's CPU is
also shown without its first batch.
Redis figures are deltas of ``INFO commandstats`` / ``INFO stats`` over the span.

Then: event-to-alert latency on a live stream (a monitor process follows a publisher
that sends at a fixed rate; many models shift and recover at staggered times), how the
core's cost grows with features, models sharing a topic and window size (in-process,
decode + core, no broker), and one worker against two on a 4-partition topic (same
alert ids required).

Latency definition: for each alert, from the broker's acknowledgement of the event that
completed the evidence (the last event of the window whose test fired or resolved the
episode, or the event at which Page-Hinkley/ADWIN crossed) to the alert's arrival at a
consumer of the alert topic, both measured with one wall clock in the publishing process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from kafka_io import create_topics, publish  # bench/kafka_io.py, beside this script

from driftline.config import Settings
from driftline.contract.binary_batch import encode_binary_batch
from driftline.contract.columnar import pack_events
from driftline.contract.decode import decode_records
from driftline.contract.keys import StateKey
from driftline.contract.label_batch import pack_label_events
from driftline.core.fastloop import ModelState, process_batch
from driftline.core.reference import Policy, ReferenceProfile, build_reference
from driftline.demo.simulate import Shift, SimulatedModel
from driftline.runtime import gc_policy
from driftline.runtime.devstack import DevStack
from driftline.runtime.gc_policy import batch_sized_gc
from driftline.runtime.worker import FETCH_MAX_WAIT_MS

T0_MS = 1_767_225_600_000
STEP_MS = 10
ROWS_PER_BATCH = 500
MAX_FETCH = 5000
PARTITIONS = 4
HERE = Path(__file__).resolve()


# --------------------------------------------------------------------------- helpers


def _reference(n_numeric: int = 20, model: str = "churn", window: int = 500) -> ReferenceProfile:
    sim = SimulatedModel(n_numeric=n_numeric, seed=3, model_id=model)
    policy = Policy(window_events=window)
    return build_reference(sim.training_data(20_000), model, "1", policy=policy, created_at=0)


def _load_reference(cfg: dict[str, Any]) -> ReferenceProfile:
    return ReferenceProfile.from_bytes(Path(cfg["ref_path"]).read_bytes())


async def _put_references(cfg: dict[str, Any]) -> None:
    """Store the benchmark's reference for every model of ``cfg`` under its key prefix."""
    import redis.asyncio as aioredis

    from driftline.runtime.store import StateStore

    ref = _load_reference(cfg)
    client = aioredis.Redis.from_url(cfg["redis"])
    store = StateStore(
        client,
        prefix=cfg["prefix"],
        group=cfg["group"],
        signing_key=Settings().redis.signing_key(),
    )
    try:
        for name in cfg.get("models", ["churn"]):
            r = dataclasses.replace(ref, model_id=name, reference_id=f"{name}:1:bench")
            await store.put_reference(name, "1", r.to_bytes())
    finally:
        await client.aclose()


def _settings(cfg: dict[str, Any], **topics: str) -> Settings:
    return Settings(
        kafka={"bootstrap_servers": cfg["bootstrap"]},
        redis={"url": cfg["redis"], "key_prefix": cfg["prefix"]},
        topics=topics,
        # The numpy pass unless the case asks for the compiled one (driftline[compiled]).
        monitor={"group_id": cfg["group"], "compiled_core": cfg.get("compiled", "off")},
        labels={"group_id": cfg["group"] + "-labels", **cfg.get("labels_settings", {})},
        metrics_port=0,
    )


def _redis_counters(url: str) -> dict[str, float]:
    import redis

    r = redis.Redis.from_url(url)
    try:
        calls = sum(v["calls"] for v in r.info("commandstats").values())
        stats = r.info("stats")
        cpu = r.info("cpu")
        return {
            "calls": float(calls),
            "cpu": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
            "in": float(stats["total_net_input_bytes"]),
            "out": float(stats["total_net_output_bytes"]),
        }
    finally:
        r.close()


def joiner_gc() -> None:
    """The collector policy the CLI gives the label joiner (cli/workers.py); a tree
    before round nine gave every worker the same (the benchmarks run older trees too)."""
    young = getattr(gc_policy, "JOINER_YOUNG_THRESHOLD", None)
    if young is None:
        batch_sized_gc()
    else:
        batch_sized_gc(young)


def _peak_mb() -> float:
    """Peak resident memory of this process (VmHWM: ru_maxrss would count the parent's
    memory at fork time)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Span:
    """Wall and CPU time, events and Redis traffic from the arrival of the first batch
    to the last :meth:`mark` (the end of the last batch), else to :meth:`result`."""

    def __init__(self, redis_url: str | None) -> None:
        self.redis_url = redis_url
        self.started = False
        self.rows0 = 0
        self.t0 = self.c0 = 0.0
        self.r0: dict[str, float] = {}
        #: (wall, CPU, rows) at the end of the first and of the last batch marked.
        self.first: tuple[float, float, int] | None = None
        self.last: tuple[float, float, int] | None = None

    def start(self, rows: int) -> None:
        if self.redis_url:  # read before the clocks start: not the process's work
            self.r0 = _redis_counters(self.redis_url)
        self.started = True
        self.rows0 = rows
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def mark(self, rows: int) -> None:
        """A batch ended with ``rows`` processed: the span ends here unless another
        batch follows (a worker's close, after its last batch, is not counted)."""
        self.last = (time.perf_counter(), time.process_time(), rows)
        if self.first is None:
            self.first = self.last

    def result(self, rows: int, **extra: Any) -> dict[str, Any]:
        t1, c1 = time.perf_counter(), time.process_time()
        if self.last is not None:
            t1, c1, rows = self.last
        wall, cpu = t1 - self.t0, c1 - self.c0
        n = max(1, rows - self.rows0)
        out: dict[str, Any] = {
            "events": n,
            "rate": n / wall if wall > 0 else math.nan,
            "cpu_us": cpu / n * 1e6,
            "wall": wall,
            "peak_mb": _peak_mb(),
            **extra,
        }
        if self.first is not None and self.last is not None and rows > self.first[2]:
            # The figure without the first batch, which also pays the start-up's fixed
            # costs (reference reads, plans, new states): what a longer run tends to.
            _, cf, rf = self.first
            out["cpu_us_after_first"] = (c1 - cf) / (rows - rf) * 1e6
        if self.redis_url:
            r1 = _redis_counters(self.redis_url)
            out["redis_calls"] = (r1["calls"] - self.r0["calls"]) / n
            out["redis_bytes"] = (r1["in"] - self.r0["in"] + r1["out"] - self.r0["out"]) / n
            out["redis_cpu_us"] = (r1["cpu"] - self.r0["cpu"]) / n * 1e6
        return out


async def _partitions(consumer: Any, topic: str) -> list[Any]:
    """The partitions of ``topic``, from ``consumer``'s (started) metadata."""
    from aiokafka import TopicPartition

    for _ in range(100):
        await consumer.topics()
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return [TopicPartition(topic, p) for p in sorted(parts)]
        await asyncio.sleep(0.1)
    raise RuntimeError(f"topic {topic} has no partitions")


async def _read_values(bootstrap: str, topic: str, idle_ms: int = 1500) -> list[bytes]:
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await c.start()
    try:
        tps = await _partitions(c, topic)
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        out: list[bytes] = []
        while True:
            batch = await c.getmany(timeout_ms=idle_ms)
            if not batch:
                return out
            for recs in batch.values():
                out.extend(r.value for r in recs)
    finally:
        await c.stop()


def _events(n: int, n_numeric: int = 20, model: str = "churn", seed: int = 11) -> list[Any]:
    sim = SimulatedModel(n_numeric=n_numeric, seed=seed, model_id=model)
    return list(sim.events(n, shift=Shift(start=int(n * 0.6), sigmas=0.5)))


def _label_events(events: list[Any]) -> list[dict[str, Any]]:
    """The labels of the labels phase: a minute after each prediction, one in five wrong."""
    return [
        {
            "prediction_id": e["prediction_id"],
            "model_id": e["model_id"],
            "label": e["prediction"] if i % 5 else "churn",
            "timestamp": e["timestamp"] + 60_000,
        }
        for i, e in enumerate(events)
    ]


# --------------------------------------------------------------------------- phases (child)


async def phase_raw(cfg: dict[str, Any]) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(
        bootstrap_servers=cfg["bootstrap"],
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        # as the workers fetch (driftline.runtime.worker.FETCH_MAX_WAIT_MS)
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    await c.start()
    tps = await _partitions(c, cfg["topic"])
    c.assign(tps)
    await c.seek_to_beginning(*tps)
    span = _Span(None)
    rows = 0
    loads = orjson.loads
    per = cfg["rows_per_record"]
    try:
        while rows < cfg["rows"]:
            batch = await c.getmany(timeout_ms=200, max_records=MAX_FETCH)
            if batch and not span.started:
                span.start(0)
            for recs in batch.values():
                for r in recs:
                    loads(r.value)
                rows += len(recs) * per
    finally:
        await c.stop()
    return span.result(rows)


async def phase_monitor(cfg: dict[str, Any]) -> dict[str, Any]:
    from driftline.runtime import monitor
    from driftline.runtime.monitor import MonitorWorker

    if cfg.get("decoder") == "untyped":
        # The decoder before issue 14 (orjson + bulk checks), kept as the typed path's
        # fallback: the same worker with it, for the side-by-side row.
        from driftline.contract.decode import _decode_untyped

        monitor.decode_records = _decode_untyped  # type: ignore[assignment]
    await _put_references(cfg)
    settings = _settings(cfg, predictions=cfg["topic"], alerts=cfg["alerts"])
    worker = MonitorWorker(settings, name=cfg.get("name", "bench"))
    await worker.start()
    batch_sized_gc()  # as the CLI runs a worker (cli/workers.py)
    span = _Span(cfg["redis"])
    handle = worker._handle
    per = cfg["rows_per_record"]
    seen = {"rows": 0, "first": 0.0, "last": 0.0}
    sizes: list[int] = []

    async def timed(unit: Any, records: Mapping[str, Sequence[Any]]) -> None:
        n = sum(len(r) for r in records.values())
        sizes.append(n)
        if not span.started:
            seen["first"] = time.time()
            span.start(0)
        await handle(unit, records)
        seen["last"] = time.time()
        seen["rows"] += n * per
        span.mark(int(seen["rows"]))
        if seen["rows"] >= cfg["stop_rows"]:
            worker.stop()

    worker._handle = timed  # type: ignore[method-assign]
    try:
        await worker.run(idle_exit_s=cfg.get("idle_exit", 60.0))
    finally:
        await worker.close()
    return span.result(
        int(seen["rows"]),
        first_wall=seen["first"],
        end_wall=seen["last"],
        rows_total=seen["rows"],
        dead_letters=worker.dead_letters,
        alerts_published=worker.alerts_published,
        batches=len(sizes),
        mean_batch=float(np.mean(sizes)) if sizes else 0.0,
    )


async def phase_naive(cfg: dict[str, Any]) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer
    from river.drift import ADWIN, PageHinkley

    ref = _load_reference(cfg)
    names = ref.numeric_features()
    stats = [(ref.features[n].mean, ref.features[n].std or 1.0) for n in names]  # type: ignore[union-attr]
    phs = [PageHinkley(min_instances=30, delta=0.25, threshold=50.0, alpha=1.0) for _ in names]
    adwin = ADWIN(delta=1e-5)
    c = AIOKafkaConsumer(bootstrap_servers=cfg["bootstrap"], group_id=None)
    await c.start()
    tps = await _partitions(c, cfg["topic"])
    c.assign(tps)
    await c.seek_to_beginning(*tps)
    span = _Span(None)
    rows = detections = 0
    try:
        while rows < cfg["rows"]:
            batch = await c.getmany(timeout_ms=200, max_records=MAX_FETCH)
            if batch and not span.started:
                span.start(0)
            for recs in batch.values():
                for r in recs:
                    e = orjson.loads(r.value)
                    f = e["features"]
                    for ph, name, (mu, sd) in zip(phs, names, stats, strict=True):
                        x = f.get(name)
                        if type(x) is float or type(x) is int:
                            ph.update(max(-3.0, min(3.0, (x - mu) / sd)))
                            detections += ph.drift_detected
                    s = e.get("scores")
                    if s:
                        adwin.update(max(s.values()))
                        detections += adwin.drift_detected
                rows += len(recs)
                if rows >= cfg["rows"]:
                    break
    finally:
        await c.stop()
    return span.result(rows, detections=detections)


async def phase_labels(cfg: dict[str, Any]) -> dict[str, Any]:
    try:
        from driftline.runtime.labels import LabelJoiner
    except ImportError as exc:
        return {"error": f"n/a ({exc})"}
    await _put_references(cfg)
    settings = _settings(cfg, predictions=cfg["topic"], labels=cfg["labels"], alerts=cfg["alerts"])
    later = bool(cfg.get("labels_later"))
    if later:
        await _store_predictions_then_label(cfg, settings)
    joiner = LabelJoiner(settings, name="bench-labels")
    await joiner.start()
    joiner_gc()
    span = _Span(cfg["redis"])
    handle = joiner._handle
    # Labels of stored predictions: the joiner resumes past the predictions (their
    # offsets were committed with the state) and reads labels only.
    want = cfg["labels_count"] if later else cfg["rows"] + cfg["labels_count"]

    async def timed(unit: Any, records: Mapping[str, Sequence[Any]]) -> None:
        if not span.started:
            span.start(joiner.predictions_seen + joiner.labels_seen)
        await handle(unit, records)
        done = joiner.predictions_seen + joiner.labels_seen
        if done >= want:
            joiner.stop()

    joiner._handle = timed  # type: ignore[method-assign]
    try:
        await asyncio.wait_for(joiner.run(idle_exit_s=30.0), timeout=cfg.get("timeout", 600))
    finally:
        await joiner.close()
    done = joiner.predictions_seen + joiner.labels_seen
    res = span.result(done, predictions=joiner.predictions_seen, labels=joiner.labels_seen)
    res["labels_rate"] = joiner.labels_seen / res["wall"] if res["wall"] > 0 else math.nan
    outcomes: dict[str, int] = {}
    for (_, outcome), k in joiner.outcomes.items():
        outcomes[outcome] = outcomes.get(outcome, 0) + k
    res["label_outcomes"] = outcomes  # a rate of labels that did not join would mean little
    if not cfg["labels_count"]:
        res.update(_pending_bytes(cfg, joiner.predictions_seen))
    return res


async def _store_predictions_then_label(cfg: dict[str, Any], settings: Settings) -> None:
    """The steady state of a deployment, where labels come hours or days after their
    predictions: a joiner stores every prediction first (not timed) and stops, then the
    labels are published (label batches, as the SDK sends them), for a second joiner of
    the same group to join against the stored predictions."""
    from driftline.runtime.labels import LabelJoiner

    await create_topics(cfg["bootstrap"], [cfg["labels"]], PARTITIONS)
    joiner = LabelJoiner(settings, name="bench-labels-store")
    await joiner.start()
    handle = joiner._handle

    async def store(unit: Any, records: Mapping[str, Sequence[Any]]) -> None:
        await handle(unit, records)
        if joiner.predictions_seen >= cfg["rows"]:
            joiner.stop()

    joiner._handle = store  # type: ignore[method-assign]
    try:
        await asyncio.wait_for(joiner.run(idle_exit_s=30.0), timeout=cfg.get("timeout", 600))
    finally:
        await joiner.close()
    labels = _label_events(_events(cfg["rows"]))
    batches = [
        (lb["model_id"].encode(), orjson.dumps(lb))
        for lb in pack_label_events(labels, ROWS_PER_BATCH)
    ]
    await publish(cfg["bootstrap"], cfg["labels"], batches, PARTITIONS)


def _pending_bytes(cfg: dict[str, Any], predictions: int) -> dict[str, Any]:
    """``MEMORY USAGE`` of the pending-prediction hashes per prediction (docs/slow-loop.md)."""
    import redis

    r = redis.Redis.from_url(cfg["redis"])
    try:
        keys = list(r.scan_iter(match=f"{cfg['prefix']}:*:r:pp:*", count=1000))
        total = sum(int(r.memory_usage(k, samples=0) or 0) for k in keys)
    finally:
        r.close()
    return {"pending_keys": len(keys), "pending_b": total / max(1, predictions)}


async def phase_live(cfg: dict[str, Any]) -> dict[str, Any]:
    """A monitor that follows a live topic until it stays idle (latency run)."""
    from driftline.runtime.monitor import MonitorWorker

    await _put_references(cfg)
    settings = _settings(cfg, predictions=cfg["topic"], alerts=cfg["alerts"])
    worker = MonitorWorker(settings, name="bench-live")
    await worker.start()
    batch_sized_gc()  # as the CLI runs a worker (cli/workers.py)
    batches: list[int] = []
    handle = worker._handle

    async def counted(unit: Any, records: Mapping[str, Sequence[Any]]) -> None:
        batches.append(sum(len(r) for r in records.values()))
        await handle(unit, records)

    worker._handle = counted  # type: ignore[method-assign]

    async def ready() -> None:
        while len(worker.units) < PARTITIONS:
            await asyncio.sleep(0.05)
        print("READY", flush=True)

    waiter = asyncio.create_task(ready())
    try:
        await worker.run(idle_exit_s=cfg.get("idle_exit", 6.0))
    finally:
        waiter.cancel()
        await worker.close()
    return {
        "processed": worker.processed,
        "batches": len(batches),
        "mean_batch": float(np.mean(batches)) if batches else 0.0,
        "peak_mb": _peak_mb(),
    }


def phase_growth(cfg: dict[str, Any]) -> dict[str, Any]:
    """Decode + core CPU per event, in process (no broker): how cost grows."""
    out: dict[str, Any] = {"features": [], "models": [], "window": []}
    n = cfg["rows"]

    def measure(
        events: list[dict[str, Any]],
        refs: dict[str, ReferenceProfile],
        columns: bool,
        repeat: int = 2,
    ) -> tuple[float, float]:
        if columns:
            values = [orjson.dumps(b) for b in pack_events(events, ROWS_PER_BATCH)]
        else:
            values = [orjson.dumps(e) for e in events]
        best = math.inf
        state_bytes = 0
        for _ in range(repeat):
            states: dict[StateKey, ModelState] = {}
            state_bytes = 0
            c0 = time.process_time()
            step = 10 if columns else MAX_FETCH
            for i in range(0, len(values), step):
                frame, bad = decode_records(values[i : i + step])
                assert not bad
                process_batch(frame, states, lambda m, v: refs.get(m) or refs["*"])
                keys = {StateKey(it["model_id"], it["model_version"]) for it in frame}
                state_bytes += sum(len(states[k].to_bytes()) for k in keys)  # the commit
            best = min(best, time.process_time() - c0)
        return best / len(events) * 1e6, state_bytes / len(events)

    for nf in cfg["features"]:
        ref = _reference(n_numeric=nf)
        ev = [orjson.loads(orjson.dumps(e)) for e in _events(n, n_numeric=nf)]
        js, sb = measure(ev, {"*": ref}, False)
        cs, _ = measure(ev, {"*": ref}, True)
        # The baseline: the same reference without its multivariate model (issue 15).
        uni = dataclasses.replace(ref, multivariate=None)
        js0, sb0 = measure(ev, {"*": uni}, False)
        cs0, _ = measure(ev, {"*": uni}, True)
        out["features"].append(
            {
                "features": nf + 3,
                "json_us": js,
                "batch_us": cs,
                "state_b": sb,
                "no_mv": {"json_us": js0, "batch_us": cs0, "state_b": sb0},
            }
        )
    ref = _reference()
    for nm in cfg["models"]:
        sims = [SimulatedModel(seed=100 + i, model_id=f"m{i:04d}") for i in range(nm)]
        per = max(1, n // nm)
        streams = [list(s.events(per)) for s in sims]
        ev = [orjson.loads(orjson.dumps(e)) for row in zip(*streams, strict=True) for e in row]
        js, sb = measure(ev, {"*": ref}, False, repeat=1)
        cs, _ = measure(ev, {"*": ref}, True, repeat=1)
        out["models"].append({"models": nm, "json_us": js, "batch_us": cs, "state_b": sb})
    for w in cfg["windows"]:
        ref = _reference(window=w)
        ev = [orjson.loads(orjson.dumps(e)) for e in _events(n)]
        js, sb = measure(ev, {"*": ref}, False)
        cs, _ = measure(ev, {"*": ref}, True)
        out["window"].append({"window": w, "json_us": js, "batch_us": cs, "state_b": sb})
    # Python allocations of one batch through decode + core (tracemalloc).
    ev = [orjson.dumps(e) for e in _events(MAX_FETCH)]
    states: dict[StateKey, ModelState] = {}
    process_batch(decode_records(ev)[0], states, lambda m, v: ref)
    tracemalloc.start()
    process_batch(decode_records(ev)[0], states, lambda m, v: ref)
    out["traced_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return out


def phase_profile(cfg: dict[str, Any]) -> dict[str, Any]:
    """cProfile of decode + core over single events: where the time goes."""
    import cProfile
    import io
    import pstats

    ref = _reference()
    values = [orjson.dumps(e) for e in _events(cfg["rows"])]
    states: dict[StateKey, ModelState] = {}

    def run() -> None:
        for i in range(0, len(values), MAX_FETCH):
            frame, _ = decode_records(values[i : i + MAX_FETCH])
            process_batch(frame, states, lambda m, v: ref)
            for k in states:
                states[k].to_bytes()

    prof = cProfile.Profile()
    prof.runcall(run)
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
    return {"text": buf.getvalue()}


PHASES = {
    "raw": phase_raw,
    "monitor": phase_monitor,
    "naive": phase_naive,
    "labels": phase_labels,
    "live": phase_live,
}


def child(phase: str, cfg_path: str) -> None:
    cfg = json.loads(Path(cfg_path).read_text())
    if os.environ.get("DL_BENCH_PROFILE") == phase:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        res = prof.runcall(lambda: asyncio.run(PHASES[phase](cfg)))
        pstats.Stats(prof, stream=sys.stderr).sort_stats(
            os.environ.get("DL_BENCH_SORT", "tottime")
        ).print_stats(int(os.environ.get("DL_BENCH_LINES", "40")))
        print("RESULT " + json.dumps(res), flush=True)
        return
    if phase == "growth":
        res = phase_growth(cfg)
    elif phase == "profile":
        res = phase_profile(cfg)
    else:
        res = asyncio.run(PHASES[phase](cfg))
    print("RESULT " + json.dumps(res), flush=True)


# --------------------------------------------------------------------------- parent


class Bench:
    def __init__(self, args: argparse.Namespace, stack: DevStack, tmp: Path) -> None:
        self.args = args
        self.stack = stack
        self.tmp = tmp
        self.bootstrap = stack.broker.bootstrap
        self.redis = stack.redis.url
        self.runs = 0

    def cfg(self, **kw: Any) -> dict[str, Any]:
        self.runs += 1
        base = {
            "bootstrap": self.bootstrap,
            "redis": self.redis,
            "prefix": f"b{self.runs}",
            "group": f"bench-{self.runs}",
            "alerts": f"alerts-{self.runs}",
            "ref_path": str(self.tmp / "reference.json"),
        }
        return {**base, **kw}

    def spawn(self, phase: str, cfg: dict[str, Any]) -> subprocess.Popen[str]:
        path = self.tmp / f"cfg-{self.runs}-{phase}.json"
        path.write_text(json.dumps(cfg))
        return subprocess.Popen(
            [sys.executable, str(HERE), "--phase", phase, "--config", str(path)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def run(self, phase: str, cfg: dict[str, Any]) -> dict[str, Any]:
        proc = self.spawn(phase, cfg)
        return self.collect(proc)

    @staticmethod
    def collect(proc: subprocess.Popen[str], timeout: float = 1800) -> dict[str, Any]:
        out, _ = proc.communicate(timeout=timeout)
        for line in out.splitlines()[::-1]:
            if line.startswith("RESULT "):
                res: dict[str, Any] = json.loads(line[7:])
                return res
        return {"error": f"exit {proc.returncode}"}


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}" if math.isfinite(x) else "-"


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


async def publish_inputs(b: Bench, n: int) -> dict[str, Any]:
    events = _events(n)
    singles = [(e["model_id"].encode(), orjson.dumps(e)) for e in events]
    envelopes = pack_events(events)
    batches = [(p["model_id"].encode(), orjson.dumps(p)) for p in envelopes]
    binary = [(p["model_id"].encode(), encode_binary_batch(p)) for p in envelopes]
    labels = [(e["model_id"].encode(), orjson.dumps(e)) for e in _label_events(events)]
    # The same labels as label batches, as the SDK packs them (per model, send order).
    label_batches = [
        (lb["model_id"].encode(), orjson.dumps(lb))
        for lb in pack_label_events([orjson.loads(v) for _, v in labels], ROWS_PER_BATCH)
    ]
    topics = ["in-json", "in-batch", "in-batch2", "in-labels", "in-label-batches"]
    await create_topics(b.bootstrap, topics, PARTITIONS)
    await publish(b.bootstrap, "in-json", singles, PARTITIONS)
    await publish(b.bootstrap, "in-batch", batches, PARTITIONS)
    await publish(b.bootstrap, "in-batch2", binary, PARTITIONS)
    await publish(b.bootstrap, "in-labels", labels, PARTITIONS)
    await publish(b.bootstrap, "in-label-batches", label_batches, PARTITIONS)
    return {
        "events": n,
        "json_bytes": sum(len(v) for _, v in singles) / n,
        "batch_bytes": sum(len(v) for _, v in batches) / n,
        "batch2_bytes": sum(len(v) for _, v in binary) / n,
        "batches": len(batches),
    }


def throughput(b: Bench, n: int, rounds: int) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {}
    batch_records = n // ROWS_PER_BATCH
    cases = [
        ("raw", "raw", {"topic": "in-json", "rows": n, "rows_per_record": 1}),
        (
            "monitor",
            "monitor",
            {"topic": "in-json", "rows_per_record": 1, "stop_rows": n},
        ),
        (
            "monitor-untyped",
            "monitor",
            {"topic": "in-json", "rows_per_record": 1, "stop_rows": n, "decoder": "untyped"},
        ),
        (
            "monitor-batch",
            "monitor",
            {"topic": "in-batch", "rows_per_record": ROWS_PER_BATCH, "stop_rows": n},
        ),
        (
            "monitor-batch2",
            "monitor",
            {"topic": "in-batch2", "rows_per_record": ROWS_PER_BATCH, "stop_rows": n},
        ),
        (
            "monitor-compiled",
            "monitor",
            {"topic": "in-json", "rows_per_record": 1, "stop_rows": n, "compiled": "on"},
        ),
        (
            "monitor-batch2-compiled",
            "monitor",
            {
                "topic": "in-batch2",
                "rows_per_record": ROWS_PER_BATCH,
                "stop_rows": n,
                "compiled": "on",
            },
        ),
        (
            "raw-batch",
            "raw",
            {"topic": "in-batch", "rows": batch_records * ROWS_PER_BATCH, "rows_per_record": 500},
        ),
    ]
    skip = set(filter(None, b.args.skip.split(",")))
    if "untyped" in skip:
        cases = [c for c in cases if c[0] != "monitor-untyped"]
    if "compiled" in skip or importlib.util.find_spec("numba") is None:
        cases = [c for c in cases if not c[0].endswith("compiled")]
    for r in range(rounds):
        for name, phase, kw in cases:
            res = b.run(phase, b.cfg(**kw))
            results.setdefault(name, []).append(res)
            print(f"  round {r + 1} {name:14s} {_fmt_rate(res.get('rate', math.nan))} ev/s")
    if "naive" not in skip:
        naive_n = min(n, b.args.naive_events)
        res = b.run("naive", b.cfg(topic="in-json", rows=naive_n))
        results["naive"] = [res]
        print(f"  naive          {_fmt_rate(res.get('rate', math.nan))} ev/s")
    if "labels" not in skip:
        results.update(label_throughput(b, n))
    return results


def label_throughput(b: Bench, n: int) -> dict[str, list[dict[str, Any]]]:
    """The label joiner's cases (``--only labels`` runs these and ``raw`` alone)."""
    results: dict[str, list[dict[str, Any]]] = {}
    label_cases = [
        # single JSON predictions and their single JSON labels; batched predictions and
        # label batches (the SDK's default); batched predictions alone (what a pending
        # prediction costs in Redis)
        ("labels", {"topic": "in-json", "labels": "in-labels", "labels_count": n}),
        (
            "labels-batch",
            {"topic": "in-batch", "labels": "in-label-batches", "labels_count": n},
        ),
        (
            "labels-batch2",
            {"topic": "in-batch2", "labels": "in-label-batches", "labels_count": n},
        ),
        # Labels of predictions stored before (the steady state: labels come after their
        # predictions); the predictions are stored first, not timed.
        (
            "labels-later",
            {
                "topic": "in-batch",
                "labels": "in-labels-later",
                "labels_count": n,
                "labels_later": True,
            },
        ),
        (
            "pending",
            {
                "topic": "in-batch",
                "labels": "in-nolabels",
                "labels_count": 0,
                # All predictions fall in the first event-time generation of one model
                # (one partition): give it the buckets the sizing rule gives a later
                # generation of that many predictions (docs/slow-loop.md), not the
                # first generation's 64, which only a fresh model has.
                "labels_settings": {"initial_buckets": _later_buckets(n)},
            },
        ),
    ]
    for name, kw in label_cases:
        res = b.run("labels", b.cfg(rows=n, timeout=900, **kw))
        results[name] = [res]
        outcomes = ", ".join(f"{k} {v:,}" for k, v in sorted(res.get("label_outcomes", {}).items()))
        print(
            f"  {name:14s} {res.get('error') or _fmt_rate(res.get('labels_rate', math.nan))} "
            f"labels/s, {_fmt_rate(res.get('rate', math.nan))} records/s"
            f" (CPU a record: joiner {res.get('cpu_us', math.nan):.2f} us,"
            f" Redis {res.get('redis_cpu_us', math.nan):.2f} us)"
            + (f" (labels {outcomes})" if outcomes else "")
        )
    return results


def _later_buckets(predictions: int) -> int:
    """Buckets of a generation after one of ``predictions`` (core.slowloop's rule)."""
    from driftline.core.slowloop.pending import TARGET_PER_BUCKET

    want = math.ceil(1.25 * predictions / TARGET_PER_BUCKET)
    return 1 << max(0, want - 1).bit_length()


async def latency(b: Bench, models: int, per_model: int, rate: float) -> dict[str, Any]:
    """Publish ``models`` streams at ``rate`` events/s in total; time alerts."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic, alerts = "live-in", "live-alerts"
    await create_topics(b.bootstrap, [topic, alerts], PARTITIONS)
    names = [f"live{i:03d}" for i in range(models)]
    cfg = b.cfg(topic=topic, alerts=alerts, idle_exit=6.0, models=names)
    # Each model: stationary, then a 1 sd shift of f03 at a staggered point, then back.
    streams = []
    for i, name in enumerate(names):
        sim = SimulatedModel(seed=200 + i, model_id=name)
        shift_at = int(per_model * (0.25 + 0.25 * i / max(1, models - 1)))
        back_at = shift_at + per_model // 4
        evs = list(sim.events(back_at, shift=Shift(start=shift_at, sigmas=1.0)))
        evs += list(sim.events(per_model - back_at, start=back_at))
        streams.append(evs)
    order = [e for row in zip(*streams, strict=True) for e in row]
    payloads = [(e["model_id"].encode(), orjson.dumps(e)) for e in order]

    proc = b.spawn("live", cfg)
    assert proc.stdout is not None
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, proc.stdout.readline)
    if not line.startswith("READY"):
        return {"error": "monitor did not start"}

    consumer = AIOKafkaConsumer(bootstrap_servers=b.bootstrap, group_id=None, fetch_max_wait_ms=50)
    await consumer.start()
    tps = await _partitions(consumer, alerts)
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    received: list[tuple[float, dict[str, Any]]] = []

    async def follow() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            now = time.time()
            for recs in batch.values():
                received.extend((now, orjson.loads(r.value)) for r in recs)

    follower = asyncio.create_task(follow())
    producer = AIOKafkaProducer(bootstrap_servers=b.bootstrap, linger_ms=0, acks="all")
    await producer.start()
    acked: dict[tuple[str, int], float] = {}
    tick = 0.02
    per_tick = max(1, int(rate * tick))
    start = time.perf_counter()
    for k in range(0, len(payloads), per_tick):
        chunk = payloads[k : k + per_tick]
        futs = [await producer.send(topic, v, key=key) for key, v in chunk]
        await asyncio.gather(*futs)
        now = time.time()
        for e in order[k : k + per_tick]:
            acked[(e["model_id"], (e["timestamp"] - T0_MS) // STEP_MS)] = now
        delay = start + (k + per_tick) / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    sent_rate = len(payloads) / (time.perf_counter() - start)
    await producer.stop()
    await asyncio.sleep(3.0)
    child_res = await loop.run_in_executor(None, Bench.collect, proc)
    follower.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await follower
    await consumer.stop()

    lat: list[float] = []
    by_detector: dict[str, list[float]] = {}
    first_shift: list[float] = []
    for now, a in received:
        j = (a["detected_at"] - T0_MS) // STEP_MS
        t = acked.get((a["model_id"], j))
        if t is None:
            continue
        lat.append(now - t)
        by_detector.setdefault(a["detector"], []).append(now - t)
    for i, name in enumerate(names):
        shift_at = int(per_model * (0.25 + 0.25 * i / max(1, models - 1)))
        firing = [now for now, a in received if a["model_id"] == name and a["status"] == "firing"]
        if firing and (name, shift_at) in acked:
            first_shift.append(min(firing) - acked[(name, shift_at)])
    return {
        "alerts": len(received),
        "matched": len(lat),
        "rate_sent": sent_rate,
        "p50": _pct(lat, 50),
        "p90": _pct(lat, 90),
        "p99": _pct(lat, 99),
        "max": max(lat) if lat else math.nan,
        "by_detector": {k: (len(v), _pct(v, 50), _pct(v, 99)) for k, v in by_detector.items()},
        "shift_to_alert_p50": _pct(first_shift, 50),
        "shift_to_alert_max": max(first_shift) if first_shift else math.nan,
        "monitor": child_res,
    }


async def scale_out(b: Bench, n: int) -> dict[str, Any]:
    """One worker against two on a 4-partition topic with 8 models."""
    topic = "scale-in"
    await create_topics(b.bootstrap, [topic], PARTITIONS)
    names = [f"s{i}" for i in range(8)]
    per = n // len(names)
    streams = [
        list(
            SimulatedModel(seed=300 + i, model_id=name).events(
                per, shift=Shift(start=per // 2, sigmas=0.7) if i % 2 else None
            )
        )
        for i, name in enumerate(names)
    ]
    order = [e for row in zip(*streams, strict=True) for e in row]
    keyed = [(e["model_id"].encode(), orjson.dumps(e)) for e in order]
    await publish(b.bootstrap, topic, keyed, PARTITIONS)
    out: dict[str, Any] = {}
    for workers in (1, 2):
        cfg = b.cfg(topic=topic, rows_per_record=1, stop_rows=10**12, idle_exit=4.0, models=names)
        procs = [b.spawn("monitor", {**cfg, "name": f"w{i}"}) for i in range(workers)]
        res = [Bench.collect(p) for p in procs]
        first = min(r["first_wall"] for r in res if r.get("first_wall"))
        end = max(r["end_wall"] for r in res)
        rows = sum(r["rows_total"] for r in res)
        ids = sorted(
            orjson.loads(v)["alert_id"] for v in await _read_values(b.bootstrap, cfg["alerts"])
        )
        out[str(workers)] = {
            "rate": rows / (end - first),
            "rows": rows,
            "alert_ids": ids,
            "per_worker": [r.get("rows_total") for r in res],
            "cpu_us": [round(r["cpu_us"], 1) for r in res],
        }
    out["same_alerts"] = set(out["1"]["alert_ids"]) == set(out["2"]["alert_ids"])
    out["alerts"] = len(set(out["1"]["alert_ids"]))
    return out


def report(
    meta: dict[str, Any],
    tp: dict[str, list[dict[str, Any]]],
    lat: dict[str, Any] | None,
    growth: dict[str, Any] | None,
    scale: dict[str, Any] | None,
) -> None:
    def best(name: str) -> dict[str, Any]:
        runs = [r for r in tp.get(name, []) if "rate" in r]
        return max(runs, key=lambda r: r["rate"]) if runs else {}

    raw = best("raw").get("rate", math.nan)
    print()
    print(
        f"Throughput ({meta['events']:,} events, best of {meta['rounds']}; "
        f"single event {meta['json_bytes']:.0f} B, batch {meta['batch_bytes']:.0f} B/event, "
        f"binary batch {meta.get('batch2_bytes', math.nan):.0f} B/event)"
    )
    header = (
        f"{'case':32s} {'events/s':>10s} {'x raw':>7s} {'cpu us/ev':>9s} "
        f"{'redis cmd/ev':>12s} {'redis B/ev':>10s} {'peak MB':>8s}"
    )
    print(header)
    print("-" * len(header))
    rows = [
        ("raw getmany+orjson (JSON)", "raw"),
        ("monitor, single JSON events", "monitor"),
        ("  same, previous decoder", "monitor-untyped"),
        ("monitor, columnar batches", "monitor-batch"),
        ("monitor, binary batches (v2)", "monitor-batch2"),
        ("monitor, single, compiled core", "monitor-compiled"),
        ("monitor, v2 batches, compiled", "monitor-batch2-compiled"),
        ("raw getmany+orjson (batches)", "raw-batch"),
        ("naive river per event", "naive"),
        ("label joiner, JSON preds+labels", "labels"),
        ("label joiner, batch preds+labels", "labels-batch"),  # label_batch.v1
        ("  same, binary prediction batches", "labels-batch2"),
        ("label joiner, labels of stored", "labels-later"),
    ]
    for label, key in rows:
        r = best(key)
        if not r or "rate" not in r:
            err = (tp.get(key) or [{}])[0].get("error", "n/a")
            print(f"{label:32s} {err}")
            continue
        calls = "" if r.get("redis_calls") is None else f"{r['redis_calls']:.4f}"
        rb = "" if r.get("redis_bytes") is None else f"{r['redis_bytes']:.1f}"
        print(
            f"{label:32s} {_fmt_rate(r['rate']):>10s} {r['rate'] / raw:7.2f} {r['cpu_us']:9.2f} "
            f"{calls:>12s} {rb:>10s} {r['peak_mb']:8.0f}"
        )
    single = best("monitor").get("rate", math.nan)
    batch = best("monitor-batch").get("rate", math.nan)
    batch2 = best("monitor-batch2").get("rate", math.nan)
    print(f"batches / single events: {batch / single:.2f}x (binary batches {batch2 / single:.2f}x)")
    after = [
        best(k).get("cpu_us_after_first", math.nan)
        for k in (
            "monitor",
            "monitor-batch",
            "monitor-batch2",
            "monitor-compiled",
            "monitor-batch2-compiled",
        )
    ]
    if any(math.isfinite(a) for a in after):
        print(
            "monitor cpu us/ev after its first batch (which also pays the start-up's reference "
            f"reads, plans and new states): single {after[0]:.2f}, batches {after[1]:.2f}, "
            f"binary batches {after[2]:.2f}; compiled core: single {after[3]:.2f}, "
            f"binary batches {after[4]:.2f}"
        )
    spread = {k: [round(r.get("rate", 0)) for r in v] for k, v in tp.items()}
    print(f"(all rounds, events/s: {spread})")
    if lat:
        print()
        if "error" in lat:
            print(f"Latency: {lat['error']}")
        else:
            print(
                f"Event-to-alert latency ({lat['matched']} alerts of {lat['alerts']}, "
                f"{lat['rate_sent']:,.0f} events/s sent, seconds)"
            )
            print(
                f"p50 {lat['p50']:.3f}   p90 {lat['p90']:.3f}   p99 {lat['p99']:.3f}   "
                f"max {lat['max']:.3f}"
            )
            for det, (k, p50, p99) in sorted(lat["by_detector"].items()):
                print(f"  {det:16s} n={k:3d}  p50 {p50:.3f}  p99 {p99:.3f}")
            print(
                f"first shifted event -> first alert (includes the events the test needs): "
                f"p50 {lat['shift_to_alert_p50']:.2f} s, max {lat['shift_to_alert_max']:.2f} s; "
                f"monitor batches averaged {lat['monitor'].get('mean_batch', 0):.0f} events"
            )
    if growth:
        print()
        print("Cost growth (decode + core + state encoding, CPU us/event, in process)")
        for key, label in (("features", "features"), ("models", "models"), ("window", "window")):
            print(f"{label:>10s} {'JSON us/ev':>11s} {'batch us/ev':>12s} {'state B/ev':>11s}")
            for r in growth[key]:
                print(
                    f"{r[key]:>10d} {r['json_us']:11.2f} {r['batch_us']:12.2f} {r['state_b']:11.0f}"
                )
        print("without the multivariate model (the baseline of the rows above, issue 15):")
        for r in growth["features"]:
            b = r["no_mv"]
            print(
                f"{r['features']:>10d} {b['json_us']:11.2f} {b['batch_us']:12.2f} "
                f"{b['state_b']:11.0f}   (with it: {r['batch_us'] / b['batch_us'] - 1:+.0%} "
                "batched)"
            )
        print(
            f"Python allocations of one 5000-event batch (tracemalloc peak): "
            f"{growth['traced_peak_mb']:.1f} MB"
        )
    if scale:
        print()
        one, two = scale["1"], scale["2"]
        print("Scale-out (4 partitions, 8 models, single events)")
        print(f"  1 worker : {one['rate']:,.0f} events/s  cpu us/ev {one['cpu_us']}")
        print(
            f"  2 workers: {two['rate']:,.0f} events/s  ({two['rate'] / one['rate']:.2f}x), "
            f"events per worker {two['per_worker']}, cpu us/ev {two['cpu_us']}"
        )
        print(f"  same alert ids: {scale['same_alerts']} ({scale['alerts']} alerts)")
    bars(tp, lat)


def bars(tp: dict[str, list[dict[str, Any]]], lat: dict[str, Any] | None) -> None:
    """Issue 14's bars beside this run's figures (met or not)."""

    def best(name: str, key: str = "rate") -> float:
        vals = [r[key] for r in tp.get(name, []) if key in r]
        return max(vals) if vals else math.nan

    raw = best("raw")
    together = max(
        best("labels", "labels_rate"),
        best("labels-batch", "labels_rate"),
        best("labels-batch2", "labels_rate"),
    )
    later = best("labels-later", "labels_rate")
    pending = best("pending", "pending_b")
    p99 = lat.get("p99", math.nan) if lat else math.nan
    rows = [
        ("monitor, single JSON events", best("monitor") / raw, "x raw", ">=", 0.5),
        ("monitor, columnar batches", best("monitor-batch") / raw, "x raw", ">=", 1.0),
        ("monitor, binary batches (v2)", best("monitor-batch2") / raw, "x raw", ">=", 1.0),
        ("  same, compiled core", best("monitor-batch2-compiled") / raw, "x raw", ">=", 1.0),
        ("single events, compiled core", best("monitor-compiled") / raw, "x raw", ">=", 0.5),
        ("label join, stored predictions", later, "labels/s", ">=", 50_000),
        ("label join, preds + labels", together, "labels/s", ">=", 50_000),
        ("event-to-alert p99", p99, "s", "<", 1.0),
        ("Redis per pending prediction", pending, "B", "<=", 40),
    ]
    print()
    print("Issue 14's bars (this run)")
    for name, value, unit, op, bar in rows:
        ok = {">=": value >= bar, "<": value < bar, "<=": value <= bar}[op]
        shown = f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
        verdict = "met" if ok else ("n/a" if math.isnan(value) else "NOT met")
        print(f"  {name:30s} {shown:>10s} {unit:9s} bar {op} {bar:<8,} {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (about a minute)")
    parser.add_argument("--events", type=int, help="events per throughput case")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of the main cases")
    parser.add_argument("--naive-events", type=int, default=30_000)
    parser.add_argument(
        "--skip",
        default="",
        help="comma list: latency,growth,scale; naive, labels, untyped (the "
        "previous decoder) and compiled (the numba cases, run when numba is installed) "
        "for a run of the monitor's throughput cases beside raw",
    )
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the core")
    parser.add_argument(
        "--only", choices=["labels"], help="run only these cases (and the raw baseline)"
    )
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        child(args.phase, args.config)
        return
    n = args.events or (40_000 if args.quick else 200_000)
    n -= n % ROWS_PER_BATCH
    rounds = args.rounds or (1 if args.quick else 3)
    skip = set(filter(None, args.skip.split(",")))
    if args.quick:
        args.naive_events = min(args.naive_events, 10_000)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, numpy {np.__version__}")
    with tempfile.TemporaryDirectory(prefix="dl-bench-") as tmp_name:
        tmp = Path(tmp_name)
        stack = DevStack(tmp / "stack").start()
        # Children inherit the stack's signing key (there is no default key).
        os.environ["DRIFTLINE_REDIS__STATE_SIGNING_KEY"] = stack.signing_key
        try:
            b = Bench(args, stack, tmp)
            (tmp / "reference.json").write_bytes(_reference().to_bytes())
            print(f"publishing {n:,} events (single and batched) and {n:,} labels ...")
            meta = asyncio.run(publish_inputs(b, n))
            meta["rounds"] = rounds
            print("throughput:")
            if args.only == "labels":
                raw = b.run("raw", b.cfg(topic="in-json", rows=n, rows_per_record=1))
                print(f"  raw            {_fmt_rate(raw.get('rate', math.nan))} ev/s")
                tp = {"raw": [raw], **label_throughput(b, n)}
                report(meta, tp, None, None, None)
                if args.json:
                    Path(args.json).write_text(json.dumps({"meta": meta, "throughput": tp}))
                return
            tp = throughput(b, n, rounds)
            lat = None
            if "latency" not in skip:
                print("latency run ...")
                models, per_model = (10, 3000) if args.quick else (20, 5000)
                lat = asyncio.run(latency(b, models, per_model, rate=3000 if args.quick else 4000))
            growth = None
            if "growth" not in skip:
                print("cost growth ...")
                gcfg = b.cfg(
                    rows=10_000 if args.quick else 40_000,
                    features=[5, 20, 100],
                    models=[1, 100, 1000],
                    windows=[100, 500, 2000],
                )
                growth = b.run("growth", gcfg)
            scale = None
            if "scale" not in skip:
                print("scale-out ...")
                scale = asyncio.run(scale_out(b, 40_000 if args.quick else 160_000))
            report(meta, tp, lat, growth, scale)
            if args.profile:
                prof = b.run("profile", b.cfg(rows=20_000))
                print()
                print(prof.get("text", prof))
            if args.json:
                Path(args.json).write_text(
                    json.dumps(
                        {
                            "meta": meta,
                            "throughput": tp,
                            "latency": lat,
                            "growth": growth,
                            "scale": scale,
                        },
                        indent=1,
                        default=str,
                    )
                )
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
