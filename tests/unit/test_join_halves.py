"""The join in two halves, as the label joiner runs it: the predictions' half reads only
the first ``label_split()`` probes' answers, so the rest may be read from Redis while it
runs. Same results and states as :func:`join_batch` in one go."""

from __future__ import annotations

from typing import Any

import pytest
from test_join_runs import T0, _batches

from driftline.config import LabelsSettings
from driftline.core.slowloop import join
from driftline.core.slowloop.diagnosis import DriftIndex
from driftline.core.slowloop.lookups import Found, MemoryRecords, plan_lookups
from driftline.core.slowloop.perf_state import UnitState
from support import join_snapshot


def _run(seed: int, halves: bool) -> tuple[list[Any], int]:
    settings = LabelsSettings(window_labels=20, horizon_seconds=6 * 3600)
    unit, mem, drift = UnitState(), MemoryRecords(), DriftIndex()
    seen: list[Any] = []
    label_hits = 0
    for preds, labels in _batches(seed, T0):
        plan = plan_lookups(preds, labels, unit, settings)
        answers = mem.lookup(plan)
        split = plan.label_split()
        assert all(i < split for i in plan.pred_probe)
        if halves:
            # The labels' answers are not there yet while the predictions' half runs.
            found: list[Found] = answers[:split] + [None] * (len(answers) - split)
            j = join.join_predictions(preds, plan, found, unit, lambda m, v: None, drift, settings)
            found[split:] = answers[split:]
            res = join.join_labels(j, labels, plan, found)
        else:
            res = join.join_batch(
                preds, labels, plan, answers, unit, lambda m, v: None, drift, settings
            )
        label_hits += sum(1 for f in answers[split:] if f is not None)
        mem.apply(res)
        seen += join_snapshot(res, unit)
    return seen, label_hits


@pytest.mark.parametrize("seed", range(12))
def test_halves_equal_one_go(seed: int) -> None:
    whole, hits = _run(seed, halves=False)
    halves, _ = _run(seed, halves=True)
    assert hits > 0  # labels did find their predictions in the records
    assert halves == whole
