"""History in a real redis-server: streams, caps, paging, slots, ACL, and the worker's writes."""

from __future__ import annotations

import hashlib
import re
import secrets
from itertools import pairwise
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis

from driftline.config import RedisSettings
from driftline.contract.history import decode_alert, decode_window, encode_window
from driftline.offline.replay import Replayer, replay_history, report_from_replay
from driftline.runtime.devstack import RedisServer
from driftline.runtime.history import load_history, record_history
from driftline.runtime.keyspace import history_key, history_models_key, key_slot
from driftline.runtime.monitor import MonitorWorker
from driftline.runtime.store import HistoryBatch, StateStore, open_store
from driftline.views.report.build import fmt_time, report_from_store, signal_name
from driftline.views.status import model_statuses, render_index
from report_scenarios import (
    churn_events,
    churn_reference,
    quiet_events,
    quiet_reference,
    write_jsonl,
)
from support import ON_BOTH_REDIS, publish, redis_client, redis_env, run_until

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "docs" / "redis.md"
KEY = "history-test-signing-key"


def _store(client, prefix="dl"):
    return StateStore(client, prefix=prefix, group="g", signing_key=KEY)


def test_a_models_history_keys_share_one_slot():
    keys = [history_key("dl", "churn", k) for k in ("windows", "alerts", "perf", "latest")]
    assert len({key_slot(k) for k in keys}) == 1
    assert keys[0] == "dl:hist:{churn}:windows"
    with pytest.raises(ValueError):
        history_key("dl", "a{b}", "windows")
    with pytest.raises(ValueError):
        history_key("dl", "churn", "state")


async def test_a_live_monitor_on_a_nine_minute_cadence_with_a_week_gap_keeps_real_times(
    settings, tmp_path
):
    """Issue 12: a real cadence (one event every 8m43s) with a week-long gap: the live
    monitor's windows, alerts, history, status page and report carry the data's times
    and equal a replay of the same file (the whole stream lies in the past, so the
    processing clock judges nothing future-dated)."""
    step, gap, t0 = 523_000, 7 * 86_400_000, 1_767_225_600_000
    events = churn_events(9000)
    for i, e in enumerate(events):
        e["timestamp"] = t0 + i * step + (gap if i >= 4_500 else 0)
    first, last = events[0]["timestamp"], events[-1]["timestamp"]
    ref = churn_reference()
    client, store = open_store(settings.redis, settings.monitor.group_id)
    await store.put_reference("churn", "1", ref.to_bytes())
    await publish(settings.kafka.bootstrap_servers, settings.topics.predictions, events)
    worker = MonitorWorker(settings, name="cadence-test")
    await worker.start()
    try:
        await run_until(worker, lambda: worker.processed + worker.dead_letters >= len(events))
    finally:
        await worker.close()
    assert worker.processed == len(events)
    try:
        hist = await load_history(store, "churn")
        path = write_jsonl(tmp_path / "e.jsonl", events)
        replayed, _ = replay_history(path, {("churn", "1"): ref})
        want = replayed["churn"]
        assert hist.windows == want.windows and len(hist.windows) >= 10
        for w in hist.windows:
            assert first <= w["start"] <= w["end"] <= last, w
        starts = [w["start"] for w in hist.windows]
        assert starts == sorted(starts)
        # The week shows between two windows (4,500 is a window boundary), at its length.
        gaps = [b["start"] - a["end"] for a, b in pairwise(hist.windows)]
        assert max(gaps) == gap + step
        assert hist.alerts and [a["alert_id"] for a in hist.alerts] == [
            a["alert_id"] for a in want.alerts
        ]
        for a in hist.alerts:
            assert first <= a["detected_at"] <= last, a
        (status,) = await model_statuses(store)
        assert status["last_end"] == want.windows[-1]["end"]
        from_redis = await report_from_store(store, "churn")
        from_file = report_from_replay(path, [ref])
        for d in (from_redis, from_file):
            d.pop("source"), d.pop("generated")
        assert from_redis == from_file
    finally:
        await client.aclose()


async def test_late_and_future_events_show_in_the_metric_and_on_the_status_page(settings):
    """A live monitor over a stream interleaved with a backfill six hours behind (10-minute
    windows, so the backfilled events are late) and three events stamped a day ahead of
    the worker's clock: ``driftline_late_or_future_events_total`` counts exactly what the
    core counted, and the status page says how many, in one line, under the model."""
    import time

    from driftline.contract.keys import StateKey
    from driftline.core.fastloop import ModelState, process_batch
    from driftline.core.reference import Policy, build_reference
    from driftline.demo.simulate import SimulatedModel
    from driftline.runtime import metrics as m

    model, hour, t0 = "late-churn", 3_600_000, 1_767_225_600_000
    policy = Policy(window_events=500, window_seconds=600.0, min_window_events=20)
    data = SimulatedModel(seed=3).training_data(5_000)
    ref = build_reference(data, model, "1", policy=policy, seed=0, created_at=0)
    events = list(SimulatedModel(seed=7, model_id=model).events(6_000))
    live, back = iter(range(t0, t0 + 6_000_000, 1_000)), iter(range(t0 - 6 * hour, t0, 1_000))
    for i, e in enumerate(events):
        e["timestamp"] = next(live) if (i // 37) % 2 == 0 else next(back)
    now = int(time.time() * 1000)
    for i in (1_000, 2_500, 4_000):
        events[i]["timestamp"] = now + 24 * hour

    def series(timing: str) -> float:
        labels = {"model": model, "version": "1", "timing": timing}
        return m.REGISTRY.get_sample_value("driftline_late_or_future_events_total", labels) or 0

    before = {t: series(t) for t in ("late", "future")}
    client, store = open_store(settings.redis, settings.monitor.group_id)
    await store.put_reference(model, "1", ref.to_bytes())
    await publish(settings.kafka.bootstrap_servers, settings.topics.predictions, events)
    worker = MonitorWorker(settings, name="late-test")
    await worker.start()
    try:
        await run_until(worker, lambda: worker.processed + worker.dead_letters >= len(events))
    finally:
        await worker.close()
    try:
        # The oracle: the core over the same events under the same processing clock (the
        # genuine times are months before it; the three are a day after it, whenever the
        # worker ran).
        states: dict[StateKey, ModelState] = {}
        windows = process_batch(events, states, lambda mo, v: ref, now_ms=now).windows
        st = states[StateKey(model, "1")]
        assert st.late_events > 2_500 and st.future_events == 3
        assert series("late") - before["late"] == st.late_events
        assert series("future") - before["future"] == st.future_events
        (status,) = [s for s in await model_statuses(store) if s["model"] == model]
        last, before = windows[-1], windows[-2]
        (stream,) = status["streams"]
        assert (stream["late_events"], stream["future_events"]) == (
            last["late_events"],
            last["future_events"],
        )
        # The last window's own: the difference of the totals at its close and the one
        # before (the totals alone could not say whether it is still happening).
        own = (
            last["late_events"] - before.get("late_events", 0),
            last["future_events"] - before.get("future_events", 0),
        )
        assert (stream["window_late_events"], stream["window_future_events"]) == own
        assert own[0] > 0, "the backfill is interleaved to the end"
        html = render_index([status], now)
        said = (
            f"{own[0]:,} late events in the last window"
            if not own[1]
            else (f"{own[0]:,} late, {own[1]:,} future-dated events in the last window")
        )
        total = f"{last['late_events']:,} late, {last['future_events']:,} future-dated since"
        assert said in html and total in html and "none moved the stream's clock" in html
        calm = {
            **status,
            "streams": [{**stream, "window_late_events": 0, "window_future_events": 0}],
        }
        assert "none in the last window; " in render_index([calm], now)
        quiet = {
            **status,
            "streams": [{**w, "late_events": 0, "future_events": 0} for w in status["streams"]],
        }
        assert "late-future" not in render_index([quiet], now)
    finally:
        await client.aclose()


@ON_BOTH_REDIS
async def test_append_page_and_cap(settings):
    client = redis_client(settings)
    store = _store(client, settings.redis.key_prefix)
    try:
        payloads = [orjson.dumps({"i": i}) for i in range(600)]
        n = await store.append_history([HistoryBatch("m1", perf=payloads, maxlen={"perf": 10})])
        assert n == 600
        # MAXLEN ~ trims whole stream nodes: about the cap, never the whole stream.
        assert 10 <= await client.xlen(history_key(settings.redis.key_prefix, "m1", "perf")) <= 110
        newest = await store.read_history("m1", "perf", count=3)
        assert [orjson.loads(p)["i"] for _, p in newest] == [599, 598, 597]
        older = await store.read_history("m1", "perf", count=2, before=newest[-1][0])
        assert [orjson.loads(p)["i"] for _, p in older] == [596, 595]
        assert await store.history_models() == ["m1"]
        assert await store.read_history("nobody", "windows", count=5) == []
    finally:
        await client.aclose()


@ON_BOTH_REDIS
async def test_the_worker_writes_history_that_equals_a_replay(settings, tmp_path):
    ref, other = churn_reference(), quiet_reference("fraud", "7")
    client, store = open_store(settings.redis, settings.monitor.group_id)
    await store.put_reference("churn", "1", ref.to_bytes())
    await store.put_reference("fraud", "7", other.to_bytes())
    events = churn_events(9000)
    quiet = quiet_events(3000, "fraud", "7")
    await publish(settings.kafka.bootstrap_servers, settings.topics.predictions, events + quiet)
    worker = MonitorWorker(settings, name="history-test")
    total = len(events) + len(quiet)
    await worker.start()
    try:
        await run_until(worker, lambda: worker.processed + worker.dead_letters >= total)
    finally:
        await worker.close()
    assert worker.processed == len(events) + len(quiet)
    try:
        assert await store.history_models() == ["churn", "fraud"]
        hist = await load_history(store, "churn")
        path = write_jsonl(tmp_path / "e.jsonl", events)
        replayed, _ = replay_history(path, {("churn", "1"): ref})
        want = replayed["churn"]
        assert len(hist.windows) == len(want.windows) == 18
        assert hist.windows == want.windows
        assert [a["alert_id"] for a in hist.alerts] == [a["alert_id"] for a in want.alerts]
        assert hist.skipped == 0 and not hist.truncated
        latest = await store.history_latest("churn")
        assert orjson.loads(latest["1\x1f"])["window"] == want.windows[-1]["window"]

        # The status page lists both models from the history set, with their last window.
        statuses = {s["model"]: s for s in await model_statuses(store)}
        assert sorted(statuses) == ["churn", "fraud"]
        assert statuses["churn"]["last_end"] == want.windows[-1]["end"]

        # The same report from Redis as from the replay of the same events.
        from_redis = await report_from_store(store, "churn")
        from_file = report_from_replay(path, [ref])
        for d in (from_redis, from_file):
            d.pop("source"), d.pop("generated")
        assert from_redis == from_file

        # Re-writing a batch (at-least-once) changes nothing once read.
        rp = Replayer({("churn", "1"): ref})
        res = rp.feed(events[:1000])
        assert await record_history(store, res)
        again = await load_history(store, "churn")
        assert again.windows == hist.windows and again.alerts == hist.alerts
    finally:
        await client.aclose()


async def test_unreadable_entries_are_skipped_and_counted(settings):
    client = aioredis.Redis.from_url(settings.redis.url)
    store = _store(client, settings.redis.key_prefix)
    try:
        rp = Replayer({("churn", "1"): churn_reference()})
        res = rp.feed(churn_events(1000))
        assert await record_history(store, res)
        key = history_key(settings.redis.key_prefix, "churn", "windows")
        await client.xadd(key, {"d": b"\x80garbage"})
        await client.xadd(key, {"other": b"field"})
        hist = await load_history(store, "churn")
        assert len(hist.windows) == 2 and hist.skipped == 1
        assert decode_window(encode_window(res.windows[0])) == hist.windows[0]
        assert [decode_alert(a.to_json()) for a in res.alerts] == hist.alerts
    finally:
        await client.aclose()


async def test_the_status_page_says_since_when_an_escalated_episode_fires(settings):
    """An input-drift episode fires (warning), then turns critical. The index said
    'critical input_drift since <the escalation>': the latest alert's time, hours after
    the drift began for a slow escalation. Oracle: the episode's firing alert as the
    replay raised it; the escalation's time is not the 'since'. And it named only the
    alert's feature, the unit an update is about: now its top features by effect."""
    client = aioredis.Redis.from_url(settings.redis.url)
    store = _store(client, settings.redis.key_prefix)
    try:
        rp = Replayer({("churn", "1"): churn_reference()})
        events, raised = churn_events(), []
        for i in range(0, len(events), 500):  # up to the escalation, before any resolution
            res = rp.feed(events[i : i + 500])
            assert await record_history(store, res)
            raised += [decode_alert(a.to_json()) for a in res.alerts]
            if any(a["severity"] == "critical" for a in raised):
                break
        escalated = next(a for a in raised if a["severity"] == "critical")
        assert escalated["status"] == "updated" and not any(
            a["status"] == "resolved" for a in raised
        )
        fired = next(
            a
            for a in raised
            if a["status"] == "firing"
            and (a["kind"], a["episode"]) == (escalated["kind"], escalated["episode"])
        )
        assert fired["detected_at"] < escalated["detected_at"]
        (status,) = await model_statuses(store)
        html = render_index([status], escalated["detected_at"])
        shown = re.findall(rf"{escalated['kind']}[^<]*<small class=muted>v1 since ([^<]*)<", html)
        assert shown == [fmt_time(fired["detected_at"])] != [fmt_time(escalated["detected_at"])]
        (row,) = [a for a in status["active"] if a["kind"] == escalated["kind"]]
        assert row["severity"] == "critical" and row["since"] == fired["detected_at"]
        # What drifted, largest effect first (not only the unit the update was about).
        by_effect = sorted(escalated["top_features"], key=lambda t: -t["score"])[:3]
        assert len(by_effect) > 1
        (names,) = re.findall(rf"{escalated['kind']} · ([^<]*) <small class=muted>v1 since", html)
        assert names.split(", ") == [signal_name(t["feature"]) for t in by_effect]
    finally:
        await client.aclose()


def _acl_line() -> str:
    lines = [ln.strip() for ln in DOCS.read_text().splitlines() if ln.startswith("user driftline ")]
    assert len(lines) == 1
    return lines[0]


async def test_history_works_under_the_documented_acl(tmp_path):
    password, admin_password = secrets.token_hex(16), secrets.token_hex(16)
    line = _acl_line().replace(
        "<sha256-of-password>", hashlib.sha256(password.encode()).hexdigest()
    )
    acl = tmp_path / "users.acl"
    acl.write_text(f"user default off\nuser admin on >{admin_password} ~* &* +@all\n{line}\n")
    server = RedisServer(extra_args=["--aclfile", str(acl)]).start(tmp_path / "redis")
    settings = RedisSettings(
        url=server.url, username="driftline", password=password, state_signing_key=KEY
    )
    client = aioredis.Redis.from_url(settings.url, **settings.client_kwargs())
    admin = aioredis.Redis.from_url(server.url, username="admin", password=admin_password)
    try:
        await admin.execute_command("ACL", "LOG", "RESET")
        store = StateStore.from_settings(client, settings, "driftline-monitor")
        ref = churn_reference()
        await store.put_reference("churn", "1", ref.to_bytes())
        res = Replayer({("churn", "1"): ref}).feed(churn_events(6000))
        assert res.windows and res.alerts
        assert await record_history(store, res)
        hist = await load_history(store, "churn")
        assert len(hist.windows) == len(res.windows)
        assert await store.history_models() == ["churn"]
        assert await store.history_latest("churn")
        # the status page's reads: SSCAN of the models, one pipeline of their history
        (status,) = await model_statuses(store)
        assert status["model"] == "churn" and status["streams"]
        data = await report_from_store(store, "churn")
        assert data["windows"] == len(res.windows)
        assert await admin.execute_command("ACL", "LOG") == []
        assert await admin.exists(history_models_key("dl")) == 1
    finally:
        await client.aclose()
        await admin.aclose()
        server.stop()


async def test_a_version_warming_up_is_listed_on_the_status_page_with_its_progress(
    settings, caplog
):
    """A version deployed without a reference closes no window until the monitor built one
    from its first live events: the status page did not list it at all (no window, no
    history). Now it is listed, with how many events of how many it has; once built,
    that its first window is open; its first closed window then takes the place.
    Oracle: the events sent (the warm-up takes the first WARMUP_EVENTS of them)."""
    from driftline.core.fastloop import WARMUP_EVENTS
    from driftline.demo.simulate import SimulatedModel

    events = list(SimulatedModel(seed=5, model_id="warm", model_version="2").events(3_000))
    client, store = open_store(settings.redis, settings.monitor.group_id)
    sent = 0

    async def send_and_status(n: int) -> dict:
        """Publish the events up to ``n``; a monitor handles them; the model's status."""
        nonlocal sent
        new = events[sent:n]
        sent = n
        await publish(settings.kafka.bootstrap_servers, settings.topics.predictions, new)
        worker = MonitorWorker(settings, name="warm-test")
        await worker.start()
        try:
            await run_until(worker, lambda: worker.processed >= len(new))
        finally:
            await worker.close()
        (status,) = await model_statuses(store)
        return status

    caplog.set_level("WARNING", logger="driftline.monitor")

    def said(text: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if text in r.getMessage()]

    try:
        status = await send_and_status(1_200)
        # The monitor says so as the warm-up starts (it said nothing for 2,000 events).
        assert said("has no reference: building one") == [
            f"model warm version 2 has no reference: building one from its first "
            f"{WARMUP_EVENTS} live events, nothing is tested until then (the status page "
            "shows how far it is). To measure against its training data: driftline "
            "reference build --model warm --version 2 --data FILE"
        ]
        assert status["model"] == "warm" and status["state"] == "unknown"
        assert status["streams"] == []
        assert status["warming_up"] == [
            {"version": "2", "segment": "", "events": 1_200, "of": WARMUP_EVENTS}
        ]
        html = render_index([status], 0)
        assert f"v2: warming up, 1,200 of {WARMUP_EVENTS:,} events" in html
        assert "1 model; 0 drifting, 0 degraded." in html

        status = await send_and_status(WARMUP_EVENTS + 100)  # built; 100 in the open window
        assert status["warming_up"] == [
            {"version": "2", "segment": "", "events": WARMUP_EVENTS, "of": WARMUP_EVENTS}
        ]
        assert f"reference built from its first {WARMUP_EVENTS:,} live events" in render_index(
            [status], 0
        )
        # A restarted monitor resumed the warm-up (its rows were stored): not said again.
        assert len(said("has no reference: building one")) == 1
        assert len(said("had no reference: built")) == 1

        status = await send_and_status(len(events))  # windows closed since
        assert status["warming_up"] == [] and status["streams"][0]["version"] == "2"
        assert "warming up" not in render_index([status], 0)
    finally:
        await client.aclose()


async def test_a_windows_own_late_and_future_counts_carry_over_a_restart(settings):
    """A window summary carries its stream's late/future totals so far; the status page
    shows the last window's own counts, their difference with the previous close. After
    a restart the worker reads the previous totals from the stream's latest record
    (once), so the first window after it is not counted from zero."""
    from driftline.core.fastloop import BatchResult
    from driftline.runtime.history import WindowLateFuture

    client, store = open_store(settings.redis, settings.monitor.group_id)
    base = {"model_id": "lf", "model_version": "1", "segment": "", "start": 0, "end": 1}
    base |= {"count": 10, "tests": [], "episodes": {}}
    try:
        w1 = {**base, "window": 1, "late_events": 5, "future_events": 1}
        first = WindowLateFuture()
        own = await first.of(store, 0, [w1])
        assert own == [(5, 1)]  # no record before it: all its own
        await record_history(store, BatchResult(windows=[w1]), own)

        restarted = WindowLateFuture()
        w2 = {**base, "window": 2, "late_events": 7, "future_events": 1}
        w3 = {**base, "window": 3, "late_events": 7, "future_events": 1}
        own = await restarted.of(store, 0, [w2, w3])
        assert own == [(2, 0), (0, 0)]
        await record_history(store, BatchResult(windows=[w2, w3]), own)
        (status,) = await model_statuses(store)
        (stream,) = status["streams"]
        assert (stream["window_late_events"], stream["window_future_events"]) == (0, 0)
        assert "none in the last window; 7 late, 1 future-dated since" in render_index([status], 0)
        # A stream in time order needs no read and shows nothing.
        calm = {**base, "model_id": "calm", "window": 1}
        assert await restarted.of(store, 0, [calm]) == [None]
    finally:
        await client.aclose()


async def test_driftline_status_prints_the_status_page_in_the_terminal(settings):
    """An on-call on a server without a browser had no terminal view: `driftline
    status` was an unknown command (only `driftline serve` and its /api/status JSON).
    It prints what the index shows, per model; `--model` one; `--json` the same as the
    API. Oracle: the history written."""
    import os
    import subprocess
    import sys

    from driftline.core.fastloop import BatchResult
    from support import MONITOR_SRC

    client, store = open_store(settings.redis, settings.monitor.group_id)
    w = {"model_id": "st", "model_version": "1", "segment": "", "start": 0, "end": 60_000}
    w |= {"count": 500, "tests": [], "episodes": {}, "window": 4, "late_events": 3}
    try:
        await record_history(store, BatchResult(windows=[w]), [(3, 0)])
    finally:
        await client.aclose()
    env = {
        **os.environ,
        **redis_env(settings),
        "PYTHONPATH": MONITOR_SRC,
        "DRIFTLINE_MONITOR__GROUP_ID": settings.monitor.group_id,
    }

    def status(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "driftline", "status", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    out = status("--model", "st")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[:3] == [
        "st  healthy",
        "  no active alert",
        "  v1: window #4 (500 events) ended 1970-01-01 00:01:00 UTC",
    ]
    assert "  Late or future-dated: 3 late events in the last window; 3 late since" in out.stdout
    assert out.stdout.splitlines()[-1] == "1 model; 0 drifting, 0 degraded."
    (model,) = orjson.loads(status("--model", "st", "--json").stdout)["models"]
    assert model["model"] == "st" and model["streams"][0]["window_late_events"] == 3
    missing = status("--model", "nope")
    assert missing.returncode == 2 and "no history for model 'nope'" in missing.stderr


async def test_the_status_page_judges_accuracy_by_the_point_the_report_does(settings):
    """Labels join out of order, so the joiner writes performance points out of event
    time order. The status page read the newest written point and the report the latest
    in event time: the same model was 'degraded' in `driftline status` and 'healthy' in
    its report (seen with a shuffled export). Now the status page takes the latest in
    event time of the whole model as well; the oracle is the report's state."""
    import dataclasses

    from driftline.runtime.history import record_performance

    client = aioredis.Redis.from_url(settings.redis.url)
    store = _store(client, settings.redis.key_prefix)
    model = f"acc-{secrets.token_hex(3)}"
    ref = quiet_reference(model)
    ref = dataclasses.replace(ref, outputs=dataclasses.replace(ref.outputs, accuracy=0.85))
    try:
        await store.put_reference(model, "1", ref.to_bytes())
        rp = Replayer({(model, "1"): ref})
        res = rp.feed(quiet_events(2_000, model))
        assert await record_history(store, res) and not res.alerts
        end = res.windows[-1]["end"]
        point = {"model_version": "1", "coverage": 1.0, "lag_seconds": 60.0, "labels": 250}
        late = {**point, "at": end, "accuracy": 0.86, "estimated_accuracy": 0.85}
        early = {**point, "at": end - 60_000, "accuracy": 0.60, "estimated_accuracy": 0.62}
        segment = {**early, "at": end + 1, "segment": "region=eu"}
        # the latest in event time is written first: later labels joined first
        for p in (late, early, segment):
            assert await record_performance(store, model, [p]) == 1
        report = await report_from_store(store, model)
        (status,) = await model_statuses(store, [model])
        assert report["state"] == "healthy" and not report["accuracy_drop"]
        assert (status["state"], status["accuracy_drop"]) == ("healthy", False)
    finally:
        await client.aclose()
