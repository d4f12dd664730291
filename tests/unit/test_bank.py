"""The CUSUM banks (core/detectors/bank.py) and their calibration (core/detectors/arl.py).

Oracles: the vectorised, cut-and-resume kernel against a per-event loop of
``S = max(0, S + y)`` in integers; Bernoulli rows against a textbook Bernoulli CUSUM;
the calibration against brute-force simulation of run lengths, and Gaussian rows
against Siegmund's closed form. The contract shared with every detector (round trip,
determinism, batch boundaries) is in test_detectors.py.
"""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from driftline.core.detectors.arl import RowDistribution, calibrate_rows, tilt
from driftline.core.detectors.bank import (
    DETECT,
    NEVER,
    RETURN,
    SCALE,
    BankLayout,
    CusumBank,
    FeatureBank,
    FeaturePlan,
    compile_categorical,
    compile_numeric,
    compile_rate,
    unit_channels,
)
from driftline.errors import StateCorrupt


def numeric_plan(target: float = 3000.0, seed: int = 1, n_ref: int = 20_000) -> FeaturePlan:
    rng = np.random.default_rng(42)
    plan = compile_numeric("x", rng.normal(10, 2, n_ref), n_ref=n_ref, target_arl=target, seed=seed)
    assert plan is not None
    return plan


def categorical_plan(target: float = 3000.0) -> FeaturePlan:
    rng = np.random.default_rng(43)
    counts = np.bincount(rng.choice(5, 20_000, p=[0.5, 0.3, 0.15, 0.045, 0.005]), minlength=6)
    plan = compile_categorical(
        "c", ["a", "b", "c", "d", "e"], counts.tolist(), target_arl=target, seed=1
    )
    assert plan is not None
    return plan


# ------------------------------------------------------------------ the per-event oracle


def oracle(plan: FeaturePlan, xs: np.ndarray) -> tuple[list[tuple[int, str, int]], list[int]]:
    """Transitions (position, kind, group) and final statistics, one event at a time."""
    v = unit_channels(plan, xs)
    h = [math.ceil(t * SCALE) if math.isfinite(t) else NEVER for t in plan.threshold]
    rows = range(plan.n_rows)
    s = [0] * plan.n_rows
    away = [0] * len(plan.groups)
    out: list[tuple[int, str, int]] = []
    for t in range(v.shape[1]):
        crossed = []
        for r in rows:
            g = plan.group[r]
            if plan.role[r] == DETECT and away[g] != 0:
                continue
            if plan.role[r] == RETURN and away[g] != plan.direction[r]:
                continue
            x = v[plan.channel[r], t]
            q = 0 if math.isnan(x) else int(np.rint((x * plan.a[r] + plan.b[r]) * SCALE))
            s[r] = max(0, s[r] + q)
            if s[r] >= h[r]:
                crossed.append(r)
        for r in crossed:
            g = plan.group[r]
            was = any(away)
            if plan.role[r] == DETECT:
                if away[g]:
                    continue
                away[g] = plan.direction[r]
                for k in rows:
                    if plan.group[k] == g and plan.role[k] == RETURN:
                        s[k] = 0
                out.append((t, "update" if was else "fire", g))
            else:
                away[g] = 0
                for k in rows:
                    if plan.group[k] == g:
                        s[k] = 0
                out.append((t, "return" if any(away) else "resolve", g))
    return out, s


def drifting_values(rng: np.random.Generator, n: int) -> np.ndarray:
    """A numeric stream that shifts, returns, widens, and has missing values."""
    z = rng.normal(0, 1, n)
    z[n // 5 : 2 * n // 5] += 0.8
    z[3 * n // 5 :] *= 1.8
    x = 10 + 2 * z
    x[rng.random(n) < 0.02] = math.nan
    return x


@pytest.mark.parametrize("seed", range(3))
def test_kernel_equals_the_per_event_loop(seed: int) -> None:
    plan = numeric_plan()
    rng = np.random.default_rng(seed)
    xs = drifting_values(rng, 6000)
    want, s = oracle(plan, xs)
    assert {k for _, k, _ in want} >= {"fire", "resolve"}, want
    det = FeatureBank(plan)
    got: list[tuple[int, str, int]] = []
    cuts = np.sort(rng.choice(np.arange(1, xs.size), 15, replace=False)).tolist()
    for lo, hi in zip([0, *cuts], [*cuts, xs.size], strict=True):
        det.update_many(xs[lo:hi])
        got += [(lo + t.position, t.kind, t.group) for t in det.transitions]
    assert got == want
    assert orjson.loads(det.to_bytes())["s"] == s


def test_categorical_kernel_equals_the_per_event_loop() -> None:
    plan = categorical_plan()
    rng = np.random.default_rng(5)
    codes = rng.choice(5, 8000, p=[0.5, 0.3, 0.15, 0.045, 0.005])
    codes[3000:5000] = rng.choice(5, 2000, p=[0.4, 0.3, 0.15, 0.145, 0.005])
    codes[rng.random(8000) < 0.01] = -1  # missing
    codes[rng.random(8000) < 0.01] = 5  # unseen ("other")
    want, _ = oracle(plan, codes.astype(np.float64))
    assert any(k == "fire" for _, k, _ in want)
    det = FeatureBank(plan)
    det.update_many(codes.astype(np.float64))
    assert [(t.position, t.kind, t.group) for t in det.transitions] == want


def test_bernoulli_rows_are_the_textbook_bernoulli_cusum() -> None:
    """A rate row is the CUSUM of log(p1/p0) per event and log((1-p1)/(1-p0)) per
    non-event, in fixed point."""
    plan = compile_rate("r", 0.1, 0.5, n_ref=10**9, target_arl=5000, seed=3)
    assert plan is not None
    detect = [r for r in range(plan.n_rows) if plan.role[r] == DETECT]
    rng = np.random.default_rng(9)
    xs = np.where(rng.random(4000) < np.r_[np.full(2000, 0.1), np.full(2000, 0.2)], 0.0, 1.0)
    for r in detect:
        p0 = plan.groups[0].mean
        p1 = p0 + plan.shift[r] * plan.groups[0].sd
        up, down = math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
        h = math.ceil(plan.threshold[r] * SCALE)
        s, first = 0.0, None
        for t, x in enumerate(xs.tolist()):
            s = max(0.0, s + (up if x < 0.5 else down))
            if s * SCALE >= h + 64 * (t + 1):  # beyond the fixed-point rounding
                first = t
                break
        assert first is not None
        single = FeaturePlan(
            **{
                **plan.__dict__,
                "threshold": tuple(
                    t if k == r or plan.role[k] == RETURN else math.inf
                    for k, t in enumerate(plan.threshold)
                ),
            }
        )
        got = FeatureBank(single).update_many(xs).tolist()
        assert got and abs(got[0] - first) <= 2


def test_stacked_bank_equals_one_bank_per_unit() -> None:
    """The monitor's stacked bank gives each unit's transitions of its own bank."""
    num, cat = numeric_plan(), categorical_plan()
    rate = compile_rate("low", 0.1, 8.0, n_ref=20_000, target_arl=3000, seed=2)
    assert rate is not None
    rng = np.random.default_rng(1)
    x = drifting_values(rng, 5000)
    codes = rng.choice(5, 5000, p=[0.5, 0.3, 0.15, 0.045, 0.005])
    codes[2500:] = rng.choice(5, 2500, p=[0.3, 0.3, 0.15, 0.245, 0.005])
    plans = [cat, num, rate]
    layout = BankLayout.of(plans)
    assert layout.float_units == [1, 2] and layout.code_units == [0]
    stacked = CusumBank(layout)
    got: list[tuple[int, int, str, str]] = []
    for lo in range(0, 5000, 700):
        sl = slice(lo, lo + 700)
        v = layout.channels(np.vstack([x[sl], x[sl]]), codes[None, sl])
        got += [
            (lo + t.position, t.unit, t.kind, layout.group_name[t.group])
            for t in stacked.update_many(v)
        ]
    want: list[tuple[int, int, str, str]] = []
    for u, (plan, xs) in enumerate(zip(plans, (codes.astype(float), x, x), strict=True)):
        det = FeatureBank(plan)
        det.update_many(xs)
        want += [(t.position, u, t.kind, plan.groups[t.group].name) for t in det.transitions]
    assert sorted(got) == sorted(want)
    assert {u for _, u, k, _ in got if k == "fire"} == {0, 1, 2}


@pytest.mark.parametrize("seed", range(4))
def test_block_bounds_pass_equals_the_running_minimum(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CusumBank._quiet (block bounds, rows walked only where they may cross or hold the
    peak) gives the exact pass's transitions, statistics, effects and peak, bit for bit,
    on any cuts (one event, a block's length, not a multiple of it), missing values and
    drifts that fire and resolve."""
    import driftline.core.detectors.bank as bank_module

    num, cat = numeric_plan(target=500.0), categorical_plan(target=500.0)
    rate = compile_rate("low", 0.1, 8.0, n_ref=20_000, target_arl=500, seed=2)
    assert rate is not None
    layout = BankLayout.of([num, cat, num, rate])
    rng = np.random.default_rng(seed)
    n = 9000
    x = drifting_values(rng, n)
    y = drifting_values(rng, n)[::-1].copy()
    codes = rng.choice(5, n, p=[0.5, 0.3, 0.15, 0.045, 0.005])
    codes[n // 3 : n // 2] = rng.choice(5, n // 2 - n // 3, p=[0.3, 0.3, 0.15, 0.245, 0.005])
    codes[rng.random(n) < 0.01] = -1
    v = layout.channels(np.vstack([x, y, x]), codes[None, :])
    if seed % 2:
        v = np.asfortranarray(v)  # the fast loop's order
    cuts = sorted({1, 2, 20, 21, 40, *rng.choice(np.arange(1, n), 40, replace=False).tolist()})
    runs = []
    for quiet_min in (1 << 62, 0):  # the exact pass only; the block pass wherever it runs
        monkeypatch.setattr(bank_module, "_QUIET_MIN", quiet_min)
        bank = CusumBank(layout)
        out = []
        for lo, hi in zip([0, *cuts], [*cuts, n], strict=True):
            trans = bank.update_many(v[:, lo:hi])
            out.append((trans, bank.peak, bank.state_fields(), bank.effects()))
        runs.append(out)
    assert runs[0] == runs[1]
    kinds = {t.kind for trans, *_ in runs[0] for t in trans}
    assert kinds >= {"fire", "resolve"}, kinds
    assert any(peak > 0.5 for _, peak, _, _ in runs[0])


# ------------------------------------------------------------------ episodes and effects


def test_persistent_drift_is_one_episode_and_resolves_only_after_its_return() -> None:
    plan = numeric_plan(target=1e6)
    rng = np.random.default_rng(3)
    det = FeatureBank(plan)
    det.update_many(10 + 2 * rng.normal(0, 1, 5000))
    assert not det.drifting
    kinds: list[str] = []
    for _ in range(30):  # 30,000 events 0.25 sd away: one episode, never resolved
        det.update_many(10 + 2 * rng.normal(0.25, 1, 1000))
        kinds += [t.kind for t in det.transitions if t.kind in ("fire", "resolve")]
    assert kinds == ["fire"]
    assert det.drifting
    assert det.effects()["mean"] == pytest.approx(0.25, abs=0.05)
    back: list[int] = []
    for i in range(10):
        det.update_many(10 + 2 * rng.normal(0, 1, 1000))
        back += [1000 * i + t.position for t in det.transitions if t.kind == "resolve"]
    assert len(back) == 1 and back[0] < 4000
    assert not det.drifting


def test_transitions_carry_the_measured_effect() -> None:
    plan = numeric_plan()
    det = FeatureBank(plan)
    rng = np.random.default_rng(4)
    det.update_many(10 + 2 * rng.normal(0.6, 1, 3000))
    det.update_many(10 + 2 * rng.normal(0, 1, 4000))
    back = [t for t in det.transitions if t.kind in ("return", "resolve")]
    assert back
    mean_back = next(t for t in back if plan.groups[t.group].name == "mean")
    n, total = mean_back.measured
    assert n > 1000
    bank = CusumBank(BankLayout.of([plan]))
    assert bank.effect(mean_back.group, n, total) > 0.3


def test_small_references_raise_or_disable_their_smallest_rows_but_always_return() -> None:
    """A reference's sampling error is part of the budget: on 2,000 rows the 0.25 sd rows
    need far higher thresholds than on 20,000, on 300 rows they are disabled; return rows
    are always calibrated (an episode must be able to end)."""
    rng = np.random.default_rng(8)
    plans = {
        n: compile_numeric("x", rng.normal(0, 1, n), n_ref=n, target_arl=1e7, seed=0)
        for n in (300, 2000, 20_000)
    }

    def rows(plan: FeaturePlan | None, role: int, shift: float) -> list[float]:
        assert plan is not None
        return [
            t
            for r, t in enumerate(plan.threshold)
            if plan.role[r] == role
            and abs(plan.shift[r]) == shift
            and plan.groups[plan.group[r]].name == "mean"
        ]

    assert all(math.isfinite(t) for t in rows(plans[20_000], DETECT, 0.25))
    assert min(rows(plans[2000], DETECT, 0.25)) > max(rows(plans[20_000], DETECT, 0.25)) + 2
    assert not any(math.isfinite(t) for t in rows(plans[300], DETECT, 0.25))
    assert plans[300] is not None and plans[300].disabled >= 2
    for plan in plans.values():
        assert plan is not None
        assert all(math.isfinite(t) for r, t in enumerate(plan.threshold) if plan.role[r] == RETURN)


def test_a_small_skewed_reference_whose_crossing_weights_underflow_still_calibrates() -> None:
    """400 log-normal rows (a user's small training set): a row's threshold is so high
    that its crossing weights' squares underflow, the variance of their mean is 0/0, and
    the count of further walks was a NaN cast to a negative integer ("repeats may not
    contain negative values" from ``reference build``). Now the row gets the walk
    budget and the bank compiles."""
    rng = np.random.default_rng(14)
    column = [rng.lognormal(0, 1, 400) for _ in range(5)][-1]
    plan = compile_numeric("num4", column, n_ref=400, target_arl=1.4e7, seed=1)
    assert plan is not None
    assert all(t > 0 for t in plan.threshold)
    assert all(math.isfinite(t) for r, t in enumerate(plan.threshold) if plan.role[r] == RETURN)


def test_constant_and_single_category_columns_have_no_bank() -> None:
    assert compile_numeric("k", np.full(100, 3.0), n_ref=100, target_arl=1e6, seed=0) is None
    assert compile_categorical("k", ["a"], [100, 0], target_arl=1e6, seed=0) is None
    assert compile_rate("k", 0.0, 1.0, n_ref=100, target_arl=1e6, seed=0) is None


# ------------------------------------------------------------------ plans: stored form


def test_plan_round_trips_through_json_and_is_deterministic() -> None:
    a, b = numeric_plan(seed=5), numeric_plan(seed=5)
    assert a == b
    assert FeaturePlan.from_dict(orjson.loads(orjson.dumps(a.to_dict()))) == a
    assert numeric_plan(seed=6).threshold != a.threshold  # the seed drives the simulation
    c = categorical_plan()
    assert FeaturePlan.from_dict(orjson.loads(orjson.dumps(c.to_dict()))) == c
    assert [g.name for g in c.groups] == [
        "share:a",
        "share:b",
        "share:c",
        "share:d",
        "share:(rest)",
    ]


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "sideways"},
        {"groups": []},
        {"rows": None},
        {"std": 0.0},
        {"theta": []},
        {"name": None, "rows": {"channel": [True]}},
    ],
    ids=str,
)
def test_plan_rejects_malformed_records(change: dict[str, object]) -> None:
    d = numeric_plan().to_dict()
    with pytest.raises(StateCorrupt):
        FeaturePlan.from_dict({**d, **change})


def test_plan_rejects_rows_on_another_channel() -> None:
    d = numeric_plan().to_dict()
    d["rows"]["channel"] = [1 - c for c in d["rows"]["channel"]]
    with pytest.raises(StateCorrupt):
        FeaturePlan.from_dict(d)


def test_bank_state_rejects_a_foreign_layout() -> None:
    bank = CusumBank(BankLayout.of([numeric_plan()]))
    blob = bank.to_bytes()
    with pytest.raises(StateCorrupt):
        CusumBank.from_bytes(blob, BankLayout.of([categorical_plan()]))
    fields = orjson.loads(blob)
    with pytest.raises(StateCorrupt):
        CusumBank.from_bytes(
            orjson.dumps({**fields, "away": [2, 0]}), BankLayout.of([numeric_plan()])
        )


# ------------------------------------------------------------------ calibration


def brute_force_arl(dist: RowDistribution, h: float, runs: int, seed: int) -> float:
    """Mean events to the first alarm of ``S = max(0, S + Y)`` from 0, Y drawn from the
    row's distribution: run lengths simulated to the end, all runs at once."""
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(dist.weights)
    cdf /= cdf[-1]
    s = np.zeros(runs)
    length = np.zeros(runs)
    alive = np.arange(runs)
    while alive.size:
        y = dist.values[np.searchsorted(cdf, rng.random((alive.size, 256)), side="right")]
        steps = np.zeros(alive.size, dtype=np.int64)
        done = np.zeros(alive.size, dtype=bool)
        cur = s[alive]
        for j in range(256):
            cur = np.where(done, cur, np.maximum(0.0, cur + y[:, j]))
            hit = ~done & (cur >= h)
            steps[hit] = j + 1
            done |= hit
        length[alive] += np.where(done, steps, 256)
        s[alive] = cur
        alive = alive[~done]
    return float(length.mean())


@pytest.mark.parametrize("shape", ["lognormal", "bernoulli"])
def test_calibrated_arl_matches_brute_force_simulation(shape: str) -> None:
    """At a budget small enough to simulate, the run length to a false alarm averages
    the target (the reference large enough that its sampling error is nil)."""
    rng = np.random.default_rng(21)
    if shape == "lognormal":
        z = rng.lognormal(0, 0.6, 4096)
        z = (z - z.mean()) / z.std()
        v, w = np.sort(np.clip(z, -4, 4)), np.full(4096, 1 / 4096)
        a, b = 0.5, -0.125
    else:
        v, w = np.array([1.0, 0.0]), np.array([0.05, 0.95])
        a = math.log(0.16 / 0.05) - math.log(0.84 / 0.95)
        b = math.log(0.84 / 0.95)
    dist = RowDistribution(a * v + b, w, abs(a))
    target = 800.0
    (cal,) = calibrate_rows([dist], target, 10**12, np.random.default_rng(0))
    assert math.isfinite(cal.threshold) and cal.inflation == pytest.approx(1.0, abs=1e-3)
    measured = brute_force_arl(dist, cal.threshold, 3000, seed=1)
    assert measured == pytest.approx(target, rel=0.2)


def test_gaussian_rows_agree_with_siegmunds_formula() -> None:
    """The exact Gaussian LLR of a shift delta: Siegmund's ARL
    ``(exp(delta b) - delta b - 1) / (delta^2 / 2)`` with ``b = h / delta + 1.166``."""
    from statistics import NormalDist

    u = np.asarray([NormalDist().inv_cdf((i + 0.5) / 8192) for i in range(8192)])
    w = np.full(u.size, 1 / u.size)
    for delta, target in ((0.25, 1e6), (0.5, 1e5), (1.0, 1e4)):
        dist = RowDistribution(delta * u - delta**2 / 2, w, delta)
        (cal,) = calibrate_rows([dist], target, 10**12, np.random.default_rng(1))
        assert cal.theta == pytest.approx(1.0, abs=0.01)  # an exact LLR
        b = cal.threshold / delta + 1.166
        siegmund = (math.exp(delta * b) - delta * b - 1) / (delta**2 / 2)
        assert siegmund == pytest.approx(target, rel=0.2), delta


def test_tilt_is_the_root_of_the_moment_generating_function() -> None:
    rng = np.random.default_rng(2)
    ys = np.vstack([rng.normal(-0.1, 1, 500), rng.exponential(1, 500) - 1.2])
    ws = np.full(ys.shape, 1 / 500)
    theta = tilt(ys, ws)
    assert (theta > 0).all()
    assert np.allclose((ws * np.exp(theta[:, None] * ys)).sum(axis=1), 1.0, atol=1e-9)
    assert tilt(np.array([[0.5, 1.0]]), np.array([[0.5, 0.5]]))[0] == 0.0  # never falls


def test_calibration_is_deterministic_given_the_seed() -> None:
    assert numeric_plan(seed=9).threshold == numeric_plan(seed=9).threshold


def test_the_margin_moves_a_share_exactly_and_a_mean_by_the_shift() -> None:
    """Step 3's margin (arl._moved): on a Bernoulli row the tilted weights are the
    Bernoulli of the share moved by ``shift / a``; on a continuous row the mean rises by
    exactly ``shift``; a mean beyond the row's largest value is unreachable."""
    from driftline.core.detectors.arl import _moved

    a, b, p0 = 2.0, -0.3, 0.05
    rng = np.random.default_rng(3)
    z = rng.lognormal(0, 1, 4096)
    z = 0.5 * (z - z.mean()) / z.std() - 0.125
    ys = np.zeros((3, 4096))
    ws = np.zeros((3, 4096))
    ys[0, :2], ws[0, :2] = [a + b, b], [p0, 1 - p0]
    ys[1], ws[1] = z, 1 / 4096
    ys[2, :2], ws[2, :2] = [a + b, b], [p0, 1 - p0]
    shift = np.array([0.04, 0.01, 2.5])
    moved, reachable = _moved(ys, ws, shift)
    assert reachable.tolist() == [True, True, False]
    assert moved[0, :2] == pytest.approx([p0 + 0.04 / a, 1 - p0 - 0.04 / a], abs=1e-12)
    assert float(moved[1] @ ys[1]) == pytest.approx(float(ws[1] @ ys[1]) + 0.01, abs=1e-12)
    assert moved.sum(axis=1) == pytest.approx([1.0, 1.0, 1.0])
    assert (moved[1, np.argsort(ys[1])][1:] >= moved[1, np.argsort(ys[1])][:-1]).all()
