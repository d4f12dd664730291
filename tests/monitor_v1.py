"""The fast loop's pure core: prediction events in, drift verdicts and alerts out.

:func:`process_batch` is a function of (events, state, references) with no I/O. The
same code runs under the Kafka worker (:mod:`driftline.ingest`), in a replay from a
file (:mod:`driftline.replay`) and in unit tests, which is what makes "a stream run
equals a clean single-pass replay" checkable.

Per (model, version, segment) a :class:`ModelState` keeps:

* window sketches for every feature and output, on the reference's bins;
* a Page-Hinkley detector per numeric feature on the value standardised against the
  reference (and clipped), so one threshold fits every feature;
* an ADWIN detector on the mean confidence of blocks of events;
* one hysteresis :class:`Episode` per alert kind.

When a window closes (by event count or event time) every feature is tested against
the reference: KS on the sketch (numeric) or chi-square (categorical) for
significance, PSI for effect size. A feature drifts only when both agree: Holm's
procedure across the window's tests keeps the family-wise false-alarm rate at
``window_events / false_alarm_events`` per window, and the PSI must reach a
threshold calibrated from the reference (never below a floor), so huge windows do not
alert on trivial shifts. Page-Hinkley and ADWIN fire an episode early; windows confirm
and resolve it.

Event-time policy: windows follow the order of events in the partition. Count
windows close every ``window_events`` events. Time windows are tumbling, aligned to
multiples of ``window_seconds``, and close when an event at or after the window end
arrives. An event older than the open window is *late*, one more than
``future_tolerance_ms`` ahead of the newest event seen is *future-dated*; both are
counted and folded into the open window (never dropped), and neither moves the clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from driftline.contract.codec import pack, unpack
from driftline.contract.columnar import category_value
from driftline.contract.events import AlertWindow, DriftAlert, FeatureContribution, make_alert_id
from driftline.core.detectors import ADWIN, PageHinkley
from driftline.core.reference import (
    CategoricalProfile,
    NumericProfile,
    Policy,
    ReferenceProfile,
    build_reference,
    features_from_events,
)
from driftline.core.sketches import CategoricalSketch, NumericSketch
from driftline.core.stats import chi2_homogeneity, holm, js_distance, ks_binned, ks_pvalue, psi

__all__ = [
    "BatchResult",
    "Episode",
    "ModelState",
    "Observation",
    "StateKey",
    "WARMUP_EVENTS",
    "process_batch",
    "state_key",
]

#: Live events used to build a warm-up reference for a model that has none.
WARMUP_EVENTS = 2000
FUTURE_TOLERANCE_MS = 5 * 60 * 1000
STATE_FORMAT = 1

KINDS = ("input_drift", "output_drift", "data_quality")


@dataclass(frozen=True)
class StateKey:
    """Identity of one monitored stream: model, version and segment."""

    model_id: str
    model_version: str
    segment: str = ""

    def encode(self) -> str:
        """The Redis hash field for this key."""
        return f"{self.model_id}\x1f{self.model_version}\x1f{self.segment}"

    @classmethod
    def decode(cls, s: str) -> StateKey:
        """Inverse of :meth:`encode`."""
        m, v, seg = s.split("\x1f")
        return cls(m, v, seg)

    def segment_dict(self) -> dict[str, str] | None:
        """The segment as the alert's ``segment`` object."""
        if not self.segment:
            return None
        return dict(kv.split("=", 1) for kv in self.segment.split(","))


def state_key(event: Mapping[str, Any]) -> StateKey:
    """The :class:`StateKey` an event belongs to."""
    seg = event.get("segment")
    seg_key = ",".join(f"{k}={seg[k]}" for k in sorted(seg)) if seg else ""
    return StateKey(event["model_id"], event["model_version"], seg_key)


@dataclass
class Episode:
    """Hysteresis and cooldown of one alert kind: one alert per episode and status."""

    firing: bool = False
    number: int = 0
    clean_windows: int = 0
    cooldown: int = 0
    severity: str = "warning"
    feature: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Observation:
    """A statistic for the metrics shell: model, version, feature, test, value."""

    model_id: str
    model_version: str
    feature: str
    test: str
    value: float


@dataclass
class _Window:
    index: int = 0
    count: int = 0
    start_ms: int = -1
    end_ms: int = -1
    #: Time windows: the aligned start of the open window.
    open_ms: int = -1


@dataclass
class ModelState:
    """Everything the monitor remembers about one (model, version, segment)."""

    key: StateKey
    reference_id: str = ""
    window: _Window = field(default_factory=_Window)
    num: dict[str, NumericSketch] = field(default_factory=dict)
    cat: dict[str, CategoricalSketch] = field(default_factory=dict)
    type_mismatch: dict[str, int] = field(default_factory=dict)
    unknown_features: int = 0
    classes: CategoricalSketch | None = None
    confidence: NumericSketch | None = None
    low_confidence: int = 0
    prediction: NumericSketch | None = None
    ph: dict[str, PageHinkley] = field(default_factory=dict)
    adwin: ADWIN | None = None
    #: Confidences of the unfinished ADWIN block (fewer than ``adwin_block``).
    block: list[float] = field(default_factory=list)
    episodes: dict[str, Episode] = field(default_factory=dict)
    max_event_ms: int = -1
    late_events: int = 0
    future_events: int = 0
    events: int = 0
    warmup: list[dict[str, Any]] = field(default_factory=list)
    #: Early detections (Page-Hinkley per feature, ADWIN) inside the open window.
    early: dict[str, float] = field(default_factory=dict)

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def fresh(cls, key: StateKey, ref: ReferenceProfile | None) -> ModelState:
        """A new state for ``key`` watched against ``ref`` (None: warming up)."""
        st = cls(key=key)
        if ref is not None:
            st.attach(ref)
        return st

    def attach(self, ref: ReferenceProfile) -> None:
        """Start watching against ``ref``: empty window sketches, new detectors."""
        pol = ref.policy
        self.reference_id = ref.reference_id
        self.num = {}
        self.cat = {}
        self.ph = {}
        for name, prof in ref.features.items():
            if isinstance(prof, NumericProfile):
                self.num[name] = NumericSketch.zero(prof.edges, prof.min, prof.max)
                self.ph[name] = PageHinkley(
                    min_instances=pol.ph_min_instances,
                    delta=pol.ph_delta,
                    threshold=pol.ph_threshold,
                    alpha=pol.ph_alpha,
                )
            else:
                self.cat[name] = CategoricalSketch.zero(prof.categories)
        out = ref.outputs
        self.classes = CategoricalSketch.zero(out.classes.categories) if out.classes else None
        self.confidence = (
            NumericSketch.zero(out.confidence.edges, out.confidence.min, out.confidence.max)
            if out.confidence
            else None
        )
        self.prediction = (
            NumericSketch.zero(out.prediction.edges, out.prediction.min, out.prediction.max)
            if out.prediction
            else None
        )
        self.adwin = ADWIN(delta=pol.adwin_delta) if out.confidence else None
        self.type_mismatch = {name: 0 for name in ref.features}
        self._reset_window_sketches(ref)

    def _reset_window_sketches(self, ref: ReferenceProfile) -> None:
        for name, sk in self.num.items():
            # A fresh sketch on the same (shared, read-only) edges and reference range.
            self.num[name] = NumericSketch.zero(sk.edges, sk.ref_min, sk.ref_max)
        for name, csk in self.cat.items():
            self.cat[name] = CategoricalSketch.zero(csk.categories)
        out = ref.outputs
        if self.classes is not None and out.classes is not None:
            self.classes = CategoricalSketch.zero(out.classes.categories)
        if self.confidence is not None and out.confidence is not None:
            c = out.confidence
            self.confidence = NumericSketch.zero(c.edges, c.min, c.max)
        if self.prediction is not None and out.prediction is not None:
            p = out.prediction
            self.prediction = NumericSketch.zero(p.edges, p.min, p.max)
        self.type_mismatch = dict.fromkeys(self.type_mismatch, 0)
        self.unknown_features = 0
        self.low_confidence = 0
        self.early = {}

    # ------------------------------------------------------------------ bytes
    def to_bytes(self) -> bytes:
        """Versioned, pickle-free record (sketches and detectors as nested records)."""

        def s(b: bytes) -> str:
            return b.decode()

        return pack(
            "model_state",
            STATE_FORMAT,
            {
                "key": self.key.encode(),
                "reference_id": self.reference_id,
                "window": self.window.__dict__,
                "num": {k: s(v.to_bytes()) for k, v in self.num.items()},
                "cat": {k: s(v.to_bytes()) for k, v in self.cat.items()},
                "type_mismatch": self.type_mismatch,
                "unknown_features": self.unknown_features,
                "classes": s(self.classes.to_bytes()) if self.classes else None,
                "confidence": s(self.confidence.to_bytes()) if self.confidence else None,
                "low_confidence": self.low_confidence,
                "prediction": s(self.prediction.to_bytes()) if self.prediction else None,
                "ph": {k: s(v.to_bytes()) for k, v in self.ph.items()},
                "adwin": s(self.adwin.to_bytes()) if self.adwin else None,
                "block": self.block,
                "episodes": {k: e.to_dict() for k, e in self.episodes.items()},
                "max_event_ms": self.max_event_ms,
                "late_events": self.late_events,
                "future_events": self.future_events,
                "events": self.events,
                "warmup": self.warmup,
                "early": self.early,
            },
        )

    @classmethod
    def from_bytes(cls, data: bytes, ref: ReferenceProfile | None) -> ModelState:
        """Inverse of :meth:`to_bytes`; sketches are rebuilt on ``ref``'s bins."""
        d = unpack(data, "model_state", STATE_FORMAT)
        st = cls(key=StateKey.decode(d["key"]))
        st.reference_id = d["reference_id"]
        st.window = _Window(**d["window"])
        if ref is not None and ref.reference_id == st.reference_id:
            for k, b in d["num"].items():
                prof = ref.features[k]
                assert isinstance(prof, NumericProfile)
                st.num[k] = NumericSketch.from_bytes(b.encode(), edges=prof.edges)
            for k, b in d["cat"].items():
                cprof = ref.features[k]
                assert isinstance(cprof, CategoricalProfile)
                st.cat[k] = CategoricalSketch.from_bytes(b.encode(), categories=cprof.categories)
            out = ref.outputs
            if d["classes"] and out.classes:
                st.classes = CategoricalSketch.from_bytes(
                    d["classes"].encode(), categories=out.classes.categories
                )
            if d["confidence"] and out.confidence:
                st.confidence = NumericSketch.from_bytes(
                    d["confidence"].encode(), edges=out.confidence.edges
                )
            if d["prediction"] and out.prediction:
                st.prediction = NumericSketch.from_bytes(
                    d["prediction"].encode(), edges=out.prediction.edges
                )
            st.ph = {k: PageHinkley.from_bytes(b.encode()) for k, b in d["ph"].items()}
            st.adwin = ADWIN.from_bytes(d["adwin"].encode()) if d["adwin"] else None
        elif ref is not None:
            # The reference changed (rebuilt or replaced): keep episodes, restart windows.
            st.attach(ref)
        st.type_mismatch = d["type_mismatch"] if st.reference_id == d["reference_id"] else {}
        st.unknown_features = d["unknown_features"]
        st.low_confidence = d["low_confidence"]
        st.block = d["block"]
        st.episodes = {k: Episode(**e) for k, e in d["episodes"].items()}
        st.max_event_ms = d["max_event_ms"]
        st.late_events = d["late_events"]
        st.future_events = d["future_events"]
        st.events = d["events"]
        st.warmup = d["warmup"]
        st.early = d["early"]
        return st


@dataclass
class BatchResult:
    """What one batch produced: alerts, statistics for metrics, new warm-up references."""

    alerts: list[DriftAlert] = field(default_factory=list)
    observations: list[Observation] = field(default_factory=list)
    new_references: list[ReferenceProfile] = field(default_factory=list)
    windows_closed: int = 0
    late_events: int = 0
    future_events: int = 0
    #: One summary per closed window (plain data): the history behind reports and charts.
    windows: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------------- entry point

RefLookup = Callable[[str, str], ReferenceProfile | None]


def process_batch(
    events: Sequence[Mapping[str, Any]],
    states: dict[StateKey, ModelState],
    references: RefLookup,
    *,
    default_policy: Policy | None = None,
) -> BatchResult:
    """Process validated prediction events in partition order. Pure: no I/O.

    Parameters
    ----------
    events
        Decoded, contract-valid prediction events (dicts), in partition order.
    states
        Current state per key; updated in place and extended with new keys.
    references
        ``(model_id, version) -> ReferenceProfile | None`` (with default fallback).
    default_policy
        Policy for warm-up references of models without one.

    Returns
    -------
    BatchResult
        Alerts raised, statistics for metrics, warm-up references to store.
    """
    result = BatchResult()
    groups: dict[StateKey, Sequence[Mapping[str, Any]]] = {}
    for e in events:
        groups.setdefault(state_key(e), []).append(e)  # type: ignore[attr-defined]
    for key, evs in groups.items():
        ref = references(key.model_id, key.model_version)
        st = states.get(key)
        if st is None:
            st = ModelState.fresh(key, ref)
            states[key] = st
        elif ref is not None and st.reference_id != ref.reference_id:
            st.attach(ref)
        if ref is None:
            ref, evs = _warm_up(st, evs, default_policy or Policy(), result)
            if ref is None:
                continue
        _process_key(st, ref, evs, result)
    return result


def _warm_up(
    st: ModelState, evs: Sequence[Mapping[str, Any]], policy: Policy, result: BatchResult
) -> tuple[ReferenceProfile | None, Sequence[Mapping[str, Any]]]:
    """Collect the first :data:`WARMUP_EVENTS` events; then build the reference from them.

    Returns the reference (or None while warming up) and the events left to monitor.
    """
    take = WARMUP_EVENTS - len(st.warmup)
    st.warmup.extend(dict(e) for e in evs[:take])
    st.events += min(take, len(evs))
    if len(st.warmup) < WARMUP_EVENTS:
        return None, ()
    data = features_from_events(st.warmup)
    created = max(_time_ms(e) for e in st.warmup)
    ref = build_reference(
        data,
        st.key.model_id,
        st.key.model_version,
        policy=policy,
        source="warm-up",
        created_at=created,
    )
    st.warmup = []
    st.attach(ref)
    result.new_references.append(ref)
    return ref, evs[take:]


def _time_ms(e: Mapping[str, Any]) -> int:
    ts = e["timestamp"]
    if isinstance(ts, int):
        return ts
    from driftline.contract.events import event_time_ms

    return event_time_ms(ts)


def _process_key(
    st: ModelState, ref: ReferenceProfile, evs: Sequence[Mapping[str, Any]], result: BatchResult
) -> None:
    pol = ref.policy
    times = [_time_ms(e) for e in evs]
    start = 0
    while start < len(evs):
        end = _window_cut(st, pol, times, start)
        if end > start:
            _absorb(st, ref, evs[start:end], times[start:end], result)
        if end < len(evs) or _window_full(st, pol):
            _close_window(st, ref, result)
            if end < len(evs) and pol.window_seconds > 0:
                _open_time_window(st, pol, times[end])
        start = end


def _window_full(st: ModelState, pol: Policy) -> bool:
    return pol.window_seconds <= 0 and st.window.count >= pol.window_events


def _open_time_window(st: ModelState, pol: Policy, t: int) -> None:
    span = int(pol.window_seconds * 1000)
    st.window.open_ms = t - (t % span)


def _window_cut(st: ModelState, pol: Policy, times: Sequence[int], start: int) -> int:
    """Index where the open window ends within ``times[start:]``."""
    if pol.window_seconds <= 0:
        return min(len(times), start + pol.window_events - st.window.count)
    span = int(pol.window_seconds * 1000)
    if st.window.open_ms < 0:
        _open_time_window(st, pol, times[start])
    close_at = st.window.open_ms + span
    newest = st.max_event_ms
    for i in range(start, len(times)):
        t = times[i]
        future = newest >= 0 and t > newest + FUTURE_TOLERANCE_MS
        if t >= close_at and not future and st.window.count + (i - start) >= pol.min_window_events:
            return i
        if not future:
            newest = max(newest, t)
    return len(times)


# ---------------------------------------------------------------------- absorbing


def _numeric_column(
    feats: Sequence[Mapping[str, Any]], name: str
) -> tuple[NDArray[np.float64], int]:
    vals = [f.get(name) for f in feats]
    arr = np.fromiter(
        (v if (type(v) is float or type(v) is int) else math.nan for v in vals),
        dtype=np.float64,
        count=len(vals),
    )
    nulls = vals.count(None)
    mismatches = int(np.isnan(arr).sum()) - nulls
    return arr, mismatches


def _absorb(
    st: ModelState,
    ref: ReferenceProfile,
    evs: Sequence[Mapping[str, Any]],
    times: Sequence[int],
    result: BatchResult,
) -> None:
    pol = ref.policy
    n = len(evs)
    w = st.window
    # Event time bookkeeping (late / future-dated are counted, never dropped).
    for t in times:
        if st.max_event_ms >= 0 and t > st.max_event_ms + FUTURE_TOLERANCE_MS:
            st.future_events += 1
            result.future_events += 1
            continue
        if w.open_ms >= 0 and t < w.open_ms:
            st.late_events += 1
            result.late_events += 1
        st.max_event_ms = max(st.max_event_ms, t)
        w.start_ms = t if w.start_ms < 0 else min(w.start_ms, t)
        w.end_ms = max(w.end_ms, t)
    w.count += n
    st.events += n

    feats = [e["features"] for e in evs]
    expected = ref.features.keys()
    for f in feats:
        if f.keys() != expected:
            st.unknown_features += len(f.keys() - expected)
    count_before = w.count - n
    first_hit: tuple[int, str] | None = None
    for name, sk in st.num.items():
        arr, mismatches = _numeric_column(feats, name)
        sk.update(arr)
        st.type_mismatch[name] = st.type_mismatch.get(name, 0) + mismatches
        prof = ref.features[name]
        assert isinstance(prof, NumericProfile)
        finite_at = np.flatnonzero(np.isfinite(arr))
        if finite_at.size and prof.std > 0:
            z = np.clip((arr[finite_at] - prof.mean) / prof.std, -pol.ph_clip, pol.ph_clip)
            hits = st.ph[name].update_many(z)
            if hits.size:
                st.early[name] = float(pol.ph_threshold)
                at = int(finite_at[hits[0]])
                if first_hit is None or (at, name) < first_hit:
                    first_hit = (at, name)
    if first_hit is not None:
        # The earliest detecting event fires, whatever the batch boundaries were.
        at, name = first_hit
        _early_fire(
            st, ref, "input_drift", name, "page_hinkley", times[at], count_before + at + 1, result
        )
    for name, csk in st.cat.items():
        vals = [f.get(name) for f in feats]
        mismatches = sum(1 for v in vals if v is not None and not isinstance(v, str | bool))
        st.type_mismatch[name] = st.type_mismatch.get(name, 0) + mismatches
        csk.update([category_value(v) for v in vals])
    out = ref.outputs
    if out.task == "regression" and st.prediction is not None:
        preds = np.fromiter(
            (
                p if (type(p) is float or type(p) is int) else math.nan
                for p in (e["prediction"] for e in evs)
            ),
            dtype=np.float64,
            count=n,
        )
        st.prediction.update(preds)
    if st.classes is not None:
        st.classes.update([category_value(e["prediction"]) for e in evs])
    if st.confidence is not None:
        conf = np.fromiter(
            (max(s.values()) if (s := e.get("scores")) else math.nan for e in evs),
            dtype=np.float64,
            count=n,
        )
        st.confidence.update(conf)
        pos = np.flatnonzero(np.isfinite(conf))
        finite = conf[pos]
        st.low_confidence += int((finite < out.low_confidence_threshold).sum())
        if st.adwin is not None and finite.size:
            _feed_adwin(st, ref, finite, pos, times, count_before, result)


def _feed_adwin(
    st: ModelState,
    ref: ReferenceProfile,
    conf: NDArray[np.float64],
    pos: NDArray[np.intp],
    times: Sequence[int],
    count_before: int,
    result: BatchResult,
) -> None:
    """ADWIN sees the mean confidence of consecutive blocks of ``adwin_block`` events.

    ``pos`` maps each confidence value to its event's index in the absorbed chunk.
    """
    assert st.adwin is not None
    block = ref.policy.adwin_block
    means: list[float] = []
    ends: list[int] = []
    # Each block's mean is summed over the same array whatever the batch boundaries,
    # so a replay in other batches gives bit-identical ADWIN state.
    i = 0
    while i < conf.size:
        take = min(block - len(st.block), conf.size - i)
        st.block.extend(conf[i : i + take].tolist())
        i += take
        if len(st.block) == block:
            means.append(float(np.sum(np.asarray(st.block)) / block))
            ends.append(int(pos[i - 1]))
            st.block = []
    if not means:
        return
    hits = st.adwin.update_many(np.asarray(means))
    if hits.size:
        st.early["__confidence__"] = 1.0
        at = ends[int(hits[0])]
        _early_fire(
            st,
            ref,
            "output_drift",
            "__confidence__",
            "adwin",
            times[at],
            count_before + at + 1,
            result,
        )


# ---------------------------------------------------------------------- testing


@dataclass
class _Test:
    feature: str
    statistic: str
    p_value: float
    effect: float
    threshold: float
    extra: dict[str, float]


def _numeric_test(name: str, prof: NumericProfile, sk: NumericSketch) -> _Test | None:
    if sk.n < 1 or prof.n < 1:
        return None
    d = ks_binned(prof.counts, sk.counts)
    p = ks_pvalue(d.statistic, sk.n, prof.n)
    ref_g = np.add.reduceat(prof.counts, prof.groups)
    cur_g = np.add.reduceat(sk.counts, prof.groups)
    return _Test(
        name,
        "psi",
        p,
        psi(ref_g, cur_g),
        prof.psi_threshold,
        {"ks": d.statistic, "js": js_distance(ref_g, cur_g)},
    )


def _categorical_test(name: str, prof: CategoricalProfile, sk: CategoricalSketch) -> _Test | None:
    if sk.n < 1 or prof.n < 1:
        return None
    c = chi2_homogeneity(prof.counts, sk.counts)
    return _Test(
        name,
        "psi",
        c.p_value,
        psi(prof.counts, sk.counts),
        prof.psi_threshold,
        {"chi2": c.statistic, "js": js_distance(prof.counts, sk.counts)},
    )


def _decide(tests: list[_Test], alpha: float, episode: Episode) -> list[_Test]:
    """Tests that drifted: Holm-significant AND effect over threshold (hysteresis when firing)."""
    if not tests:
        return []
    reject = holm(np.asarray([t.p_value for t in tests]), alpha)
    factor = 0.5 if episode.firing else 1.0  # easier to stay firing than to start
    return [t for t, r in zip(tests, reject, strict=True) if r and t.effect >= factor * t.threshold]


def _close_window(st: ModelState, ref: ReferenceProfile, result: BatchResult) -> None:
    w = st.window
    if w.count == 0:
        return
    pol = ref.policy
    alpha = min(0.5, w.count / pol.false_alarm_events)
    mid, ver = st.key.model_id, st.key.model_version

    # -- input drift
    tests: list[_Test] = []
    for name, sk in st.num.items():
        prof = ref.features[name]
        assert isinstance(prof, NumericProfile)
        if sk.n >= pol.min_window_events and (t := _numeric_test(name, prof, sk)):
            tests.append(t)
    for name, csk in st.cat.items():
        cprof = ref.features[name]
        assert isinstance(cprof, CategoricalProfile)
        if csk.n >= pol.min_window_events and (t := _categorical_test(name, cprof, csk)):
            tests.append(t)
    for t in tests:
        result.observations.append(Observation(mid, ver, t.feature, "psi", t.effect))
        for k, v in t.extra.items():
            result.observations.append(Observation(mid, ver, t.feature, k, v))
    ep = st.episodes.setdefault("input_drift", Episode())
    drifted = _decide(tests, alpha, ep)
    early_in = {k: v for k, v in st.early.items() if not k.startswith("__")}
    _step_episode(st, ref, "input_drift", drifted, bool(early_in), result, "window_ks_psi")

    # -- output drift
    out = ref.outputs
    otests: list[_Test] = []
    if st.classes is not None and out.classes is not None and st.classes.n >= pol.min_window_events:
        if t := _categorical_test("__class__", out.classes, st.classes):
            otests.append(t)
        share = float(st.classes.counts.max() / st.classes.n)
        z = _binomial_z(share, out.top_class_share, st.classes.n)
        otests.append(
            _Test(
                "__top_class_share__",
                "share_excess",
                _norm_sf(z),
                share - out.top_class_share,
                pol.quality_margin * 2,
                {},
            )
        )
    if (
        st.confidence is not None
        and out.confidence is not None
        and st.confidence.n >= pol.min_window_events
    ):
        if t := _numeric_test("__confidence__", out.confidence, st.confidence):
            otests.append(t)
        rate = st.low_confidence / st.confidence.n
        z = _binomial_z(rate, out.low_confidence_rate, st.confidence.n)
        otests.append(
            _Test(
                "__low_confidence__",
                "rate_excess",
                _norm_sf(z),
                rate - out.low_confidence_rate,
                pol.quality_margin,
                {},
            )
        )
    if (
        st.prediction is not None
        and out.prediction is not None
        and st.prediction.n >= pol.min_window_events
    ):
        if t := _numeric_test("__prediction__", out.prediction, st.prediction):
            otests.append(t)
    for t in otests:
        result.observations.append(Observation(mid, ver, t.feature, t.statistic, t.effect))
    oep = st.episodes.setdefault("output_drift", Episode())
    odrifted = _decide(otests, alpha, oep)
    _step_episode(
        st, ref, "output_drift", odrifted, "__confidence__" in st.early, result, "window_output"
    )

    # -- data quality
    qtests = _quality_tests(st, ref)
    for t in qtests:
        result.observations.append(Observation(mid, ver, t.feature, t.statistic, t.effect))
    qep = st.episodes.setdefault("data_quality", Episode())
    factor = 0.5 if qep.firing else 1.0
    qdrifted = [t for t in qtests if t.effect >= factor * t.threshold]
    _step_episode(st, ref, "data_quality", qdrifted, False, result, "data_quality")

    drifted_names = {t.feature for t in (*drifted, *odrifted, *qdrifted)}
    result.windows.append(_summary(st, ref, [*tests, *otests, *qtests], drifted_names))
    result.windows_closed += 1
    w.index += 1
    w.count = 0
    w.start_ms = w.end_ms = -1
    st._reset_window_sketches(ref)


def _summary(
    st: ModelState, ref: ReferenceProfile, tests: Sequence[_Test], drifted: set[str]
) -> dict[str, Any]:
    """Plain-data summary of a closing window: its tests and its (grouped) histograms."""
    hist: dict[str, list[int]] = {}
    for name, sk in st.num.items():
        prof = ref.features[name]
        assert isinstance(prof, NumericProfile)
        hist[name] = np.add.reduceat(sk.counts, prof.groups).tolist() if sk.counts.size else []
    for name, csk in st.cat.items():
        hist[name] = csk.counts.tolist()
    if st.classes is not None:
        hist["__class__"] = st.classes.counts.tolist()
    if st.confidence is not None and ref.outputs.confidence is not None:
        hist["__confidence__"] = np.add.reduceat(
            st.confidence.counts, ref.outputs.confidence.groups
        ).tolist()
    w = st.window
    return {
        "model_id": st.key.model_id,
        "model_version": st.key.model_version,
        "segment": st.key.segment,
        "reference": ref.reference_id,
        "window": w.index,
        "start": w.start_ms,
        "end": w.end_ms,
        "count": w.count,
        "tests": [
            {
                "feature": t.feature,
                "statistic": t.statistic,
                "value": round(t.effect, 6),
                "threshold": round(t.threshold, 6),
                "p_value": t.p_value if t.statistic == "psi" else None,
                "drifted": t.feature in drifted and t.effect >= 0.5 * t.threshold,
                **{k: round(v, 6) for k, v in t.extra.items()},
            }
            for t in tests
        ],
        "hist": hist,
        "episodes": {k: e.firing for k, e in st.episodes.items()},
    }


def _binomial_z(rate: float, p0: float, n: int) -> float:
    p0 = min(max(p0, 1e-6), 1 - 1e-6)
    return (rate - p0) / math.sqrt(p0 * (1 - p0) / n)


def _norm_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


def _quality_tests(st: ModelState, ref: ReferenceProfile) -> list[_Test]:
    """Data-quality signals: excess rates over the reference's own rates."""
    pol = ref.policy
    total = st.window.count
    tests: list[_Test] = []
    margin = pol.quality_margin
    for name, sk in st.num.items():
        prof = ref.features[name]
        assert isinstance(prof, NumericProfile)
        missing = (sk.missing - st.type_mismatch.get(name, 0)) / total
        tests.append(
            _Test(name, "missing_rate_excess", 0.0, missing - prof.missing_rate, margin, {})
        )
        if sk.n:
            oor = (sk.below + sk.above) / sk.n
            tests.append(_Test(name, "out_of_range_rate", 0.0, oor, margin, {}))
        if sk.nonfinite:
            tests.append(_Test(name, "nonfinite_rate", 0.0, sk.nonfinite / total, margin, {}))
    for name, csk in st.cat.items():
        cprof = ref.features[name]
        assert isinstance(cprof, CategoricalProfile)
        missing = csk.missing / total
        tests.append(
            _Test(name, "missing_rate_excess", 0.0, missing - cprof.missing_rate, margin, {})
        )
        if csk.n and cprof.n:
            other = float(csk.counts[-1] / csk.n) - float(cprof.counts[-1] / cprof.n)
            tests.append(_Test(name, "unseen_category_rate", 0.0, other, margin, {}))
    for name, mism in st.type_mismatch.items():
        if mism:
            tests.append(_Test(name, "type_mismatch_rate", 0.0, mism / total, margin, {}))
    if st.unknown_features:
        tests.append(
            _Test(
                "__unknown_features__",
                "unknown_feature_rate",
                0.0,
                st.unknown_features / total,
                margin,
                {},
            )
        )
    return tests


def _severity(kind: str, drifted: Sequence[_Test]) -> str:
    if kind == "data_quality":
        return "critical" if any(t.effect >= 0.5 for t in drifted) else "warning"
    top = max((t.effect for t in drifted), default=0.0)
    return "critical" if top >= 0.25 or len(drifted) >= 3 else "warning"


def _top_features(drifted: Sequence[_Test]) -> list[FeatureContribution]:
    ranked = sorted(drifted, key=lambda t: (-t.effect, t.feature))[:20]
    total = sum(max(t.effect, 0.0) for t in ranked) or 1.0
    return [
        FeatureContribution(
            feature=t.feature,
            score=round(t.effect, 6),
            contribution=round(max(t.effect, 0.0) / total, 6),
            statistic=t.statistic,
        )
        for t in ranked
    ]


def _alert(
    st: ModelState,
    ref: ReferenceProfile,
    kind: str,
    status: str,
    ep: Episode,
    detector: str,
    drifted: Sequence[_Test],
    at_ms: int,
    count: int,
) -> DriftAlert:
    top = sorted(drifted, key=lambda t: (-t.effect, t.feature))
    first = top[0] if top else None
    key = st.key
    w = st.window
    start = w.start_ms if w.start_ms >= 0 else at_ms
    return DriftAlert(
        alert_id=make_alert_id(
            key.model_id, key.model_version, key.segment, kind, ep.number, status
        ),
        model_id=key.model_id,
        model_version=key.model_version,
        segment=key.segment_dict(),
        kind=kind,
        status=status,
        severity=ep.severity,
        feature=first.feature if first else ep.feature,
        detector=detector,
        statistic=round(first.effect, 6) if first else 0.0,
        threshold=round(first.threshold, 6) if first else 0.0,
        p_value=(min(1.0, max(0.0, first.p_value)) if first and first.statistic == "psi" else None),
        window=AlertWindow(start=max(0, start), end=max(0, at_ms), count=count),
        reference=ref.reference_id,
        detected_at=max(0, at_ms),
        episode=ep.number,
        diagnosis=_diagnosis(kind),
        top_features=_top_features(drifted),
    )


def _diagnosis(kind: str) -> Any:
    # The fast loop alone cannot tell benign from harmful input drift; the slow loop
    # (labels) refines this. Until then input drift is "undetermined".
    return {"output_drift": "output_drift", "data_quality": "data_quality"}.get(
        kind, "undetermined"
    )


def _early_fire(
    st: ModelState,
    ref: ReferenceProfile,
    kind: str,
    feature: str,
    detector: str,
    at_ms: int,
    count: int,
    result: BatchResult,
) -> None:
    ep = st.episodes.setdefault(kind, Episode())
    if ep.firing or ep.cooldown > 0:
        return
    ep.firing, ep.clean_windows = True, 0
    ep.number += 1
    ep.severity, ep.feature = "warning", feature
    # The detector crossed its threshold: report the threshold as both numbers.
    level = float(ref.policy.ph_threshold if detector == "page_hinkley" else ref.policy.adwin_delta)
    t = _Test(feature, detector, 0.0, level, level, {})
    alert = _alert(st, ref, kind, "firing", ep, detector, [t], at_ms, count)
    result.alerts.append(alert.model_copy(update={"p_value": None}))


def _step_episode(
    st: ModelState,
    ref: ReferenceProfile,
    kind: str,
    drifted: list[_Test],
    early: bool,
    result: BatchResult,
    detector: str,
) -> None:
    ep = st.episodes.setdefault(kind, Episode())
    at = st.window.end_ms
    pol = ref.policy
    if not ep.firing:
        if ep.cooldown > 0:
            ep.cooldown -= 1
            return
        if drifted:
            ep.firing, ep.clean_windows = True, 0
            ep.number += 1
            ep.severity = _severity(kind, drifted)
            ep.feature = sorted(drifted, key=lambda t: (-t.effect, t.feature))[0].feature
            result.alerts.append(
                _alert(st, ref, kind, "firing", ep, detector, drifted, at, st.window.count)
            )
        return
    if drifted or early:
        ep.clean_windows = 0
        return
    ep.clean_windows += 1
    if ep.clean_windows >= pol.resolve_after_windows:
        ep.firing = False
        ep.cooldown = pol.cooldown_windows
        result.alerts.append(
            _alert(st, ref, kind, "resolved", ep, detector, [], at, st.window.count)
        )


def alerts_to_jsonl(alerts: Sequence[DriftAlert]) -> bytes:
    """Alerts as JSON lines (the replay output format)."""
    return b"".join(orjson.dumps(a.model_dump(mode="json")) + b"\n" for a in alerts)
