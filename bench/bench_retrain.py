"""The retraining trigger: the faust app against the aiokafka worker it replaced.

Run: ``python bench/bench_retrain.py [--alerts N] [--models M]``

Both triggers run in this process against a fresh Tansu broker (memory storage), on
the same alert topic (4 partitions), each with its own consumer group. The baseline is
the aiokafka ``RetrainService`` as it was on main at commit ``BASELINE``, loaded from
git (no copy of it lives in the tree). For each trigger and two policies (the default,
24 h debounce, where few alerts request; and ``debounce 0``, where every qualifying
alert publishes a request and waits for the broker's ack) it prints:

* ``start``: from ``start()`` to ready (topics, group join, and the restore of the
  state: the request topic for the baseline, the state table's changelog for faust);
* ``alerts/s``: decisions per second of wall time from the first decision to the last;
* ``restart``: ``start()`` of a second instance in a new consumer group (lost
  offsets), which must restore everything the first one requested, and how many;
* ``stop``: ``close()`` (commit, leave the group).

Alerts are low-volume (a few per model and day), so the bar is correctness and restart
behaviour; the figures show the cost of each design, not a race. Tansu does not
compact topics on its memory and S3 engines, so every state write stays in the
changelog and the faust restart reads all of them (Apache Kafka compacts it to one
record per model).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from driftline.config import Settings
from driftline.contract.events import (
    DriftAlert,
    make_alert_id,
)
from driftline.runtime.devstack import TansuBroker
from driftline.runtime.retrain import RetrainPolicy
from driftline.runtime.retrain_app import RetrainService
from driftline.runtime.worker import ensure_topics

#: main before the faust trigger: the aiokafka ``RetrainService`` is read from here.
BASELINE = "b400c86ef042cadd8a49e1b02b004a4901d40c7d"
T0 = 1_767_225_600_000
HOUR = 3_600_000


def load_baseline() -> ModuleType | None:
    """The aiokafka trigger module at ``BASELINE``, or ``None`` outside a git checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        source = subprocess.run(
            ["git", "-C", str(root), "show", f"{BASELINE}:src/driftline/runtime/retrain.py"],
            capture_output=True,
            check=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(tempfile.mkdtemp()) / "retrain_aiokafka.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("retrain_aiokafka", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def make_alerts(n: int, models: int) -> list[dict[str, Any]]:
    """``n`` alerts over ``models`` models: firing and resolved, kinds and severities mixed."""
    kinds = ["concept_drift", "input_drift", "data_quality", "performance", "output_drift"]
    out = []
    for i in range(n):
        model, kind = f"model-{i % models:03d}", kinds[i % len(kinds)]
        status = "resolved" if i % 4 == 3 else "firing"
        episode = i // (2 * models)
        at = T0 + i * 60_000
        out.append(
            DriftAlert(
                alert_id=make_alert_id(model, "1", "", kind, episode, status),
                model_id=model,
                model_version="1",
                kind=kind,
                status=status,
                severity="critical" if i % 3 else "warning",
                feature=None,
                detector="bench",
                statistic=0.3,
                threshold=0.1,
                p_value=None,
                window={"start": at - 1000, "end": at, "count": 500},
                reference=f"{model}:1:ref",
                detected_at=at,
                episode=episode,
                diagnosis="data_quality" if kind == "data_quality" else "undetermined",
            ).model_dump(mode="json")
        )
    return out


async def publish(settings: Settings, alerts: list[dict[str, Any]]) -> None:
    await ensure_topics(settings, [settings.topics.alerts])
    prod = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=5)
    await prod.start()
    try:
        futs = [
            await prod.send(settings.topics.alerts, orjson.dumps(a), key=a["model_id"].encode())
            for a in alerts
        ]
        await asyncio.gather(*futs)
    finally:
        await prod.stop()


async def topic_size(settings: Settings, topic: str) -> tuple[int, int]:
    """(records, bytes of values) in ``topic``."""
    from aiokafka import AIOKafkaConsumer

    cons = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka.bootstrap_servers, auto_offset_reset="earliest"
    )
    await cons.start()
    records = size = 0
    try:
        while batch := await cons.getmany(timeout_ms=800, max_records=5000):
            for recs in batch.values():
                records += len(recs)
                size += sum(len(r.value or b"") for r in recs)
    finally:
        await cons.stop()
    return records, size


async def measure(make: Any, n: int) -> dict[str, float]:
    """Start, consume ``n`` alerts, stop; then a second instance in a new group."""
    service = make(f"g-{uuid.uuid4().hex[:8]}")
    t0 = time.perf_counter()
    await service.start()
    started = time.perf_counter() - t0
    runner = asyncio.create_task(service.run())
    first = last = None
    deadline = time.perf_counter() + 600
    while service.decisions < n and time.perf_counter() < deadline:
        if first is None and service.decisions:
            first = time.perf_counter()
        await asyncio.sleep(0.005)
    last = time.perf_counter()
    decisions = service.decisions
    requested = getattr(service, "requested", None)
    if requested is None:
        requested = len(service.requests)
    service.stop()
    await runner
    t1 = time.perf_counter()
    await service.close()
    stopped = time.perf_counter() - t1

    again = make(f"g-{uuid.uuid4().hex[:8]}")
    t2 = time.perf_counter()
    await again.start()
    restarted = time.perf_counter() - t2
    restored = getattr(again, "restored", None)
    if restored is None:  # the baseline keeps the restored request ids in its trigger
        restored = len(again.trigger.seen)
    again.stop()
    await again.close()
    rate = (decisions - 1) / (last - first) if first and last > first else float("nan")
    return {
        "start": started,
        "rate": rate,
        "decisions": decisions,
        "requested": requested,
        "restart": restarted,
        "restored": restored,
        "stop": stopped,
    }


async def run(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING)
    baseline = load_baseline()
    with tempfile.TemporaryDirectory() as tmp:
        broker = TansuBroker().start(Path(tmp))
        try:
            for label, policy in (
                ("debounce 24h", RetrainPolicy()),
                ("debounce 0", RetrainPolicy(debounce_ms=0)),
            ):
                rows: list[tuple[str, dict[str, float]]] = []
                state = (0, 0)
                for name in ("aiokafka (baseline)", "faust"):
                    if name.startswith("aiokafka") and baseline is None:
                        print(f"{name}: not measured (needs git and commit {BASELINE[:8]})")
                        continue
                    unique = uuid.uuid4().hex[:8]
                    s = Settings(
                        kafka={"bootstrap_servers": broker.bootstrap},
                        topics={"alerts": f"alerts-{unique}", "retrain_requests": f"rr-{unique}"},
                        metrics_port=0,
                    )
                    alerts = make_alerts(args.alerts, args.models)
                    await publish(s, alerts)
                    if name == "faust":

                        def make(group: str, s: Settings = s, p: RetrainPolicy = policy) -> Any:
                            return RetrainService(s, p, group_id=group, from_start=True)

                    else:
                        assert baseline is not None

                        def make(group: str, s: Settings = s, p: RetrainPolicy = policy) -> Any:
                            return baseline.RetrainService(s, p, group_id=group, from_start=True)

                    rows.append((name, await measure(make, len(alerts))))
                    if name == "faust":
                        state = await topic_size(s, s.topics.retrain_state())
                print(f"\n{args.alerts} alerts, {args.models} models, {label}")
                print(
                    f"{'trigger':<22}{'start s':>9}{'alerts/s':>10}{'requests':>10}"
                    f"{'restart s':>11}{'restored':>10}{'stop s':>8}"
                )
                for name, r in rows:
                    print(
                        f"{name:<22}{r['start']:>9.2f}{r['rate']:>10.0f}{r['requested']:>10.0f}"
                        f"{r['restart']:>11.2f}{r['restored']:>10.0f}{r['stop']:>8.2f}"
                    )
                print(
                    f"faust state changelog: {state[0]} records, {state[1] / 1e6:.1f} MB, all "
                    "read by the restart (Tansu does not compact)"
                )
        finally:
            broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=2000, help="alerts published")
    parser.add_argument("--models", type=int, default=20, help="models they are spread over")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
