"""History: window summaries, alerts and performance points per model, for people.

The monitor's state in Redis is what the detectors need; it keeps no past. The report
and the status page need the past: what each closed window measured, which alerts
fired and resolved, and (from the slow loop) accuracy over time. This module keeps that
history in capped Redis Streams, one set per model, all under the model's hash tag
(Redis Cluster safe)::

    {prefix}:hist:{<model>}:windows   stream  one entry per closed window
    {prefix}:hist:{<model>}:alerts    stream  one entry per published alert
    {prefix}:hist:{<model>}:perf      stream  accuracy / coverage / lag points (slow loop)
    {prefix}:hist:{<model>}:latest    hash    version\\x1fsegment -> last window, small
    {prefix}:hist:models              set     models with history (the status page's list)

Entries are **plain JSON, not signed**. History is observability data, not state:
nothing in Driftline decides anything from it (the detectors read only the signed
state), so a forged entry can mislead a chart but never an alert or a commit; readers
treat every entry as untrusted input (parsed by orjson, shape-checked, skipped and
counted when malformed, rendered escaped), and nothing is ever unpickled. Leaving it
unsigned keeps it readable with ``redis-cli XREVRANGE`` and by tools that do not hold
the state signing key. The ACL in docs/redis.md is what keeps other writers out.

Delivery is **best effort**: the worker appends after its state commit succeeded
(:func:`record_history`), so history never slows or fails a commit. A crash between the
commit and the append loses that batch's entries (a gap in the charts, at most one
batch per crash); a retried or repeated append writes an entry twice. Readers
therefore deduplicate: windows by (version, segment, window index, start, end), alerts
by ``alert_id``, performance points by (version, segment, time).

Caps: the window stream of a model is trimmed (``XADD MAXLEN ~``) to about
:data:`WINDOW_BUDGET_BYTES` of entries (at least :data:`MIN_WINDOWS`, at most
:data:`MAX_WINDOWS`), so a model with 300 features keeps fewer windows than one with
20; alerts and performance points keep :data:`MAX_ALERTS` / :data:`MAX_PERF`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from driftline.events import DriftAlert
from driftline.monitor import BatchResult
from driftline.reference import ReferenceProfile
from driftline.store import HistoryBatch, StateStore

__all__ = [
    "HISTORY_FORMAT",
    "History",
    "decode_alert",
    "decode_perf",
    "decode_window",
    "encode_perf",
    "encode_window",
    "history_batches",
    "load_history",
    "record_alerts",
    "record_history",
    "record_performance",
    "replay_history",
    "window_maxlen",
]

log = logging.getLogger("driftline.history")

#: Layout version of history entries (the ``f`` field of every entry).
HISTORY_FORMAT = 1
#: About this many bytes of window entries are kept per model.
WINDOW_BUDGET_BYTES = 16 * 1024 * 1024
MIN_WINDOWS = 100
MAX_WINDOWS = 10_000
MAX_ALERTS = 5_000
MAX_PERF = 10_000
#: Entries fetched per XREVRANGE call when reading.
PAGE = 200

# Per-test fields of the core's window summary, stored column-wise (the row form repeats
# every key for every test: columns make an entry about 2.5 times smaller).
_TEST_COLUMNS = ("feature", "statistic", "value", "threshold", "p_value", "drifted")
_EXTRA_COLUMNS = ("ks", "js", "chi2")


def _sig(x: Any, digits: int = 5) -> Any:
    """Round a float to ``digits`` significant digits (JSON-safe: NaN/inf -> None)."""
    if x is None or isinstance(x, bool) or not isinstance(x, int | float):
        return x
    if isinstance(x, int):
        return x
    if not math.isfinite(x):
        return None
    if x == 0.0:
        return 0.0
    return float(f"{x:.{digits}g}")


# ---------------------------------------------------------------------- encoding


def encode_window(summary: Mapping[str, Any]) -> bytes:
    """One window summary of the core (:attr:`BatchResult.windows`) as a history entry."""
    tests: Sequence[Mapping[str, Any]] = summary.get("tests", ())
    cols: dict[str, list[Any]] = {c: [] for c in _TEST_COLUMNS}
    extra: dict[str, list[Any]] = {c: [] for c in _EXTRA_COLUMNS}
    for t in tests:
        cols["feature"].append(t["feature"])
        cols["statistic"].append(t["statistic"])
        cols["value"].append(_sig(t["value"]))
        cols["threshold"].append(_sig(t["threshold"]))
        cols["p_value"].append(_sig(t.get("p_value"), 4))
        cols["drifted"].append(1 if t.get("drifted") else 0)
        for c in _EXTRA_COLUMNS:
            extra[c].append(_sig(t.get(c)))
    for c, values in extra.items():
        if any(v is not None for v in values):
            cols[c] = values
    return orjson.dumps(
        {
            "f": HISTORY_FORMAT,
            "model_id": summary["model_id"],
            "model_version": summary["model_version"],
            "segment": summary.get("segment", ""),
            "reference": summary.get("reference", ""),
            "window": summary["window"],
            "start": summary["start"],
            "end": summary["end"],
            "count": summary["count"],
            "episodes": summary.get("episodes", {}),
            "tests": cols,
            "hist": summary.get("hist", {}),
        }
    )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def decode_window(data: bytes) -> dict[str, Any]:
    """A history entry back in the core's row form (``tests`` as a list of dicts).

    Raises
    ------
    ValueError
        Not a window entry of a known format (the entry is skipped by readers).
    """
    obj = orjson.loads(data)
    if not isinstance(obj, dict) or obj.get("f") != HISTORY_FORMAT:
        raise ValueError("not a window history entry of a known format")
    for k in ("model_id", "model_version", "segment", "reference"):
        if not isinstance(obj.get(k), str):
            raise ValueError(f"window entry: {k} is not a string")
    for k in ("window", "start", "end", "count"):
        if not _is_int(obj.get(k)):
            raise ValueError(f"window entry: {k} is not an integer")
    cols = obj.get("tests")
    hist = obj.get("hist")
    episodes = obj.get("episodes")
    if not isinstance(cols, dict) or not isinstance(hist, dict) or not isinstance(episodes, dict):
        raise ValueError("window entry: tests, hist and episodes must be objects")
    n = len(cols.get("feature", []))
    names = [c for c in (*_TEST_COLUMNS, *_EXTRA_COLUMNS) if c in cols]
    if any(not isinstance(cols[c], list) or len(cols[c]) != n for c in names):
        raise ValueError("window entry: test columns differ in length")
    tests = []
    for i in range(n):
        t = {c: cols[c][i] for c in names}
        if not isinstance(t.get("feature"), str) or not isinstance(t.get("statistic"), str):
            raise ValueError("window entry: a test without feature or statistic")
        for c in ("value", "threshold"):
            if not isinstance(t.get(c), int | float) or isinstance(t.get(c), bool):
                t[c] = math.nan if c == "value" else 0.0
        t["drifted"] = bool(t.get("drifted"))
        tests.append(t)
    clean_hist: dict[str, list[float]] = {}
    for k, v in hist.items():
        if isinstance(v, list) and all(isinstance(x, int | float) for x in v):
            clean_hist[str(k)] = v
    obj["tests"] = tests
    obj["hist"] = clean_hist
    obj["episodes"] = {str(k): bool(v) for k, v in episodes.items()}
    del obj["f"]
    return obj


def decode_alert(data: bytes) -> dict[str, Any]:
    """An alert entry (the alert event's JSON), validated against the alert contract.

    Raises
    ------
    ValueError
        Not a valid alert event.
    """
    alert = DriftAlert.model_validate(orjson.loads(data))
    out: dict[str, Any] = alert.model_dump(mode="json")
    return out


#: Fields of a performance point (written by the slow loop); all but the first three
#: are optional and may be null.
PERF_FIELDS = (
    "model_version",
    "segment",
    "at",
    "accuracy",
    "estimated_accuracy",
    "coverage",
    "lag_seconds",
    "labels",
)


def encode_perf(point: Mapping[str, Any]) -> bytes:
    """A performance point as a history entry.

    ``point`` has ``model_version`` (str), ``at`` (event-time epoch ms) and any of
    ``accuracy`` and ``estimated_accuracy`` (0..1), ``coverage`` (labelled share of
    predictions, 0..1), ``lag_seconds`` (label delay) and ``labels`` (count); an
    optional ``segment`` (str, default ``""``).
    """
    out: dict[str, Any] = {"f": HISTORY_FORMAT}
    for k in PERF_FIELDS:
        v = point.get(k)
        out[k] = v if k in ("model_version", "segment", "at", "labels") else _sig(v)
    out["segment"] = out["segment"] or ""
    return orjson.dumps(out)


def decode_perf(data: bytes) -> dict[str, Any]:
    """Inverse of :func:`encode_perf` (shape-checked; raises ValueError)."""
    obj = orjson.loads(data)
    if not isinstance(obj, dict) or obj.get("f") != HISTORY_FORMAT:
        raise ValueError("not a performance history entry of a known format")
    if not isinstance(obj.get("model_version"), str) or not _is_int(obj.get("at")):
        raise ValueError("performance entry: model_version and at are required")
    out: dict[str, Any] = {"model_version": obj["model_version"], "at": obj["at"]}
    out["segment"] = obj["segment"] if isinstance(obj.get("segment"), str) else ""
    for k in PERF_FIELDS[3:]:
        v = obj.get(k)
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        out[k] = v if ok else None
    return out


def _latest_entry(summary: Mapping[str, Any]) -> bytes:
    """The small record of a model's last window kept in the ``latest`` hash."""
    drifted = sorted(
        (
            (t["value"] / t["threshold"] if t["threshold"] else 0.0, t["feature"], t["value"])
            for t in summary.get("tests", ())
            if t.get("drifted") and not str(t["feature"]).startswith("__")
        ),
        reverse=True,
    )
    return orjson.dumps(
        {
            "f": HISTORY_FORMAT,
            "model_version": summary["model_version"],
            "segment": summary.get("segment", ""),
            "reference": summary.get("reference", ""),
            "window": summary["window"],
            "start": summary["start"],
            "end": summary["end"],
            "count": summary["count"],
            "episodes": summary.get("episodes", {}),
            "drifted": [{"feature": f, "value": _sig(v)} for _, f, v in drifted[:5]],
            "written_ms": int(time.time() * 1000),
        }
    )


def window_maxlen(entry_bytes: int) -> int:
    """How many window entries of this size a model keeps (the byte budget)."""
    return max(MIN_WINDOWS, min(MAX_WINDOWS, WINDOW_BUDGET_BYTES // max(1, entry_bytes)))


# ---------------------------------------------------------------------- writing


def history_batches(
    windows: Iterable[Mapping[str, Any]], alerts: Iterable[DriftAlert]
) -> list[HistoryBatch]:
    """Group a batch's window summaries and alerts per model into store batches."""
    per_model: dict[str, dict[str, Any]] = {}

    def slot(model: str) -> dict[str, Any]:
        return per_model.setdefault(model, {"windows": [], "alerts": [], "latest": {}})

    for w in windows:
        s = slot(w["model_id"])
        s["windows"].append(encode_window(w))
        s["latest"][f"{w['model_version']}\x1f{w.get('segment', '')}"] = _latest_entry(w)
    for a in alerts:
        slot(a.model_id)["alerts"].append(a.to_json())
    out = []
    for model, s in per_model.items():
        largest = max((len(b) for b in s["windows"]), default=1)
        out.append(
            HistoryBatch(
                model_id=model,
                windows=s["windows"],
                alerts=s["alerts"],
                latest=s["latest"],
                maxlen={"windows": window_maxlen(largest), "alerts": MAX_ALERTS},
            )
        )
    return out


_last_failure_log = 0.0


async def record_history(store: StateStore | None, result: BatchResult) -> bool:
    """Append a committed batch's windows and alerts to the history. Never raises.

    Called by the worker after a successful state commit. Best effort: a failure is
    logged (at most once a minute) and the batch goes on; history is not state.
    Returns True when something was written.
    """
    if store is None or not (result.windows or result.alerts):
        return False
    return await _append(store, history_batches(result.windows, result.alerts))


async def record_alerts(store: StateStore | None, alerts: Sequence[DriftAlert]) -> bool:
    """Append alerts raised outside the fast loop (the slow loop's concept drift and
    performance alerts) to their models' history. Never raises; True when written."""
    if store is None or not alerts:
        return False
    return await _append(store, history_batches((), alerts))


async def _append(store: StateStore, batches: Sequence[HistoryBatch]) -> bool:
    global _last_failure_log
    try:
        await store.append_history(batches)
    except Exception as exc:  # best effort: never fail the batch for observability data
        now = time.monotonic()
        if now - _last_failure_log > 60:
            _last_failure_log = now
            log.warning("history not written (best effort): %s: %s", type(exc).__name__, exc)
        return False
    return True


async def record_performance(
    store: StateStore, model_id: str, points: Sequence[Mapping[str, Any]]
) -> int:
    """Append performance points (the slow loop's accuracy, coverage, label lag).

    See :func:`encode_perf` for the fields. Returns the number of entries written.
    """
    if not points:
        return 0
    batch = HistoryBatch(
        model_id=model_id, perf=[encode_perf(p) for p in points], maxlen={"perf": MAX_PERF}
    )
    return await store.append_history([batch])


# ---------------------------------------------------------------------- reading


@dataclass
class History:
    """A model's history, deduplicated and in time order."""

    windows: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    perf: list[dict[str, Any]] = field(default_factory=list)
    #: Entries that could not be read (malformed, unknown format) and were skipped.
    skipped: int = 0
    #: True when a reading limit stopped before ``since`` (older windows not read).
    truncated: bool = False

    @classmethod
    def build(
        cls,
        windows: Iterable[dict[str, Any]],
        alerts: Iterable[dict[str, Any]] = (),
        perf: Iterable[dict[str, Any]] = (),
        skipped: int = 0,
        truncated: bool = False,
    ) -> History:
        """Deduplicate (last one wins) and sort the entries."""
        wins: dict[tuple[Any, ...], dict[str, Any]] = {}
        for w in windows:
            key = (w["model_version"], w["segment"], w["window"], w["start"], w["end"])
            wins[key] = w
        als: dict[str, dict[str, Any]] = {a["alert_id"]: a for a in alerts}
        pts: dict[tuple[Any, ...], dict[str, Any]] = {
            (p["model_version"], p.get("segment", ""), p["at"]): p for p in perf
        }
        return cls(
            windows=sorted(
                wins.values(), key=lambda w: (w["end"], w["model_version"], w["window"])
            ),
            alerts=sorted(
                als.values(),
                key=lambda a: (a["detected_at"], a["episode"], a["status"] == "resolved"),
            ),
            perf=sorted(pts.values(), key=lambda p: p["at"]),
            skipped=skipped,
            truncated=truncated,
        )


async def _read_stream(
    store: StateStore,
    model_id: str,
    kind: str,
    decode: Any,
    *,
    since_ms: int | None,
    time_of: Any,
    max_entries: int,
    max_bytes: int,
) -> tuple[list[dict[str, Any]], int, bool]:
    """Newest-first paging until ``since_ms``, ``max_entries`` or ``max_bytes``."""
    out: list[dict[str, Any]] = []
    skipped, nbytes, before = 0, 0, None
    while len(out) < max_entries:
        page = await store.read_history(
            model_id, kind, count=min(PAGE, max_entries - len(out)), before=before
        )
        if not page:
            return out, skipped, False
        older = 0
        for entry_id, payload in page:
            before = entry_id
            nbytes += len(payload)
            try:
                item = decode(payload)
            except (ValueError, TypeError, KeyError):
                skipped += 1
                continue
            if since_ms is not None and time_of(item) < since_ms:
                older += 1
                continue
            out.append(item)
        if older == len(page):
            # A whole page before `since`: the stream is in write order, which follows
            # event time per model, so nothing newer can follow.
            return out, skipped, False
        if nbytes >= max_bytes:
            return out, skipped, True
    return out, skipped, True


async def load_history(
    store: StateStore,
    model_id: str,
    *,
    since_ms: int | None = None,
    max_windows: int = 5_000,
    max_bytes: int = 256 * 1024 * 1024,
) -> History:
    """Read a model's history from Redis: windows, alerts and performance points.

    Reads newest first and stops at ``since_ms`` (event time of the window end, alert
    detection, or performance point), after ``max_windows`` windows or ``max_bytes``.
    """
    wins, s1, trunc = await _read_stream(
        store,
        model_id,
        "windows",
        decode_window,
        since_ms=since_ms,
        time_of=lambda w: w["end"],
        max_entries=max_windows,
        max_bytes=max_bytes,
    )
    alerts, s2, _ = await _read_stream(
        store,
        model_id,
        "alerts",
        decode_alert,
        since_ms=since_ms,
        time_of=lambda a: a["detected_at"],
        max_entries=MAX_ALERTS,
        max_bytes=max_bytes,
    )
    perf, s3, _ = await _read_stream(
        store,
        model_id,
        "perf",
        decode_perf,
        since_ms=since_ms,
        time_of=lambda p: p["at"],
        max_entries=MAX_PERF,
        max_bytes=max_bytes,
    )
    wins = [w for w in wins if w["model_id"] == model_id]
    alerts = [a for a in alerts if a["model_id"] == model_id]
    return History.build(wins, alerts, perf, skipped=s1 + s2 + s3, truncated=trunc)


def replay_history(
    events: Path,
    references: Mapping[tuple[str, str], ReferenceProfile],
    *,
    batch: int = 5000,
) -> tuple[dict[str, History], dict[str, ReferenceProfile]]:
    """History of every model in a JSONL file of prediction events, by replay (no Redis).

    Runs the same core as the worker (:class:`driftline.replay.Replayer`) and keeps
    each batch's window summaries and alerts, encoded and decoded exactly as the Redis
    path does. Returns the history per model id and every reference used (by
    reference id), including warm-up references built during the replay.
    """
    from driftline.errors import ContractError
    from driftline.events import decode_prediction_fast
    from driftline.replay import Replayer, read_events

    replayer = Replayer(references)
    windows: dict[str, list[dict[str, Any]]] = {}
    alerts: dict[str, list[dict[str, Any]]] = {}

    def feed(buf: list[dict[str, Any]]) -> None:
        res = replayer.feed(buf)
        for w in res.windows:
            windows.setdefault(w["model_id"], []).append(decode_window(encode_window(w)))
        for a in res.alerts:
            alerts.setdefault(a.model_id, []).append(decode_alert(a.to_json()))

    buf: list[dict[str, Any]] = []
    for lineno, raw in read_events(events):
        try:
            buf.append(decode_prediction_fast(raw))
        except ContractError as exc:
            replayer.result.refused.append((lineno, f"{exc.stage}: {exc}"))
            continue
        if len(buf) >= batch:
            feed(buf)
            buf = []
    if buf:
        feed(buf)
    models = set(windows) | set(alerts) | {k.model_id for k in replayer.result.states}
    hist = {m: History.build(windows.get(m, []), alerts.get(m, [])) for m in models}
    refs = {r.reference_id: r for r in replayer.references.values()}
    return hist, refs
