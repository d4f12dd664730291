"""The vectorised monitor core's building blocks equal the public functions they replace.

Kernels, window statistics, the Page-Hinkley bank, the binner and the rounding are
checked here against ``driftline.stats``, ``PageHinkley.update_many``,
``np.searchsorted`` and ``round``. The core as a whole (alert ids, alerts, window
summaries, observations, states) is held to its recorded behaviour by the golden
fixtures (``tests/unit/test_golden.py``, ``tests/golden/``).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import pytest

from driftline.core.detectors import PageHinkley
from driftline.core.fastloop.monitor import _chi2_kernel, _js_1d, _js_kernel, _ph_bank, _psi_kernel
from driftline.core.reference import Policy, ReferenceProfile, build_reference
from driftline.core.stats import chi2_homogeneity, js_distance, psi
from driftline.demo.simulate import SimulatedModel
from support import assert_close


@functools.cache
def reference() -> ReferenceProfile:
    sim = SimulatedModel(seed=3)
    policy = Policy(window_events=500)
    return build_reference(sim.training_data(20_000), "churn", "1", policy=policy, seed=0)


# ---------------------------------------------------------------------- kernels


def _counts(rng: np.random.Generator, k: int, zeros: bool) -> np.ndarray:
    c = rng.integers(0, 50, size=k).astype(np.float64)
    if zeros:
        c[rng.random(k) < 0.3] = 0.0
    c[0] += 1.0
    return c


@pytest.mark.parametrize("zeros", [False, True])
def test_statistics_kernels_equal_the_public_functions(zeros: bool) -> None:
    rng = np.random.default_rng(11)
    for _ in range(300):
        k = int(rng.integers(1, 30))
        r, c = _counts(rng, k, zeros), _counts(rng, k, zeros)
        # bit for bit: the same operations without the input checks
        assert float(_psi_kernel(r, c)) == psi(r, c)
        assert _js_1d(r, c) == js_distance(r, c)
        chi = chi2_homogeneity(r, c)
        assert _chi2_kernel(r, c) == (chi.statistic, chi.p_value)
    for _ in range(50):
        k = int(rng.integers(1, 30))
        ref = np.array([_counts(rng, k, zeros) for _ in range(7)])
        cur = np.array([_counts(rng, k, zeros) for _ in range(7)])
        rows_psi = _psi_kernel(ref, cur)
        rows_js = _js_kernel(ref, cur)
        for i in range(7):
            assert rows_psi[i] == psi(ref[i], cur[i])  # rows of one length: bit for bit
            assert math.isclose(rows_js[i], js_distance(ref[i], cur[i]), rel_tol=1e-12)


def test_window_statistics_equal_the_public_functions() -> None:
    from driftline.core.fastloop.monitor import _Acc, _numeric_stats, _plan
    from driftline.core.stats import ks_binned

    ref = reference()
    plan = _plan(ref)
    acc = _Acc(plan)
    rng = np.random.default_rng(5)
    for i, b in enumerate(plan.bins):
        acc.counts[i, :b] = rng.integers(0, 20, size=b)
        acc.counts[i, rng.random(b) < 0.5 * (i % 2)] = 0  # empty groups in odd columns
        acc.counts[i, 0] += 1
    acc.n[:] = acc.counts.sum(axis=1)
    ks, psis, jss, grouped = _numeric_stats(plan, acc)
    for i, prof in enumerate(plan.nprofs):
        cur = acc.counts[i, : plan.bins[i]]
        assert ks[i] == ks_binned(prof.counts, cur).statistic
        ref_g = np.add.reduceat(prof.counts, prof.groups)
        cur_g = np.add.reduceat(cur, prof.groups)
        assert grouped[plan.gslice[i]].tolist() == cur_g.tolist()
        assert psis[i] == psi(ref_g, cur_g)
        assert jss[i] == js_distance(ref_g, cur_g)


# ---------------------------------------------------------------------- Page-Hinkley


def _detector(n: int, rng: np.random.Generator) -> PageHinkley:
    ph = PageHinkley(min_instances=30, delta=0.25, threshold=50.0, alpha=1.0)
    if n:
        ph.update_many(rng.normal(0, 1, n))
    return ph


def test_page_hinkley_bank_equals_update_many() -> None:
    rng = np.random.default_rng(2)
    checked = detected = 0
    for trial in range(60):
        k = int(rng.integers(1, 8))
        m = int(rng.integers(1, 700))
        starts = [int(rng.integers(0, 3)) * int(rng.integers(0, 400)) for _ in range(k)]
        z = rng.normal(0, 1, (k, m))
        z[:, m // 2 :] += rng.choice([0.0, 0.5, 2.0], size=(k, 1))  # some rows drift
        np.clip(z, -3, 3, out=z)
        bank = [_detector(s, np.random.default_rng(trial * 10 + j)) for j, s in enumerate(starts)]
        solo = [_detector(s, np.random.default_rng(trial * 10 + j)) for j, s in enumerate(starts)]
        left = _ph_bank(bank, z.copy())
        for j in range(k):
            hits = solo[j].update_many(z[j])
            if j in left:
                detected += bool(hits.size)
                bank[j].update_many(z[j])
            else:
                assert hits.size == 0  # the bank only takes rows that cannot detect
                checked += 1
            assert bank[j].n == solo[j].n and bank[j].drift_detected == solo[j].drift_detected
            assert_close(bank[j].to_bytes(), solo[j].to_bytes(), rel=1e-9)
    assert checked > 50 and detected > 5


def test_categorical_window_statistics_are_bit_exact() -> None:
    from driftline.core.fastloop.monitor import _Acc, _categorical_stats, _Plan
    from driftline.core.reference import CategoricalProfile

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
        plan = _Plan(ref)
        acc = _Acc(plan)
        for r, k in enumerate(plan.ncat):
            row = rng.integers(0, 30, size=k + 1)
            row[rng.random(k + 1) < 0.4] = 0
            row[-1] += trial % 2
            acc.ccounts[r, : k + 1] = row
        chi, chi_p, psis, jss = _categorical_stats(plan, acc, 1)
        for r, prof in enumerate(plan.cprofs):
            cur = acc.ccounts[r, : plan.ncat[r] + 1]
            if cur.sum() < 1:
                assert math.isnan(chi[r])
                continue
            c = chi2_homogeneity(prof.counts, cur)
            assert (chi[r], chi_p[r]) == (c.statistic, c.p_value)
            assert psis[r] == psi(prof.counts, cur)
            assert jss[r] == js_distance(prof.counts, cur)


def test_binner_equals_searchsorted() -> None:
    from driftline.core.fastloop.monitor import _Binner

    rng = np.random.default_rng(0)
    for trial in range(150):
        edges = []
        for _ in range(6):
            k = int(rng.integers(0, 120))
            scale = 10 ** rng.uniform(-3, 3)
            e = np.unique(np.round(rng.normal(0, scale, k), int(rng.integers(0, 6))))
            if trial % 7 == 0 and e.size:  # a crowd of edges: searchsorted for that row
                e = np.unique(np.r_[e, e[0] + np.arange(10) * 1e-9])
            edges.append(e)
        binner = _Binner(edges)
        x = np.empty((6, 300))
        for i, e in enumerate(edges):
            v = rng.normal(0, 10 ** rng.uniform(-3, 3), 300)
            if e.size:
                v[:50] = rng.choice(e, 50)  # exactly on an edge
                v[50:60] = e[0] - 1e-12
                v[60:70] = e[-1] + 1e-300
                v[70:80] = np.nextafter(rng.choice(e, 10), math.inf)
            x[i] = v
        x[0, 5], x[1, 7], x[2, 9] = math.nan, math.inf, -math.inf
        out = binner.bins(x, np.isfinite(x).all(axis=1))
        for i, e in enumerate(edges):
            ok = np.isfinite(x[i])
            assert (out[i][ok] == np.searchsorted(e, x[i][ok], side="left")).all()


def test_vectorised_rounding_equals_round() -> None:
    from driftline.core.fastloop.monitor import _round6

    rng = np.random.default_rng(4)
    values = list(rng.normal(0, 1, 20_000)) + list(rng.exponential(1e-4, 5_000))
    values += [k / 1e6 + 5e-7 for k in range(-3_000, 3_000)]  # ties and near-ties
    values += [k * 5e-7 for k in range(2_000)]
    values += [0.0, -0.0, 1e-300, -1e-12, 1e300, -1e300, 4.5e9, math.inf, -math.inf]
    got = _round6([float(v) for v in values])
    want = [round(float(v), 6) for v in values]
    assert [math.copysign(1, g) for g in got] == [math.copysign(1, w) for w in want]
    assert got == want
    assert math.isnan(_round6([math.nan])[0])
