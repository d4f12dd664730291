"""The multivariate detector (issue 15): design, ARL calibration, channels, detector, sketch.

Oracles: scipy's normal quantiles for the scores, numpy's ``eigh`` for the randomized
SVD, a brute-force CUSUM simulation for the Markov-chain ARL, ``np.cov`` for the
sketch's covariance, a plain per-event CUSUM loop for the fixed-point recursion.
"""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from pydantic import ValidationError as PydanticValidationError
from scipy import stats

from driftline.contract.codec import pack
from driftline.core.detectors.bank import DETECT, SCALE, BankLayout, CusumBank
from driftline.core.multivariate import (
    CategoricalInput,
    ComponentSketch,
    MultivariateDetector,
    MultivariateProfile,
    MultivariateSettings,
    NumericInput,
    attribute,
    fit_multivariate,
)
from driftline.core.multivariate.arl import calibrate_thresholds, run_length
from driftline.core.multivariate.design import category_levels, numeric_scores
from driftline.core.reference import (
    Policy,
    ReferenceProfile,
    TrainingData,
    categorical_profile,
    numeric_profile,
)
from driftline.core.reference import (
    build_reference as build,
)
from driftline.errors import SketchMismatch, StateCorrupt

REGION = ("eu", "us", "apac")


def columns(
    rng: np.random.Generator, n: int, d: int = 5, rho: float = 0.8, factors: int = 0
) -> tuple[np.ndarray, list[str]]:
    """``d`` numeric columns (x0 and x1 correlated ``rho``; optional shared factors) and
    a categorical column that follows x2."""
    g = rng.standard_normal((d, n))
    g[1] = rho * g[0] + math.sqrt(1 - rho * rho) * g[1]
    for f in range(factors):
        common = rng.standard_normal(n)
        for j in range(2 + 3 * f, min(d, 5 + 3 * f)):
            g[j] = 0.8 * common + 0.6 * g[j]
    x = g.copy()
    x[1] = np.exp(0.5 * g[1])  # a log-normal marginal
    cut = np.digitize(0.7 * g[2] + 0.7 * rng.standard_normal(n), [-0.5, 0.5])
    cats = [REGION[i] for i in cut.tolist()]
    return x, cats


def fit(
    x: np.ndarray,
    cats: list[str] | None = None,
    target: float = 1e5,
    seed: int = 0,
    settings: MultivariateSettings | None = None,
) -> MultivariateProfile:
    nums = []
    for j in range(x.shape[0]):
        p = numeric_profile(x[j])
        nums.append(NumericInput(f"x{j}", x[j], p.edges, p.counts))
    cin = []
    if cats is not None:
        c = categorical_profile(cats)
        cin.append(CategoricalInput("region", cats, c.categories, c.counts))
    model = fit_multivariate(nums, cin, target_arl=target, seed=seed, settings=settings)
    assert model is not None
    return model


def scores(model: MultivariateProfile, x: np.ndarray, cats: list[str] | None = None) -> np.ndarray:
    return model.design.scores(
        {f"x{j}": x[j] for j in range(x.shape[0])},
        {"region": cats} if cats is not None else {},
        x.shape[1],
    )


@pytest.fixture(scope="module")
def small() -> tuple[MultivariateProfile, np.ndarray, list[str]]:
    x, cats = columns(np.random.default_rng(1), 8000)
    return fit(x, cats), x, cats


@pytest.fixture(scope="module")
def wide() -> MultivariateProfile:
    """More columns than components: the randomized SVD and the reconstruction error."""
    x, _ = columns(np.random.default_rng(2), 6000, d=24, factors=4)
    return fit(x, settings=MultivariateSettings(max_components=6))


# ------------------------------------------------------------------------------ design


def test_numeric_scores_are_standardised_normal_scores_of_mid_ranks() -> None:
    counts = np.array([5, 20, 50, 20, 5])
    got = numeric_scores(counts)
    assert got is not None
    mid = (np.cumsum(counts) - counts / 2) / counts.sum()
    raw = stats.norm.ppf(mid)
    mean = (raw * counts).sum() / counts.sum()
    sd = math.sqrt(((raw - mean) ** 2 * counts).sum() / counts.sum())
    np.testing.assert_allclose(got, (raw - mean) / sd, atol=2**-16)
    assert numeric_scores(np.array([0, 10, 0])) is None  # one bin used: no information


def test_category_levels_keep_frequent_categories_and_drop_one_when_all_are_kept() -> None:
    assert category_levels(("a", "b", "c"), np.array([50, 30, 20, 0]), 0.05, 8) == [
        ("a", 0.5),
        ("b", 0.3),
    ]
    assert category_levels(("a", "b", "c"), np.array([90, 8, 2, 0]), 0.05, 8) == [
        ("a", 0.9),
        ("b", 0.08),
    ]
    assert category_levels(("a", "b", "c"), np.array([50, 30, 20, 0]), 0.05, 1) == [("a", 0.5)]


def test_scores_from_bins_and_codes_equal_scores_from_raw_values(small: tuple) -> None:
    model, x, cats = small
    rng = np.random.default_rng(3)
    live = x[:, :500].copy()
    live[0, :20] = np.nan
    live[1, 20:30] = np.inf
    live[2, 30:40] = -np.inf
    raw_cats: list[str | None] = list(cats[:500])
    raw_cats[:15] = [None] * 15
    raw_cats[15:25] = ["mars"] * 10  # a category the reference never saw
    want = scores(model, live, raw_cats)  # type: ignore[arg-type]
    bins = {f"x{j}": np.searchsorted(model.design.edges[f"x{j}"], live[j]) for j in range(5)}
    finite = {f"x{j}": np.isfinite(live[j]) for j in range(5)}
    index = {c: i for i, c in enumerate(REGION)}
    codes = np.asarray([-1 if c is None else index.get(c, 3) for c in raw_cats])
    got = model.design.scores_from_bins(bins, finite, {"region": (codes, index)}, 500)
    assert np.array_equal(got, want, equal_nan=True)
    # Missing, infinite and missing-category values: NaN (the event is left out).
    assert np.isnan(want[0, :20]).all() and np.isnan(want[1, 20:30]).all()
    assert np.isnan(want[2, 30:40]).all() and not np.isnan(want[:5, 40:]).any()
    assert np.isnan(want[5, :15]).all() and not np.isnan(want[5, 15:25]).any()
    del rng


# --------------------------------------------------------------------------------- ARL


def _simulated_arl(y: np.ndarray, h: float, walks: int, rng: np.random.Generator) -> float:
    s = np.zeros(walks)
    alive = np.ones(walks, dtype=bool)
    length = np.zeros(walks)
    t = 0
    while alive.any():
        t += 1
        s = np.maximum(0.0, s + y[rng.integers(y.size, size=walks)])
        hit = alive & (s >= h)
        length[hit] = t
        alive &= ~hit
    return float(length.mean())


@pytest.mark.parametrize(("delta", "h"), [(0.5, 2.5), (0.25, 1.5)])
def test_markov_chain_arl_agrees_with_simulation_on_skewed_increments(
    delta: float, h: float
) -> None:
    rng = np.random.default_rng(4)
    u = rng.chisquare(4, 20_000)
    u = (u - u.mean()) / u.std()  # skewed, like the channels before the cube root
    y = np.sort(delta * u - delta * delta / 2)
    chain = float(run_length(y[None, :], np.array([h]))[0])
    sim = _simulated_arl(y, h, 6000, rng)
    assert abs(chain / sim - 1) < 0.05, (chain, sim)


def test_thresholds_reach_their_target_and_small_references_disable_rows() -> None:
    u = np.clip(np.random.default_rng(5).standard_normal(5000), -4, 4)
    u = (u - u.mean()) / u.std()  # standardised, as the channels are
    coef = np.array([0.5, 0.25, -0.25])
    samples = np.sort(coef[:, None] * u[None, :] - (coef**2)[:, None] / 2, axis=1)
    h1, got1 = calibrate_thresholds(samples, coef, np.full(3, 1e4), 5000)
    h2, _ = calibrate_thresholds(samples, coef, np.full(3, 1e6), 5000)
    assert np.all(np.abs(got1 - math.log(1e4)) < 0.01)
    assert np.all(h2 > h1) and np.all(np.isfinite(h2))
    # Standardised on 500 rows, the 0.25 sd rows cannot hold 1e7 events: disabled.
    small, _ = calibrate_thresholds(samples, coef, np.full(3, 1e7), 500)
    assert math.isfinite(small[0]) and not np.isfinite(small[1:]).any()


# ---------------------------------------------------------------------------- channels


@pytest.mark.parametrize("which", ["small", "wide"])
def test_channels_are_bit_identical_whatever_the_batch(
    which: str, small: tuple, wide: MultivariateProfile
) -> None:
    if which == "small":
        model, x, cats = small
        z = scores(model, x[:, :1500], cats[:1500])
    else:
        model = wide
        x, _ = columns(np.random.default_rng(6), 1500, d=24, factors=4)
        z = scores(model, x)
    full = model.channels(z)
    rng = np.random.default_rng(7)
    for _ in range(5):
        cuts = np.sort(rng.choice(np.arange(1, 1500), size=6, replace=False)).tolist()
        parts = [model.channels(z[:, a:b]) for a, b in zip([0, *cuts], [*cuts, 1500], strict=True)]
        assert np.array_equal(np.hstack([p.u for p in parts]), full.u)
        assert np.array_equal(np.vstack([p.t for p in parts]), full.t)
        assert np.array_equal(np.concatenate([p.t2 for p in parts]), full.t2)
    singles = [model.channels(z[:, i : i + 1]) for i in range(40)]
    assert np.array_equal(np.hstack([s.u for s in singles]), full.u[:, :40])
    assert (full.spe is None) == (which == "small")


def test_randomized_svd_finds_the_top_components_of_eigh(wide: MultivariateProfile) -> None:
    x, _ = columns(np.random.default_rng(2), 6000, d=24, factors=4)
    assert wide.notes["method"] == "randomized_svd" and wide.k == 6
    assert wide.channel_names == ("t2", "spe")
    # The same split and scores as the fit, then numpy's eigh as the oracle.
    rng = np.random.default_rng([0, 0x6D76])
    perm = rng.permutation(6000)
    z = scores(wide, x)[:, np.sort(perm[:3000])]
    lam = np.linalg.eigvalsh(z @ z.T / z.shape[1])[::-1][:6]
    np.testing.assert_allclose(wide.variances, lam, rtol=0.02)
    gram = wide.components.T @ wide.components
    np.testing.assert_allclose(gram, np.eye(6), atol=1e-5)


# ---------------------------------------------------------------------------- detector


def _stream(seed: int, n: int, change: int, rho_after: float) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    before, cb = columns(rng, change)
    after, ca = columns(rng, n - change, rho=rho_after)
    return np.hstack([before, after]), cb + ca


def _run(
    model: MultivariateProfile, z: np.ndarray, cuts: list[int], round_trip: bool
) -> tuple[list[tuple[int, str, str]], MultivariateDetector]:
    det = MultivariateDetector(model)
    seen: list[tuple[int, str, str]] = []
    for a, b in zip([0, *cuts], [*cuts, z.shape[1]], strict=True):
        det.update_many(z[:, a:b])
        seen += [(a + t.position, t.kind, t.channel) for t in det.transitions]
        if round_trip:
            det = MultivariateDetector.from_bytes(det.to_bytes(), model)
    return seen, det


def test_correlation_break_fires_names_the_pair_and_resolves_when_it_comes_back(
    small: tuple,
) -> None:
    model = small[0]
    x1, c1 = _stream(8, 6000, 2000, -0.8)
    x2, c2 = columns(np.random.default_rng(9), 6000)  # back to the reference
    z = scores(model, np.hstack([x1, x2]), c1 + c2)
    det = MultivariateDetector(model)
    fired = det.update_many(z[:, :6000])
    assert fired.size == 1 and 2000 <= fired[0] < 2300, fired
    assert det.episode is not None and det.episode.n == 6000 - fired[0] - 1
    att = attribute(model, det.episode)  # the events since the episode opened
    assert {f for f, _, _ in att.features[:2]} == {"x0", "x1"}
    a, b, before, now = att.pairs[0]
    assert {a, b} == {"x0", "x1"} and before > 0.6 and now < -0.5
    assert det.drifting and det.effects()["t2"] > 1.0
    det.update_many(z[:, 6000:])
    kinds = [t.kind for t in det.transitions]
    assert kinds == ["resolve"] and not det.drifting


def test_stationary_stream_raises_no_alarm(small: tuple) -> None:
    model = small[0]
    x, cats = columns(np.random.default_rng(10), 20_000)
    det = MultivariateDetector(model)
    assert det.update_many(scores(model, x, cats)).size == 0
    assert 0 < det.level < 1


def test_state_and_transitions_do_not_depend_on_batch_boundaries(small: tuple) -> None:
    model = small[0]
    x, cats = _stream(11, 5000, 1500, 0.0)
    z = scores(model, x, cats)
    want, ref_det = _run(model, z, [], False)
    assert want and want[0][1] == "fire"
    rng = np.random.default_rng(12)
    for _ in range(4):
        cuts = np.sort(rng.choice(np.arange(1, 5000), size=9, replace=False)).tolist()
        got, det = _run(model, z, cuts, round_trip=True)
        assert got == want
        assert det.same_state(ref_det)
        assert np.array_equal(det.bank.s, ref_det.bank.s)


def test_fixed_point_cusum_equals_a_plain_per_event_loop(small: tuple) -> None:
    model = small[0]
    x, cats = columns(np.random.default_rng(13), 3000)
    ch = model.channels(scores(model, x, cats))
    det = MultivariateDetector(model)
    det.update_channels(ch)
    for r in range(len(model.row_a)):
        if model.row_role[r] != DETECT:
            continue  # return rows idle: nothing went away on stationary data
        s = 0
        for v in ch.u[model.row_channel[r]].tolist():
            s = max(0, s + int(np.rint((model.row_a[r] * v + model.row_b[r]) * SCALE)))
        assert s == det.bank.s[r]


def test_cusum_bank_transitions_equal_a_plain_loop_with_groups() -> None:
    """The kernel against a per-event loop of the same rules, crossings included."""
    rng = np.random.default_rng(17)
    v = rng.standard_normal((2, 4000))
    v[0, 1000:2500] += 1.0  # channel 0 goes up, then back
    v[1, 3000:] -= 1.2  # channel 1 goes down
    rows = dict(
        channel=[0, 0, 0, 1, 1, 1],
        a=[0.5, -0.5, -0.125, 0.5, -0.5, 0.125],
        b=[-0.125, -0.125, 0.0078125, -0.125, -0.125, 0.0078125],
        group=[0, 0, 0, 1, 1, 1],
        direction=[1, -1, 1, 1, -1, -1],
        role=[0, 0, 1, 0, 0, 1],
        threshold=[10.0, 10.0, 4.0, 10.0, 10.0, 4.0],
    )
    bank = CusumBank(BankLayout.from_rows(**rows))  # type: ignore[arg-type]
    got = []
    for a, b in ((0, 700), (700, 2600), (2600, 2601), (2601, 4000)):
        got += [(a + c.position, c.kind, c.group, c.direction) for c in bank.update_many(v[:, a:b])]
    # The plain loop.
    h = [int(np.ceil(t * SCALE)) for t in rows["threshold"]]
    s = [0] * 6
    away = [0, 0]
    want = []
    for t in range(4000):
        for r in range(6):
            g, d = rows["group"][r], rows["direction"][r]
            live = away[g] == 0 if rows["role"][r] == 0 else away[g] == d
            if live:
                inc = int(np.rint((rows["a"][r] * v[rows["channel"][r], t] + rows["b"][r]) * SCALE))
                s[r] = max(0, s[r] + inc)
        for r in range(6):
            g, d = rows["group"][r], rows["direction"][r]
            live = away[g] == 0 if rows["role"][r] == 0 else away[g] == d
            if not live or s[r] < h[r]:
                continue
            was = any(away)
            if rows["role"][r] == 0:
                away[g] = d
                for q in range(6):
                    if rows["group"][q] == g and rows["role"][q] == 1:
                        s[q] = 0
                want.append((t, "update" if was else "fire", g, d))
            else:
                away[g] = 0
                for q in range(6):
                    if rows["group"][q] == g:
                        s[q] = 0
                want.append((t, "resolve" if not any(away) else "return", g, d))
    assert got == want
    assert [(k, g) for _, k, g, _ in want] == [("fire", 0), ("resolve", 0), ("fire", 1)], want
    assert bank.s.tolist() == s


# ------------------------------------------------------------------------------ sketch


def test_sketch_is_a_monoid_and_its_covariance_is_numpys(small: tuple) -> None:
    model, x, cats = small
    ch = model.channels(scores(model, x[:, :900], cats[:900]))
    whole = ComponentSketch.zero(model).update(ch)
    a = ComponentSketch.zero(model).update(ch, 0, 300)
    b = ComponentSketch.zero(model).update(ch, 300, 700)
    c = ComponentSketch.zero(model).update(ch, 700)
    assert a.merge(b).merge(c).close_to(whole)
    assert a.merge(b.merge(c)).close_to(c.merge(a).merge(b))
    assert ComponentSketch.zero(model).merge(whole) == whole
    np.testing.assert_allclose(whole.covariance(), np.cov(ch.t.T, bias=True), atol=1e-12)
    np.testing.assert_allclose(whole.mean(), ch.t.mean(axis=0), atol=1e-12)
    back = ComponentSketch.from_bytes(whole.to_bytes(), model)
    assert back == whole


def test_sketch_and_state_bytes_refuse_other_models_and_corrupt_records(
    small: tuple, wide: MultivariateProfile
) -> None:
    model = small[0]
    sk = ComponentSketch.zero(model)
    with pytest.raises(SketchMismatch):
        ComponentSketch.from_bytes(sk.to_bytes(), wide)
    with pytest.raises(SketchMismatch):
        sk.merge(ComponentSketch.zero(wide))
    bad = orjson.loads(sk.to_bytes())
    bad["s1"] = [1.0]
    with pytest.raises(StateCorrupt):
        ComponentSketch.from_bytes(orjson.dumps(bad), model)
    with pytest.raises(StateCorrupt):
        ComponentSketch.from_bytes(b"not json", model)
    state = orjson.loads(MultivariateDetector(model).to_bytes())
    state["s"] = [0.5] * len(state["s"])
    with pytest.raises(StateCorrupt):
        MultivariateDetector.from_bytes(orjson.dumps(state), model)
    with pytest.raises(StateCorrupt):
        MultivariateDetector.from_bytes(pack("mv_detector", 2, {}), model)


# ----------------------------------------------------------------------------- profile


def test_model_round_trips_through_json_and_refuses_other_bins(small: tuple) -> None:
    model, x, cats = small
    blob = orjson.dumps(model.to_dict())
    edges = dict(model.design.edges)
    back = MultivariateProfile.from_dict(orjson.loads(blob), edges)
    assert back.to_dict() == model.to_dict()
    z = scores(model, x[:, :200], cats[:200])
    assert np.array_equal(back.channels(z).u, model.channels(z).u)
    other = dict(edges, x0=edges["x0"][:-1])
    with pytest.raises(ValueError, match="bin edges"):
        MultivariateProfile.from_dict(orjson.loads(blob), other)
    with pytest.raises(ValueError, match="format"):
        MultivariateProfile.from_dict({**orjson.loads(blob), "format_version": 2}, edges)


def test_fit_is_deterministic_given_the_seed() -> None:
    x, cats = columns(np.random.default_rng(14), 3000)
    a, b, c = fit(x, cats, seed=3), fit(x, cats, seed=3), fit(x, cats, seed=4)
    assert orjson.dumps(a.to_dict()) == orjson.dumps(b.to_dict())
    assert a.to_dict() != c.to_dict()


def test_too_few_rows_or_columns_give_no_model() -> None:
    x, _ = columns(np.random.default_rng(15), 300)
    p = numeric_profile(x[0])
    assert (
        fit_multivariate([NumericInput("x0", x[0], p.edges, p.counts)], [], target_arl=1e5) is None
    )
    nums = []
    for j in range(3):
        q = numeric_profile(x[j])
        nums.append(NumericInput(f"x{j}", x[j], q.edges, q.counts))
    assert fit_multivariate(nums, [], target_arl=1e5) is None  # 300 rows < min_rows


# --------------------------------------------------------------------------- reference


def _rows(n: int, seed: int) -> list[dict[str, object]]:
    x, cats = columns(np.random.default_rng(seed), n)
    return [{**{f"x{j}": float(x[j, i]) for j in range(5)}, "region": cats[i]} for i in range(n)]


def test_reference_envelope_carries_the_model_and_old_references_keep_their_ids() -> None:
    rows = _rows(3000, 16)
    plain = build(TrainingData(rows), "m", "1", created_at=0, multivariate=False)
    with_mv = build(TrainingData(rows), "m", "1", created_at=0)  # the policy's default
    off = Policy(multivariate=False)
    assert plain.multivariate is None and with_mv.multivariate is not None
    assert build(TrainingData(rows), "m", "1", created_at=0, policy=off).multivariate is None
    assert with_mv.reference_id != plain.reference_id
    assert "multivariate" not in orjson.loads(plain.to_bytes())["profile"]
    back = ReferenceProfile.from_bytes(with_mv.to_bytes())
    assert back.multivariate is not None
    assert back.multivariate.to_dict() == with_mv.multivariate.to_dict()
    assert with_mv.multivariate.target_arl == with_mv.policy.false_alarm_events * 7
    assert ReferenceProfile.from_bytes(plain.to_bytes()).multivariate is None
    # The envelope is a closed contract: a layout this build does not know is refused
    # (consumers are upgraded first, as schemas/README.md says).
    newer = orjson.loads(with_mv.to_bytes())
    newer["profile"]["multivariate"]["format_version"] = 2
    with pytest.raises(PydanticValidationError, match="multivariate"):
        ReferenceProfile.from_bytes(orjson.dumps(newer))
    assert ReferenceProfile.with_version(back, "default").multivariate is back.multivariate
