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

The entry formats are pure and live in :mod:`driftline.contract.history`; the history of
a file comes from a replay (:func:`driftline.offline.replay.replay_history`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from driftline.contract.events import (
    DriftAlert,
)
from driftline.contract.history import (
    History,
    decode_alert,
    decode_perf,
    decode_window,
    encode_perf,
    encode_windows,
    latest_entry,
    warmup_entry,
)
from driftline.core.fastloop import BatchResult
from driftline.runtime.store import HistoryBatch, StateStore

__all__ = [
    "MAX_ALERTS",
    "MAX_PERF",
    "WINDOW_BUDGET_BYTES",
    "WindowLateFuture",
    "history_batches",
    "load_history",
    "record_alerts",
    "record_history",
    "record_performance",
    "record_warmups",
    "window_maxlen",
]

log = logging.getLogger("driftline.history")

#: About this many bytes of window entries are kept per model.
WINDOW_BUDGET_BYTES = 16 * 1024 * 1024
MIN_WINDOWS = 100
MAX_WINDOWS = 10_000
MAX_ALERTS = 5_000
MAX_PERF = 10_000
#: Entries fetched per XREVRANGE call when reading.
PAGE = 200


# ---------------------------------------------------------------------- encoding


def window_maxlen(entry_bytes: int) -> int:
    """How many window entries of this size a model keeps (the byte budget)."""
    return max(MIN_WINDOWS, min(MAX_WINDOWS, WINDOW_BUDGET_BYTES // max(1, entry_bytes)))


# ---------------------------------------------------------------------- writing


def history_batches(
    windows: Sequence[Mapping[str, Any]],
    alerts: Iterable[DriftAlert],
    in_window: Sequence[tuple[int, int] | None] | None = None,
) -> list[HistoryBatch]:
    """Group a batch's window summaries and alerts per model into store batches;
    ``in_window`` (aligned with ``windows``): each window's own late and future-dated
    events, kept in the ``latest`` record (:func:`latest_entry`)."""
    per_model: dict[str, dict[str, Any]] = {}

    def slot(model: str) -> dict[str, Any]:
        return per_model.setdefault(model, {"windows": [], "alerts": [], "latest": {}})

    for i, (w, entry) in enumerate(zip(windows, encode_windows(windows), strict=True)):
        s = slot(w["model_id"])
        s["windows"].append(entry)
        own = in_window[i] if in_window is not None else None
        s["latest"][f"{w['model_version']}\x1f{w.get('segment', '')}"] = (w, own)
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
                # Each stream's last window only (a batch closes about ten per stream).
                latest={k: latest_entry(w, own) for k, (w, own) in s["latest"].items()},
                maxlen={"windows": window_maxlen(largest), "alerts": MAX_ALERTS},
            )
        )
    return out


#: A stream: (model, version, segment).
_Stream = tuple[str, str, str]


class WindowLateFuture:
    """Each closed window's own late and future-dated events.

    A window summary carries its stream's totals so far (core/fastloop/summary.py, kept
    as they are: the golden fixtures record them); a window's own counts are the
    difference with the totals at the stream's previous close. Those are remembered per
    partition (forgotten when it is released); after a restart or an assignment they
    are read once from the stream's ``latest`` record (its previous window), and a
    stream whose totals are still zero needs no read at all.
    """

    def __init__(self) -> None:
        self._at_close: dict[int, dict[_Stream, tuple[int, int]]] = {}

    def forget(self, partition: int) -> None:
        """The partition was released: its streams' totals may move on elsewhere."""
        self._at_close.pop(partition, None)

    async def of(
        self, store: StateStore | None, partition: int, windows: Sequence[Mapping[str, Any]]
    ) -> list[tuple[int, int] | None]:
        """Per window of a committed batch (in order): its own (late, future) events;
        None when the stream never had any, or when its previous totals are unknown."""
        seen = self._at_close.setdefault(partition, {})
        streams = [(w["model_id"], w["model_version"], w.get("segment", "")) for w in windows]
        totals = [(_count(w.get("late_events")), _count(w.get("future_events"))) for w in windows]
        unknown = {k for k, t in zip(streams, totals, strict=True) if t != (0, 0)} - seen.keys()
        if unknown and store is not None:
            seen.update(await _previous_totals(store, unknown))
        out: list[tuple[int, int] | None] = []
        for k, t in zip(streams, totals, strict=True):
            prev = seen.get(k)
            own = (t[0] - prev[0], t[1] - prev[1]) if prev is not None else None
            out.append(own if t != (0, 0) and own is not None and min(own) >= 0 else None)
            seen[k] = t
        return out


def _count(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


async def _previous_totals(
    store: StateStore, streams: Iterable[_Stream]
) -> dict[_Stream, tuple[int, int]]:
    """The totals of each stream's last recorded window (none recorded: zero). Best
    effort: a stream whose record cannot be read is left out (its counts unknown)."""
    per_model: dict[str, list[_Stream]] = {}
    for k in streams:
        per_model.setdefault(k[0], []).append(k)
    out: dict[_Stream, tuple[int, int]] = {}
    for model, keys in per_model.items():
        try:
            latest = await store.history_latest(model)  # small: one field per stream
        except Exception as exc:  # best effort: history is not state
            log.debug("latest history not read: %s", type(exc).__name__)
            continue
        for k in keys:
            blob = latest.get(f"{k[1]}\x1f{k[2]}")
            try:
                entry = orjson.loads(blob) if blob is not None else {}
            except orjson.JSONDecodeError:
                continue
            if isinstance(entry, dict):
                out[k] = (_count(entry.get("late_events")), _count(entry.get("future_events")))
    return out


_last_failure_log = 0.0


async def record_history(
    store: StateStore | None,
    result: BatchResult,
    in_window: Sequence[tuple[int, int] | None] | None = None,
) -> bool:
    """Append a committed batch's windows and alerts to the history. Never raises.

    Called by the worker after a successful state commit. Best effort: a failure is
    logged (at most once a minute) and the batch goes on; history is not state.
    ``in_window``: see :func:`history_batches`. Returns True when something was written.
    """
    if store is None or not (result.windows or result.alerts):
        return False
    return await _append(store, history_batches(result.windows, result.alerts, in_window))


async def record_warmups(
    store: StateStore | None, progress: Mapping[tuple[str, str, str], tuple[int, int]]
) -> bool:
    """Note in the ``latest`` hash how far each stream warming up is: per (model, version,
    segment), (events collected, events its reference is built from). The status page
    lists a version with no window yet by it. Never raises; True when written."""
    if store is None or not progress:
        return False
    latest: dict[str, dict[str, bytes]] = {}
    for (model, version, segment), (events, of) in progress.items():
        latest.setdefault(model, {})[f"{version}\x1f{segment}"] = warmup_entry(
            version, segment, events, of
        )
    return await _append(store, [HistoryBatch(model_id=k, latest=v) for k, v in latest.items()])


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
