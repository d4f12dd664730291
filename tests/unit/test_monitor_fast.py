"""The vectorised core equals the feature-by-feature core it replaced.

``tests/monitor_v1.py`` is the monitor core as it was before issue 6 (one sketch update,
one Page-Hinkley call and one validating statistics call per feature), kept frozen as
the oracle. The new core must give the same alert ids and alerts, the same window
summaries and observations, and the same states (floats to the 1e-9 the other
monitor tests allow: only summation order differs).
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Any

import numpy as np
import pytest

import monitor_v1
from driftline.contract.keys import StateKey
from driftline.core.detectors import PageHinkley
from driftline.core.fastloop import monitor
from driftline.core.fastloop.monitor import _chi2_kernel, _js_1d, _js_kernel, _ph_bank, _psi_kernel
from driftline.core.reference import Policy, ReferenceProfile, build_reference
from driftline.core.stats import chi2_homogeneity, js_distance, psi
from driftline.demo.simulate import Shift, SimulatedModel
from support import assert_close


@functools.cache
def reference(window: int = 500, window_seconds: float = 0.0) -> ReferenceProfile:
    sim = SimulatedModel(seed=3)
    policy = Policy(window_events=window, window_seconds=window_seconds)
    return build_reference(sim.training_data(20_000), "churn", "1", policy=policy, seed=0)


def run(mod: Any, events: list[dict[str, Any]], ref: ReferenceProfile, batch: int) -> Any:
    states: dict[Any, Any] = {}
    out = monitor_v1.BatchResult() if mod is monitor_v1 else monitor.BatchResult()
    for i in range(0, len(events), batch):
        res = mod.process_batch(copy.deepcopy(events[i : i + batch]), states, lambda m, v: ref)
        out.alerts += res.alerts
        out.observations += res.observations
        out.windows += res.windows
        out.late_events += res.late_events
        out.future_events += res.future_events
    return out, states


def assert_same(events: list[dict[str, Any]], ref: ReferenceProfile, batch: int = 700) -> Any:
    old, old_states = run(monitor_v1, events, ref, batch)
    new, new_states = run(monitor, events, ref, batch)
    assert [a.alert_id for a in new.alerts] == [a.alert_id for a in old.alerts]
    for a, b in zip(new.alerts, old.alerts, strict=True):
        assert_close(a.model_dump(), b.model_dump(), rel=1e-9)
    assert_close(new.windows, old.windows, rel=1e-9)
    assert [(o.feature, o.test) for o in new.observations] == [
        (o.feature, o.test) for o in old.observations
    ]
    assert_close([o.value for o in new.observations], [o.value for o in old.observations])
    assert (new.late_events, new.future_events) == (old.late_events, old.future_events)
    assert [k.encode() for k in new_states] == [k.encode() for k in old_states]
    for key, st in new_states.items():
        assert_close(st.to_bytes(), old_states[monitor_v1.StateKey.decode(key.encode())].to_bytes())
    return new


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_numeric_shift_same_results(seed: int) -> None:
    sim = SimulatedModel(seed=seed)
    events = list(sim.events(6_000, shift=Shift(start=2_500, sigmas=1.0)))
    events += list(sim.events(4_000, start=6_000))  # recovery: resolved alerts too
    res = assert_same(events, reference(), batch=[5_000, 333, 1_000][seed - 1])
    assert any(a.kind == "input_drift" for a in res.alerts)


def test_categorical_and_output_shift_same_results() -> None:
    shift = Shift(start=2_000, feature="f00", sigmas=2.5, cat_feature="plan", category="x")
    shift = Shift(**{**shift.__dict__, "share": 0.4})
    events = list(SimulatedModel(seed=5).events(5_000, shift=shift))
    res = assert_same(events, reference())
    assert {a.kind for a in res.alerts} >= {"input_drift"}


def test_data_quality_and_odd_values_same_results() -> None:
    events = list(SimulatedModel(seed=9).events(3_000))
    rng = np.random.default_rng(0)
    for i, e in enumerate(events):
        f = e["features"]
        if i >= 1_000:
            f["f05"] = None
            f["f06"] = "oops"
            f["extra"] = 1
        roll = rng.random()
        if roll < 0.05:
            f["f07"] = None
        elif roll < 0.06:
            f["f08"] = True  # a boolean is not a number
        elif roll < 0.07:
            f["plan"] = 3  # a number is not a category
        elif roll < 0.08:
            f["region"] = None
        elif roll < 0.09:
            del f["f09"]
        elif roll < 0.095:
            f["f10"] = math.inf
        elif roll < 0.10:
            f["channel"] = False
        elif roll < 0.105:
            e.pop("scores")
    res = assert_same(events, reference(), batch=400)
    assert any(a.kind == "data_quality" for a in res.alerts)


def test_several_models_segments_and_string_times_same_results() -> None:
    a = list(SimulatedModel(seed=1).events(3_000, shift=Shift(start=1_000, sigmas=1.5)))
    b = list(SimulatedModel(seed=2).events(3_000))
    for i, e in enumerate(b):
        e["segment"] = {"country": "DE" if i % 3 else "FR"}
    c = list(SimulatedModel(seed=4).events(1_500))
    for e in c:
        e["timestamp"] = f"2026-01-01T00:{(e['timestamp'] // 60_000) % 60:02d}:00Z"
    events = [x for trio in zip(a, b + b[:0], c + c, strict=False) for x in trio]
    assert_same(events, reference(), batch=900)


def test_time_windows_late_and_future_events_same_results() -> None:
    events = list(SimulatedModel(seed=7).events(4_000, shift=Shift(start=2_000, sigmas=1.0)))
    events[100]["timestamp"] -= 3_000_000  # late
    events[200]["timestamp"] += 3_600_000  # future-dated
    events[201]["timestamp"] += 3_600_000
    assert_same(events, reference(window_seconds=5.0), batch=650)


def test_warm_up_and_big_windows_same_results() -> None:
    events = list(SimulatedModel(seed=6).events(9_000, shift=Shift(start=6_000, sigmas=1.0)))
    big = reference(window=5_000)
    assert_same(events, big, batch=6_000)  # chunks over Page-Hinkley's vector block

    old_states: dict[Any, Any] = {}
    new_states: dict[Any, Any] = {}
    for i in range(0, 4_000, 1_500):
        chunk = events[i : i + 1_500]
        o = monitor_v1.process_batch(copy.deepcopy(chunk), old_states, lambda m, v: None)
        n = monitor.process_batch(copy.deepcopy(chunk), new_states, lambda m, v: None)
        assert [a.alert_id for a in n.alerts] == [a.alert_id for a in o.alerts]
        assert [r.reference_id for r in n.new_references] == [
            r.reference_id for r in o.new_references
        ]
    old_key = monitor_v1.StateKey("churn", "1")
    assert_close(new_states[StateKey("churn", "1")].to_bytes(), old_states[old_key].to_bytes())


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
