"""The multivariate detector in the fast loop (issue 15): one stream's joint watch.

A reference with a multivariate model (:mod:`driftline.core.multivariate`) gives each
stream a :class:`~driftline.core.multivariate.MultivariateDetector` in its
``ModelState`` (``st.mv``). Per batch and stream:

1. :class:`MultivariateRun` scores the segment's events from the arrays the window
   already has (numeric bin indices: one table lookup; category codes) and computes
   their channels once (exact per event, so any split gives the same values);
2. the window loop hands it each chunk of events that falls in the open window
   (:meth:`MultivariateRun.absorb`): the CUSUM rows run, the window's component sketch
   grows, and a firing becomes a :class:`~driftline.core.fastloop.sequential.Detection`
   of kind ``input_drift`` and detector ``multivariate``, carrying ``top_features``
   (the features whose joint behaviour moved most) and the crossing row's statistic;
3. at the window's close, :func:`window_row` gives the window's highest CUSUM level
   (statistic over threshold: 1 is the threshold) as one more test row of the window
   summary (feature ``__multivariate__``), which history, the report and the status
   page show over time; :func:`holding` tells the episode to stay open while the
   detector is away.

One episode per change: the detector is one more detector of the stream's
``input_drift`` episode. It opens the episode when it is the first to fire (a
correlation change no marginal shows) and adds nothing to an open one (a mean shift
the univariate tests caught first; docs/multivariate.md has the measurements).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from driftline.core.fastloop.plan import Plan, SegmentArrays
from driftline.core.fastloop.sequential import Detection
from driftline.core.fastloop.state import ModelState
from driftline.core.fastloop.window_tests import WindowTest
from driftline.core.multivariate import Attribution, MultivariateProfile
from driftline.core.reference import ReferenceProfile

__all__ = ["FEATURE", "MultivariatePlan", "MultivariateRun", "holding", "start", "window_row"]

F64 = NDArray[np.float64]

#: The window summary's test row (and the metrics' feature label) of the detector.
FEATURE = "__multivariate__"
#: How many features an alert names.
TOP = 10


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

    def scores(self, data: SegmentArrays) -> F64:
        """The design's scores of the segment's events, ``(d, n)``."""
        z = np.full((self.model.d, data.n), np.nan, dtype=np.float64)
        if self.num_cols:
            z[self.num_cols] = self.table[data.located.flat[self.num_rows]]
        for j, r, code, hi, lo in self.cat_cols:
            codes = data.codes[r]
            z[j] = np.where(codes == code, hi, np.where(codes < 0, np.nan, lo))
        return z


def _plan_of(plan: Plan, model: MultivariateProfile) -> MultivariatePlan:
    """The model's layout on ``plan``, made once per plan (the plan is per reference)."""
    if plan.joint is None:
        plan.joint = MultivariatePlan(plan, model)
    return plan.joint


class MultivariateRun:
    """One stream's segment of a batch, fed to its detector window chunk by chunk."""

    def __init__(self, st: ModelState, ref: ReferenceProfile, plan: Plan, data: SegmentArrays):
        model = ref.multivariate
        assert model is not None and st.mv is not None
        self.det = st.mv
        self.channels = model.channels(_plan_of(plan, model).scores(data))

    def absorb(self, a: int, b: int) -> list[Detection]:
        """Events ``a:b`` of the segment; the detector's firing among them, if any."""
        self.det.update_channels(self.channels.slice(a, b))
        out: list[Detection] = []
        for t in self.det.transitions:
            if t.kind != "fire":
                continue
            att = t.attribution
            top = _top(att) if att is not None else ()
            feature = top[0][0] if top else FEATURE
            out.append(
                Detection(
                    a + t.position,
                    "input_drift",
                    feature,
                    "multivariate",
                    statistic=t.statistic,
                    threshold=t.threshold,
                    top=top,
                )
            )
        return out


def _top(att: Attribution) -> tuple[tuple[str, float, float, str], ...]:
    """``(feature, score, share, statistic)`` of the features that moved most."""
    return tuple((f, score, share, "joint_change") for f, score, share in att.features[:TOP])


def start(
    st: ModelState, ref: ReferenceProfile, plan: Plan, data: SegmentArrays
) -> MultivariateRun | None:
    """The segment's run, or None when the reference has no multivariate model."""
    if ref.multivariate is None or st.mv is None:
        return None
    return MultivariateRun(st, ref, plan, data)


def holding(st: ModelState) -> bool:
    """Whether the detector is away from the reference (an open episode stays open)."""
    return st.mv is not None and st.mv.drifting


def window_row(st: ModelState) -> WindowTest | None:
    """Close the detector's window: its row in the window summary (None without one).

    ``effect`` is the highest CUSUM level of the window (statistic over threshold of
    the detection rows, so the threshold is 1); ``extra`` holds the Frobenius distance
    of the window's whitened covariance from the reference's identity.
    """
    det = st.mv
    if det is None:
        return None
    sketch, level = det.close_window()
    return WindowTest(
        FEATURE,
        "cusum_level",
        math.nan,
        level if math.isfinite(level) else 0.0,
        1.0,
        {"distance": sketch.distance()},
    )
