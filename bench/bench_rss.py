"""Worker memory over time: a steady stream for N minutes, or many distinct models.

Run (prints a table; nothing is asserted)::

    python bench/bench_rss.py --minutes 10              # steady stream, RSS every 30 s
    python bench/bench_rss.py --distinct 100000         # one event per model
    python bench/bench_rss.py --distinct 100000 --one-model  # the same events, one model
    python bench/bench_rss.py --src /path/to/other/src  # the same against another tree

It starts its own Tansu broker and redis-server (``driftline.runtime.devstack``), stores
references for ``--models`` simulated models, starts ``python -m driftline monitor`` as a
child process and samples its resident memory (``/proc/<pid>/status`` VmRSS) and the
number of series on its ``/metrics`` while a publisher sends ``--rate`` events/s.

Steady mode answers issue 16's degraded item "RSS grows ~10 MiB every 30 s under a
steady stream" (references re-read every 30 s used to give new plans in a cache keyed
by object id); ``--reference-ttl 1`` re-reads them every second to make any such growth
30 times faster. Distinct mode answers row 12 ("100k distinct model_ids, one event each:
RSS 69 -> 557 MiB, 300,022 series"): the worker keeps at most
``monitor.max_states_in_memory`` states, refuses streams past
``monitor.max_streams_per_partition`` (DLQ, ``model_limit``) and exports at most
``metrics_max_models`` models' series. ``--src`` points the child at another source tree
(e.g. a checkout from before the fix) to print a baseline beside.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(SRC))

from driftline.config import Settings  # noqa: E402
from driftline.core.reference import build_reference  # noqa: E402
from driftline.demo.simulate import SimulatedModel  # noqa: E402
from driftline.runtime.devstack import DevStack  # noqa: E402
from driftline.runtime.store import open_store  # noqa: E402


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def series(port: int) -> int:
    text = _metrics_text(port)
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


class Monitor:
    """``driftline monitor`` as a child process, logging to a file."""

    def __init__(self, settings: Settings, src: Path, log: Path, env: dict[str, str]) -> None:
        self.log = log
        key = settings.redis.state_signing_key.get_secret_value()
        child_env = {
            **os.environ,
            "PYTHONPATH": str(src),
            "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "DRIFTLINE_REDIS__URL": settings.redis.url,
            "DRIFTLINE_REDIS__KEY_PREFIX": settings.redis.key_prefix,
            "DRIFTLINE_TOPICS__PREDICTIONS": settings.topics.predictions,
            "DRIFTLINE_TOPICS__ALERTS": settings.topics.alerts,
            "DRIFTLINE_MONITOR__GROUP_ID": settings.monitor.group_id,
            "DRIFTLINE_REDIS__STATE_SIGNING_KEY": key,
            "DRIFTLINE_METRICS_PORT": "0",
            **env,
        }
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "driftline", "monitor", "--name", "rss"],
                env=child_env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def port(self) -> int:
        for _ in range(600):
            found = re.search(r"metrics on :(\d+)/metrics", self.log.read_text())
            if found:
                return int(found.group(1))
            time.sleep(0.1)
        raise SystemExit(f"the monitor never started:\n{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def steady(args: argparse.Namespace, settings: Settings, mon: Monitor) -> None:
    models = [SimulatedModel(seed=i, model_id=f"m{i}") for i in range(args.models)]
    client, store = open_store(settings.redis, settings.monitor.group_id)
    for sm in models:
        ref = build_reference(sm.training_data(5_000), sm.model_id, "1", seed=0, created_at=0)
        await store.put_reference(sm.model_id, "1", ref.to_bytes())
    await client.aclose()
    streams = [iter(sm.events(10**9)) for sm in models]
    prod = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=20)
    await prod.start()
    port = await asyncio.to_thread(mon.port)
    start = time.monotonic()
    end = start + args.minutes * 60
    next_sample = start
    sent = 0
    print(f"{'t (s)':>7} {'RSS (MiB)':>10} {'sent':>10} {'series':>7}", flush=True)
    samples: list[tuple[float, float]] = []
    try:
        while time.monotonic() < end:
            tick = time.monotonic()
            for _ in range(args.rate // 10):
                e = next(streams[sent % len(streams)])
                key = e["model_id"].encode()
                await prod.send(settings.topics.predictions, orjson.dumps(e), key=key)
                sent += 1
            if tick >= next_sample:
                rss = rss_mib(mon.proc.pid)
                n = await asyncio.to_thread(series, port)
                samples.append((tick - start, rss))
                print(f"{tick - start:7.0f} {rss:10.1f} {sent:10d} {n:7d}", flush=True)
                next_sample += args.interval
            await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
    finally:
        await prod.stop()
    if len(samples) >= 3:
        # Growth after the first two samples (start-up, first references and plans).
        (t0, r0), (t1, r1) = samples[2], samples[-1]
        slope = (r1 - r0) / max(1e-9, t1 - t0) * 30
        print(
            f"RSS growth after warm-up: {slope:+.2f} MiB per 30 s "
            f"({r0:.1f} -> {r1:.1f} MiB over {t1 - t0:.0f} s)"
        )
    print("baseline (issue 16, before the fix): about +10 MiB per 30 s")


async def distinct(args: argparse.Namespace, settings: Settings, mon: Monitor) -> None:
    prod = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=50, max_batch_size=1 << 20
    )
    await prod.start()
    port = await asyncio.to_thread(mon.port)
    rss0 = rss_mib(mon.proc.pid)
    t0 = 1_767_225_600_000
    try:
        futs = []
        for i in range(args.distinct):
            e = {
                "prediction_id": f"d{i}",
                "model_id": "model-0" if args.one_model else f"model-{i}",
                "model_version": "1",
                "timestamp": t0 + i,
                "features": {"x": float(i % 97), "y": "ab"[i % 2]},
                "prediction": 0.5,
            }
            key = e["model_id"].encode()
            futs.append(await prod.send(settings.topics.predictions, orjson.dumps(e), key=key))
            if len(futs) >= 5_000:
                await asyncio.gather(*futs)
                futs = []
        await asyncio.gather(*futs)
    finally:
        await prod.stop()
    print(f"{'t (s)':>7} {'RSS (MiB)':>10} {'series':>7}  ({args.distinct} models, one event each)")
    start = time.monotonic()
    idle = 0
    last = ""
    while idle < 3:
        await asyncio.sleep(args.interval / 3)
        rss = rss_mib(mon.proc.pid)
        n = await asyncio.to_thread(series, port)
        text = await asyncio.to_thread(_metrics_text, port)
        done = sum(float(v) for v in re.findall(_DONE, text))
        line = f"{time.monotonic() - start:7.0f} {rss:10.1f} {n:7d}  events done {done:.0f}"
        print(line, flush=True)
        idle = idle + 1 if line.split()[-1] == last else 0
        last = line.split()[-1]
    print(
        f"RSS at start {rss0:.1f} MiB; baseline (issue 16, before the fix): 69 -> 557 MiB "
        "and 300,022 series for 100k models"
    )


#: Events a worker finished with (processed or dead-lettered), in /metrics text.
_DONE = r'driftline_events_total\{[^}]*outcome="(?:processed|dead_letter)"[^}]*\} (\S+)'


def _metrics_text(port: int) -> str:
    # Generous: before the cap, 100k models made /metrics take seconds to render.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=120) as r:
        return r.read().decode()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=int, default=2_000, help="events per second (steady)")
    ap.add_argument("--models", type=int, default=10, help="models with references (steady)")
    ap.add_argument("--interval", type=float, default=30.0, help="seconds between samples")
    ap.add_argument("--reference-ttl", type=float, default=30.0)
    ap.add_argument("--distinct", type=int, default=0, help="distinct models, one event each")
    ap.add_argument(
        "--one-model", action="store_true", help="with --distinct: all events of one model"
    )
    ap.add_argument("--src", type=Path, default=SRC, help="source tree the monitor runs from")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stack = DevStack(Path(tmp)).start()
        try:
            u = uuid.uuid4().hex[:8]
            settings = Settings(
                kafka={"bootstrap_servers": stack.broker.bootstrap},
                redis={
                    "url": stack.redis.url,
                    "key_prefix": f"b{u}",
                    "state_signing_key": secrets.token_hex(24),
                },
                topics={"predictions": f"predictions-{u}", "alerts": f"alerts-{u}"},
                monitor={"group_id": f"rss-{u}"},
            )
            await create_topic(stack.broker.bootstrap, settings.topics.predictions, 4)
            env = {"DRIFTLINE_MONITOR__REFERENCE_TTL_SECONDS": str(args.reference_ttl)}
            mon = Monitor(settings, args.src, Path(tmp) / "monitor.log", env)
            try:
                if args.distinct:
                    await distinct(args, settings, mon)
                else:
                    await steady(args, settings, mon)
            finally:
                mon.stop()
        finally:
            stack.stop()


if __name__ == "__main__":
    asyncio.run(main())
