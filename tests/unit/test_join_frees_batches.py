"""A batch's working set (a record a prediction, the labels' outcomes and scores) is freed
by reference counting once the batch's result is let go: no reference cycle is left for
the collector to find (the label joiner collects young objects rarely: its batches are
large, runtime/gc_policy.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from test_label_side import _drift, _sequence, _settings

from driftline.core.slowloop import join
from driftline.core.slowloop.lookups import MemoryRecords, plan_lookups
from driftline.core.slowloop.perf_state import UnitState


@pytest.fixture
def no_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _join_all(seed: int, check: bool) -> int:
    settings = _settings(seed)
    unit, mem, drift = UnitState(), MemoryRecords(), _drift()
    stored = 0
    for preds, labels in _sequence(seed):
        plan = plan_lookups(preds, labels, unit, settings)
        res = join.join_batch(
            preds, labels, plan, mem.lookup(plan), unit, lambda m, v: None, drift, settings
        )
        mem.apply(res)
        stored += sum(map(len, res.puts.values()))
        del res, plan
        if check:
            assert gc.collect() == 0
    return stored


@pytest.mark.parametrize("seed", range(4))
def test_a_joined_batch_leaves_no_cycle(seed: int, no_collector: None) -> None:
    # once first: what is made once a process (imports, detectors' classes) has cycles
    _join_all(seed, check=False)
    gc.collect()
    stored = _join_all(seed, check=True)
    assert stored > 1000  # the batches stored predictions and joined labels
