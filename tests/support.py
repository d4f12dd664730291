"""Helpers shared by tests."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest


def assert_close(a: Any, b: Any, rel: float = 1e-9, path: str = "") -> None:
    """Deep equality, with floats equal to ``rel`` (summation order may differ)."""
    if isinstance(a, bytes | str) and isinstance(b, bytes | str):
        try:
            a2, b2 = orjson.loads(a), orjson.loads(b)
        except orjson.JSONDecodeError:
            assert a == b, f"{path}: {a!r} != {b!r}"
            return
        if isinstance(a2, dict | list):
            assert_close(a2, b2, rel, path)
            return
    if isinstance(a, dict):
        assert isinstance(b, dict), f"{path}: {a!r} != {b!r}"
        assert a.keys() == b.keys(), (
            f"{path}: keys differ (only left: {sorted(a.keys() - b.keys())}, "
            f"only right: {sorted(b.keys() - a.keys())})"
        )
        for k in a:
            assert_close(a[k], b[k], rel, f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list), f"{path}: {a!r} != {b!r}"
        assert len(a) == len(b), f"{path}: lengths differ ({len(a)} != {len(b)})"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, rel, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        numbers = isinstance(a, int | float) and isinstance(b, int | float)
        assert numbers and math.isclose(a, b, rel_tol=rel, abs_tol=1e-12), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def small_model_table(rng: Any, n: int, start: str, *, labels: bool = True) -> Any:
    """``n`` rows of a binary model on a user's small training set, every 10 minutes from
    ``start``: 10 log-normal features, 3 categorical ones with 15 levels (the rarest
    under 1%), a Poisson count, the model's ``prediction`` and ``proba`` and the
    ``target`` label (drawn from ``proba``). The model of
    bench/bench_small_reference.py (bench imports no test code), drawn from
    ``rng`` (a numpy Generator) in the same order.

    ``labels=False`` leaves out ``proba`` and ``target`` (the fast loop only); the
    rows are drawn all the same, so ``rng`` moves on as with labels.
    """
    import numpy as np
    import pandas as pd

    levels = [f"c{i}" for i in range(15)]
    shares = np.arange(15, 0, -1) / 120
    df = pd.DataFrame(
        {"id": np.arange(n), "timestamp": pd.date_range(start, periods=n, freq="10min", tz="UTC")}
    )
    for j in range(10):
        df[f"num{j}"] = rng.lognormal(0, 1, n)
    for j in range(3):
        df[f"cat{j}"] = rng.choice(levels, n, p=shares)
    df["count"] = rng.poisson(2, n)
    p = 1 / (1 + np.exp(-(df["num0"] - 1.5)))
    df["prediction"] = p > 0.5
    target = rng.random(n) < p
    if labels:
        df["proba"] = p
        df["target"] = target
    return df


def mixed_items(events: list[dict[str, Any]]) -> list[Any]:
    """``events`` as runs of single events alternating with columnar batches (same order)."""
    from driftline.contract.columnar import ColumnarBatch, pack_events

    items: list[Any] = []
    i = 0
    while i < len(events):
        n = 1 + (i * 7919) % 400
        chunk = events[i : i + n]
        if (i // 7) % 2:
            items.append(ColumnarBatch.from_dict(pack_events(chunk, max_rows=10_000)[0]))
        else:
            items.extend(chunk)
        i += n
    return items


async def publish(
    bootstrap: str, topic: str, events: list[dict[str, Any]], partitions: int = 2
) -> None:
    """Create ``topic`` and publish events keyed by model id (as the SDK does)."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    prod = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20)
    await prod.start()
    try:
        futs = []
        for e in events:
            futs.append(await prod.send(topic, orjson.dumps(e), key=e["model_id"].encode()))
            if len(futs) >= 5000:
                for f in futs:
                    await f
                futs = []
        for f in futs:
            await f
    finally:
        await prod.stop()


async def read_records(
    bootstrap: str | dict[str, Any], topic: str, idle_ms: int = 1500
) -> list[Any]:
    """Every record of ``topic`` from the beginning: up to the high watermark each
    partition's fetch reports, or (a topic not created yet) until it stays idle.
    ``bootstrap`` is the broker's address or a whole ``KafkaSettings.client_kwargs()``.

    Call it once the writers are done (their sends acknowledged): the watermarks then
    cover every record, and the read ends without waiting ``idle_ms`` out.
    """
    import time

    from aiokafka import AIOKafkaConsumer

    client = {"bootstrap_servers": bootstrap} if isinstance(bootstrap, str) else bootstrap
    cons = AIOKafkaConsumer(topic, **client, group_id=None, auto_offset_reset="earliest")
    await cons.start()
    out: list[Any] = []
    try:
        idle_since = time.monotonic()
        while True:
            batch = await cons.getmany(timeout_ms=100)
            for recs in batch.values():
                out.extend(recs)
            if batch:
                idle_since = time.monotonic()
            # A fetch response (records or none) carries its partition's high watermark.
            caught_up = bool(cons.assignment())
            for tp in cons.assignment():
                end = cons.highwater(tp)
                caught_up = caught_up and end is not None and await cons.position(tp) >= end
            if caught_up:
                return out
            if time.monotonic() - idle_since > idle_ms / 1000:
                return out
    finally:
        await cons.stop()


async def run_until(worker: Any, done: Callable[[], bool], timeout: float = 180.0) -> None:
    """Run a started worker until ``done()`` holds (polled), then stop it.

    What ``run(idle_exit_s=...)`` ends with once the test's records are all handled,
    without waiting the idle time out: the stop lets the batch in hand commit, and the
    test's assertions on counters and stored state stay as they were.
    """
    import asyncio
    import time

    task = asyncio.create_task(worker.run())
    deadline = time.monotonic() + timeout
    try:
        while not done() and not task.done():
            if time.monotonic() > deadline:
                raise AssertionError(f"the worker was not done in {timeout}s")
            await asyncio.sleep(0.02)
    finally:
        worker.stop()
        await task


#: Runs a test that uses the ``settings`` fixture on one redis-server and again on the
#: session's local Redis Cluster (three masters): same test, same expected results.
ON_BOTH_REDIS = pytest.mark.parametrize("redis_kind", ["server", "cluster"])


def redis_settings(stack: Any, request: Any, kind: str) -> dict[str, Any]:
    """``redis`` settings of the session's server, or (started on first use) cluster."""
    if kind == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        return {"url": cluster.url, "cluster": True}
    if kind != "server":
        raise ValueError(f"redis_kind is 'server' or 'cluster', not {kind!r}")
    return {"url": stack.redis.url}


def redis_env(settings: Any) -> dict[str, str]:
    """``DRIFTLINE_REDIS__*`` variables of a worker child pointed at ``settings.redis``."""
    return {
        "DRIFTLINE_REDIS__URL": settings.redis.url,
        "DRIFTLINE_REDIS__CLUSTER": "true" if settings.redis.cluster else "false",
        "DRIFTLINE_REDIS__KEY_PREFIX": settings.redis.key_prefix,
    }


async def read_all(bootstrap: str, topic: str, idle_ms: int = 1500) -> list[bytes]:
    """Every record value of ``topic`` from the beginning until it stays idle."""
    return [r.value for r in await read_records(bootstrap, topic, idle_ms)]


async def read_dlq(
    bootstrap: str, topic: str, idle_ms: int = 1500
) -> list[tuple[bytes, dict[str, str]]]:
    """Every record of a dead-letter topic: ``(value, headers)``, from the beginning."""
    records = await read_records(bootstrap, topic, idle_ms)
    return [(r.value, {k: v.decode() for k, v in r.headers}) for r in records]


async def stored_states(settings: Any, partitions: int = 2) -> dict[str, bytes]:
    """The monitor's state records in Redis, merged over partitions (verified)."""
    from driftline.runtime.monitor import read_states
    from driftline.runtime.store import open_store

    client, store = open_store(settings.redis, settings.monitor.group_id)

    out: dict[str, bytes] = {}
    try:
        for p in range(partitions):
            # Taking a lease fences any worker still running: call after workers stopped.
            lease = await store.acquire(settings.topics.predictions, p)
            out.update(await read_states(store, lease))
    finally:
        await client.aclose()
    return out


# --------------------------------------------------------------------------- reliability
# Helpers for tests/reliability: monitor subprocesses, raw Redis reads that take no lease,
# Kafka group offsets, and the "equals a clean replay" invariant.

MONITOR_SRC = str(__import__("pathlib").Path(__import__("driftline").__file__).parents[1])


def monitor_env(settings: Any, **extra: str) -> dict[str, str]:
    """Environment of a ``python -m driftline monitor`` child pointed at ``settings``.

    PYTHONPATH names the source tree this test process imported, so the child runs the
    same code whatever the interpreter's editable install points at.
    """
    import os

    env = {
        **os.environ,
        "PYTHONPATH": MONITOR_SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        **redis_env(settings),
        "DRIFTLINE_TOPICS__PREDICTIONS": settings.topics.predictions,
        "DRIFTLINE_TOPICS__ALERTS": settings.topics.alerts,
        "DRIFTLINE_MONITOR__GROUP_ID": settings.monitor.group_id,
        "DRIFTLINE_MONITOR__MAX_BATCH_EVENTS": "500",
        # A crashed member's partitions move after this: short, to keep the suite fast.
        "DRIFTLINE_MONITOR__SESSION_TIMEOUT_MS": str(settings.monitor.session_timeout_ms),
        "DRIFTLINE_METRICS_PORT": "0",
    }
    env.update(extra)
    return env


#: Runs ``driftline monitor`` with a fault injected from the test side.
FAULT_RUNNER = str(__import__("pathlib").Path(__file__).parent / "reliability" / "fault_runner.py")


class MonitorProc:
    """A ``driftline monitor`` (or ``command``) child process logging to a file.

    ``fault`` (``<crash|stop|hang>_<point>:<n>``) runs it through ``fault_runner.py``.
    """

    def __init__(
        self,
        settings: Any,
        log_path: Any,
        name: str = "monitor",
        idle_exit: float | None = 3.0,
        fault: str | None = None,
        command: str = "monitor",
        **env: str,
    ) -> None:
        import subprocess
        import sys

        self.log_path = log_path
        entry = [FAULT_RUNNER, fault] if fault else ["-m", "driftline"]
        args = [sys.executable, *entry, command, "--name", name]
        if idle_exit is not None:
            args += ["--idle-exit", str(idle_exit)]
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                args,
                env=monitor_env(settings, **env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        with open(self.log_path, "rb") as fh:
            return fh.read().decode(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 120.0) -> int:
        """Wait for the process to exit (without blocking the event loop)."""
        import asyncio
        import time

        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError(f"monitor did not exit in {timeout}s:\n{self.log()[-3000:]}")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def stopped(self) -> bool:
        """True while the process is stopped by a signal (SIGSTOP)."""
        with open(f"/proc/{self.pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "T"

    async def metrics_port(self, timeout: float = 30.0) -> int:
        import asyncio
        import re
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"metrics on :(\d+)/metrics", self.log())
            if found:
                return int(found.group(1))
            await asyncio.sleep(0.05)
        raise AssertionError("the monitor never logged its metrics port")

    async def scrape(self) -> str:
        """The child's /metrics text."""
        import asyncio
        import urllib.request

        port = await self.metrics_port()

        def get() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                return str(r.read().decode())

        return await asyncio.to_thread(get)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` in a /metrics text whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def _store_for(settings: Any, client: Any) -> Any:
    from driftline.runtime.store import StateStore

    return StateStore(
        client,
        prefix=settings.redis.key_prefix,
        group=settings.monitor.group_id,
        signing_key=settings.redis.state_signing_key.get_secret_value().encode(),
    )


def redis_client(settings: Any) -> Any:
    """A redis.asyncio client for ``settings`` (TLS, ACL user, cluster and all)."""
    from driftline.runtime.redis_client import connect_redis

    return connect_redis(settings.redis)


async def put_reference(settings: Any, ref: Any) -> None:
    """Store ``ref`` under ``settings``'s key prefix."""
    client = redis_client(settings)
    try:
        await _store_for(settings, client).put_reference(
            ref.model_id, ref.model_version, ref.to_bytes()
        )
    finally:
        await client.aclose()


async def redis_offsets(settings: Any, partitions: int = 2) -> dict[int, int]:
    """Offset stored in each partition's meta (-1: none). Takes no lease."""
    client = redis_client(settings)
    store = _store_for(settings, client)
    try:
        out = {}
        for p in range(partitions):
            # HMGET, not HGET: the documented service ACL grants only what the store uses.
            (v,) = await client.hmget(store.keys(settings.topics.predictions, p).meta, ["offset"])
            out[p] = int(v) if v is not None else -1
        return out
    finally:
        await client.aclose()


async def raw_partition_state(settings: Any, partitions: int = 2) -> dict[str, Any]:
    """Meta offsets, state hashes and outbox lengths as stored (no lease, no fencing)."""
    client = redis_client(settings)
    store = _store_for(settings, client)
    try:
        out: dict[str, Any] = {}
        for p in range(partitions):
            k = store.keys(settings.topics.predictions, p)
            (offset,) = await client.hmget(k.meta, ["offset"])
            out[f"{p}.offset"] = None if offset is None else int(offset)
            out[f"{p}.state"] = await client.hgetall(k.state)
            out[f"{p}.outbox"] = await client.llen(k.outbox)
        return out
    finally:
        await client.aclose()


async def kafka_committed(
    bootstrap: str, group: str, topic: str, partitions: int = 2
) -> dict[int, int]:
    """The group's committed Kafka offsets (-1: none), read without joining the group."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    cons = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await cons.start()
    try:
        out = {}
        for p in range(partitions):
            c = await cons.committed(TopicPartition(topic, p))
            out[p] = -1 if c is None else int(c)
        return out
    finally:
        await cons.stop()


async def commit_group_offsets(bootstrap: str, group: str, offsets: dict[Any, int]) -> None:
    """Commit ``offsets`` ({TopicPartition: offset}) for ``group`` as an outside consumer.

    Call it while no other member is in the group (e.g. to rewind the group to offset
    0). It joins the group first: Tansu refuses commits from outside the group.
    """
    import asyncio

    from aiokafka import AIOKafkaConsumer

    topics = sorted({tp.topic for tp in offsets})
    cons = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await cons.start()
    try:
        for _ in range(300):
            if set(offsets) <= cons.assignment():
                break
            await cons.getmany(timeout_ms=100, max_records=1)
            await asyncio.sleep(0.05)
        await cons.commit(offsets)
    finally:
        await cons.stop()


async def assert_equals_replay(
    settings: Any, replay: Any, partitions: int = 2, alerts: list[bytes] | None = None
) -> list[dict[str, Any]]:
    """The invariant: stored states and the alert-id set equal a clean replay's.

    Returns the alerts read from the topic (duplicates included). Call after the
    workers stopped: it takes leases, which fences any worker still running.
    """
    values = alerts
    if values is None:
        values = await read_all(settings.kafka.bootstrap_servers, settings.topics.alerts)
    got = [orjson.loads(v) for v in values]
    assert {a["alert_id"] for a in got} == {a.alert_id for a in replay.result.alerts}
    stored = await stored_states(settings, partitions)
    assert set(stored) == {k.encode() for k in replay.result.states}
    for key, st in replay.result.states.items():
        assert_close(stored[key.encode()], st.to_bytes(), path=key.encode())
    return got


class TcpProxy:
    """A small asyncio TCP proxy for fault tests: latency, cut connections, refusal.

    Runs in the test's event loop. ``latency`` delays every chunk in both directions;
    :meth:`cut` closes every open connection and refuses new ones until :meth:`restore`.
    """

    def __init__(self, target_port: int, port: int | None = None) -> None:
        from driftline.runtime.devstack import free_port

        self.target_port = target_port
        self.port = port or free_port()
        self.latency = 0.0
        self.refusing = False
        self.connections = 0
        self._server: Any = None
        self._writers: set[Any] = set()

    async def start(self) -> TcpProxy:
        import asyncio

        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def _serve(self, reader: Any, writer: Any) -> None:
        import asyncio

        if self.refusing:
            writer.close()
            return
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.connections += 1
        self._writers.update((writer, up_w))

        async def pump(src: Any, dst: Any) -> None:
            try:
                while True:
                    data = await src.read(65536)
                    if not data:
                        break
                    if self.latency:
                        await asyncio.sleep(self.latency)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_w), pump(up_r, writer))
        self._writers.discard(writer)
        self._writers.discard(up_w)

    def cut(self) -> None:
        """Drop every open connection and refuse new ones (an unreachable server)."""
        self.refusing = True
        for w in list(self._writers):
            w.close()
        self._writers.clear()

    def restore(self) -> None:
        self.refusing = False
        self.latency = 0.0

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@contextlib.asynccontextmanager
async def broker_behind(proxy: Any, data_dir: Any) -> AsyncIterator[tuple[Any, Any]]:
    """A Tansu that advertises ``proxy`` (built on the broker's port, e.g. ``TcpProxy``),
    so every client connection, the ones after metadata included, goes through it."""
    from driftline.runtime.devstack import TansuBroker

    broker = TansuBroker()
    front = proxy(broker.port)
    broker.advertised = f"tcp://127.0.0.1:{front.port}"
    await front.start()
    broker.start(data_dir)
    try:
        yield broker, front
    finally:
        await front.stop()
        broker.stop()


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux /proc)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def couple(
    features: list[dict[str, Any]], rho: list[float], n_numeric: int = 20
) -> list[dict[str, Any]]:
    """Tie f01 to f00 in ``SimulatedModel(n_numeric)`` feature dicts: f01's latent becomes
    ``rho z00 + sqrt(1 - rho^2) z01`` per row (both latents standard normal, so every
    marginal is unchanged). The multivariate detector's test streams (issue 15)."""
    from driftline.demo.simulate import SimulatedModel

    sim = SimulatedModel(n_numeric)
    m0, s0, m1, s1 = sim.means[0], sim.scales[0], sim.means[1], sim.scales[1]
    for f, r in zip(features, rho, strict=True):
        z0, z1 = (f["f00"] - m0) / s0, (f["f01"] - m1) / s1
        f["f01"] = round(float(m1 + s1 * (r * z0 + math.sqrt(1 - r * r) * z1)), 6)
    return features


@functools.cache
def pair_reference(model: str = "pair", version: str = "1") -> Any:
    """A reference with f01 following f00 (+0.8); built once per process and arguments
    (tests only read it: the profile is frozen)."""
    from driftline.core.reference import build_reference
    from driftline.demo.simulate import SimulatedModel

    data = SimulatedModel(seed=3, model_id=model, model_version=version).training_data(20_000)
    couple(data.features, [0.8] * len(data.features))
    return build_reference(data, model, version, seed=0, created_at=0)


def pair_events(seed: int, n: int, change: int, model: str = "pair") -> list[dict[str, Any]]:
    """Events whose f00/f01 correlation reverses (+0.8 -> -0.8) at ``change``."""
    from driftline.demo.simulate import SimulatedModel

    events = list(SimulatedModel(seed=seed, model_id=model).events(n))
    couple([e["features"] for e in events], [0.8 if i < change else -0.8 for i in range(n)])
    return events


def join_snapshot(res: Any, unit: Any) -> list[Any]:
    """What one batch of the label join leaves, to compare two ways of joining it: every
    ``JoinResult`` field in order (dicts with their order), its dirty state fields, the
    state as stored, and each stream's buckets, last window and class table."""
    return [
        [(f, repr(getattr(res, f))) for f in res.__dataclass_fields__ if f != "dirty"],
        sorted(res.dirty),
        list(unit.to_fields().items()),
        [(k, list(st.buckets), st.last, st.classes) for k, st in unit.perf.items()],
    ]
