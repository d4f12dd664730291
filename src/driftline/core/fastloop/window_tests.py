"""The tests of a closing window and the decision (significance AND effect size).

Every feature is tested against the reference: KS on the sketch (numeric) or
chi-square (categorical) for significance, PSI for effect size, JS alongside; all
numeric columns in a handful of array operations and the categorical ones by rows of
one width (:mod:`driftline.core.stats`' row kernels, equal to the one-row tests bit
for bit). A feature drifts only when both agree (:func:`decide`): Holm's procedure
across the window's tests keeps the family-wise false-alarm rate at
``window_events / false_alarm_events`` per window, and the PSI must reach a threshold
calibrated from the reference (never below a floor), so huge windows do not alert on
trivial shifts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from driftline.core.episode import Episode
from driftline.core.fastloop.plan import Plan
from driftline.core.fastloop.state import ModelState
from driftline.core.sketches import CategoricalSketchBank, NumericSketchBank
from driftline.core.stats import (
    chi2_homogeneity_rows,
    holm,
    js_distance_rows,
    kolmogorov_sf,
    ks_binned_rows,
    psi_rows,
)

__all__ = [
    "WindowStats",
    "WindowTest",
    "categorical_stats",
    "decide",
    "input_tests",
    "numeric_stats",
]


@dataclass(slots=True)
class WindowTest:
    """One test of a window: the feature, what was measured, and against what."""

    feature: str
    statistic: str
    p_value: float
    effect: float
    threshold: float
    extra: dict[str, float]


def numeric_stats(
    plan: Plan, bank: NumericSketchBank
) -> tuple[list[float], list[float], list[float], NDArray[np.int64]]:
    """KS (on the sketch), PSI and JS (on the PSI groups) of every numeric column at once.

    Returns ``(ks, psi, js, grouped)``; ``grouped[plan.gslice[i]]`` are column ``i``'s
    counts per PSI group. Columns without events get NaN.
    """
    counts = bank.counts
    ks = ks_binned_rows(plan.ref_cdf, counts, plan.num_bins.sizes)
    grouped = np.add.reduceat(counts.ravel(), plan.gstarts)
    psi = np.full(plan.nc, math.nan)
    js = np.full(plan.nc, math.nan)
    for cols, idx, ref_g in plan.buckets:
        cur_g = grouped[idx].astype(np.float64)
        psi[cols] = psi_rows(ref_g, cur_g)
        js[cols] = js_distance_rows(ref_g, cur_g)
    return ks.tolist(), psi.tolist(), js.tolist(), grouped


def categorical_stats(
    plan: Plan, bank: CategoricalSketchBank, least: int
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Chi-square (statistic, p-value), PSI and JS of every categorical column.

    Rows of one width are computed together. Rows with fewer than ``least`` events
    get NaN.
    """
    kc = plan.kc
    chi = [math.nan] * kc
    chi_p = [math.nan] * kc
    psi = [math.nan] * kc
    js = [math.nan] * kc
    for rows, ref in plan.cbuckets:
        cur = bank.counts[rows, : ref.shape[1]].astype(np.float64)
        live = (cur.sum(axis=1) >= least).tolist()
        if not any(live):
            continue
        psis = psi_rows(ref, cur).tolist()
        jss = js_distance_rows(ref, cur).tolist()
        stats, _, ps = chi2_homogeneity_rows(ref, cur, p_values=live)
        for j, r in enumerate(rows):
            if live[j]:
                chi[r], chi_p[r], psi[r], js[r] = stats[j], ps[j], psis[j], jss[j]
    return chi, chi_p, psi, js


class WindowStats:
    """Every statistic of a closing window, computed once, and the tests built on them."""

    def __init__(
        self, plan: Plan, num: NumericSketchBank, cat: CategoricalSketchBank, least: int
    ) -> None:
        self.plan = plan
        self.least = least
        self.n: list[int] = num.n.tolist()
        self.grouped = np.zeros(0, dtype=np.int64)
        if plan.nc:
            self.ks, self.psi, self.js, self.grouped = numeric_stats(plan, num)
        self.cn: list[int] = cat.row_totals().tolist()
        if plan.kc:
            self.chi, self.chi_p, self.cpsi, self.cjs = categorical_stats(plan, cat, least)

    def numeric_test(self, name: str, i: int) -> WindowTest | None:
        """KS p-value and PSI of numeric column ``i`` (None: too few events)."""
        plan = self.plan
        n, m = self.n[i], plan.prof_n[i]
        if n < self.least or m < 1:
            return None
        # ks_pvalue without its argument checks (n, m > 0 here; 0 <= ks <= 1).
        p = kolmogorov_sf(math.sqrt(n * m / (n + m)) * self.ks[i])
        return WindowTest(
            name, "psi", p, self.psi[i], plan.psi_thr[i], {"ks": self.ks[i], "js": self.js[i]}
        )

    def categorical_test(self, name: str, r: int) -> WindowTest | None:
        """Chi-square p-value and PSI of categorical column ``r`` (None: too few events)."""
        prof = self.plan.cprofs[r]
        if self.cn[r] < self.least or prof.n < 1:
            return None
        return WindowTest(
            name,
            "psi",
            self.chi_p[r],
            self.cpsi[r],
            prof.psi_threshold,
            {"chi2": self.chi[r], "js": self.cjs[r]},
        )


def input_tests(st: ModelState, stats: WindowStats) -> list[WindowTest]:
    """The input-drift tests of every feature with enough events."""
    plan = stats.plan
    tests: list[WindowTest] = []
    for i, name in enumerate(plan.num_names):
        if name in st.num and (t := stats.numeric_test(name, i)):
            tests.append(t)
    for r, name in enumerate(plan.cat_names):
        if name in st.cat and (t := stats.categorical_test(name, r)):
            tests.append(t)
    return tests


def decide(tests: list[WindowTest], alpha: float, episode: Episode) -> list[WindowTest]:
    """Tests that drifted: Holm-significant AND effect over threshold (hysteresis when firing)."""
    if not tests:
        return []
    reject = holm(np.asarray([t.p_value for t in tests]), alpha)
    factor = 0.5 if episode.firing else 1.0  # easier to stay firing than to start
    return [t for t, r in zip(tests, reject, strict=True) if r and t.effect >= factor * t.threshold]
