"""The vectorised window statistics of the fast loop equal the public functions.

A closing window computes KS, PSI and JS of every numeric column and chi-square, PSI
and JS of every categorical column at once (``core.fastloop.window_tests`` on the
sketch banks, with ``core.stats``' row kernels); here they are checked against
``ks_binned``, ``psi``, ``js_distance`` and ``chi2_homogeneity`` on each column, bit
for bit, and the summaries' rounding against ``round``. The building blocks have their
own suites: the row kernels in tests/unit/test_stats.py (scipy oracles), the sketch
banks and the bin lookup in tests/unit/test_sketches.py, the Page-Hinkley bank in
tests/unit/test_detectors.py (river oracle). The core as a whole is held to its
recorded behaviour by the golden fixtures (tests/unit/test_golden.py).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from driftline.core.fastloop.plan import Plan, plan_for
from driftline.core.fastloop.summary import round6
from driftline.core.fastloop.window_tests import categorical_stats, numeric_stats
from driftline.core.reference import CategoricalProfile, Policy, ReferenceProfile, build_reference
from driftline.core.sketches import CategoricalSketchBank, NumericSketchBank
from driftline.core.stats import chi2_homogeneity, js_distance, ks_binned, psi
from driftline.demo.simulate import SimulatedModel


@functools.cache
def reference() -> ReferenceProfile:
    sim = SimulatedModel(seed=3)
    policy = Policy(window_events=500)
    return build_reference(sim.training_data(20_000), "churn", "1", policy=policy, seed=0)


def test_numeric_window_statistics_equal_the_public_functions() -> None:
    ref = reference()
    plan = plan_for(ref)
    bank = NumericSketchBank.zero(plan.num_bins)
    rng = np.random.default_rng(5)
    for i, b in enumerate(plan.num_bins.sizes):
        bank.counts[i, :b] = rng.integers(0, 20, size=b)
        bank.counts[i, rng.random(b) < 0.5 * (i % 2)] = 0  # empty groups in odd columns
        bank.counts[i, 0] += 1
    bank.n[:] = bank.counts.sum(axis=1)
    ks, psis, jss, grouped = numeric_stats(plan, bank)
    for i, prof in enumerate(plan.nprofs):
        cur = bank.counts[i, : plan.num_bins.sizes[i]]
        assert ks[i] == ks_binned(prof.counts, cur).statistic
        ref_g = np.add.reduceat(prof.counts, prof.groups)
        cur_g = np.add.reduceat(cur, prof.groups)
        assert grouped[plan.gslice[i]].tolist() == cur_g.tolist()
        assert psis[i] == psi(ref_g, cur_g)
        assert jss[i] == js_distance(ref_g, cur_g)


def test_categorical_window_statistics_are_bit_exact() -> None:
    rng = np.random.default_rng(8)
    base = reference()
    for trial in range(40):
        feats: dict[str, Any] = {}
        for i in range(6):
            k = int(rng.integers(0, 12))
            counts = rng.integers(0, 30, size=k + 1)
            counts[rng.random(k + 1) < 0.3] = 0
            counts[0] += 1
            cats = tuple(f"c{j}" for j in range(k))
            feats[f"x{i}"] = CategoricalProfile(cats, counts, int(counts.sum()), 0, 0.1)
        ref = ReferenceProfile("r", "m", "1", feats, base.outputs, base.policy, 1)
        plan = Plan(ref)
        bank = CategoricalSketchBank.zero(plan.cat_bins)
        for r, k in enumerate(plan.cat_bins.sizes):
            row = rng.integers(0, 30, size=k + 1)
            row[rng.random(k + 1) < 0.4] = 0
            row[-1] += trial % 2
            bank.counts[r, : k + 1] = row
        chi, chi_p, psis, jss = categorical_stats(plan, bank, 1)
        for r, prof in enumerate(plan.cprofs):
            cur = bank.counts[r, : plan.cat_bins.sizes[r] + 1]
            if cur.sum() < 1:
                assert math.isnan(chi[r])
                continue
            c = chi2_homogeneity(prof.counts, cur)
            assert (chi[r], chi_p[r]) == (c.statistic, c.p_value)
            assert psis[r] == psi(prof.counts, cur)
            assert jss[r] == js_distance(prof.counts, cur)


def test_vectorised_rounding_equals_round() -> None:
    rng = np.random.default_rng(4)
    values = list(rng.normal(0, 1, 20_000)) + list(rng.exponential(1e-4, 5_000))
    values += [k / 1e6 + 5e-7 for k in range(-3_000, 3_000)]  # ties and near-ties
    values += [k * 5e-7 for k in range(2_000)]
    values += [0.0, -0.0, 1e-300, -1e-12, 1e300, -1e300, 4.5e9, math.inf, -math.inf]
    got = round6([float(v) for v in values])
    want = [round(float(v), 6) for v in values]
    assert [math.copysign(1, g) for g in got] == [math.copysign(1, w) for w in want]
    assert got == want
    assert math.isnan(round6([math.nan])[0])
