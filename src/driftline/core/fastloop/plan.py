"""Everything about a reference the core needs per batch, and a batch on its columns.

A :class:`Plan` is computed once per reference object (:func:`plan_for`): the numeric
columns (features, then the confidence, then a regression's prediction) on one
:class:`~driftline.core.sketches.NumericBins` so a window's counts are one matrix, the
reference's CDF for KS, its PSI groups bucketed by size for one vectorised PSI/JS per
bucket, the categorical columns (features, then the predicted class) on one
:class:`~driftline.core.sketches.CategoricalBins`, and the stacked detector banks with
the column that feeds each of their units, and the reference's multivariate model on
those columns (:class:`MultivariatePlan`).
:class:`SegmentArrays` reads one stream's events of a batch into arrays on those
columns, once per batch.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from driftline.contract.columnar import (
    BINARY_CLASS_ALIASES,
    Columns,
    category_codes,
    numeric_column,
)
from driftline.contract.events import (
    LIMITS,
    event_time_ms,
)
from driftline.core.detectors.bank import DETECT, BankLayout
from driftline.core.fastloop.state import UNKNOWN_NAMES_KEPT
from driftline.core.multivariate import MultivariateProfile
from driftline.core.reference import CategoricalProfile, NumericProfile, ReferenceProfile
from driftline.core.sketches import (
    CategoricalBins,
    NumericBins,
    categories_fingerprint,
    edges_fingerprint,
)
from driftline.core.stats import cdf_rows

__all__ = ["MAX_TIME_MS", "MultivariatePlan", "Plan", "SegmentArrays", "plan_for"]

#: The newest representable event time (the contract's limit, 9999-12-31T23:59:59.999Z).
MAX_TIME_MS = LIMITS.max_timestamp_ms


class Plan:
    """The columns of a reference, laid out for the vectorised window."""

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

        # -- numeric columns: features, confidence, a regression's prediction
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
        self.nc = len(nprofs)
        self.num_bins = bins = NumericBins(
            [p.edges for p in nprofs],
            [p.min for p in nprofs],
            [p.max for p in nprofs],
            [edges_fingerprint(p.edges) for p in nprofs],
        )
        self.prof_n = [int(p.n) for p in nprofs]
        self.psi_thr = [float(p.psi_threshold) for p in nprofs]
        ref_counts = np.zeros((self.nc, bins.width), dtype=np.float64)
        for i, p in enumerate(nprofs):
            ref_counts[i, : bins.sizes[i]] = p.counts
        self.ref_cdf = cdf_rows(ref_counts)

        # PSI groups: one reduceat over the flat counts, then buckets of equal size.
        starts: list[NDArray[np.intp]] = []
        self.gslice: list[slice] = []
        base = 0
        sizes: dict[int, list[int]] = {}
        for i, p in enumerate(nprofs):
            g = np.asarray(p.groups, dtype=np.intp)
            starts.append(g + i * bins.width)
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

        # -- categorical columns: features, then the predicted class
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
        self.cat_bins = CategoricalBins(
            [cp.categories for cp in cprofs],
            [categories_fingerprint(cp.categories) for cp in cprofs],
        )
        if self.class_row >= 0:
            # A predicted class under another spelling of a reference class (True for
            # 1, 0.0 for 0: a model that logs booleans against a reference built from
            # 0/1) is that class, as its label is (contract.columnar.label_class), not
            # an unseen class that shifts the class mix.
            lookup = self.cat_bins.lookups[self.class_row]
            for cls, i in list(lookup.items()):
                for alias in BINARY_CLASS_ALIASES.get(cls or "", ()):
                    lookup.setdefault(alias, i)
        self.cref = [np.asarray(cp.counts, dtype=np.float64) for cp in cprofs]
        widths: dict[int, list[int]] = {}
        for r, size in enumerate(self.cat_bins.sizes):
            widths.setdefault(size + 1, []).append(r)
        self.cbuckets = [
            (rows, np.array([self.cref[r] for r in rows], dtype=np.float64).reshape(len(rows), w))
            for w, rows in widths.items()
        ]

        # -- the detector banks: which column feeds each unit (features, then outputs)
        self.bank_units = [(name, kind) for name, kind, _ in ref.banks()]
        self.bank_layout = BankLayout.of([plan for _, _, plan in ref.banks()])
        num_row = {k: i for i, k in enumerate(self.num_names)}
        cat_row = {k: r for r, k in enumerate(self.cat_names)}
        num_row.update({"__confidence__": self.conf_col, "__low_confidence__": self.conf_col})
        num_row["__prediction__"] = self.pred_col
        cat_row["__class__"] = self.class_row
        names = [name for name, _ in self.bank_units]
        lay = self.bank_layout
        self.bank_x_rows = np.asarray([num_row[names[u]] for u in lay.float_units], np.intp)
        self.bank_code_rows = np.asarray([cat_row[names[u]] for u in lay.code_units], np.intp)
        #: Per group of the stacked bank: the smallest shift its detection rows watch.
        self.group_min_shift = [0.0] * lay.n_groups
        for row in np.flatnonzero(lay.row_role == DETECT).tolist():
            grp = int(lay.row_group[row])
            shift = abs(lay.row_shift[row])
            cur = self.group_min_shift[grp]
            self.group_min_shift[grp] = shift if cur == 0.0 else min(cur, shift)
        # -- the multivariate model on these columns (core/fastloop/multivariate.py)
        model = ref.multivariate
        self.joint = MultivariatePlan(self, model) if model is not None else None


class MultivariatePlan:
    """A reference's multivariate model laid out on the plan's columns.

    Numeric design columns score their feature's flat bin index (the plan's numeric
    layout: ``offsets[i] + bin``, the sentinel for missing and infinite values) by one
    lookup in a table that holds every column's scores at its feature's offsets and NaN
    at the sentinel; category columns compare the feature's code with the category's
    (a missing category: NaN). An event with a NaN is left out of the joint watch.
    """

    def __init__(self, plan: Plan, model: MultivariateProfile) -> None:
        self.model = model
        bins = plan.num_bins
        where = {name: i for i, name in enumerate(plan.num_names)}
        cwhere = {name: r for r, name in enumerate(plan.cat_names)}
        self.num_cols: list[int] = []
        self.num_rows: list[int] = []
        # Missing and infinite values sit at the sentinel: NaN (an incomplete event).
        table = np.full(bins.sentinel + 1, np.nan, dtype=np.float64)
        self.cat_cols: list[tuple[int, int, int, float, float]] = []
        for j, col in enumerate(model.design.columns):
            if col.numeric:
                i = where[col.feature]
                if bins.fingerprints[i] != col.edges_fp or bins.sizes[i] != len(col.scores):
                    raise ValueError(f"multivariate model: {col.feature} has other bins")
                off = int(bins.offsets[i])
                table[off : off + bins.sizes[i]] = col.scores
                self.num_cols.append(j)
                self.num_rows.append(i)
            else:
                r = cwhere[col.feature]
                code = plan.cat_bins.lookups[r].get(col.category, -2)  # -2: never seen
                hi, lo = col.scores
                self.cat_cols.append((j, r, code, hi, lo))
        self.table = table

    def scores(self, data: SegmentArrays) -> NDArray[np.float64]:
        """The design's scores of the segment's events, ``(d, n)``."""
        z = np.full((self.model.d, data.n), np.nan, dtype=np.float64)
        if self.num_cols:
            z[self.num_cols] = self.table[data.located.flat[self.num_rows]]
        for j, r, code, hi, lo in self.cat_cols:
            codes = data.codes[r]
            z[j] = np.where(codes == code, hi, np.where(codes < 0, np.nan, lo))
        return z


_PLANS: dict[int, tuple[ReferenceProfile, Plan]] = {}


def plan_for(ref: ReferenceProfile) -> Plan:
    """The plan of ``ref``, cached per reference object."""
    hit = _PLANS.get(id(ref))
    if hit is not None and hit[0] is ref:
        return hit[1]
    if len(_PLANS) >= 1024:
        _PLANS.clear()
    plan = Plan(ref)
    _PLANS[id(ref)] = (ref, plan)
    return plan


class SegmentArrays:
    """One stream's events of a batch as arrays on the plan's columns.

    ``t64`` (event times in ms), ``placed`` (where event time put them) and ``clock``
    (the event clock at each event, what a detection there is dated), ``x`` (numeric
    columns, one row each; NaN for missing), ``located`` (their bins), ``codes``
    (category codes), ``mism`` (type mismatches per feature position) and ``unknown``
    (unknown features per event).
    """

    def __init__(self, plan: Plan, cols: Columns) -> None:
        n = self.n = cols.n
        ts = cols.timestamps()
        if set(map(type, ts)) == {int}:
            times: list[int] = list(ts)  # type: ignore[arg-type]
        else:
            times = [t if isinstance(t, int) else event_time_ms(t) for t in ts]
        if times and not 0 <= min(times) <= max(times) <= MAX_TIME_MS:
            # The contract refuses these; times before 1970 (RFC 3339 years 0001-1969)
            # count as 1970, so the clock's arithmetic holds whatever arrives.
            times = [min(max(t, 0), MAX_TIME_MS) for t in times]
        #: Event times (ms), and where the clock placed each event (future-dated ones
        #: are placed at the clock; filled by :func:`driftline.core.fastloop.clock.advance`).
        self.t64: NDArray[np.int64] = np.array(times, dtype=np.int64)
        self.placed: NDArray[np.int64] = self.t64.copy()
        #: The event clock at each event (filled by ``advance`` as it places them): the
        #: time of a detection there, never before an event the stream already saw.
        self.clock: NDArray[np.int64] = self.t64.copy()

        self.mism: list[tuple[int, NDArray[np.bool_]]] = []
        x = self.x = np.empty((plan.nc, n), dtype=np.float64)
        for i, name in enumerate(plan.num_names):
            x[i], mm = cols.numeric(name)
            if mm is not None:
                self.mism.append((plan.num_pos[i], mm))
        if plan.conf_col >= 0:
            x[plan.conf_col] = cols.confidence()
        if plan.pred_col >= 0:
            preds = cols.predictions()
            x[plan.pred_col] = numeric_column(preds, frozenset(map(type, preds)))[0]
        self.located = plan.num_bins.locate(x)
        self.finite = self.located.finite

        cb = plan.cat_bins
        codes = self.codes = np.empty((plan.kc, n), dtype=np.int64)
        for r, name in enumerate(plan.cat_names):
            codes[r], mm = cols.codes(name, cb.lookups[r], cb.sizes[r])
            if mm is not None:
                self.mism.append((plan.cat_pos[r], mm))
        if plan.class_row >= 0:
            preds = cols.predictions()
            r = plan.class_row
            codes[r] = category_codes(
                preds, frozenset(map(type, preds)), cb.lookups[r], cb.sizes[r], track=False
            )[0]
        self.unknown = cols.unknown(plan.expected)
        #: Their names (at most one more than a state keeps: then there are more).
        self.unknown_names: list[str] = (
            cols.unknown_names(plan.expected, UNKNOWN_NAMES_KEPT)
            if self.unknown is not None
            else []
        )
