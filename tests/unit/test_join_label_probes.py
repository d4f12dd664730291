"""The labels' probes the joiner asks Redis for: a label whose prediction the batch
stored reads that record, never Redis's answer, so the shell asks only for the probes
:func:`label_probes_to_ask` names once the predictions' half ran. Same results and
states as :func:`join_batch` with every answer, and the answers left out are never read."""

from __future__ import annotations

from typing import Any

import pytest
from test_join_runs import T0, _batches

from driftline.config import LabelsSettings
from driftline.core.slowloop import join, label_probes_to_ask
from driftline.core.slowloop.diagnosis import DriftIndex
from driftline.core.slowloop.lookups import Found, MemoryRecords, plan_lookups
from driftline.core.slowloop.perf_state import UnitState
from support import join_snapshot


class _NotAsked(tuple[int, bytes]):
    """An answer the shell did not ask Redis for: reading it fails the test."""

    def __getitem__(self, i: Any) -> Any:
        raise AssertionError("a label read the answer of a probe that was not asked")


def _run(seed: int, asked_only: bool) -> tuple[list[Any], int, int]:
    settings = LabelsSettings(window_labels=20, horizon_seconds=6 * 3600)
    unit, mem, drift = UnitState(), MemoryRecords(), DriftIndex()
    seen: list[Any] = []
    skipped = in_batch = 0
    for preds, labels in _batches(seed, T0):
        plan = plan_lookups(preds, labels, unit, settings)
        answers = mem.lookup(plan)
        if asked_only:
            split = plan.label_split()
            elsewhere, here = plan.label_probes()
            assert sorted(elsewhere + here) == [pi for pi in plan.label_probe if pi >= 0]
            assert all(pi >= split for pi in elsewhere + here)
            # What the shell has while the predictions' half runs: their answers and the
            # probes of labels whose prediction is not in the batch (maybe not even those).
            found: list[Found] = answers[:split] + [None] * (len(answers) - split)
            j = join.join_predictions(preds, plan, found, unit, lambda m, v: None, drift, settings)
            for pi in elsewhere:
                found[pi] = answers[pi]
            ask = label_probes_to_ask(j, plan, here)
            for pi in here:
                found[pi] = answers[pi] if pi in ask else _NotAsked((0, b""))
            skipped += len(here) - len(ask)
            in_batch += len(here)
            res = join.join_labels(j, labels, plan, found)
        else:
            res = join.join_batch(
                preds, labels, plan, answers, unit, lambda m, v: None, drift, settings
            )
        mem.apply(res)
        seen += join_snapshot(res, unit)
    return seen, skipped, in_batch


@pytest.mark.parametrize("seed", range(12))
def test_asking_only_what_labels_read_equals_every_answer(seed: int) -> None:
    whole, _, _ = _run(seed, asked_only=False)
    asked, skipped, in_batch = _run(seed, asked_only=True)
    assert skipped > 0  # labels of the batch's stored predictions: not asked
    assert asked == whole


def test_labels_of_predictions_the_batch_did_not_store_are_asked() -> None:
    """A label whose prediction in the batch is a duplicate of a stored one reads Redis's
    answer: its probe is asked (so are those of too-old and invalid predictions)."""
    asked = skipped = 0
    for seed in range(12):
        _, s, n = _run(seed, asked_only=True)
        asked += n - s
        skipped += s
    assert asked > 0 and skipped > 0
