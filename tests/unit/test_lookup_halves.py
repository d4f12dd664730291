"""The lookup plan in two halves, as the label joiner makes it: the predictions' probes
first (asked of Redis at once), then the labels' while that lookup runs. The first half
is a prefix of the whole plan, and its probes name only keys it already holds."""

from __future__ import annotations

import pytest
from test_join_runs import T0, _batches

from driftline.config import LabelsSettings
from driftline.core.slowloop import join
from driftline.core.slowloop.diagnosis import DriftIndex
from driftline.core.slowloop.lookups import (
    MemoryRecords,
    plan_label_lookups,
    plan_lookups,
    plan_prediction_lookups,
)
from driftline.core.slowloop.perf_state import UnitState


@pytest.mark.parametrize("seed", range(8))
def test_the_predictions_half_is_a_prefix_of_the_plan(seed: int) -> None:
    settings = LabelsSettings(window_labels=20, horizon_seconds=6 * 3600)
    unit, mem, drift = UnitState(), MemoryRecords(), DriftIndex()
    asked = 0
    for preds, labels in _batches(seed, T0):
        whole = plan_lookups(preds, labels, unit, settings)
        half = plan_prediction_lookups(preds, unit, settings)
        keys, probes = list(half.keys), list(half.probes)
        assert all(k < len(keys) for _, ks in probes for k in ks)
        plan_label_lookups(half, labels, unit, settings)
        assert (half.keys, half.probes) == (whole.keys, whole.probes)
        assert (half.pred_probe, half.label_probe) == (whole.pred_probe, whole.label_probe)
        assert half.label_digest == whole.label_digest
        assert whole.keys[: len(keys)] == keys and whole.probes[: len(probes)] == probes
        assert half.label_split() == len(probes)
        asked += len(probes)
        res = join.join_batch(
            preds, labels, whole, mem.lookup(whole), unit, lambda m, v: None, drift, settings
        )
        mem.apply(res)
    assert asked > 0  # predictions were probed in stored generations
