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
from collections.abc import Sequence
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
    kolmogorov_sf,
    ks_binned_rows,
    psi_js_rows,
)

__all__ = [
    "TestBlock",
    "WindowStats",
    "WindowTest",
    "categorical_stats",
    "decide",
    "decide_blocks",
    "input_blocks",
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


@dataclass(slots=True)
class TestBlock:
    """Tests of a window as columns: row ``j`` has :class:`WindowTest`'s fields
    (``feature[j]``, ``statistic[j]``, ...) and ``extra[k][j]`` for each extra statistic
    ``k`` of the block (every row has the same ones).

    A window has about 75 tests (three numbers each): columns spare an object and a
    dict per test, and let the summary and the metrics take them in a few passes.
    """

    feature: list[str]
    statistic: list[str]
    p_value: list[float]
    effect: list[float]
    threshold: list[float]
    extra: dict[str, list[float]]

    @classmethod
    def of(cls, tests: Sequence[WindowTest]) -> list[TestBlock]:
        """``tests`` as blocks, in order: one per run of tests with the same extras."""
        blocks: list[TestBlock] = []
        keys: tuple[str, ...] | None = None
        for t in tests:
            k = tuple(t.extra)
            if k != keys:
                keys = k
                blocks.append(cls([], [], [], [], [], {name: [] for name in k}))
            b = blocks[-1]
            b.feature.append(t.feature)
            b.statistic.append(t.statistic)
            b.p_value.append(t.p_value)
            b.effect.append(t.effect)
            b.threshold.append(t.threshold)
            for name, v in t.extra.items():
                b.extra[name].append(v)
        return blocks

    def test(self, j: int) -> WindowTest:
        """Row ``j`` as a :class:`WindowTest`."""
        extra = {k: v[j] for k, v in self.extra.items()}
        return WindowTest(
            self.feature[j],
            self.statistic[j],
            self.p_value[j],
            self.effect[j],
            self.threshold[j],
            extra,
        )

    def over(self, factor: float) -> list[WindowTest]:
        """The tests whose effect reaches ``factor`` times their threshold."""
        rows = zip(self.effect, self.threshold, strict=True)
        return [self.test(j) for j, (e, t) in enumerate(rows) if e >= factor * t]

    def observe(
        self, features: list[str], names: list[str], values: list[float], extras: bool
    ) -> None:
        """Append the block's statistics for the metrics shell: per test its effect under
        its statistic's name, then (``extras``) its extras under theirs."""
        if not (extras and self.extra):
            features += self.feature
            names += self.statistic
            values += self.effect
            return
        keys = tuple(self.extra)
        width = 1 + len(keys)
        features += [f for f in self.feature for _ in range(width)]
        names += [k for s in self.statistic for k in (s, *keys)]
        values += [v for row in zip(self.effect, *self.extra.values(), strict=True) for v in row]


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
        psi[cols], js[cols] = psi_js_rows(ref_g, cur_g)
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
        psi_a, js_a = psi_js_rows(ref, cur)
        psis, jss = psi_a.tolist(), js_a.tolist()
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

    def numeric_block(self, columns: Sequence[tuple[str, int]]) -> TestBlock:
        """KS p-value and PSI (with KS and JS) of the numeric columns ``(name, i)`` that
        have enough events, as one block."""
        plan = self.plan
        n, m, ks = self.n, plan.prof_n, self.ks
        kept = [(name, i) for name, i in columns if n[i] >= self.least and m[i] >= 1]
        idx = [i for _, i in kept]
        return TestBlock(
            [name for name, _ in kept],
            ["psi"] * len(idx),
            # ks_pvalue without its argument checks (n, m > 0 here; 0 <= ks <= 1).
            [kolmogorov_sf(math.sqrt(n[i] * m[i] / (n[i] + m[i])) * ks[i]) for i in idx],
            [self.psi[i] for i in idx],
            [plan.psi_thr[i] for i in idx],
            {"ks": [ks[i] for i in idx], "js": [self.js[i] for i in idx]},
        )

    def categorical_block(self, columns: Sequence[tuple[str, int]]) -> TestBlock:
        """Chi-square p-value and PSI (with chi-square and JS) of the categorical columns
        ``(name, r)`` that have enough events, as one block."""
        cn, cprofs = self.cn, self.plan.cprofs
        kept = [(name, r) for name, r in columns if cn[r] >= self.least and cprofs[r].n >= 1]
        idx = [r for _, r in kept]
        return TestBlock(
            [name for name, _ in kept],
            ["psi"] * len(idx),
            [self.chi_p[r] for r in idx],
            [self.cpsi[r] for r in idx],
            [cprofs[r].psi_threshold for r in idx],
            {"chi2": [self.chi[r] for r in idx], "js": [self.cjs[r] for r in idx]},
        )

    def numeric_test(self, name: str, i: int) -> WindowTest | None:
        """:meth:`numeric_block` of one column (None: too few events)."""
        b = self.numeric_block([(name, i)])
        return b.test(0) if b.feature else None

    def categorical_test(self, name: str, r: int) -> WindowTest | None:
        """:meth:`categorical_block` of one column (None: too few events)."""
        b = self.categorical_block([(name, r)])
        return b.test(0) if b.feature else None


def input_blocks(st: ModelState, stats: WindowStats) -> list[TestBlock]:
    """The input-drift tests of every feature with enough events, as columns: the
    numeric features' block (PSI, with KS and JS), then the categorical features' (PSI,
    with chi-square and JS)."""
    plan = stats.plan
    blocks: list[TestBlock] = []
    if plan.nc:
        names = [(name, i) for i, name in enumerate(plan.num_names) if name in st.num]
        blocks.append(stats.numeric_block(names))
    if plan.kc:
        names = [(name, r) for r, name in enumerate(plan.cat_names) if name in st.cat]
        blocks.append(stats.categorical_block(names))
    return blocks


def _drifted_rows(
    effect: Sequence[float],
    threshold: Sequence[float],
    p_value: Sequence[float],
    alpha: float,
    episode: Episode,
) -> list[int]:
    """Positions of the tests (one family) that drifted: Holm-significant AND effect
    over threshold (hysteresis when firing)."""
    factor = 0.5 if episode.firing else 1.0  # easier to stay firing than to start
    big = [j for j, (e, t) in enumerate(zip(effect, threshold, strict=True)) if e >= factor * t]
    if not big:  # most windows: no Holm pass needed (a test drifts only when both hold)
        return []
    reject = holm(np.asarray(p_value), alpha)
    return [j for j in big if reject[j]]


def decide(tests: list[WindowTest], alpha: float, episode: Episode) -> list[WindowTest]:
    """The tests that drifted (:func:`_drifted_rows`)."""
    rows = _drifted_rows(
        [t.effect for t in tests],
        [t.threshold for t in tests],
        [t.p_value for t in tests],
        alpha,
        episode,
    )
    return [tests[j] for j in rows]


def decide_blocks(blocks: Sequence[TestBlock], alpha: float, episode: Episode) -> list[str]:
    """:func:`decide` over the tests of ``blocks`` (one family): the drifted tests' features."""
    rows = _drifted_rows(
        [e for b in blocks for e in b.effect],
        [t for b in blocks for t in b.threshold],
        [p for b in blocks for p in b.p_value],
        alpha,
        episode,
    )
    feature = [f for b in blocks for f in b.feature]
    return [feature[j] for j in rows]
