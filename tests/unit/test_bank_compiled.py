"""The compiled pass of the CUSUM banks (numba, ``driftline[compiled]``) against the numpy
pass, its oracle: the same statistics, peaks, transitions and states, bit for bit.

Sequences: numeric, categorical and rate units with drifts up and down, recoveries,
missing values and batch cuts at random; a bank of many units stacked as the monitor
runs it; then the monitor's whole core on the benchmark's stream (alert ids, window
summaries and every state's bytes).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.contract.binary_batch import encode_binary_batch
from driftline.contract.columnar import pack_events
from driftline.contract.decode import decode_records
from driftline.core.detectors import bank, bank_compiled
from driftline.core.detectors.bank import (
    BankLayout,
    CusumBank,
    FeatureBank,
    compile_categorical,
    compile_numeric,
    compile_rate,
    unit_channels,
    use_compiled_pass,
)
from driftline.core.fastloop import process_batch
from driftline.core.reference import ReferenceProfile, build_reference
from driftline.demo.simulate import Shift, SimulatedModel

# numba is a test dependency: without it these tests fail (they are never skipped).
assert bank_compiled.available(), "numba is not installed: pip install -e '.[test]'"


@pytest.fixture
def compiled() -> Iterator[None]:
    """The compiled pass, then the numpy pass again (the suite's default)."""
    assert use_compiled_pass(True)
    try:
        yield
    finally:
        use_compiled_pass(False)


def _feed(plan: Any, chunks: list[Any], on: bool) -> tuple[list[Any], bytes, list[float]]:
    use_compiled_pass(on)
    try:
        det = FeatureBank(plan)
        seen: list[Any] = []
        peaks: list[float] = []
        for xs in chunks:
            det.update_many(xs)
            seen += det.transitions
            peaks.append(det._bank.peak)
        return seen, det.to_bytes(), peaks
    finally:
        use_compiled_pass(False)


def _cuts(rng: np.random.Generator, xs: Any) -> list[Any]:
    cuts = sorted(set(rng.integers(1, len(xs), size=rng.integers(0, 12)).tolist()))
    return np.split(xs, cuts)


def test_numeric_units_give_the_numpy_results(compiled: None) -> None:
    rng = np.random.default_rng(0)
    for trial in range(12):
        ref = rng.normal(0, 1, 3000)
        plan = compile_numeric("x", ref, n_ref=3000, target_arl=1e4, seed=trial)
        parts = [
            rng.normal(0, 1, 2000),
            rng.normal(rng.choice([-1.0, 0.6, 1.5]), rng.choice([1.0, 2.0]), 1500),
            rng.normal(0, 1, 3000),  # back: the episode resolves
        ]
        xs = np.concatenate(parts)
        xs[rng.random(xs.size) < 0.03] = np.nan  # missing values
        if trial % 3 == 0:
            xs[rng.integers(0, xs.size, 5)] = 1e300  # clipped channels, huge steps
        chunks = _cuts(rng, xs)
        a, b = _feed(plan, chunks, False), _feed(plan, chunks, True)
        assert a[0], "the sequence must drift"  # the comparison covers transitions
        assert a == b, trial


def test_categorical_and_rate_units_give_the_numpy_results(compiled: None) -> None:
    rng = np.random.default_rng(1)
    cats = ["a", "b", "c", "d"]
    plan = compile_categorical("plan", cats, [500, 300, 150, 50], target_arl=1e4, seed=0)
    assert plan is not None
    codes = np.concatenate(
        [rng.choice(4, 3000, p=[0.5, 0.3, 0.15, 0.05]), rng.choice(4, 2000, p=[0.3, 0.3, 0.2, 0.2])]
    ).astype(np.float64)
    chunks = _cuts(rng, codes)
    a, b = _feed(plan, chunks, False), _feed(plan, chunks, True)
    assert a[0] and a == b
    # The share of confidences below 0.5: about 2% at reference, then 30%.
    rate = compile_rate("confidence", 0.02, cut=0.5, n_ref=4000, target_arl=1e4, seed=0)
    assert rate is not None
    live = np.concatenate([rng.beta(8, 2, 2000), rng.beta(2, 2, 2000)])
    chunks = _cuts(rng, live)
    a, b = _feed(rate, chunks, False), _feed(rate, chunks, True)
    assert a[0] and a == b


def test_a_stacked_bank_gives_the_numpy_results_event_by_event_too(compiled: None) -> None:
    rng = np.random.default_rng(2)
    plans = [
        compile_numeric(f"x{i}", rng.normal(0, 1, 2000), n_ref=2000, target_arl=1e4, seed=i)
        for i in range(6)
    ]
    layout = BankLayout.of(plans)
    xs = rng.normal(0, 1, (6, 6000))
    xs[2, 2500:4000] += 0.8
    xs[4, 1000:] *= 1.8
    chans = np.concatenate([unit_channels(p, x) for p, x in zip(plans, xs, strict=True)])
    results = []
    for on in (False, True):
        use_compiled_pass(on)
        cb = CusumBank(layout)
        trans = []
        for lo, hi in ((0, 1), (1, 777), (777, 780), (780, 6000)):
            trans += cb.update_many(np.ascontiguousarray(chans[:, lo:hi]))
        results.append((trans, cb.to_bytes(), cb.peak))
    use_compiled_pass(True)
    assert results[0][0] and results[0] == results[1]


def test_an_infinite_channel_value_takes_the_numpy_pass(compiled: None) -> None:
    ref = np.random.default_rng(3).normal(0, 1, 2000)
    plan = compile_numeric("x", ref, n_ref=2000, target_arl=1e4, seed=0)
    layout = BankLayout.of([plan])
    v = unit_channels(plan, np.linspace(-1, 1, 50))
    v[0, 10] = np.inf  # never from the monitor's channels; the numpy pass is the reference
    a, b = CusumBank(layout), CusumBank(layout)
    with np.errstate(all="ignore"):  # the numpy pass's arithmetic on an infinity
        b.update_many(v)
        use_compiled_pass(False)
        a.update_many(v)
    assert a.to_bytes() == b.to_bytes()


def test_turning_it_off_restores_the_numpy_pass() -> None:
    assert use_compiled_pass(True) is True and bank._compiled_pass is not None
    assert use_compiled_pass(False) is False and bank._compiled_pass is None


@functools.cache
def _reference() -> ReferenceProfile:
    sim = SimulatedModel(seed=3)
    return build_reference(sim.training_data(20_000), "churn", "1", seed=0, created_at=0)


def test_the_monitor_core_gives_bit_identical_results_with_either_pass() -> None:
    events = list(SimulatedModel(seed=5).events(30_000, shift=Shift(start=12_000, sigmas=0.5)))
    values = [encode_binary_batch(env) for env in pack_events(events, max_rows=500)]
    frames = [decode_records(values[i : i + 10])[0] for i in range(0, len(values), 10)]
    ref = _reference()
    out = []
    for on in (False, True):
        use_compiled_pass(on)
        try:
            states: dict[Any, Any] = {}
            alerts: list[Any] = []
            windows: list[Any] = []
            for frame in frames:
                res = process_batch(frame, states, lambda m, v: ref)
                alerts += [a.model_dump() for a in res.alerts]
                windows += res.windows
            out.append(
                (
                    orjson.dumps(alerts),
                    orjson.dumps(windows),
                    {k: s.to_bytes() for k, s in states.items()},
                )
            )
        finally:
            use_compiled_pass(False)
    assert b'"alert_id"' in out[0][0]  # the stream drifts: alerts are compared
    assert out[0] == out[1]


def test_on_without_numba_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``compiled_core: on`` where numba is missing stops the monitor at start with one
    line (exit 2, a configuration error); ``auto`` runs the numpy pass."""
    from driftline.cli import EXIT_INPUT, main
    from driftline.runtime import monitor

    monkeypatch.setattr(bank_compiled, "available", lambda: False)
    monkeypatch.setattr(bank_compiled, "_loaded", None)
    assert monitor._compiled_core("auto") is False and bank._compiled_pass is None
    monkeypatch.setenv("DRIFTLINE_MONITOR__COMPILED_CORE", "on")
    monkeypatch.setenv("DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("DRIFTLINE_METRICS_PORT", "0")  # not 9108: a worker may hold it
    assert main(["monitor"]) == EXIT_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "driftline: error: monitor.compiled_core is 'on' but numba is not installed: "
        "pip install 'driftline[compiled]', or set it to 'auto' or 'off'"
    ], err
