"""Detectors: exact parity with river 0.26.1, explicit state, and the shared contract.

river is the oracle: every sequence below is fed to river's detector one value at a
time, and our ``update()`` loop and ``update_many()`` must report exactly the same
detection indices. For ADWIN the whole internal state is also compared bit for bit,
read from river's own serialised (bincode) state.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
from river import drift

from driftline.contract.codec import pack, unpack
from driftline.core.detectors import ADWIN, DETECTORS, Detector, PageHinkley
from driftline.errors import ConfigError, StateCorrupt

# --------------------------------------------------------------------------------------
# Sequences (seeded) and parameter sets
# --------------------------------------------------------------------------------------


def _gauss_up(rng: np.random.Generator) -> np.ndarray:
    return np.r_[rng.normal(0.0, 1.0, 4000), rng.normal(1.5, 1.0, 4000)]


def _gauss_down(rng: np.random.Generator) -> np.ndarray:
    return np.r_[rng.normal(2.0, 1.5, 4000), rng.normal(0.0, 1.5, 4000)]


def _variance_change(rng: np.random.Generator) -> np.ndarray:
    return np.r_[rng.normal(0.0, 1.0, 4000), rng.normal(0.0, 3.0, 4000)]


def _many_shifts(rng: np.random.Generator) -> np.ndarray:
    parts = [
        rng.normal(rng.uniform(-3, 3), rng.uniform(0.5, 2.0), rng.integers(1000, 2500))
        for _ in range(6)
    ]
    return np.concatenate(parts)


def _bernoulli(rng: np.random.Generator) -> np.ndarray:
    return np.r_[rng.random(5000) < 0.1, rng.random(5000) < 0.35].astype(np.float64)


def _integers(rng: np.random.Generator) -> np.ndarray:
    return np.r_[rng.integers(0, 10, 4000), rng.integers(3, 13, 4000)]


def _constant(rng: np.random.Generator) -> np.ndarray:
    return np.r_[np.full(3000, 0.1), np.full(3000, 7.0), np.full(2000, 0.1)]


def _step(rng: np.random.Generator) -> np.ndarray:
    return np.r_[np.full(2000, 5.0), np.full(2000, 6.0), rng.normal(6.0, 0.1, 2000)]


SEQUENCES: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "gauss_up": _gauss_up,
    "gauss_down": _gauss_down,
    "variance": _variance_change,
    "many_shifts": _many_shifts,
    "bernoulli": _bernoulli,
    "integers": _integers,
    "constant": _constant,
    "step": _step,
}


@functools.cache
def sequence(name: str, seed: int = 0, standardise: bool = False) -> np.ndarray:
    xs = SEQUENCES[name](np.random.default_rng([seed, len(name)]))
    if standardise and xs.std() > 0:
        xs = (xs - xs.mean()) / xs.std()
    xs.flags.writeable = False
    return xs


@functools.cache
def long_stationary(seed: int = 0) -> np.ndarray:
    xs = np.random.default_rng(seed).normal(0.0, 1.0, 200_000)
    xs.flags.writeable = False
    return xs


#: (parameters, feed standardised data?)
PH_PARAMS: list[tuple[dict[str, Any], bool]] = [
    ({}, False),
    ({"delta": 0.25, "threshold": 40.0, "min_instances": 30, "mode": "both"}, True),
    ({"delta": 0.25, "threshold": 40.0, "min_instances": 30, "mode": "up"}, True),
    ({"delta": 0.25, "threshold": 40.0, "min_instances": 30, "mode": "down"}, True),
    ({"alpha": 0.999, "delta": 0.1, "threshold": 10.0, "mode": "up"}, False),
    ({"alpha": 1.0, "delta": 0.05, "threshold": 20.0, "min_instances": 100}, True),
    ({"alpha": 0.9, "delta": 0.01, "threshold": 3.0, "min_instances": 300}, True),
]

ADWIN_PARAMS: list[dict[str, Any]] = [
    {},
    {"delta": 0.01, "clock": 1},
    {"max_buckets": 2, "min_window_length": 2, "grace_period": 0, "clock": 4},
    {"delta": 0.5, "clock": 7, "max_buckets": 3, "min_window_length": 0, "grace_period": 3},
    {"delta": 1e-5, "clock": 3, "max_buckets": 3, "min_window_length": 20, "grace_period": 100},
]


def _values(xs: np.ndarray) -> list[Any]:
    """Python scalars, as a caller would pass them (ints stay ints)."""
    return xs.tolist()  # type: ignore[no-any-return]


def river_hits(det: Any, xs: np.ndarray) -> list[int]:
    hits = []
    for i, x in enumerate(_values(xs)):
        det.update(x)
        if det.drift_detected:
            hits.append(i)
    return hits


def loop_hits(det: Detector, xs: np.ndarray) -> list[int]:
    return [i for i, x in enumerate(_values(xs)) if det.update(x).drift_detected]


def _ids(params: list[Any]) -> list[str]:
    return [str(p) for p in params]


# --------------------------------------------------------------------------------------
# Page-Hinkley against river
# --------------------------------------------------------------------------------------


def _ph_state_close(a: PageHinkley, b: PageHinkley) -> None:
    """Same counts and flags; floats equal up to vectorisation rounding."""
    assert a.n == b.n
    assert a.drift_detected == b.drift_detected
    fa = unpack(a.to_bytes(), "page_hinkley", 1)
    fb = unpack(b.to_bytes(), "page_hinkley", 1)
    for key, va in fa.items():
        vb = fb[key]
        if isinstance(va, float) and isinstance(vb, float):
            assert math.isclose(va, vb, rel_tol=1e-9, abs_tol=1e-9), key
        else:
            assert va == vb, key


@pytest.mark.parametrize(("params", "standardise"), PH_PARAMS, ids=_ids(PH_PARAMS))
@pytest.mark.parametrize("name", list(SEQUENCES))
def test_page_hinkley_matches_river(name: str, params: dict[str, Any], standardise: bool) -> None:
    xs = sequence(name, standardise=standardise)
    expected = river_hits(drift.PageHinkley(**params), xs)
    one_by_one = PageHinkley(**params)
    assert loop_hits(one_by_one, xs) == expected
    vectorised = PageHinkley(**params)
    got = vectorised.update_many(xs)
    assert got.dtype == np.int64
    assert got.tolist() == expected
    _ph_state_close(vectorised, one_by_one)


def test_page_hinkley_sequences_do_detect() -> None:
    """The oracle comparison is not vacuous: the sequences do trigger detections."""
    xs = sequence("gauss_up", standardise=True)
    assert river_hits(drift.PageHinkley(delta=0.25, threshold=40.0), xs)
    assert river_hits(drift.PageHinkley(), sequence("step"))


@pytest.mark.parametrize(
    "params",
    [{}, {"delta": 0.25, "threshold": 40.0}, {"alpha": 1.0, "delta": 0.01, "threshold": 30.0}],
    ids=str,
)
def test_page_hinkley_long_stationary(params: dict[str, Any]) -> None:
    xs = long_stationary()
    expected = river_hits(drift.PageHinkley(**params), xs)
    assert PageHinkley(**params).update_many(xs).tolist() == expected
    assert loop_hits(PageHinkley(**params), xs) == expected


def test_page_hinkley_update_is_bit_exact_river() -> None:
    """update() repeats river's arithmetic: every intermediate float is identical."""
    xs = sequence("many_shifts")
    ours = PageHinkley(delta=0.1, threshold=10.0)
    theirs = drift.PageHinkley(delta=0.1, threshold=10.0)
    for x in _values(xs):
        ours.update(x)
        theirs.update(x)
        f = unpack(ours.to_bytes(), "page_hinkley", 1)
        assert ours.n == theirs._x_mean.n
        assert ours.mean == theirs._x_mean.get()
        assert f["sum_increase"] == theirs._sum_increase
        assert f["sum_decrease"] == theirs._sum_decrease
        assert f["max_decrease"] == theirs._max_decrease
        assert ours.drift_detected == theirs.drift_detected


def _river_stats(params: dict[str, Any], xs: np.ndarray) -> list[float]:
    """river's own test statistic after each update (per the mode), from its internals."""
    det = drift.PageHinkley(**params)
    mode = params.get("mode", "both")
    out = []
    for x in _values(xs):
        det.update(x)
        up = det._sum_increase - det._min_increase
        down = det._max_decrease - det._sum_decrease
        out.append({"up": up, "down": down}.get(mode, max(up, down)))
    return out


@pytest.mark.parametrize("mode", ["up", "down", "both"])
def test_page_hinkley_threshold_ties(mode: str) -> None:
    """A statistic exactly at the threshold (river: no drift, '>' is strict), or one ulp
    above it (river: drift): update_many must agree although its own rounding differs."""
    xs = sequence("gauss_up", standardise=True)[:3000]
    params: dict[str, Any] = {"delta": 0.25, "min_instances": 30, "mode": mode}
    stats = _river_stats({**params, "threshold": 1e9}, xs)
    peak = max(stats[29:])
    for threshold in (peak, math.nextafter(peak, -math.inf)):
        full = {**params, "threshold": threshold}
        expected = river_hits(drift.PageHinkley(**full), xs)
        assert PageHinkley(**full).update_many(xs).tolist() == expected
    assert river_hits(drift.PageHinkley(**{**params, "threshold": peak}), xs) == []


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e300])
def test_page_hinkley_non_finite_like_river(value: float) -> None:
    xs = sequence("gauss_up", standardise=True).copy()
    xs[5000] = value
    params = {"delta": 0.25, "threshold": 40.0}
    expected = river_hits(drift.PageHinkley(**params), xs)
    assert loop_hits(PageHinkley(**params), xs) == expected
    with np.errstate(all="ignore"):
        assert PageHinkley(**params).update_many(xs).tolist() == expected


# --------------------------------------------------------------------------------------
# ADWIN against river
# --------------------------------------------------------------------------------------


def river_adwin_state(det: Any) -> dict[str, Any]:
    """Decode river's serialised ``AdaptiveWindowing`` (bincode of the Rust struct)."""
    raw: bytes = det._helper.__getstate__()
    off = 0

    def take(fmt: str) -> tuple[Any, ...]:
        nonlocal off
        values = struct.unpack_from("<" + fmt, raw, off)
        off += struct.calcsize("<" + fmt)
        return values

    delta, clock, max_buckets, mwl, grace = take("diQdd")
    total, variance, width, _total_width = take("dddd")
    _n_buckets, _max_n_buckets, tick, n_detections = take("iiii")
    (n_rows,) = take("Q")
    totals, variances = [], []
    for _ in range(n_rows):
        _max_size, used, n = take("QQQ")
        row_t = take(f"{n}d")
        (n,) = take("Q")
        row_v = take(f"{n}d")
        totals.append(list(row_t[:used]))
        variances.append(list(row_v[:used]))
    assert (delta, clock, max_buckets, mwl, grace) == (
        det.delta,
        det.clock,
        det.max_buckets,
        det.min_window_length,
        det.grace_period,
    ), "unexpected layout of river's ADWIN state"
    return {
        "total": total,
        "variance": variance,
        "width": int(width),
        "tick": tick,
        "n_detections": n_detections,
        "totals": totals,
        "variances": variances,
    }


def our_adwin_state(det: ADWIN) -> dict[str, Any]:
    f = unpack(det.to_bytes(), "adwin", 1)
    return {k: f[k] for k in ("total", "variance", "width", "tick", "n_detections")} | {
        "totals": f["totals"],
        "variances": f["variances"],
    }


def _bitwise(state: dict[str, Any]) -> str:
    """Floats written with ``float.hex``, so that -0.0 and 0.0 (and every bit) differ."""

    def conv(v: Any) -> Any:
        if isinstance(v, float):
            return v.hex()
        if isinstance(v, list):
            return [conv(w) for w in v]
        return v

    return orjson.dumps({k: conv(v) for k, v in state.items()}).decode()


def _short_for_clock_one(params: dict[str, Any], xs: np.ndarray) -> np.ndarray:
    return xs[:3000] if params.get("clock") == 1 else xs


@pytest.mark.parametrize("params", ADWIN_PARAMS, ids=_ids(ADWIN_PARAMS))
@pytest.mark.parametrize("name", list(SEQUENCES))
def test_adwin_matches_river(name: str, params: dict[str, Any]) -> None:
    xs = _short_for_clock_one(params, sequence(name))
    theirs = drift.ADWIN(**params)
    expected = river_hits(theirs, xs)
    one_by_one = ADWIN(**params)
    assert loop_hits(one_by_one, xs) == expected
    vectorised = ADWIN(**params)
    got = vectorised.update_many(xs)
    assert got.dtype == np.int64
    assert got.tolist() == expected
    # Whole state bit for bit: buckets, totals, variances, counters.
    assert _bitwise(our_adwin_state(vectorised)) == _bitwise(river_adwin_state(theirs))
    assert vectorised.to_bytes() == one_by_one.to_bytes()
    assert vectorised.width == theirs.width
    assert vectorised.estimation == theirs.estimation
    assert vectorised.variance == theirs.variance
    assert vectorised.total == theirs.total
    assert vectorised.n_detections == theirs.n_detections
    assert vectorised.drift_detected == theirs.drift_detected


def test_adwin_sequences_do_detect() -> None:
    assert river_hits(drift.ADWIN(), sequence("gauss_up"))
    assert river_hits(drift.ADWIN(), sequence("bernoulli"))


def test_adwin_state_bit_exact_along_the_way() -> None:
    """Compare the full state after every value of a sequence with several detections."""
    xs = sequence("many_shifts")[:6000]
    ours, theirs = ADWIN(clock=4), drift.ADWIN(clock=4)
    for x in _values(xs):
        ours.update(x)
        theirs.update(x)
        assert ours.drift_detected == theirs.drift_detected
        assert ours.width == theirs.width and ours.variance == theirs.variance
    assert _bitwise(our_adwin_state(ours)) == _bitwise(river_adwin_state(theirs))


def test_adwin_long_stationary() -> None:
    xs = long_stationary(1)
    theirs = drift.ADWIN()
    expected = river_hits(theirs, xs)
    ours = ADWIN()
    assert ours.update_many(xs).tolist() == expected
    assert _bitwise(our_adwin_state(ours)) == _bitwise(river_adwin_state(theirs))


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e300])
def test_adwin_non_finite_like_river(value: float) -> None:
    xs = sequence("gauss_up").copy()
    xs[5000] = value
    assert ADWIN().update_many(xs).tolist() == river_hits(drift.ADWIN(), xs)


def test_adwin_tick_wraps_like_an_i32() -> None:
    """river's tick is an i32 (wrapping arithmetic in its release build): after 2**31
    updates it wraps, which moves the test phase when ``clock`` does not divide 2**32.
    Too long to run against river; this pins the documented behaviour."""
    det = ADWIN(clock=7, grace_period=0)
    det.update_many([0.0] * 20)
    record = unpack(det.to_bytes(), "adwin", 1)
    det = ADWIN.from_bytes(pack("adwin", 1, {**record, "tick": 2**31 - 3}))
    tested: list[int] = []
    shrink = det._shrink

    def spy(*args: Any) -> Any:
        tested.append(len(seen))
        return shrink(*args)

    det._shrink = spy  # type: ignore[method-assign]
    seen: list[float] = []
    for _ in range(20):
        seen.append(0.0)
        det.update(0.0)
    # ticks after each update: 2**31-2 (= 7k), 2**31-1, -2**31, ..., -2**31+2 (= 7k), ...
    assert [i - 1 for i in tested] == [0, 4, 11, 18]
    assert unpack(det.to_bytes(), "adwin", 1)["tick"] == -(2**31) + 17
    det2 = ADWIN.from_bytes(pack("adwin", 1, {**record, "tick": 2**31 - 3}))
    det2._shrink = spy  # type: ignore[method-assign]
    tested.clear()
    seen.clear()
    det2.update_many(np.zeros(20))
    assert unpack(det2.to_bytes(), "adwin", 1)["tick"] == -(2**31) + 17
    assert len(tested) == 4


# --------------------------------------------------------------------------------------
# State round trips between chunks
# --------------------------------------------------------------------------------------

ROUND_TRIP_CASES: list[tuple[str, Callable[[], Detector], np.ndarray]] = [
    ("ph_default", PageHinkley, sequence("many_shifts")),
    (
        "ph_std",
        lambda: PageHinkley(delta=0.25, threshold=40.0),
        sequence("gauss_up", standardise=True),
    ),
    ("ph_bernoulli", lambda: PageHinkley(delta=0.02, threshold=8.0), sequence("bernoulli")),
    ("adwin_default", ADWIN, sequence("many_shifts")),
    ("adwin_bernoulli", lambda: ADWIN(clock=5), sequence("bernoulli")),
]


@pytest.mark.parametrize(
    ("case", "factory", "xs"), ROUND_TRIP_CASES, ids=[c[0] for c in ROUND_TRIP_CASES]
)
@pytest.mark.parametrize("seed", range(4))
def test_round_trip_between_chunks(
    case: str, factory: Callable[[], Detector], xs: np.ndarray, seed: int
) -> None:
    unbroken = factory().update_many(xs).tolist()
    assert unbroken, case
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, xs.size), size=12, replace=False))
    bounds = [0, *cuts.tolist(), xs.size]
    det = factory()
    hits: list[int] = []
    for k, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False)):
        det = type(det).from_bytes(det.to_bytes())
        if k % 3 == 2:  # mix the two ways of feeding
            hits += [lo + i for i in loop_hits(det, xs[lo:hi])]
        else:
            hits += (lo + det.update_many(xs[lo:hi])).tolist()
    assert hits == unbroken


def test_drift_flag_survives_serialisation() -> None:
    """A detector that just fired still resets on the next update after a round trip."""
    xs = sequence("step")
    hits = PageHinkley().update_many(xs)
    det = PageHinkley()
    det.update_many(xs[: hits[0] + 1])
    assert det.drift_detected
    det = PageHinkley.from_bytes(det.to_bytes())
    assert det.drift_detected
    det.update(xs[hits[0] + 1])
    assert det.n == 1 and not det.drift_detected


def test_page_hinkley_state_after_update_many_matches_loop() -> None:
    xs = sequence("many_shifts")
    for length in (10, 29, 30, 500, 4097, xs.size):
        a, b = PageHinkley(), PageHinkley()
        a.update_many(xs[:length])
        for x in _values(xs[:length]):
            b.update(x)
        _ph_state_close(a, b)


# --------------------------------------------------------------------------------------
# Page-Hinkley bank: many detectors fed together, as the monitor runs them
# --------------------------------------------------------------------------------------

BANK = {"min_instances": 30, "delta": 0.25, "threshold": 50.0, "alpha": 1.0}


def _bank_rows(rng: np.random.Generator, k: int, m: int) -> np.ndarray:
    z = rng.normal(0, 1, (k, m))
    z[:, m // 2 :] += rng.choice([0.0, 0.5, 2.0], size=(k, 1))  # some rows drift
    return np.clip(z, -3, 3)


def test_page_hinkley_bank_detects_what_river_detects() -> None:
    # The oracle: river's detector, one value at a time, on every row.
    rng = np.random.default_rng(21)
    z = np.vstack([_bank_rows(rng, 5, 6_000), sequence("gauss_up", standardise=True)[:6_000]])
    z[2, rng.random(6_000) < 0.05] = math.nan  # a feature with missing values
    z[4, 100] = math.nan
    bank = [PageHinkley(**BANK) for _ in range(z.shape[0])]
    hits = PageHinkley.update_bank(bank, z)
    assert any(h.size for h in hits) and not all(h.size for h in hits)
    for j, row in enumerate(z):
        kept = np.flatnonzero(~np.isnan(row))  # NaN: a missing value, not fed
        expected = river_hits(drift.PageHinkley(**BANK), row[kept])
        assert hits[j].tolist() == kept[expected].tolist(), j


def test_page_hinkley_bank_equals_update_many() -> None:
    rng = np.random.default_rng(2)
    together = alone = 0
    for trial in range(60):
        k = int(rng.integers(1, 8))
        m = int(rng.integers(1, 700))
        z = _bank_rows(rng, k, m)
        starts = [int(rng.integers(0, 3)) * int(rng.integers(0, 400)) for _ in range(k)]
        prefix = [
            np.random.default_rng(trial * 10 + j).normal(0, 1, s) for j, s in enumerate(starts)
        ]
        bank = [PageHinkley(**BANK) for _ in range(k)]
        solo = [PageHinkley(**BANK) for _ in range(k)]
        for j in range(k):
            bank[j].update_many(prefix[j])
            solo[j].update_many(prefix[j])
        if trial % 5 == 0:
            bank[0] = PageHinkley(**{**BANK, "threshold": 10.0})  # other parameters: alone
            solo[0] = PageHinkley(**{**BANK, "threshold": 10.0})
        hits = PageHinkley.update_bank(bank, z)
        for j in range(k):
            expected = solo[j].update_many(z[j])
            assert hits[j].tolist() == expected.tolist()
            together += not expected.size
            alone += bool(expected.size)
            assert bank[j].n == solo[j].n and bank[j].drift_detected == solo[j].drift_detected
            _ph_state_close(bank[j], solo[j])
    assert together > 50 and alone > 5


def test_page_hinkley_bank_past_one_block_and_in_pieces() -> None:
    # 40,000 values: three blocks of the bank; fed whole or in uneven pieces, the
    # detections are the same (the monitor feeds whatever each batch holds).
    rng = np.random.default_rng(5)
    z = _bank_rows(rng, 4, 40_000)
    whole = PageHinkley.update_bank([PageHinkley(**BANK) for _ in range(4)], z)
    bank = [PageHinkley(**BANK) for _ in range(4)]
    pieces: list[list[int]] = [[] for _ in range(4)]
    for lo, hi in ((0, 7), (7, 17_000), (17_000, 17_001), (17_001, 40_000)):
        bank = [PageHinkley.from_bytes(p.to_bytes()) for p in bank]
        for j, h in enumerate(PageHinkley.update_bank(bank, z[:, lo:hi])):
            pieces[j] += (lo + h).tolist()
    assert [h.tolist() for h in whole] == pieces
    assert any(pieces)


def test_page_hinkley_bank_arguments() -> None:
    assert PageHinkley.update_bank([], np.zeros((0, 5))) == []
    assert [h.size for h in PageHinkley.update_bank([PageHinkley()], np.zeros((1, 0)))] == [0]
    with pytest.raises(ValueError):
        PageHinkley.update_bank([PageHinkley()], np.zeros((2, 5)))


# --------------------------------------------------------------------------------------
# Contract shared by every detector
# --------------------------------------------------------------------------------------

DATA = sequence("gauss_up")[:3000]


@pytest.fixture(params=sorted(DETECTORS))
def cls(request: pytest.FixtureRequest) -> type[Detector]:
    return DETECTORS[request.param]


def test_registry_tags(cls: type[Detector]) -> None:
    tag = next(k for k, v in DETECTORS.items() if v is cls)
    assert unpack(cls().to_bytes(), tag, 1) is not None
    assert isinstance(cls(), Detector)


def test_bytes_round_trip_equal(cls: type[Detector]) -> None:
    fresh = cls()
    assert cls.from_bytes(fresh.to_bytes()).to_bytes() == fresh.to_bytes()
    used = cls()
    used.update_many(DATA)
    blob = used.to_bytes()
    again = cls.from_bytes(blob)
    assert again.to_bytes() == blob
    assert again.drift_detected == used.drift_detected
    # and the rebuilt detector carries on exactly as the original would
    assert again.update_many(DATA).tolist() == used.update_many(DATA).tolist()
    assert again.to_bytes() == used.to_bytes()


def test_deterministic(cls: type[Detector]) -> None:
    a, b = cls(), cls()
    assert a.update_many(DATA).tolist() == b.update_many(DATA).tolist()
    assert a.to_bytes() == b.to_bytes()


def test_update_returns_self(cls: type[Detector]) -> None:
    det = cls()
    assert det.update(1.0) is det
    assert det.update(2) is det
    assert det.drift_detected is False


def test_update_many_edge_inputs(cls: type[Detector]) -> None:
    det = cls()
    out = det.update_many(np.array([], dtype=np.float64))
    assert out.dtype == np.int64 and out.size == 0
    assert det.to_bytes() == cls().to_bytes()
    assert det.update_many([1.0, 2.0, 3]).dtype == np.int64
    with pytest.raises(ValueError):
        det.update_many(np.zeros((2, 2)))


def test_from_bytes_rejects_wrong_tag(cls: type[Detector]) -> None:
    for other in DETECTORS.values():
        if other is not cls:
            with pytest.raises(StateCorrupt):
                cls.from_bytes(other().to_bytes())
    with pytest.raises(StateCorrupt):
        cls.from_bytes(pack("something_else", 1, {}))


def test_from_bytes_rejects_wrong_version(cls: type[Detector]) -> None:
    record = orjson.loads(cls().to_bytes())
    for version in (0, 2, "1", None):
        with pytest.raises(StateCorrupt):
            cls.from_bytes(orjson.dumps({**record, "v": version}))


@pytest.mark.parametrize("blob", [b"", b"not json", b"[1, 2]", b"null", b'{"t": "adwin"}'])
def test_from_bytes_rejects_garbage(cls: type[Detector], blob: bytes) -> None:
    with pytest.raises(StateCorrupt):
        cls.from_bytes(blob)


def test_from_bytes_rejects_missing_or_mistyped_fields(cls: type[Detector]) -> None:
    det = cls()
    det.update_many(DATA[:200])
    record = orjson.loads(det.to_bytes())
    for key in record:
        if key in ("t", "v"):
            continue
        broken = dict(record)
        del broken[key]
        with pytest.raises(StateCorrupt):
            cls.from_bytes(orjson.dumps(broken))
        broken[key] = {"nested": True}
        with pytest.raises(StateCorrupt):
            cls.from_bytes(orjson.dumps(broken))


def test_adwin_rejects_inconsistent_buckets() -> None:
    det = ADWIN()
    det.update_many(DATA[:200])
    record = unpack(det.to_bytes(), "adwin", 1)
    for change in (
        {"width": record["width"] + 1},
        {"totals": record["totals"][:-1]},
        {"variances": [[1.0] * len(record["totals"][0]), *record["variances"][1:]]},
        {"totals": [[0.0] * 9, *record["totals"][1:]]},
    ):
        with pytest.raises(StateCorrupt):
            ADWIN.from_bytes(pack("adwin", 1, {**record, **change}))


def test_page_hinkley_rejects_bad_mode_in_state() -> None:
    record = unpack(PageHinkley().to_bytes(), "page_hinkley", 1)
    with pytest.raises(StateCorrupt):
        PageHinkley.from_bytes(pack("page_hinkley", 1, {**record, "mode": "sideways"}))


def test_non_finite_state_round_trips() -> None:
    det = PageHinkley()
    assert unpack(det.to_bytes(), "page_hinkley", 1)["min_increase"] == "inf"
    det.update(math.nan)
    assert math.isnan(PageHinkley.from_bytes(det.to_bytes()).mean)
    adwin = ADWIN().update(math.inf)
    assert ADWIN.from_bytes(adwin.to_bytes()).total == math.inf


@pytest.mark.parametrize(
    ("factory", "kwargs"),
    [
        (PageHinkley, {"mode": "sideways"}),
        (PageHinkley, {"alpha": math.nan}),
        (PageHinkley, {"min_instances": 2.5}),
        (ADWIN, {"clock": 0}),
        (ADWIN, {"max_buckets": 1}),
        (ADWIN, {"grace_period": 2**31}),
    ],
)
def test_bad_parameters(factory: Callable[..., Detector], kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        factory(**kwargs)
