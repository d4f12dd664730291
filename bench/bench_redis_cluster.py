"""Redis: one redis-server beside a local Redis Cluster of three masters (issue 14, item 5).

Run (one command; about seven minutes with ``--rounds 3``, ``--quick`` about two)::

    python bench/bench_redis_cluster.py [--quick] [--events N] [--rounds R] [--json FILE]

``--quick`` is a smoke run: over 40 000 rows the set-up (connections, the cluster
client's slot map and command table) weighs on the Redis CPU per event, the cluster's
most. docs/performance.md quotes a ``--rounds 3`` run.

It starts a Tansu broker, one redis-server and a Redis Cluster of three redis-server
masters (``driftline.runtime.devstack``), publishes the same simulated predictions once
(8 models, 20 numeric + 3 categorical features, a 0.5 sd shift of ``f03`` at 60%; 4
partitions): as columnar batches of 500 rows, as single JSON events, and one label per
single event. Then, each case in a fresh process, ``--rounds`` times interleaved, the
real workers run once against the server and once against the cluster
(``redis.cluster=true``: redis-py's asyncio ``RedisCluster``):

* ``monitor-batch``: ``MonitorWorker`` on the columnar batches;
* ``monitor-json``: ``MonitorWorker`` on the single JSON events;
* ``labels``: ``LabelJoiner`` on the single events and their labels.

Printed per case, server and cluster side by side: the worker's steady-state rate (from
the first fetched batch to the last committed one) and its CPU time per event; the Redis
CPU time per event (on-CPU time of every redis-server process of that kind, from
``/proc/<pid>/task/*/schedstat``, over the whole run less what the nodes spend idle: it
includes set-up, so it errs high); the time inside Redis commands, the commands and the
network bytes per event (``INFO`` deltas summed over the nodes); the busiest master's
share of the cluster's command time; and whether every run published the same alert
ids. The last table turns CPU per event into events/s per core: of a worker, and of one
Redis shard -- the figures docs/performance.md scales to 1M events/s.

All processes share this machine's cores: the cluster cannot be faster here than one
server (three masters on two cores, plus the worker and the broker). What transfers to a
real deployment is the CPU per event on the Redis side and how evenly it spreads.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from kafka_io import publish  # bench/kafka_io.py, beside this script

from driftline.config import Settings
from driftline.contract.columnar import pack_events
from driftline.core.reference import Policy, ReferenceProfile, build_reference
from driftline.demo.simulate import Shift, SimulatedModel
from driftline.runtime.devstack import DevStack, RedisCluster, RedisServer

HERE = Path(__file__).resolve()
PARTITIONS = 4
MODELS = 8
ROWS_PER_BATCH = 500
KINDS = ("server", "cluster")
CASES = ("monitor-batch", "monitor-json", "labels")


# --------------------------------------------------------------------------- child


def _settings(cfg: dict[str, Any]) -> Settings:
    return Settings(
        kafka={"bootstrap_servers": cfg["bootstrap"]},
        redis={
            "url": cfg["redis"],
            "cluster": cfg["cluster"],
            "key_prefix": cfg["prefix"],
            "state_signing_key": cfg["signing_key"],
        },
        topics={"predictions": cfg["topic"], "labels": "rc-labels", "alerts": cfg["alerts"]},
        monitor={"group_id": cfg["group"]},
        labels={"group_id": cfg["group"] + "-labels", "horizon_seconds": 3600.0},
        metrics_port=0,
    )


async def _put_references(settings: Settings, ref_path: str) -> None:
    from driftline.runtime.store import open_store

    ref = ReferenceProfile.from_bytes(Path(ref_path).read_bytes())
    client, store = open_store(settings.redis, settings.monitor.group_id)
    try:
        for i in range(MODELS):
            name = f"m{i}"
            r = dataclasses.replace(ref, model_id=name, reference_id=f"{name}:1:bench")
            await store.put_reference(name, "1", r.to_bytes())
    finally:
        await client.aclose()


class _Clock:
    """Wall and CPU time (this process's) from the first handled batch to the last."""

    def __init__(self) -> None:
        self.first = self.last = self.cpu_first = self.cpu_last = math.nan

    def tick(self) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        if math.isnan(self.first):
            self.first, self.cpu_first = now, cpu
        self.last, self.cpu_last = now, cpu


async def run_case(cfg: dict[str, Any]) -> dict[str, Any]:
    """One worker run (the child process); returns its rate and what it published."""
    settings = _settings(cfg)
    await _put_references(settings, cfg["ref_path"])
    clock = _Clock()
    worker: Any
    if cfg["case"] == "labels":
        from driftline.runtime.labels import LabelJoiner

        worker = LabelJoiner(settings, name="bench-labels")

        def done() -> int:
            return int(worker.predictions_seen + worker.labels_seen)
    else:
        from driftline.runtime.monitor import MonitorWorker

        worker = MonitorWorker(settings, name="bench-monitor")

        def done() -> int:
            return int(worker.processed)

    await worker.start()
    handle = worker._handle
    counted = {"at_first": 0, "held_peak": 0}

    async def timed(unit: Any, records: Mapping[str, Sequence[Any]]) -> None:
        if math.isnan(clock.first):
            counted["at_first"] = done()
            clock.tick()
        await handle(unit, records)
        clock.tick()
        if cfg["case"] == "labels":
            # Labels fetched before their predictions are held and looked up again: the
            # joiner's Redis work follows how its two topics' fetches interleave.
            held = sum(len(u.state.held) for u in worker.units.values())
            counted["held_peak"] = max(counted["held_peak"], held)
        if done() >= cfg["want"]:
            worker.stop()

    worker._handle = timed
    try:
        await asyncio.wait_for(worker.run(idle_exit_s=30.0), timeout=900)
    finally:
        await worker.close()
    # The first batch's events are handled inside the span too, so they count.
    n = done() - counted["at_first"]
    wall = clock.last - clock.first
    alerts = await _alert_ids(cfg["bootstrap"], cfg["alerts"])
    return {
        "events": done(),
        "rate": n / wall if wall > 0 else math.nan,
        "worker_cpu_us": (clock.cpu_last - clock.cpu_first) / max(1, n) * 1e6,
        "held_peak": counted["held_peak"],
        "alerts": alerts,
    }


async def _alert_ids(bootstrap: str, topic: str) -> list[str]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await c.start()
    try:
        parts = c.partitions_for_topic(topic) or set()
        if not parts:
            await c.topics()
            parts = c.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        out: list[str] = []
        while batch := await c.getmany(timeout_ms=1500):
            for recs in batch.values():
                out.extend(orjson.loads(r.value)["alert_id"] for r in recs)
        return sorted(out)
    finally:
        await c.stop()


# --------------------------------------------------------------------------- parent


def _cpu_seconds(pid: int) -> float:
    """Time a process's threads spent on a CPU, in nanoseconds resolution
    (``/proc/<pid>/task/*/schedstat``; ``/proc/<pid>/stat`` counts 10 ms ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended meanwhile
    return total / 1e9


def _node_counters(port: int) -> dict[str, float]:
    import redis

    r = redis.Redis(port=port)
    try:
        commands = r.info("commandstats").values()
        stats = r.info("stats")
        return {
            "calls": float(sum(v["calls"] for v in commands)),
            "usec": float(sum(v["usec"] for v in commands)),
            "bytes": float(stats["total_net_input_bytes"] + stats["total_net_output_bytes"]),
        }
    finally:
        r.close()


class RedisMeter:
    """CPU, command time, commands and bytes of the redis-server processes of one kind.

    Process CPU includes what an idle node spends anyway (its cron, the cluster bus
    pings): :meth:`idle` measures that rate once and :meth:`delta` subtracts it.
    """

    def __init__(self, nodes: Sequence[RedisServer]) -> None:
        self.nodes = list(nodes)
        self.idle_cpu_per_s = [0.0] * len(self.nodes)

    def read(self) -> dict[str, Any]:
        cpu = [_cpu_seconds(n.proc.pid) for n in self.nodes if n.proc is not None]
        counters = [_node_counters(n.port) for n in self.nodes]
        return {
            "t": time.perf_counter(),
            "cpu": cpu,
            "usec": [c["usec"] for c in counters],
            "calls": sum(c["calls"] for c in counters),
            "bytes": sum(c["bytes"] for c in counters),
        }

    def idle(self, seconds: float) -> None:
        a = self.read()
        time.sleep(seconds)
        b = self.read()
        span = b["t"] - a["t"]
        self.idle_cpu_per_s = [(y - x) / span for x, y in zip(a["cpu"], b["cpu"], strict=True)]

    def delta(self, a: dict[str, Any], b: dict[str, Any], events: int) -> dict[str, Any]:
        span = b["t"] - a["t"]
        cpu = [
            max(0.0, y - x - idle * span)
            for x, y, idle in zip(a["cpu"], b["cpu"], self.idle_cpu_per_s, strict=True)
        ]
        usec = [y - x for x, y in zip(a["usec"], b["usec"], strict=True)]
        return {
            "redis_cpu_us": sum(cpu) / events * 1e6,
            "redis_cmd_us": sum(usec) / events,
            "redis_calls": (b["calls"] - a["calls"]) / events,
            "redis_bytes": (b["bytes"] - a["bytes"]) / events,
            "busiest_share": max(usec) / sum(usec) if sum(usec) > 0 else math.nan,
        }


def _events(n: int) -> list[dict[str, Any]]:
    per = n // MODELS
    out: list[dict[str, Any]] = []
    for i in range(MODELS):
        sim = SimulatedModel(seed=20 + i, model_id=f"m{i}")
        out.extend(sim.events(per, shift=Shift(start=int(per * 0.6), sigmas=0.5)))
    out.sort(key=lambda e: (e["timestamp"], e["model_id"]))
    return out


async def publish_inputs(bootstrap: str, n_batch: int, n_json: int) -> None:
    batch_events = _events(n_batch)
    batches = [
        (p["model_id"].encode(), orjson.dumps(p))
        for p in pack_events(batch_events, max_rows=ROWS_PER_BATCH)
    ]
    await publish(bootstrap, "rc-batch", batches, PARTITIONS)
    singles = _events(n_json)
    keyed = [(e["model_id"].encode(), orjson.dumps(e)) for e in singles]
    await publish(bootstrap, "rc-json", keyed, PARTITIONS)
    labels = [
        (
            e["model_id"].encode(),
            orjson.dumps(
                {
                    "prediction_id": e["prediction_id"],
                    "model_id": e["model_id"],
                    "label": e["prediction"],
                    "timestamp": e["timestamp"] + 60_000,
                }
            ),
        )
        for e in singles
    ]
    await publish(bootstrap, "rc-labels", labels, PARTITIONS)


def _child(cfg: dict[str, Any], tmp: Path) -> dict[str, Any]:
    path = tmp / f"{cfg['group']}.json"
    path.write_text(json.dumps(cfg))
    proc = subprocess.run(
        [sys.executable, str(HERE), "--child", str(path)],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("RESULT "):
            res: dict[str, Any] = json.loads(line[7:])
            return res
    return {"error": f"exit {proc.returncode}: {proc.stderr[-400:]}"}


def _median(values: Sequence[float]) -> float:
    vals = sorted(v for v in values if math.isfinite(v))
    if not vals:
        return math.nan
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


def _f(x: float, fmt: str = ",.0f") -> str:
    return format(x, fmt) if math.isfinite(x) else "-"


def report(results: dict[tuple[str, str], list[dict[str, Any]]]) -> str:
    def med(case: str, kind: str, k: str) -> float:
        return _median([float(r[k]) for r in results.get((case, kind), []) if k in r])

    def pair(case: str, k: str, fmt: str) -> str:
        return f"{_f(med(case, 'server', k), fmt):>8s} {_f(med(case, 'cluster', k), fmt):>8s}"

    lines = [
        "",
        "== One redis-server (S) vs a 3-master Redis Cluster (C): medians over rounds",
        f"{'case':14s} {'events/s S':>11s} {'C':>8s} {'C/S':>5s} | "
        f"{'worker CPU us/ev':>17s} | {'Redis CPU us/ev':>17s} | {'Redis cmd us/ev':>17s} | "
        f"{'Redis cmds/ev':>17s} | {'Redis B/ev':>17s} | busiest | same alerts",
    ]
    for case in CASES:
        rows = results.get((case, "server"), []) + results.get((case, "cluster"), [])
        errs = [r["error"] for r in rows if "error" in r]
        if not rows or errs:
            lines.append(f"{case:14s} error: {errs[:1]}")
            continue
        rs, rc = med(case, "server", "rate"), med(case, "cluster", "rate")
        same = all(r["alerts"] == rows[0]["alerts"] for r in rows)
        lines.append(
            f"{case:14s} {_f(rs):>11s} {_f(rc):>8s} {_f(rc / rs, '.2f'):>5s} | "
            f"{pair(case, 'worker_cpu_us', '.1f')} | {pair(case, 'redis_cpu_us', '.2f')} | "
            f"{pair(case, 'redis_cmd_us', '.2f')} | {pair(case, 'redis_calls', '.4f')} | "
            f"{pair(case, 'redis_bytes', '.0f')} | "
            f"{_f(med(case, 'cluster', 'busiest_share') * 100, '.0f'):>6s}% | "
            f"{'yes' if same else 'NO'} ({len(rows[0]['alerts'])} alerts)"
        )
    lines += [
        "",
        "== Capacity per core, from the CPU per event above (what the scaling model uses)",
        f"{'case':14s} {'worker ev/s':>12s} | {'Redis shard ev/s S':>19s} {'C':>10s} | "
        f"{'commands only S':>16s} {'C':>10s}",
    ]
    for case in CASES:
        if not results.get((case, "cluster")):
            continue
        cpu = med(case, "server", "worker_cpu_us")
        lines.append(
            f"{case:14s} {_f(1e6 / cpu):>12s} | "
            f"{_f(1e6 / med(case, 'server', 'redis_cpu_us')):>19s} "
            f"{_f(1e6 / med(case, 'cluster', 'redis_cpu_us')):>10s} | "
            f"{_f(1e6 / med(case, 'server', 'redis_cmd_us')):>16s} "
            f"{_f(1e6 / med(case, 'cluster', 'redis_cmd_us')):>10s}"
        )
    lines.append(
        "(worker: its process CPU; Redis: redis-server CPU less its idle rate, and the time "
        "inside commands (INFO commandstats); busiest: the master with most command time)"
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000, help="columnar rows (monitor-batch)")
    ap.add_argument("--json-events", type=int, default=24_000, help="single events and labels")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="40k rows, 8k single events, 1 round")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        res = asyncio.run(run_case(json.loads(args.child.read_text())))
        print("RESULT " + json.dumps(res), flush=True)
        return
    if args.quick:
        args.events, args.json_events, args.rounds = 40_000, 8_000, 1
    args.events -= args.events % (MODELS * ROWS_PER_BATCH)
    args.json_events -= args.json_events % MODELS

    with tempfile.TemporaryDirectory(prefix="bench-redis-cluster-") as tmp_name:
        tmp = Path(tmp_name)
        stack = DevStack(tmp / "stack").start()
        cluster = RedisCluster()
        try:
            cluster.start(tmp / "cluster")
            ref = build_reference(
                SimulatedModel(seed=3, model_id="m0").training_data(20_000),
                "m0",
                "1",
                policy=Policy(window_events=500),
                created_at=0,
            )
            (tmp / "reference.json").write_bytes(ref.to_bytes())
            print(
                f"publishing {args.events:,} rows as batches of {ROWS_PER_BATCH}, "
                f"{args.json_events:,} single events and as many labels ...",
                flush=True,
            )
            asyncio.run(publish_inputs(stack.broker.bootstrap, args.events, args.json_events))
            assert isinstance(stack.redis, RedisServer)
            targets = {
                "server": (stack.redis.url, False, RedisMeter([stack.redis])),
                "cluster": (cluster.url, True, RedisMeter(cluster.nodes)),
            }
            for _, _, meter in targets.values():
                meter.idle(3.0)
            key = secrets.token_hex(32)
            results: dict[tuple[str, str], list[dict[str, Any]]] = {}
            run = 0
            for r in range(args.rounds):
                for case in CASES:
                    for kind in KINDS:
                        run += 1
                        url, is_cluster, meter = targets[kind]
                        topic = "rc-batch" if case == "monitor-batch" else "rc-json"
                        want = {
                            "monitor-batch": args.events,
                            "monitor-json": args.json_events,
                            "labels": 2 * args.json_events,
                        }[case]
                        cfg = {
                            "case": case,
                            "bootstrap": stack.broker.bootstrap,
                            "redis": url,
                            "cluster": is_cluster,
                            "prefix": f"b{run}",
                            "group": f"bench-{run}",
                            "alerts": f"rc-alerts-{run}",
                            "topic": topic,
                            "want": want,
                            "ref_path": str(tmp / "reference.json"),
                            "signing_key": key,
                        }
                        before = meter.read()
                        res = _child(cfg, tmp)
                        if "error" not in res:
                            res.update(meter.delta(before, meter.read(), res["events"]))
                        results.setdefault((case, kind), []).append(res)
                        held = ""
                        if case == "labels" and "held_peak" in res:
                            held = f", held labels peak {res['held_peak']:,}"
                        print(
                            f"  round {r + 1} {case:14s} {kind:8s} "
                            f"{res.get('error') or _f(res['rate']) + ' ev/s'}{held}",
                            flush=True,
                        )
        finally:
            cluster.stop()
            stack.stop()
    print(report(results))
    if args.json:
        raw = {f"{case}/{kind}": rows for (case, kind), rows in results.items()}
        args.json.write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
