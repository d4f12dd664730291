"""A backlog of labels published before their predictions, through a real joiner.

Plain script (no pytest). It starts its own Tansu broker and redis-server
(``driftline.runtime.devstack``) and one ``LabelJoiner``, then publishes ``--labels``
label events of river's SEA stream (``river.datasets.synth.SEA`` through
:class:`driftline.demo.sea.SeaScenario`; a concept switch halfway) and only then their
predictions -- the backlog after an outage: the joiner reads every label before its
prediction exists. The baseline run (other topics, a new joiner) publishes the same
events chunk by chunk, each chunk's predictions then its labels, as they happen live.

    python bench/bench_label_backlog.py                  # 1,000,000 labels, + baseline
    python bench/bench_label_backlog.py --labels 200000 --no-baseline

Printed per run: label outcomes (every label must be ``joined``, no ``orphan``), the
most labels held at once and how long the labels partition was paused (backpressure:
``labels.max_held_labels``), throughput, and the concept-drift and performance alerts
(the switch must be found with or without the backlog).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from driftline.config import Settings
from driftline.core.reference import Policy, build_reference
from driftline.demo.sea import SeaScenario
from driftline.runtime.devstack import DevStack
from driftline.runtime.labels import LabelJoiner
from driftline.runtime.store import open_store

CHUNK = 50_000
MODEL = "sea-backlog"


def chunks(n: int) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """The stream in chunks of predictions and their labels (deterministic)."""
    sc = SeaScenario(model_id=MODEL, seed=21)
    for start in range(0, n, CHUNK):
        yield sc.events(min(CHUNK, n - start), concept_at=n // 2, start=start)


async def publish(bootstrap: str, topic: str, events: Sequence[dict[str, Any]]) -> None:
    prod = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20)
    await prod.start()
    try:
        futs = [await prod.send(topic, orjson.dumps(e), key=e["model_id"].encode()) for e in events]
        for f in futs:
            await f
    finally:
        await prod.stop()


async def create(bootstrap: str, topics: Sequence[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, 1, 1) for t in topics])
    finally:
        await admin.close()


async def read_alerts(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await c.start()
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        await c.seek_to_beginning(tp)
        end = (await c.end_offsets([tp]))[tp]
        out: list[dict[str, Any]] = []
        while (await c.position(tp)) < end:
            for recs in (await c.getmany(timeout_ms=1000)).values():
                out += [orjson.loads(r.value) for r in recs]
        return out
    finally:
        await c.stop()


async def _watch(j: LabelJoiner, n: int, seen: dict[str, float]) -> None:
    """Until the joiner has read everything: the most labels held at once, and how long
    its labels partition was paused."""
    last = time.monotonic()
    while j.labels_seen < n or j.predictions_seen < n:
        await asyncio.sleep(0.05)
        now = time.monotonic()
        if j.labels_paused:
            seen["paused_s"] += now - last
        last = now
        held = sum(len(x.state.held) for x in j.units.values())
        seen["most_held"] = max(seen["most_held"], held)


async def run(stack: DevStack, n: int, backlog: bool, cap: int) -> dict[str, Any]:
    u = uuid.uuid4().hex[:8]
    s = Settings(
        kafka={"bootstrap_servers": stack.broker.bootstrap},
        # No default signing key (issue 16): a throwaway one for this throwaway stack.
        redis={
            "url": stack.redis.url,
            "key_prefix": f"b{u}",
            "state_signing_key": secrets.token_hex(32),
        },
        topics={"predictions": f"p-{u}", "labels": f"l-{u}", "alerts": f"a-{u}"},
        labels={"group_id": f"labels-{u}", "max_held_labels": cap},
        metrics_port=0,
    )
    topics = [s.topics.predictions, s.topics.labels, s.topics.alerts]
    await create(stack.broker.bootstrap, [*topics, s.topics.dlq(s.topics.labels)])
    sc = SeaScenario(model_id=MODEL, seed=21)
    ref = build_reference(
        sc.training_data(5000), MODEL, "1", policy=Policy(window_events=500), seed=0
    )
    client, store = open_store(s.redis, s.monitor.group_id)
    await store.put_reference(MODEL, "1", ref.to_bytes())
    await client.aclose()
    j = LabelJoiner(s, name=f"bench-{u}")
    await j.start()
    task = asyncio.create_task(j.run())
    seen: dict[str, float] = {"most_held": 0, "paused_s": 0.0}
    watch = asyncio.create_task(_watch(j, n, seen))
    t0 = time.monotonic()
    if backlog:
        for _, labels in chunks(n):
            await publish(stack.broker.bootstrap, s.topics.labels, labels)
        for preds, _ in chunks(n):
            await publish(stack.broker.bootstrap, s.topics.predictions, preds)
    else:
        for preds, labels in chunks(n):
            await publish(stack.broker.bootstrap, s.topics.predictions, preds)
            await publish(stack.broker.bootstrap, s.topics.labels, labels)
    published = time.monotonic() - t0
    await watch
    elapsed = time.monotonic() - t0
    j.stop()
    await task
    totals = j.totals().get(MODEL, {})
    await j.close()
    alerts = await read_alerts(stack.broker.bootstrap, s.topics.alerts)
    slow = [
        (a["kind"], a["status"], a["episode"], a["diagnosis"], a["window"]["end"])
        for a in alerts
        if a["kind"] in ("concept_drift", "performance")
    ]
    return {
        "outcomes": totals,
        "most_held": int(seen["most_held"]),
        "paused_s": seen["paused_s"],
        "publish_s": published,
        "join_s": elapsed,
        "events_per_s": 2 * n / elapsed,
        "alerts": slow,
    }


def show(name: str, r: dict[str, Any], n: int) -> None:
    t0 = SeaScenario().t0_ms
    step = SeaScenario().step_ms
    print(f"\n== {name}")
    print(f"label outcomes      {r['outcomes']}  (of {n:,} labels)")
    print(f"most labels held    {r['most_held']:,}   labels partition paused {r['paused_s']:.0f} s")
    print(
        f"all joined after    {r['join_s']:.0f} s ({r['events_per_s']:,.0f} predictions+labels/s)"
        f", publishing (meanwhile) took {r['publish_s']:.0f} s"
    )
    for kind, status, ep, diag, end in r["alerts"]:
        at = (end - t0) // step
        print(f"alert               {kind} {status} episode {ep} ({diag}), window end {at:,}")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labels", type=int, default=1_000_000)
    ap.add_argument("--cap", type=int, default=20_000, help="labels.max_held_labels")
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args(argv)
    n = args.labels
    with tempfile.TemporaryDirectory() as tmp:
        stack = DevStack(Path(tmp)).start()
        try:
            backlog = asyncio.run(run(stack, n, True, args.cap))
            show(f"backlog: {n:,} labels published before their predictions", backlog, n)
            ok = backlog["outcomes"] == {"joined": n}
            if not args.no_baseline:
                base = asyncio.run(run(stack, n, False, args.cap))
                show("baseline: the same events as they happen live", base, n)
                same = {a[:4] for a in backlog["alerts"]} == {a[:4] for a in base["alerts"]}
                print(f"\nsame slow-loop alerts (kind, status, episode, diagnosis): {same}")
            print(f"every label joined, no orphan: {ok}")
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
