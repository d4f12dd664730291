"""Held labels joined when their prediction comes: outcomes first, then scored as a
batch's labels are (``LabelSide.join`` then ``score_joined``), against the
label-at-a-time code it replaced (kept here verbatim: each held label's outcome, its
``joined`` count, its scores). Every ``JoinResult`` field in order and the whole encoded
state must be equal, on the label-side oracle's sequences with many labels read a batch
before their prediction: several models and segments, classification and regression,
duplicates, expired and invalid labels, orphans, window closes and concept-drift
alerts."""

from __future__ import annotations

from typing import Any

import pytest
from test_label_side import _drift, _one_stream, _sequence, _settings

from driftline.core.slowloop import join
from driftline.core.slowloop.lookups import MemoryRecords, plan_lookups
from driftline.core.slowloop.pending import PendingPrediction
from driftline.core.slowloop.perf_state import UnitState
from driftline.core.slowloop.scoring import LabelSide
from support import join_snapshot

Batches = list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]


def _one_at_a_time(
    self: LabelSide,
    idx: int,
    model: str,
    d: bytes,
    label: Any,
    t_label: int,
    hit: tuple[str, PendingPrediction | None],
) -> None:
    """The previous ``LabelSide.join``: a joined label scored at once."""
    item = self.outcome(idx, model, d, label, t_label, hit)
    if item is not None:
        self.count(model, "joined")
        self.score(item)


def _early(batches: Batches, share: float) -> Batches:
    """The same batches with ``share`` of each batch's labels read one batch early
    (before their prediction: held, then joined by the next batch)."""
    out: Batches = [(preds, []) for preds, _ in batches]
    for b, (_, labels) in enumerate(batches):
        cut = int(len(labels) * share)
        out[max(0, b - 1)][1].extend(labels[:cut])
        out[b][1].extend(labels[cut:])
    return out


def _run(seed: int, batches: Batches) -> tuple[list[Any], int]:
    settings = _settings(seed)
    unit, mem, drift = UnitState(), MemoryRecords(), _drift()
    seen: list[Any] = []
    retried = 0
    for preds, labels in batches:
        plan = plan_lookups(preds, labels, unit, settings)
        new = set(plan.pred_digest)
        retried += sum(1 for h in unit.held if h.digest in new)
        res = join.join_batch(
            preds, labels, plan, mem.lookup(plan), unit, lambda m, v: None, drift, settings
        )
        mem.apply(res)
        seen += join_snapshot(res, unit)
    return seen, retried


@pytest.mark.parametrize("seed", range(16))
def test_held_labels_joined_as_a_batch_equal_one_at_a_time(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = _early(_sequence(seed), 0.6)
    runs, retried = _run(seed, batches)
    assert retried > 50
    monkeypatch.setattr(LabelSide, "join", _one_at_a_time)
    assert _run(seed, batches)[0] == runs


@pytest.mark.parametrize("seed", range(4))
def test_long_runs_of_held_labels_equal_one_at_a_time(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One stream's labels all read a batch early: runs of hundreds of held labels
    across window closes, ADWIN's tests and a detection, in one batch."""
    batches = _early(_one_stream(seed), 1.0)
    runs, retried = _run(seed, batches)
    assert retried > 2000
    alerts = "".join(r for batch in runs[0::4] for f, r in batch if f == "alerts")
    assert "kind='concept_drift'" in alerts and "kind='performance'" in alerts
    monkeypatch.setattr(LabelSide, "join", _one_at_a_time)
    assert _run(seed, batches)[0] == runs
