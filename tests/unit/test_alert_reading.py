"""What an input-drift alert says moved: a numeric feature's mean or its spread.

A numeric feature's bank watches ``z`` and ``z**2``; a mean shift of ``d`` sd alone raises
``z**2`` by ``d**2``, so its spread rows could cross first, and a 2 sd mean shift was
published as ``spread`` (the on-call engineer looked for a change of variance). The
alerts now read the two channels together (``episodes._unit_reading``).
"""

from __future__ import annotations

import functools

import pytest

from driftline.core.reference import ReferenceProfile, build_reference
from driftline.demo.simulate import Shift, SimulatedModel
from driftline.offline.replay import Replayer

SEEDS = (11, 12, 13)


@functools.cache
def reference() -> ReferenceProfile:
    sim = SimulatedModel(seed=3)
    return build_reference(sim.training_data(20_000), "churn", "1", seed=0, created_at=0)


def f03_readings(seed: int, shift: Shift) -> list[tuple[str, str]]:
    """``(status, statistic)`` of f03 in every input-drift alert of a stream whose f03
    drifts from event 2,000 to 6,000 and is back to the reference for 4,000 events."""
    sim = SimulatedModel(seed=seed)
    events = [*sim.events(6_000, shift=shift), *sim.events(4_000, start=6_000)]
    r = Replayer({("churn", "1"): reference()})
    for i in range(0, len(events), 1_000):
        r.feed(events[i : i + 1_000])
    return [
        (a.status, t.statistic)
        for a in r.result.alerts
        if a.kind == "input_drift"
        for t in a.top_features
        if t.feature == "f03"
    ]


def check(readings: list[tuple[str, str]], said: str, unsure: str) -> None:
    """Every alert says ``said``; only a firing alert, before anything is measured, may
    say ``unsure`` (the two channels cannot be told apart at the crossing)."""
    assert readings and readings[0][0] == "firing", readings
    assert any(status == "resolved" for status, _ in readings), readings
    for status, statistic in readings:
        assert statistic == said or (status == "firing" and statistic == unsure), readings


@pytest.mark.parametrize("sigmas", [0.5, 1.0, 2.0, 3.0, -0.5, -1.0, -2.0, -3.0])
def test_a_pure_mean_shift_reads_as_the_mean_with_its_direction(sigmas: float) -> None:
    way = "up" if sigmas > 0 else "down"
    for seed in SEEDS:
        readings = f03_readings(seed, Shift(start=2_000, sigmas=sigmas))
        check(readings, f"mean {way}", f"mean {way} or spread up")


@pytest.mark.parametrize(("scale", "way"), [(1.5, "up"), (2.0, "up"), (1 / 1.5, "down")])
def test_a_pure_change_of_scale_reads_as_the_spread(scale: float, way: str) -> None:
    for seed in SEEDS:
        readings = f03_readings(seed, Shift(start=2_000, sigmas=0.0, scale=scale))
        unsure = {f"mean {d} or spread up" for d in ("up", "down")}
        said = f"spread {way}"
        assert readings and readings[0][0] == "firing", readings
        assert any(status == "resolved" for status, _ in readings), readings
        for status, statistic in readings:
            assert statistic == said or (status == "firing" and statistic in unsure), readings


def test_a_change_of_both_says_both() -> None:
    for seed in SEEDS:
        readings = f03_readings(seed, Shift(start=2_000, sigmas=1.0, scale=2.0))
        measured = [s for status, s in readings if status != "firing"]
        assert measured and all(s == "mean up, spread up" for s in measured), readings
