"""History entry formats: window summaries, alerts and performance points, as stored.

History is observability data, not state (see :mod:`driftline.runtime.history` for
where it is kept and why it is not signed): plain JSON entries with a layout version
(the ``f`` field). Decoders treat every entry as untrusted input: shape-checked, and
a malformed entry raises ``ValueError`` so readers skip and count it.
:class:`History` is a model's entries deduplicated and in time order.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from driftline.contract.events import (
    DriftAlert,
)

__all__ = [
    "HISTORY_FORMAT",
    "PERF_FIELDS",
    "History",
    "alert_order",
    "decode_alert",
    "decode_perf",
    "decode_window",
    "encode_perf",
    "encode_window",
    "encode_windows",
    "latest_entry",
    "warmup_entry",
]


def alert_order(a: Mapping[str, Any]) -> tuple[int, int, int]:
    """Sort key of a stream's alerts: event time, episode, then firing < updated <
    resolved (an episode's alerts at one instant, in the order they happen)."""
    step = {"firing": 0, "updated": 1}.get(str(a["status"]), 2)
    return (int(a["detected_at"]), int(a["episode"]), step)


#: Layout version of history entries (the ``f`` field of every entry).
HISTORY_FORMAT = 1
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


_FLOAT_OR_NONE = frozenset({float, type(None)})
#: 10**k for k = 0..22, each exact (5**22 < 2**53).
_POW10 = np.array([float(10**k) for k in range(23)])


def _sig_all(values: Sequence[Any], digits: int = 5) -> list[Any]:
    """``[_sig(x, digits) for x in values]``, vectorised for a column of floats.

    ``format(x, ".5g")`` is the exact value's first ``digits`` digits, rounded half-even.
    Here ``r = rint(x * 10**k)``, ``k = digits - 1 - floor(log10 |x|)`` decimals, and the
    result ``r / 10**k`` (or ``r * 10**-k``): both operands exact, so it is the double
    nearest the same decimal, unless the scaling's one rounding moved ``x * 10**k``
    across a half-integer or ``r`` has not ``digits`` digits (``log10`` off by one, or
    the rounding carried into a new digit). Those values, ``|k| > 22`` and columns of
    other types take :func:`_sig` one by one; missing and non-finite values are None and
    zeros 0.0, as there (``tests/unit/test_history.py`` checks both against it).
    """
    if len(values) < 8 or not set(map(type, values)) <= _FLOAT_OR_NONE:
        return [_sig(x, digits) for x in values]
    a = np.array(values, dtype=np.float64)
    with np.errstate(all="ignore"):
        k = (digits - 1) - np.floor(np.log10(np.abs(a)))
        usable = np.abs(k) <= 22  # False for zeros (k = inf) and NaN, inf (k = nan, -inf)
        kk = np.where(usable, k, 0.0)
        scale = _POW10[np.abs(kk).astype(np.intp)]
        up = kk >= 0
        y = np.where(up, a * scale, a / scale)
        r = np.rint(y)
        out: list[Any] = np.where(up, r / scale, r * scale).tolist()
        size = np.abs(r)
        good = (
            usable
            & (np.abs(y - np.floor(y) - 0.5) > 1e-7)
            & (size >= 10.0 ** (digits - 1))
            & (size < 10.0**digits)
        )
        missing = ~np.isfinite(a)  # None, NaN and infinities: null in JSON
        zero = a == 0.0
    for i in np.flatnonzero(missing).tolist():
        out[i] = None
    for i in np.flatnonzero(zero).tolist():
        out[i] = 0.0  # -0.0 too, as _sig writes it
    for i in np.flatnonzero(~(good | missing | zero)).tolist():
        out[i] = _sig(values[i], digits)
    return out


# ---------------------------------------------------------------------- encoding


def encode_window(summary: Mapping[str, Any]) -> bytes:
    """One window summary of the core (:attr:`BatchResult.windows`) as a history entry."""
    return encode_windows([summary])[0]


def encode_windows(summaries: Sequence[Mapping[str, Any]]) -> list[bytes]:
    """:func:`encode_window` of each summary; the numbers of all of them are rounded in
    two passes (five and four digits), so numpy's per-call cost is paid once per batch
    of windows, not per column of each."""
    fives: list[Any] = []
    fours: list[Any] = []
    layouts: list[tuple[int, list[str]]] = []
    for summary in summaries:
        tests: Sequence[Mapping[str, Any]] = summary.get("tests", ())
        rounded = ["value", "threshold"]
        fives += [t["value"] for t in tests]
        fives += [t["threshold"] for t in tests]
        for c in _EXTRA_COLUMNS:
            extra = [t.get(c) for t in tests]
            if any(v is not None for v in extra):
                rounded.append(c)
                fives += extra
        fours += [t.get("p_value") for t in tests]
        layouts.append((len(tests), rounded))
    five, four = _sig_all(fives), _sig_all(fours, 4)
    out: list[bytes] = []
    at5 = at4 = 0
    for summary, (n, rounded) in zip(summaries, layouts, strict=True):
        tests = summary.get("tests", ())
        parts = {c: five[at5 + i * n : at5 + (i + 1) * n] for i, c in enumerate(rounded)}
        at5 += n * len(rounded)
        cols: dict[str, list[Any]] = {
            "feature": [t["feature"] for t in tests],
            "statistic": [t["statistic"] for t in tests],
            "value": parts.pop("value"),
            "threshold": parts.pop("threshold"),
            "p_value": four[at4 : at4 + n],
            "drifted": [1 if t.get("drifted") else 0 for t in tests],
            **parts,  # the extra columns a window has, in _EXTRA_COLUMNS' order
        }
        at4 += n
        out.append(_window_entry(summary, cols))
    return out


def _window_entry(summary: Mapping[str, Any], cols: dict[str, list[Any]]) -> bytes:
    """The history entry of a window summary whose tests are ``cols``."""
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
            **_late_future(summary),
            **_unknown_names(summary),
        }
    )


def _unknown_names(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The names of unknown features of a window summary, and whether there were more
    (none: ``{}``); names that are not a list of strings are none."""
    names = summary.get("unknown_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        return {}
    more = {"unknown_names_more": True} if summary.get("unknown_names_more") is True else {}
    return {"unknown_names": list(names), **more}


#: The stream's late and future-dated events so far, in a window summary when either is
#: not zero (core/fastloop/summary.py).
_LATE_FUTURE = ("late_events", "future_events")


def _late_future(summary: Mapping[str, Any]) -> dict[str, int]:
    """The late and future-dated counts of a window summary (none: ``{}``); an entry
    whose counts are not non-negative integers has none."""
    got = {k: summary[k] for k in _LATE_FUTURE if k in summary}
    if not got or not all(_is_int(v) and v >= 0 for v in got.values()):
        return {}
    return {k: int(got.get(k, 0)) for k in _LATE_FUTURE}


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
    counts = _late_future(obj)
    for k in _LATE_FUTURE:
        obj.pop(k, None)
    obj.update(counts)
    unknown = _unknown_names(obj)
    obj.pop("unknown_names", None)
    obj.pop("unknown_names_more", None)
    obj.update(unknown)
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
    "mae",
)


def encode_perf(point: Mapping[str, Any]) -> bytes:
    """A performance point as a history entry.

    ``point`` has ``model_version`` (str), ``at`` (event-time epoch ms) and any of
    ``accuracy`` and ``estimated_accuracy`` (0..1), ``coverage`` (labelled share of
    predictions, 0..1), ``lag_seconds`` (label delay), ``labels`` (count) and ``mae``
    (a regression model's mean absolute error); an optional ``segment`` (str, default
    ``""``). Entries written before ``mae`` existed decode with it null.
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


def latest_entry(summary: Mapping[str, Any], in_window: tuple[int, int] | None = None) -> bytes:
    """The small record of a model's last window kept in the ``latest`` hash.

    ``in_window``: the late and future-dated events counted while this window was open
    (the difference of the stream's totals at this close and at its previous one), kept
    beside the totals so far as ``window_late_events`` and ``window_future_events``;
    None when unknown or when the stream never had any.
    """
    drifted = sorted(
        (
            (t["value"] / t["threshold"] if t["threshold"] else 0.0, t["feature"], t["value"])
            for t in summary.get("tests", ())
            if t.get("drifted") and not str(t["feature"]).startswith("__")
        ),
        reverse=True,
    )
    # The multivariate detector's level (statistic / threshold) when the stream has one.
    joint = next((t for t in summary.get("tests", ()) if t["feature"] == "__multivariate__"), None)
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
            **_late_future(summary),
            **(
                {"window_late_events": in_window[0], "window_future_events": in_window[1]}
                if in_window is not None and _late_future(summary)
                else {}
            ),
            **(
                {"joint": {"value": _sig(joint["value"]), "drifted": bool(joint.get("drifted"))}}
                if joint is not None
                else {}
            ),
        }
    )


def warmup_entry(model_version: str, segment: str, events: int, of: int) -> bytes:
    """The ``latest`` record of a stream that has no window yet because its version had
    no reference: ``events`` of the ``of`` first live events its reference is built from
    (``events == of``: built, its first window still open). The stream's first closed
    window takes its place."""
    return orjson.dumps(
        {
            "f": HISTORY_FORMAT,
            "model_version": model_version,
            "segment": segment,
            "warmup": {"events": events, "of": of},
            "written_ms": int(time.time() * 1000),
        }
    )


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
                key=alert_order,
            ),
            perf=sorted(pts.values(), key=lambda p: p["at"]),
            skipped=skipped,
            truncated=truncated,
        )
