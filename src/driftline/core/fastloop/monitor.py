"""The fast loop's pure core: prediction events in, drift verdicts and alerts out.

:func:`process_batch` is a function of (events, state, references) with no I/O. The
same code runs under the Kafka worker (:mod:`driftline.runtime.monitor`), in a replay from a
file (:mod:`driftline.offline.replay`) and in unit tests, which is what makes "a stream run
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
Performance: the core works on columns (:mod:`driftline.contract.columnar`), not on event
dicts. Per batch and stream it reads every feature of every event in one pass into
a float64 matrix (numeric) and a code matrix (categorical), bins them once, and then
per window chunk updates all sketches with one ``bincount`` each, all Page-Hinkley
detectors as rows of one matrix, and at the window's close computes KS, PSI and JS for
all numeric features in a handful of array operations. Results equal the feature-by-
feature computation (alert ids exactly, floats to rounding); docs/performance.md has
the figures, tests/unit/test_monitor_fast.py and the golden fixtures the proofs.
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
from driftline.contract.columnar import (
    ColumnarBatch,
    Columns,
    category_codes,
    group_items,
    numeric_column,
)
from driftline.contract.events import (
    AlertWindow,
    DriftAlert,
    FeatureContribution,
    event_time_ms,
    make_alert_id,
)
from driftline.contract.keys import KeyTuple, StateKey, interned_key
from driftline.core.detectors import ADWIN, PageHinkley
from driftline.core.reference import (
    CategoricalProfile,
    NumericProfile,
    Policy,
    ReferenceProfile,
    build_reference,
    features_from_events,
)
from driftline.core.sketches import (
    CategoricalSketch,
    NumericSketch,
    categories_fingerprint,
    edges_fingerprint,
)
from driftline.core.stats import chi2_sf, holm, kolmogorov_sf

__all__ = [
    "BatchResult",
    "Episode",
    "ModelState",
    "Observation",
    "WARMUP_EVENTS",
    "process_batch",
    "process_columns",
]

#: Live events used to build a warm-up reference for a model that has none.
WARMUP_EVENTS = 2000
FUTURE_TOLERANCE_MS = 5 * 60 * 1000
STATE_FORMAT = 1

KINDS = ("input_drift", "output_drift", "data_quality")


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


def _observation(model_id: str, version: str, feature: str, test: str, value: float) -> Observation:
    """``Observation(...)`` without the frozen dataclass's per-field ``object.__setattr__``
    calls (a window makes about three per feature)."""
    obs = object.__new__(Observation)
    obs.__dict__.update(
        model_id=model_id, model_version=version, feature=feature, test=test, value=value
    )
    return obs


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
        Decoded, contract-valid prediction events (dicts), in partition order. Columnar
        batches (:class:`driftline.contract.columnar.ColumnarBatch`) may be mixed in; see
        :func:`process_columns`.
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
    return _process(group_items(events), states, references, default_policy)


def process_columns(
    batches: Sequence[ColumnarBatch | Mapping[str, Any]],
    states: dict[StateKey, ModelState],
    references: RefLookup,
    *,
    default_policy: Policy | None = None,
) -> BatchResult:
    """Process columnar batches (and single events, mixed) in partition order.

    The same core as :func:`process_batch`: a batch of ``n`` predictions gives exactly
    the result of its ``n`` rows sent as single events (alert ids, states, window
    summaries), only without reading them event by event.
    """
    return _process(group_items(batches), states, references, default_policy)


def _process(
    groups: Mapping[KeyTuple, Sequence[Columns]],
    states: dict[StateKey, ModelState],
    references: RefLookup,
    default_policy: Policy | None,
) -> BatchResult:
    result = BatchResult()
    for kt, parts in groups.items():
        key = interned_key(kt)
        ref = references(key.model_id, key.model_version)
        st = states.get(key)
        if st is None:
            st = ModelState.fresh(key, ref)
            states[key] = st
        elif ref is not None and st.reference_id != ref.reference_id:
            st.attach(ref)
        plan: _Plan | None = None
        acc: _Acc | None = None
        for cols in parts:
            if ref is None:
                ref, rest = _warm_up(st, cols, default_policy or Policy(), result)
                if ref is None or rest is None:
                    continue
                cols = rest
            if cols.n == 0:
                continue
            if plan is None or acc is None:
                plan = _plan(ref)
                acc = _Acc.load(st, plan)
            _process_cols(st, ref, plan, acc, cols, result)
        if plan is not None and acc is not None:
            acc.store(st, plan)
    return result


def _warm_up(
    st: ModelState, cols: Columns, policy: Policy, result: BatchResult
) -> tuple[ReferenceProfile | None, Columns | None]:
    """Collect the first :data:`WARMUP_EVENTS` events; then build the reference from them.

    Returns the reference (or None while warming up) and the events left to monitor.
    """
    take = WARMUP_EVENTS - len(st.warmup)
    st.warmup.extend(cols.rows(0, take))
    st.events += min(take, cols.n)
    if len(st.warmup) < WARMUP_EVENTS:
        return None, None
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
    return ref, cols.tail(min(take, cols.n))


def _time_ms(e: Mapping[str, Any]) -> int:
    ts = e["timestamp"]
    if isinstance(ts, int):
        return ts
    return event_time_ms(ts)


# ---------------------------------------------------------------------- the plan
#
# Everything about a reference the core needs per batch, computed once per reference
# object: the numeric columns (features, then confidence, then a regression's
# prediction) with their bins padded to one width so a window's counts are one matrix,
# the reference's cumulative distribution for KS, its PSI groups bucketed by size for
# one vectorised PSI/JS per bucket, the Page-Hinkley standardisation, and the category
# lookups.


class _Plan:
    def __init__(self, ref: ReferenceProfile) -> None:
        feats = ref.features
        out = ref.outputs
        self.ref = ref
        self.expected = feats.keys()
        self.all_names = list(feats)
        where = {k: i for i, k in enumerate(self.all_names)}
        self.num_names = [k for k, v in feats.items() if isinstance(v, NumericProfile)]
        self.cat_names = [k for k, v in feats.items() if isinstance(v, CategoricalProfile)]
        self.num_pos = [where[k] for k in self.num_names]
        self.cat_pos = [where[k] for k in self.cat_names]

        nprofs: list[NumericProfile] = []
        for k in self.num_names:
            p = feats[k]
            assert isinstance(p, NumericProfile)
            nprofs.append(p)
        self.conf_col = self.pred_col = -1
        if out.confidence is not None:
            self.conf_col = len(nprofs)
            nprofs.append(out.confidence)
        if out.prediction is not None and out.task == "regression":
            self.pred_col = len(nprofs)
            nprofs.append(out.prediction)
        self.nprofs = nprofs
        nc = self.nc = len(nprofs)
        self.edges = [p.edges for p in nprofs]
        self.bins = [int(p.edges.size) + 1 for p in nprofs]
        bmax = self.bmax = max(self.bins, default=1)
        self.offsets = np.arange(nc, dtype=np.intp) * bmax
        self.sentinel = nc * bmax
        self.ref_min = np.array([p.min for p in nprofs], dtype=np.float64)
        self.ref_max = np.array([p.max for p in nprofs], dtype=np.float64)
        self.fps = [edges_fingerprint(e) for e in self.edges]
        self.prof_n = [int(p.n) for p in nprofs]
        self.psi_thr = [float(p.psi_threshold) for p in nprofs]
        ref_counts = np.zeros((nc, bmax), dtype=np.float64)
        for i, p in enumerate(nprofs):
            ref_counts[i, : self.bins[i]] = p.counts
        with np.errstate(divide="ignore", invalid="ignore"):
            self.cum_r = np.cumsum(ref_counts / ref_counts.sum(axis=1, keepdims=True), axis=1)
        # KS compares the CDFs at the interior edges only (positions < bins - 1).
        self.ks_pad = np.arange(bmax)[None, :] >= (np.asarray(self.bins) - 1)[:, None]

        # PSI groups: one reduceat over the flat counts, then buckets of equal size.
        starts: list[NDArray[np.intp]] = []
        self.gslice: list[slice] = []
        base = 0
        sizes: dict[int, list[int]] = {}
        for i, p in enumerate(nprofs):
            g = np.asarray(p.groups, dtype=np.intp)
            starts.append(g + i * bmax)
            self.gslice.append(slice(base, base + g.size))
            sizes.setdefault(int(g.size), []).append(i)
            base += g.size
        self.gstarts = np.concatenate(starts) if starts else np.zeros(0, dtype=np.intp)
        self.buckets: list[tuple[list[int], NDArray[np.intp], NDArray[np.float64]]] = []
        for size, cols in sizes.items():
            idx = np.array(
                [np.arange(self.gslice[i].start, self.gslice[i].stop) for i in cols],
                dtype=np.intp,
            ).reshape(len(cols), size)
            ref_g = np.array(
                [np.add.reduceat(nprofs[i].counts, nprofs[i].groups) for i in cols],
                dtype=np.float64,
            ).reshape(len(cols), size)
            self.buckets.append((cols, idx, ref_g))

        self.binner = _Binner(self.edges)
        pol = ref.policy
        self.ph_rows = [i for i, k in enumerate(self.num_names) if nprofs[i].std > 0]
        self.ph_mean = np.array([nprofs[i].mean for i in self.ph_rows], dtype=np.float64)
        self.ph_std = np.array([nprofs[i].std for i in self.ph_rows], dtype=np.float64)
        self.ph_clip = float(pol.ph_clip)

        cprofs: list[CategoricalProfile] = []
        for k in self.cat_names:
            cp = feats[k]
            assert isinstance(cp, CategoricalProfile)
            cprofs.append(cp)
        self.class_row = -1
        if out.classes is not None:
            self.class_row = len(cprofs)
            cprofs.append(out.classes)
        self.cprofs = cprofs
        self.kc = len(cprofs)
        self.ncat = [len(cp.categories) for cp in cprofs]
        width = max(self.ncat, default=0) + 2  # missing, categories..., other
        self.cwidth = width
        self.coff = np.arange(self.kc, dtype=np.int64) * width + 1
        self.cindex = [{c: i for i, c in enumerate(cp.categories)} for cp in cprofs]
        self.luts: list[dict[str | None, int]] = []
        for index in self.cindex:
            lut: dict[str | None, int] = {None: -1}
            for c, i in index.items():
                lut[c] = i
            self.luts.append(lut)
        self.cfps = [categories_fingerprint(cp.categories) for cp in cprofs]
        self.cref = [np.asarray(cp.counts, dtype=np.float64) for cp in cprofs]
        widths: dict[int, list[int]] = {}
        for r, size in enumerate(self.ncat):
            widths.setdefault(size + 1, []).append(r)
        self.cbuckets = [
            (rows, np.array([self.cref[r] for r in rows], dtype=np.float64).reshape(len(rows), w))
            for w, rows in widths.items()
        ]


class _Binner:
    """``searchsorted(edges[i], x[i], side="left")`` for every row of ``x`` at once.

    A lookup grid of :data:`_GRID` cells per column gives, for each value, a lower
    bound of its bin (the bin of the grid point one cell below); a few vectorised
    "is the next edge still below x?" steps finish the search. Columns whose edges
    crowd more than :data:`_GRID_STEPS` into a few cells use ``searchsorted``.
    The result is exactly ``searchsorted``'s (tests/unit/test_monitor_fast.py).
    """

    def __init__(self, edges: Sequence[NDArray[np.float64]]) -> None:
        self.n = len(edges)
        grid_rows: list[int] = []
        bases: list[NDArray[np.intp]] = []
        lows: list[float] = []
        scales: list[float] = []
        steps = 0
        for i, e in enumerate(edges):
            if e.size < 2:
                continue
            lo, hi = float(e[0]), float(e[-1])
            scale = _GRID / (hi - lo)
            if not (math.isfinite(scale) and scale > 0):
                continue
            points = lo + np.arange(_GRID) / scale
            base = np.searchsorted(e, points, side="left")
            per_cell = np.diff(np.searchsorted(e, np.r_[points, math.inf], side="left"))
            near = int(np.convolve(per_cell, np.ones(5, dtype=np.int64), mode="same").max())
            if near + 1 > _GRID_STEPS:
                continue
            steps = max(steps, near + 1)
            grid_rows.append(i)
            bases.append(base.astype(np.intp))
            lows.append(lo)
            scales.append(scale)
        self.edges = list(edges)
        self.grid_rows = np.asarray(grid_rows, dtype=np.intp)
        self.other_rows = [i for i in range(self.n) if i not in set(grid_rows)]
        self.steps = steps
        k = len(grid_rows)
        width = max((edges[i].size for i in grid_rows), default=0) + steps + 1
        pad = np.full((k, width), math.inf)
        for j, i in enumerate(grid_rows):
            pad[j, : edges[i].size] = edges[i]
        self.pad = pad.ravel()
        self.pad_off = (np.arange(k, dtype=np.intp) * width)[:, None]
        self.base = np.concatenate(bases) if bases else np.zeros(0, dtype=np.intp)
        self.base_off = (np.arange(k, dtype=np.intp) * _GRID - 1)[:, None]
        self.low = np.asarray(lows, dtype=np.float64)[:, None]
        self.scale = np.asarray(scales, dtype=np.float64)[:, None]

    def bins(self, x: NDArray[np.float64], finite: NDArray[np.bool_]) -> NDArray[np.intp]:
        """Bin index of every value (non-finite values get an arbitrary bin)."""
        out = np.empty(x.shape, dtype=np.intp)
        rows = self.grid_rows
        if rows.size:
            xs = x if rows.size == self.n else x[rows]
            if not finite[rows].all():
                xs = np.where(np.isfinite(xs), xs, self.low)
            with np.errstate(over="ignore", invalid="ignore"):
                cell = (xs - self.low) * self.scale
            np.clip(cell, 1.0, _GRID - 1.0, out=cell)
            at = cell.astype(np.intp)
            at += self.base_off
            idx = self.base[at]
            idx += self.pad_off
            pad = self.pad
            for _ in range(self.steps):
                idx += pad[idx] < xs
            idx -= self.pad_off
            if rows.size == self.n:
                out = idx
            else:
                out[rows] = idx
        for i in self.other_rows:
            out[i] = np.searchsorted(self.edges[i], x[i], side="left")
        return out


_GRID = 2048
_GRID_STEPS = 6


_PLANS: dict[int, tuple[ReferenceProfile, _Plan]] = {}


def _plan(ref: ReferenceProfile) -> _Plan:
    """The plan of ``ref``, cached per reference object."""
    hit = _PLANS.get(id(ref))
    if hit is not None and hit[0] is ref:
        return hit[1]
    if len(_PLANS) >= 1024:
        _PLANS.clear()
    plan = _Plan(ref)
    _PLANS[id(ref)] = (ref, plan)
    return plan


# ---------------------------------------------------------------------- the window
#
# During a batch the open window of a stream lives in arrays (:class:`_Acc`), one row
# per numeric column and one per categorical column; the sketches of the ModelState are
# read into them when the batch starts and written back (without validation, sharing
# the reference's edges and fingerprints) when it ends. Closing a window zeroes the
# arrays in place instead of building new sketch objects.


class _Acc:
    def __init__(self, plan: _Plan) -> None:
        nc, kc = plan.nc, plan.kc
        self.counts = np.zeros((nc, plan.bmax), dtype=np.int64)
        self.missing = np.zeros(nc, dtype=np.int64)
        self.nonfinite = np.zeros(nc, dtype=np.int64)
        self.n = np.zeros(nc, dtype=np.int64)
        self.below = np.zeros(nc, dtype=np.int64)
        self.above = np.zeros(nc, dtype=np.int64)
        self.mean = np.zeros(nc, dtype=np.float64)
        self.m2 = np.zeros(nc, dtype=np.float64)
        self.mn = np.full(nc, math.inf)
        self.mx = np.full(nc, -math.inf)
        self.ccounts = np.zeros((kc, max(plan.cwidth - 1, 1)), dtype=np.int64)
        self.cmissing = np.zeros(kc, dtype=np.int64)
        self.mism = np.zeros(len(plan.all_names), dtype=np.int64)

    def _numeric_sketches(self, st: ModelState, plan: _Plan) -> list[NumericSketch | None]:
        sks: list[NumericSketch | None] = [st.num.get(k) for k in plan.num_names]
        if plan.conf_col >= 0:
            sks.append(st.confidence)
        if plan.pred_col >= 0:
            sks.append(st.prediction)
        return sks

    def _categorical_sketches(self, st: ModelState, plan: _Plan) -> list[CategoricalSketch | None]:
        sks: list[CategoricalSketch | None] = [st.cat.get(k) for k in plan.cat_names]
        if plan.class_row >= 0:
            sks.append(st.classes)
        return sks

    @classmethod
    def load(cls, st: ModelState, plan: _Plan) -> _Acc:
        acc = cls(plan)
        for i, sk in enumerate(acc._numeric_sketches(st, plan)):
            if sk is None or sk.bins != plan.bins[i]:
                continue
            acc.counts[i, : plan.bins[i]] = sk.counts
            acc.missing[i] = sk.missing
            acc.nonfinite[i] = sk.nonfinite
            acc.n[i] = sk.n
            acc.below[i] = sk.below
            acc.above[i] = sk.above
            if sk.n:
                acc.mean[i] = sk.mean
                acc.m2[i] = sk.m2
                acc.mn[i] = sk.min
                acc.mx[i] = sk.max
        for r, csk in enumerate(acc._categorical_sketches(st, plan)):
            if csk is None or csk.bins != plan.ncat[r] + 1:
                continue
            acc.ccounts[r, : plan.ncat[r] + 1] = csk.counts
            acc.cmissing[r] = csk.missing
        tm = st.type_mismatch
        acc.mism[:] = [tm.get(k, 0) for k in plan.all_names]
        return acc

    def store(self, st: ModelState, plan: _Plan) -> None:
        """Write the window back into ``st``'s sketches and type-mismatch counts."""
        missing, nonfinite, n = self.missing.tolist(), self.nonfinite.tolist(), self.n.tolist()
        below, above = self.below.tolist(), self.above.tolist()
        mean, m2, mn, mx = self.mean.tolist(), self.m2.tolist(), self.mn.tolist(), self.mx.tolist()
        out: list[NumericSketch] = []
        for i, prof in enumerate(plan.nprofs):
            counts = self.counts[i, : plan.bins[i]].copy()
            counts.flags.writeable = False
            out.append(
                NumericSketch(
                    plan.edges[i],
                    float(prof.min),
                    float(prof.max),
                    counts,
                    missing=missing[i],
                    nonfinite=nonfinite[i],
                    n=n[i],
                    mean=mean[i] if n[i] else 0.0,
                    m2=m2[i] if n[i] else 0.0,
                    min=mn[i],
                    max=mx[i],
                    below=below[i],
                    above=above[i],
                    fingerprint=plan.fps[i],
                )
            )
        for i, k in enumerate(plan.num_names):
            if k in st.num:
                st.num[k] = out[i]
        if plan.conf_col >= 0 and st.confidence is not None:
            st.confidence = out[plan.conf_col]
        if plan.pred_col >= 0 and st.prediction is not None:
            st.prediction = out[plan.pred_col]
        cmissing = self.cmissing.tolist()
        cats: list[CategoricalSketch] = []
        for r, cprof in enumerate(plan.cprofs):
            counts = self.ccounts[r, : plan.ncat[r] + 1].copy()
            counts.flags.writeable = False
            cats.append(
                CategoricalSketch(
                    cprof.categories,
                    counts,
                    missing=cmissing[r],
                    n=int(counts.sum()),
                    index=plan.cindex[r],
                    fingerprint=plan.cfps[r],
                )
            )
        for r, k in enumerate(plan.cat_names):
            if k in st.cat:
                st.cat[k] = cats[r]
        if plan.class_row >= 0 and st.classes is not None:
            st.classes = cats[plan.class_row]
        st.type_mismatch = dict(zip(plan.all_names, self.mism.tolist(), strict=True))

    def reset(self) -> None:
        for a in (self.counts, self.missing, self.nonfinite, self.n, self.below, self.above):
            a.fill(0)
        self.mean.fill(0.0)
        self.m2.fill(0.0)
        self.mn.fill(math.inf)
        self.mx.fill(-math.inf)
        self.ccounts.fill(0)
        self.cmissing.fill(0)
        self.mism.fill(0)

    # ------------------------------------------------------------------ absorbing
    def add_numeric(self, plan: _Plan, data: _Data, a: int, b: int) -> None:
        """Fold events ``a:b`` into every numeric column (NumericSketch.update, vectorised)."""
        m = b - a
        nc = plan.nc
        g = data.bins[:, a:b]
        hist = np.bincount(g.ravel(), minlength=plan.sentinel + 1)
        self.counts += hist[: plan.sentinel].reshape(nc, plan.bmax)
        x = data.x[:, a:b]
        rows = data.finite_rows
        if rows.size:
            sub = x if rows.size == nc else x[rows]
            with np.errstate(over="ignore", invalid="ignore"):
                bmean = sub.mean(axis=1)
                dev = sub - bmean[:, None]
                bm2 = np.einsum("ij,ij->i", dev, dev)
                na = self.n[rows]
                ntot = na + m
                fresh = na == 0
                ma = self.mean[rows]
                mean = ma * (na / ntot) + bmean * (m / ntot)
                delta = bmean - ma
                m2 = (self.m2[rows] + bm2) + delta * delta * ((na * m) / ntot)
            self.mean[rows] = np.where(fresh, bmean, mean)
            self.m2[rows] = np.where(fresh, bm2, m2)
            self.n[rows] = ntot
            self.mn[rows] = np.minimum(self.mn[rows], sub.min(axis=1))
            self.mx[rows] = np.maximum(self.mx[rows], sub.max(axis=1))
            self.below[rows] += np.count_nonzero(sub < plan.ref_min[rows, None], axis=1)
            self.above[rows] += np.count_nonzero(sub > plan.ref_max[rows, None], axis=1)
        for i in data.other_rows.tolist():
            self._add_one(plan, i, x[i])

    def _add_one(self, plan: _Plan, i: int, x: NDArray[np.float64]) -> None:
        """NumericSketch.update for one column with missing or infinite values."""
        finite = np.isfinite(x)
        n_missing = int(np.count_nonzero(np.isnan(x)))
        self.missing[i] += n_missing
        fin = x[finite]
        self.nonfinite[i] += x.size - fin.size - n_missing
        if fin.size == 0:
            return
        self.below[i] += int(np.count_nonzero(fin < plan.ref_min[i]))
        self.above[i] += int(np.count_nonzero(fin > plan.ref_max[i]))
        with np.errstate(over="ignore", invalid="ignore"):
            bmean = float(fin.mean())
            dev = fin - bmean
            bm2 = float(dev @ dev)
            n, mean, m2 = _chan(
                int(self.n[i]), float(self.mean[i]), float(self.m2[i]), int(fin.size), bmean, bm2
            )
        self.n[i], self.mean[i], self.m2[i] = n, mean, m2
        self.mn[i] = min(float(self.mn[i]), float(fin.min()))
        self.mx[i] = max(float(self.mx[i]), float(fin.max()))

    def add_categorical(self, plan: _Plan, data: _Data, a: int, b: int) -> None:
        """Fold events ``a:b`` into every categorical column (one bincount)."""
        codes = data.codes[:, a:b] + plan.coff[:, None]
        hist = np.bincount(codes.ravel(), minlength=plan.kc * plan.cwidth)
        hist = hist.reshape(plan.kc, plan.cwidth)
        self.cmissing += hist[:, 0]
        self.ccounts += hist[:, 1:]


def _chan(
    na: int, ma: float, m2a: float, nb: int, mb: float, m2b: float
) -> tuple[int, float, float]:
    """Combine (count, mean, M2) pairs (as :mod:`driftline.core.sketches` does)."""
    if nb == 0:
        return na, ma, m2a
    if na == 0:
        return nb, mb, m2b
    n = na + nb
    mean = ma * (na / n) + mb * (nb / n)
    delta = mb - ma
    return n, mean, (m2a + m2b) + delta * delta * ((na * nb) / n)


class _Data:
    """One segment's events as arrays on the plan's columns (built once per batch)."""

    def __init__(self, plan: _Plan, cols: Columns) -> None:
        n = self.n = cols.n
        ts = cols.timestamps()
        if set(map(type, ts)) == {int}:
            times: list[int] = list(ts)  # type: ignore[arg-type]
        else:
            times = [t if isinstance(t, int) else event_time_ms(t) for t in ts]
        self.times = times
        self.t64: NDArray[np.int64] | None = None
        try:
            t64 = np.array(times, dtype=np.int64)
            if t64.size and int(t64.max()) < 2**62:
                self.t64 = t64
        except OverflowError:
            pass

        self.mism: list[tuple[int, NDArray[np.bool_]]] = []
        x = self.x = np.empty((plan.nc, n), dtype=np.float64)
        for i, name in enumerate(plan.num_names):
            x[i], mm = numeric_column(cols.column(name), cols.types(name))
            if mm is not None:
                self.mism.append((plan.num_pos[i], mm))
        if plan.conf_col >= 0:
            x[plan.conf_col] = cols.confidence()
        if plan.pred_col >= 0:
            preds = cols.predictions()
            x[plan.pred_col] = numeric_column(preds, frozenset(map(type, preds)))[0]
        finite: NDArray[np.bool_] = np.ones(plan.nc, dtype=np.bool_)
        if n:
            finite = np.asarray(np.isfinite(x).all(axis=1))
        self.finite_rows = np.flatnonzero(finite)
        self.other_rows = np.flatnonzero(~finite)
        self.finite = finite
        bins = self.bins = plan.binner.bins(x, finite)
        bins += plan.offsets[:, None]
        for i in self.other_rows.tolist():
            bins[i, ~np.isfinite(x[i])] = plan.sentinel

        codes = self.codes = np.empty((plan.kc, n), dtype=np.int64)
        for r, name in enumerate(plan.cat_names):
            codes[r], mm = category_codes(
                cols.column(name), cols.types(name), plan.luts[r], plan.ncat[r]
            )
            if mm is not None:
                self.mism.append((plan.cat_pos[r], mm))
        if plan.class_row >= 0:
            preds = cols.predictions()
            r = plan.class_row
            codes[r] = category_codes(
                preds, frozenset(map(type, preds)), plan.luts[r], plan.ncat[r], track=False
            )[0]
        self.unknown = cols.unknown(plan.expected)


# ---------------------------------------------------------------------- absorbing


def _process_cols(
    st: ModelState,
    ref: ReferenceProfile,
    plan: _Plan,
    acc: _Acc,
    cols: Columns,
    result: BatchResult,
) -> None:
    pol = ref.policy
    data = _Data(plan, cols)
    run = _PHRun(st, plan, data) if plan.ph_rows else None
    times = data.times
    n = data.n
    start = 0
    while start < n:
        end = _window_cut(st, pol, times, start)
        if end > start:
            _absorb(st, ref, plan, acc, data, run, start, end, result)
        if end < n or _window_full(st, pol):
            _close_window(st, ref, plan, acc, result)
            if end < n and pol.window_seconds > 0:
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


def _track_time(st: ModelState, data: _Data, a: int, b: int, result: BatchResult) -> None:
    """Event-time bookkeeping: late and future-dated events are counted, never dropped."""
    w = st.window
    t64 = data.t64
    if t64 is not None:
        t = t64[a:b]
        prev = st.max_event_ms
        newest = np.maximum.accumulate(t)
        before = np.empty_like(t)
        before[0] = prev
        np.maximum(newest[:-1], prev, out=before[1:])
        # Assuming no event is future-dated, the newest time before each event is the
        # running maximum; if that finds none, the assumption held.
        if not np.any((before >= 0) & (t > before + FUTURE_TOLERANCE_MS)):
            if w.open_ms >= 0:
                late = int(np.count_nonzero(t < w.open_ms))
                st.late_events += late
                result.late_events += late
            lo, hi = int(t.min()), int(newest[-1])
            st.max_event_ms = max(prev, hi)
            w.start_ms = lo if w.start_ms < 0 else min(w.start_ms, lo)
            w.end_ms = max(w.end_ms, hi)
            return
    for t_ in data.times[a:b]:
        if st.max_event_ms >= 0 and t_ > st.max_event_ms + FUTURE_TOLERANCE_MS:
            st.future_events += 1
            result.future_events += 1
            continue
        if w.open_ms >= 0 and t_ < w.open_ms:
            st.late_events += 1
            result.late_events += 1
        st.max_event_ms = max(st.max_event_ms, t_)
        w.start_ms = t_ if w.start_ms < 0 else min(w.start_ms, t_)
        w.end_ms = max(w.end_ms, t_)


def _absorb(
    st: ModelState,
    ref: ReferenceProfile,
    plan: _Plan,
    acc: _Acc,
    data: _Data,
    run: _PHRun | None,
    a: int,
    b: int,
    result: BatchResult,
) -> None:
    m = b - a
    w = st.window
    _track_time(st, data, a, b, result)
    w.count += m
    st.events += m
    if data.unknown is not None:
        st.unknown_features += int(data.unknown[a:b].sum())
    count_before = w.count - m
    if plan.nc:
        acc.add_numeric(plan, data, a, b)
    for where, mm in data.mism:
        acc.mism[where] += int(np.count_nonzero(mm[a:b]))
    if run is not None and run.pending:
        first_hit = _page_hinkley(st, ref, plan, data, run, a, b)
        if first_hit is not None:
            # The earliest detecting event fires, whatever the batch boundaries were.
            at, name = first_hit
            _early_fire(
                st,
                ref,
                "input_drift",
                name,
                "page_hinkley",
                data.times[a + at],
                count_before + at + 1,
                result,
            )
    if plan.kc:
        acc.add_categorical(plan, data, a, b)
    if plan.conf_col >= 0 and st.confidence is not None:
        conf = data.x[plan.conf_col, a:b]
        if data.finite[plan.conf_col]:
            pos = np.arange(m)
            finite = conf
        else:
            pos = np.flatnonzero(np.isfinite(conf))
            finite = conf[pos]
        st.low_confidence += int(np.count_nonzero(finite < ref.outputs.low_confidence_threshold))
        if st.adwin is not None and finite.size:
            _feed_adwin(st, ref, finite, pos, data.times, a, count_before, result)


def _feed_adwin(
    st: ModelState,
    ref: ReferenceProfile,
    conf: NDArray[np.float64],
    pos: NDArray[np.intp],
    times: Sequence[int],
    base: int,
    count_before: int,
    result: BatchResult,
) -> None:
    """ADWIN sees the mean confidence of consecutive blocks of ``adwin_block`` events.

    ``pos`` maps each confidence value to its event's index in the absorbed chunk,
    which starts at ``times[base]``.
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
            times[base + at],
            count_before + at + 1,
            result,
        )


# ---------------------------------------------------------------------- Page-Hinkley
#
# One Page-Hinkley detector per numeric feature, all fed the same events. Instead of
# one PageHinkley.update_many call per feature (tens of numpy calls each), the
# detectors of a window's chunk run as rows of one matrix: the closed forms of
# PageHinkley._block (running mean by a cumulative sum, the unfaded sums by another)
# along axis 1. A row whose statistic comes anywhere near the threshold (a margin a
# million times wider than rounding), or that needs anything unusual (missing values,
# a pending reset, fading, a long chunk), goes through PageHinkley.update_many instead,
# so detections are exactly the detector's (and river's); the states differ from
# update_many's only by rounding (tests/unit/test_monitor_fast.py).

_PH_BLOCK = 16384
_T = np.arange(1, _PH_BLOCK + 1, dtype=np.float64)
_INV_T = 1.0 / _T
_GAPS: dict[float, NDArray[np.float64]] = {}


def _gap(delta: float) -> NDArray[np.float64]:
    """``dec_t - inc_t`` of an unfaded detector from a fresh start: ``2 delta t``, summed."""
    g = _GAPS.get(delta)
    if g is None:
        g = _GAPS[delta] = np.cumsum(np.full(_PH_BLOCK, 2.0 * delta))
    return g


def _bankable(p: PageHinkley, first: PageHinkley) -> bool:
    return (
        not p._drift
        and p.alpha == 1.0
        and p.mode == "both"
        and p.delta >= 0.0
        and p.delta == first.delta
        and p.threshold == first.threshold
        and p.min_instances == first.min_instances
        and (p._n == 0 or math.isfinite(p._mean))
        and math.isfinite(p._inc)
        and math.isfinite(p._dec)
    )


def _ph_bank(phs: Sequence[PageHinkley], z: NDArray[np.float64]) -> list[int]:
    """Feed row ``j`` of ``z`` to ``phs[j]`` where that certainly detects nothing.

    Returns the rows it left untouched (they must go through ``update_many``).
    """
    k, m = z.shape
    p0 = phs[0]
    delta, thr, mi = p0.delta, p0.threshold, p0.min_instances
    n0 = np.array([p._n for p in phs], dtype=np.float64)
    mean0 = np.array([p._mean for p in phs], dtype=np.float64)
    inc0 = np.array([p._inc for p in phs], dtype=np.float64)
    dec0 = np.array([p._dec for p in phs], dtype=np.float64)
    min0 = np.array([p._min_inc for p in phs], dtype=np.float64)
    max0 = np.array([p._max_dec for p in phs], dtype=np.float64)
    started = n0 > 0
    with np.errstate(over="ignore", invalid="ignore"):
        center = np.where(started, mean0, z[:, 0])
        inc = z - center[:, None]
        frac = np.cumsum(inc, axis=1)
        if started.all():
            frac /= _T[:m] + n0[:, None]
        elif not started.any():
            frac *= _INV_T[:m]
        else:
            frac = np.where(started[:, None], frac / (_T[:m] + n0[:, None]), frac * _INV_T[:m])
        inc -= frac  # deviations from the running mean
        inc -= delta
        np.cumsum(inc, axis=1, out=inc)
        inc += inc0[:, None]
        dec = inc + _gap(delta)[:m]
        shift = dec0 - inc0
        moved = shift != 0.0
        if moved.any():
            dec[moved] += shift[moved, None]
        lo = np.fmin.accumulate(inc, axis=1)
        np.fmin(lo, min0[:, None], out=lo)
        hi = np.fmax.accumulate(dec, axis=1)
        np.fmax(hi, max0[:, None], out=hi)
        stat = np.fmax(inc - lo, hi - dec)
        first = np.maximum(0.0, mi - n0 - 1.0)
        if (first > 0).any():
            stat[np.arange(m)[None, :] < first[:, None]] = -math.inf
        worst = stat.max(axis=1)
        scale = np.maximum(np.abs(lo[:, -1]), np.abs(hi[:, -1]))
        tol = 1e-6 * (1.0 + abs(thr) + scale)
        tol += 1e-9 * (n0 + m) * (np.abs(center) + np.abs(frac[:, -1]))
        safe = (worst < thr - tol) & np.isfinite(tol)
    n_end = (n0 + m).tolist()
    mean_end = (center + frac[:, -1]).tolist()
    inc_end, dec_end = inc[:, -1].tolist(), dec[:, -1].tolist()
    lo_end, hi_end = lo[:, -1].tolist(), hi[:, -1].tolist()
    left: list[int] = []
    for j, ok in enumerate(safe.tolist()):
        if not ok:
            left.append(j)
            continue
        p = phs[j]
        p._n = int(n_end[j])
        p._mean = mean_end[j]
        p._inc = inc_end[j]
        p._dec = dec_end[j]
        p._min_inc = lo_end[j]
        p._max_dec = hi_end[j]
    return left


class _PHRun:
    """Page-Hinkley over one segment: the standardised values and, per detector row,
    the offset from which it must be fed chunk by chunk (``n``: never)."""

    def __init__(self, st: ModelState, plan: _Plan, data: _Data) -> None:
        rows = plan.ph_rows
        n = data.n
        with np.errstate(over="ignore", invalid="ignore"):
            z = (data.x[rows] - plan.ph_mean[:, None]) / plan.ph_std[:, None]
            np.clip(z, -plan.ph_clip, plan.ph_clip, out=z)
        self.z = z
        phs = self.phs = [st.ph[plan.num_names[i]] for i in rows]
        finite = self.finite = data.finite[rows].tolist()
        exact_from = self.exact_from = [0] * len(rows)
        # Rows that certainly detect nothing in the whole segment are fed now, in
        # blocks of at most _PH_BLOCK; the others (and the rest of a row from the block
        # where it came near the threshold) go event-exact, chunk by chunk.
        todo = [j for j, f in enumerate(finite) if f and _bankable(phs[j], phs[0])]
        start = 0
        while todo and start < n:
            stop = min(n, start + _PH_BLOCK)
            block = z[todo, start:stop] if len(todo) < len(rows) else z[:, start:stop]
            left = set(_ph_bank([phs[j] for j in todo], block))
            for i in left:
                exact_from[todo[i]] = start
            todo = [j for i, j in enumerate(todo) if i not in left]
            start = stop
        for j in todo:
            exact_from[j] = n
        self.pending = [j for j in range(len(rows)) if exact_from[j] < n]


def _page_hinkley(
    st: ModelState, ref: ReferenceProfile, plan: _Plan, data: _Data, run: _PHRun, a: int, b: int
) -> tuple[int, str] | None:
    """Feed events ``a:b`` to the detectors left event-exact; the earliest detection."""
    pol = ref.policy
    first_hit: tuple[int, str] | None = None
    for j in run.pending:
        lo = max(a, run.exact_from[j])
        if lo >= b:
            continue
        i = plan.ph_rows[j]
        name = plan.num_names[i]
        if run.finite[j]:
            at_of: NDArray[np.intp] | None = None
            zz = run.z[j, lo:b]
        else:
            at_of = np.flatnonzero(np.isfinite(data.x[i, lo:b]))
            zz = run.z[j, lo:b][at_of]
        if zz.size == 0:
            continue
        hits = run.phs[j].update_many(zz)
        if hits.size:
            st.early[name] = float(pol.ph_threshold)
            at = lo - a + (int(hits[0]) if at_of is None else int(at_of[hits[0]]))
            if first_hit is None or (at, name) < first_hit:
                first_hit = (at, name)
    return first_hit


# ---------------------------------------------------------------------- testing


@dataclass(slots=True)
class _Test:
    feature: str
    statistic: str
    p_value: float
    effect: float
    threshold: float
    extra: dict[str, float]


def _psi_kernel(
    ref: NDArray[np.float64], cur: NDArray[np.float64], eps: float = 1e-4
) -> NDArray[np.float64]:
    """PSI of each row pair, as :func:`driftline.core.stats.psi` (same operations, no checks)."""
    p = np.maximum(ref / ref.sum(axis=-1, keepdims=True), eps)
    q = np.maximum(cur / cur.sum(axis=-1, keepdims=True), eps)
    out: NDArray[np.float64] = np.sum((q - p) * np.log(q / p), axis=-1)
    return out


def _js_kernel(ref: NDArray[np.float64], cur: NDArray[np.float64]) -> NDArray[np.float64]:
    """Jensen-Shannon distance of each row pair, as :func:`driftline.core.stats.js_distance`."""
    p = ref / ref.sum(axis=-1, keepdims=True)
    q = cur / cur.sum(axis=-1, keepdims=True)
    mid = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kp = np.where(p > 0, p * np.log2(p / mid), 0.0).sum(axis=-1)
        kq = np.where(q > 0, q * np.log2(q / mid), 0.0).sum(axis=-1)
    out: NDArray[np.float64] = np.sqrt(np.clip(0.5 * (kp + kq), 0.0, 1.0))
    return out


def _js_1d(r: NDArray[np.float64], c: NDArray[np.float64]) -> float:
    """:func:`driftline.core.stats.js_distance` without its input checks (bit for bit)."""
    p, q = r / r.sum(), c / c.sum()
    mid = 0.5 * (p + q)
    pp, qq = p > 0, q > 0
    kp = float(np.sum(p[pp] * np.log2(p[pp] / mid[pp])))
    kq = float(np.sum(q[qq] * np.log2(q[qq] / mid[qq])))
    return math.sqrt(min(1.0, max(0.0, 0.5 * (kp + kq))))


def _chi2_kernel(r: NDArray[np.float64], c: NDArray[np.float64]) -> tuple[float, float]:
    """:func:`driftline.core.stats.chi2_homogeneity` without its input checks: (stat, p)."""
    keep = (r + c) > 0
    r, c = r[keep], c[keep]
    if r.size <= 1:
        return 0.0, 1.0
    nr, ncur = r.sum(), c.sum()
    col = r + c
    n = nr + ncur
    er, ec = col * (nr / n), col * (ncur / n)
    stat = float(np.sum((r - er) ** 2 / er) + np.sum((c - ec) ** 2 / ec))
    return stat, chi2_sf(stat, int(r.size - 1))


def _numeric_stats(
    plan: _Plan, acc: _Acc
) -> tuple[list[float], list[float], list[float], NDArray[np.int64]]:
    """KS (on the sketch), PSI and JS (on the PSI groups) of every numeric column at once.

    Returns ``(ks, psi, js, grouped)``; ``grouped[plan.gslice[i]]`` are column ``i``'s
    counts per PSI group. Columns without events get NaN.
    """
    counts = acc.counts
    with np.errstate(divide="ignore", invalid="ignore"):
        cur = counts / acc.n[:, None].astype(np.float64)
        d = np.abs(plan.cum_r - np.cumsum(cur, axis=1))
    d[plan.ks_pad] = 0.0
    ks = d.max(axis=1) if plan.bmax else np.zeros(plan.nc)
    grouped = np.add.reduceat(counts.ravel(), plan.gstarts)
    psi = np.full(plan.nc, math.nan)
    js = np.full(plan.nc, math.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        for cols, idx, ref_g in plan.buckets:
            cur_g = grouped[idx].astype(np.float64)
            psi[cols] = _psi_kernel(ref_g, cur_g)
            js[cols] = _js_kernel(ref_g, cur_g)
            if ref_g.shape[1] >= 8:  # zero proportions: sum as js_distance does (exact)
                for j in np.flatnonzero(~((ref_g > 0) & (cur_g > 0)).all(axis=1)).tolist():
                    if cur_g[j].sum() > 0:
                        js[cols[j]] = _js_1d(ref_g[j], cur_g[j])
    return ks.tolist(), psi.tolist(), js.tolist(), grouped


def _categorical_stats(
    plan: _Plan, acc: _Acc, least: int
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Chi-square (statistic, p-value), PSI and JS of every categorical column.

    Rows of one width are computed together, equal bit for bit to
    :func:`driftline.core.stats.chi2_homogeneity`, :func:`~driftline.core.stats.psi` and
    :func:`~driftline.core.stats.js_distance`: chi-square drops buckets empty on both sides
    and JS skips zero proportions, which here become zero terms; numpy adds fewer
    than eight terms one by one, so a zero term changes nothing. Wider rows with such
    buckets take the one-row kernels. Rows with fewer than ``least`` events get NaN.
    """
    kc = plan.kc
    chi = [math.nan] * kc
    chi_p = [math.nan] * kc
    psi_ = [math.nan] * kc
    js = [math.nan] * kc
    for rows, ref in plan.cbuckets:
        w = ref.shape[1]
        cur = acc.ccounts[rows, :w].astype(np.float64)
        total = cur.sum(axis=1)
        live = (total >= least).tolist()
        if not any(live):
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            psis = _psi_kernel(ref, cur).tolist()
            jss = _js_kernel(ref, cur).tolist()
            col = ref + cur
            kept = col > 0
            nr = ref.sum(axis=1)
            ntot = nr + total
            er = col * (nr / ntot)[:, None]
            ec = col * (total / ntot)[:, None]
            tr = np.where(kept, (ref - er) ** 2 / er, 0.0)
            tc = np.where(kept, (cur - ec) ** 2 / ec, 0.0)
            stats = (tr.sum(axis=1) + tc.sum(axis=1)).tolist()
        dof: list[int] = (kept.sum(axis=1) - 1).tolist()
        full: list[bool] = np.asarray(kept.all(axis=1)).tolist()
        no_zero: list[bool] = np.asarray(((ref > 0) & (cur > 0)).all(axis=1)).tolist()
        short = w < 8
        for j, r in enumerate(rows):
            if not live[j]:
                continue
            psi_[r] = psis[j]
            if full[j] or short:
                if dof[j] < 1:
                    chi[r], chi_p[r] = 0.0, 1.0
                else:
                    chi[r], chi_p[r] = stats[j], chi2_sf(stats[j], dof[j])
            else:
                chi[r], chi_p[r] = _chi2_kernel(ref[j], cur[j])
            js[r] = jss[j] if no_zero[j] or short else _js_1d(ref[j], cur[j])
    return chi, chi_p, psi_, js


def _decide(tests: list[_Test], alpha: float, episode: Episode) -> list[_Test]:
    """Tests that drifted: Holm-significant AND effect over threshold (hysteresis when firing)."""
    if not tests:
        return []
    reject = holm(np.asarray([t.p_value for t in tests]), alpha)
    factor = 0.5 if episode.firing else 1.0  # easier to stay firing than to start
    return [t for t, r in zip(tests, reject, strict=True) if r and t.effect >= factor * t.threshold]


def _close_window(
    st: ModelState, ref: ReferenceProfile, plan: _Plan, acc: _Acc, result: BatchResult
) -> None:
    w = st.window
    if w.count == 0:
        return
    pol = ref.policy
    alpha = min(0.5, w.count / pol.false_alarm_events)
    mid, ver = st.key.model_id, st.key.model_version
    least = max(pol.min_window_events, 1)
    n = acc.n.tolist()
    grouped = np.zeros(0, dtype=np.int64)
    if plan.nc:
        ks, psi_, js, grouped = _numeric_stats(plan, acc)

    def numeric_test(name: str, i: int) -> _Test | None:
        m = plan.prof_n[i]
        if n[i] < least or m < 1:
            return None
        # ks_pvalue without its argument checks (n, m > 0 here; 0 <= ks <= 1).
        p = kolmogorov_sf(math.sqrt(n[i] * m / (n[i] + m)) * ks[i])
        return _Test(name, "psi", p, psi_[i], plan.psi_thr[i], {"ks": ks[i], "js": js[i]})

    cn = acc.ccounts.sum(axis=1).tolist()
    if plan.kc:
        chi, chi_p, cpsi, cjs = _categorical_stats(plan, acc, least)

    def categorical_test(name: str, r: int) -> _Test | None:
        prof = plan.cprofs[r]
        if cn[r] < least or prof.n < 1:
            return None
        return _Test(
            name, "psi", chi_p[r], cpsi[r], prof.psi_threshold, {"chi2": chi[r], "js": cjs[r]}
        )

    # -- input drift
    tests: list[_Test] = []
    for i, name in enumerate(plan.num_names):
        if name in st.num and (t := numeric_test(name, i)):
            tests.append(t)
    for r, name in enumerate(plan.cat_names):
        if name in st.cat and (t := categorical_test(name, r)):
            tests.append(t)
    obs = result.observations
    for t in tests:
        obs.append(_observation(mid, ver, t.feature, "psi", t.effect))
        for k, v in t.extra.items():
            obs.append(_observation(mid, ver, t.feature, k, v))
    ep = st.episodes.setdefault("input_drift", Episode())
    drifted = _decide(tests, alpha, ep)
    early_in = {k: v for k, v in st.early.items() if not k.startswith("__")}
    _step_episode(st, ref, "input_drift", drifted, bool(early_in), result, "window_ks_psi")

    # -- output drift
    out = ref.outputs
    otests: list[_Test] = []
    r = plan.class_row
    if (
        st.classes is not None
        and out.classes is not None
        and r >= 0
        and cn[r] >= pol.min_window_events
    ):
        if t := categorical_test("__class__", r):
            otests.append(t)
        share = int(acc.ccounts[r].max()) / cn[r]
        z = _binomial_z(share, out.top_class_share, cn[r])
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
    c = plan.conf_col
    if (
        st.confidence is not None
        and out.confidence is not None
        and c >= 0
        and n[c] >= pol.min_window_events
    ):
        if t := numeric_test("__confidence__", c):
            otests.append(t)
        rate = st.low_confidence / n[c]
        z = _binomial_z(rate, out.low_confidence_rate, n[c])
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
    pc = plan.pred_col
    if (
        st.prediction is not None
        and out.prediction is not None
        and pc >= 0
        and n[pc] >= pol.min_window_events
    ):
        if t := numeric_test("__prediction__", pc):
            otests.append(t)
    for t in otests:
        obs.append(_observation(mid, ver, t.feature, t.statistic, t.effect))
    oep = st.episodes.setdefault("output_drift", Episode())
    odrifted = _decide(otests, alpha, oep)
    _step_episode(
        st, ref, "output_drift", odrifted, "__confidence__" in st.early, result, "window_output"
    )

    # -- data quality
    qtests = _quality_tests(st, ref, plan, acc)
    for t in qtests:
        obs.append(_observation(mid, ver, t.feature, t.statistic, t.effect))
    qep = st.episodes.setdefault("data_quality", Episode())
    factor = 0.5 if qep.firing else 1.0
    qdrifted = [t for t in qtests if t.effect >= factor * t.threshold]
    _step_episode(st, ref, "data_quality", qdrifted, False, result, "data_quality")

    drifted_names = {t.feature for t in (*drifted, *odrifted, *qdrifted)}
    result.windows.append(
        _summary(st, ref, plan, acc, grouped, [*tests, *otests, *qtests], drifted_names)
    )
    result.windows_closed += 1
    w.index += 1
    w.count = 0
    w.start_ms = w.end_ms = -1
    acc.reset()
    st.unknown_features = 0
    st.low_confidence = 0
    st.early = {}


def _summary(
    st: ModelState,
    ref: ReferenceProfile,
    plan: _Plan,
    acc: _Acc,
    grouped: NDArray[np.int64],
    tests: Sequence[_Test],
    drifted: set[str],
) -> dict[str, Any]:
    """Plain-data summary of a closing window: its tests and its (grouped) histograms."""
    hist: dict[str, list[int]] = {}
    for i, name in enumerate(plan.num_names):
        if name in st.num:
            hist[name] = grouped[plan.gslice[i]].tolist()
    for r, name in enumerate(plan.cat_names):
        if name in st.cat:
            hist[name] = acc.ccounts[r, : plan.ncat[r] + 1].tolist()
    if st.classes is not None and plan.class_row >= 0:
        r = plan.class_row
        hist["__class__"] = acc.ccounts[r, : plan.ncat[r] + 1].tolist()
    if st.confidence is not None and ref.outputs.confidence is not None and plan.conf_col >= 0:
        hist["__confidence__"] = grouped[plan.gslice[plan.conf_col]].tolist()
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
        "tests": _test_summaries(tests, drifted),
        "hist": hist,
        "episodes": {k: e.firing for k, e in st.episodes.items()},
    }


def _test_summaries(tests: Sequence[_Test], drifted: set[str]) -> list[dict[str, Any]]:
    flat: list[float] = []
    for t in tests:
        flat.append(t.effect)
        flat.append(t.threshold)
        flat.extend(t.extra.values())
    rounded = iter(_round6(flat))
    out: list[dict[str, Any]] = []
    for t in tests:
        d = {
            "feature": t.feature,
            "statistic": t.statistic,
            "value": next(rounded),
            "threshold": next(rounded),
            "p_value": t.p_value if t.statistic == "psi" else None,
            "drifted": t.feature in drifted and t.effect >= 0.5 * t.threshold,
        }
        for k in t.extra:
            d[k] = next(rounded)
        out.append(d)
    return out


def _round6(values: list[float]) -> list[float]:
    """``[round(v, 6) for v in values]``, vectorised.

    ``round`` gives the double nearest to ``k / 10**6``, ``k`` the exact value times
    ``10**6`` rounded half-even; numpy's ``rint(v * 1e6) / 1e6`` gives the same unless
    the product's rounding moved it across a half-integer, so values within a wide
    band of one (and non-finite or huge ones) take ``round`` itself.
    """
    if not values:
        return []
    a = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        v = a * 1e6
        out: list[float] = (np.rint(v) / 1e6).tolist()
        risky = ~(np.abs(v - np.floor(v) - 0.5) > 1e-9 * np.maximum(1.0, np.abs(v)))
        risky |= ~(np.abs(v) < 2.0**52)
    for i in np.flatnonzero(risky).tolist():
        out[i] = round(values[i], 6)
    return out


def _binomial_z(rate: float, p0: float, n: int) -> float:
    p0 = min(max(p0, 1e-6), 1 - 1e-6)
    return (rate - p0) / math.sqrt(p0 * (1 - p0) / n)


def _norm_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


def _quality_tests(st: ModelState, ref: ReferenceProfile, plan: _Plan, acc: _Acc) -> list[_Test]:
    """Data-quality signals: excess rates over the reference's own rates."""
    pol = ref.policy
    total = st.window.count
    tests: list[_Test] = []
    margin = pol.quality_margin
    mism = dict(zip(plan.all_names, acc.mism.tolist(), strict=True))
    missing, n = acc.missing.tolist(), acc.n.tolist()
    below, above, nonfinite = acc.below.tolist(), acc.above.tolist(), acc.nonfinite.tolist()
    for i, name in enumerate(plan.num_names):
        if name not in st.num:
            continue
        prof = plan.nprofs[i]
        rate = (missing[i] - mism.get(name, 0)) / total
        tests.append(_Test(name, "missing_rate_excess", 0.0, rate - prof.missing_rate, margin, {}))
        if n[i]:
            oor = (below[i] + above[i]) / n[i]
            tests.append(_Test(name, "out_of_range_rate", 0.0, oor, margin, {}))
        if nonfinite[i]:
            tests.append(_Test(name, "nonfinite_rate", 0.0, nonfinite[i] / total, margin, {}))
    cmissing = acc.cmissing.tolist()
    for r, name in enumerate(plan.cat_names):
        if name not in st.cat:
            continue
        cprof = plan.cprofs[r]
        rate = cmissing[r] / total
        tests.append(_Test(name, "missing_rate_excess", 0.0, rate - cprof.missing_rate, margin, {}))
        counts = acc.ccounts[r, : plan.ncat[r] + 1]
        cn = int(counts.sum())
        if cn and cprof.n:
            other = int(counts[-1]) / cn - int(cprof.counts[-1]) / cprof.n
            tests.append(_Test(name, "unseen_category_rate", 0.0, other, margin, {}))
    for name, count in mism.items():
        if count:
            tests.append(_Test(name, "type_mismatch_rate", 0.0, count / total, margin, {}))
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
