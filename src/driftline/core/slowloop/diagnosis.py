"""The diagnosis: what caused a change, decided from the evidence of the predictions.

A drop of accuracy has one of two causes the slow loop can tell apart by comparing, on
the **same predictions**, the realised accuracy with the label-free estimate (the mean
calibrated top score, CBPE):

* the estimate falls with the accuracy: the inputs moved to where the model is less
  sure, and less right -- ``covariate_shift_harmful``;
* the accuracy falls and the estimate does not explain it: the same inputs now mean
  something else -- ``concept_drift``;
* input drift (the monitor's ``input_drift`` episodes) while neither falls --
  ``input_drift_benign``.

The estimate's own bias on the stream (calibration is never perfect) is learnt on the
first ``learn_reference_labels`` labels and removed. The evidence of a slow-loop alert
is the recent labelled predictions made after the error changed (located in the
evidence itself: :func:`since_change`); the evidence of an input-drift episode is the
event-time buckets of the predictions made during it. Neither depends on when the
joiner read the monitor's alerts: the monitor's intervals only say *which* predictions
an input-drift verdict is about, and verdicts are re-derived from the buckets at every
batch, so they follow new labels and late alerts alike.

Streams without an estimate (no top scores, regression) fall back to overlap: a
slow-loop alert whose window meets an input-drift interval is
``covariate_shift_harmful``, else ``concept_drift`` (that fallback does depend on what
the joiner has read).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from driftline.config import LabelsSettings
from driftline.contract.keys import segment_key
from driftline.core.slowloop.perf_state import (
    CELL_LABELS,
    MAX_CELLS,
    Bucket,
    PerfState,
)

__all__ = [
    "DIAGNOSES",
    "MIN_EVIDENCE",
    "DriftIndex",
    "Evidence",
    "add_evidence",
    "add_evidence_run",
    "alert_diagnosis",
    "bucket_evidence",
    "episode_verdicts",
    "estimate_bias",
    "norm_cdf",
    "overlap_diagnosis",
    "since_change",
    "verdict",
    "wilson_lower",
    "wilson_upper",
]

#: Diagnoses this loop decides (values of events.Diagnosis).
DIAGNOSES = ("input_drift_benign", "covariate_shift_harmful", "concept_drift")
#: Fewest labelled predictions a verdict is drawn from.
MIN_EVIDENCE = 100
#: Labels of the estimate's bias before it is trusted (fewer: no correction).
MIN_BIAS_LABELS = 100

#: Sums over a set of labelled predictions: [labelled, right, with a top score, sum of
#: their calibrated top scores, right among those with a top score].
Evidence = list[float]


class DriftIndex:
    """Input-drift episodes the monitor reported, as event-time intervals per model/version.

    Fed with the ``drift-alerts`` topic (:meth:`observe`). A firing ``input_drift``
    alert opens an interval at its window start; an ``updated`` one (the episode grew)
    opens it only if its firing alert was not seen; the resolved alert of the same
    episode closes it at its ``detected_at``. Plain memory: rebuilt from the topic on
    start.

    Examples
    --------
    >>> ix = DriftIndex()
    >>> a = {"kind": "input_drift", "status": "firing", "model_id": "m", "model_version": "1",
    ...      "segment": None, "episode": 1, "window": {"start": 100, "end": 150},
    ...      "detected_at": 150}
    >>> ix.observe(a), ix.containing("m", "1", 120), ix.containing("m", "1", 90)
    (True, ['#1'], [])
    """

    def __init__(self) -> None:
        self.intervals: dict[tuple[str, str], dict[str, list[int]]] = {}

    def observe(self, alert: Mapping[str, Any]) -> bool:
        """Take one alert event (dict); return whether it changed an interval."""
        if alert.get("kind") != "input_drift":
            return False
        key = (str(alert["model_id"]), str(alert["model_version"]))
        ep = f"{segment_key(alert.get('segment'))}#{int(alert['episode'])}"
        eps = self.intervals.setdefault(key, {})
        at = int(alert["detected_at"])
        status = alert.get("status")
        if status == "updated" and ep in eps:
            return False
        if status in ("firing", "updated"):
            start = min(int(alert["window"]["start"]), at)
            cur = eps.get(ep)
            if cur is not None and cur[0] == start:
                return False
            eps[ep] = [start, cur[1] if cur else -1]
            return True
        cur = eps.setdefault(ep, [at, -1])
        if cur[1] == at:
            return False
        cur[1] = at
        return True

    def overlapping(self, model: str, version: str, t0: int, t1: int) -> list[str]:
        """Episodes of (model, version) whose interval meets ``[t0, t1]``."""
        eps = self.intervals.get((model, version))
        if not eps:
            return []
        return sorted(e for e, (s, end) in eps.items() if s <= t1 and (end < 0 or end >= t0))

    def containing(self, model: str, version: str, t: int) -> list[str]:
        """Episodes of (model, version) whose interval holds event time ``t``."""
        return self.overlapping(model, version, t, t)


def overlap_diagnosis(drift: DriftIndex, st: PerfState, t0: int, t1: int) -> str:
    """Diagnosis of a slow-loop alert about predictions made in ``[t0, t1]`` for a
    stream without an estimate: by overlap with the monitor's input drift."""
    if drift.overlapping(st.model_id, st.version, t0, t1):
        return "covariate_shift_harmful"
    return "concept_drift"


# ----------------------------------------------------------------------- evidence


def add_evidence(st: PerfState, correct: bool, conf: float | None) -> None:
    """Add one labelled prediction to ``st``'s recent evidence."""
    add_evidence_run(st, (correct,), (conf,))


def add_evidence_run(st: PerfState, correct: Sequence[bool], conf: Sequence[float | None]) -> None:
    """Add labelled predictions to ``st``'s recent evidence (cells in join order)."""
    c = st.cell
    n, right, n_conf, conf_sum, conf_right = c
    for ok, p in zip(correct, conf, strict=True):
        n += 1
        right += int(ok)
        if p is not None:
            n_conf += 1
            conf_sum += p
            conf_right += int(ok)
        if n >= CELL_LABELS:
            c[:] = n, right, n_conf, conf_sum, conf_right
            st.cells.append(c)
            if len(st.cells) > MAX_CELLS:
                del st.cells[0]
            c = st.cell = [0, 0, 0, 0.0, 0]
            n, right, n_conf, conf_sum, conf_right = c
    c[:] = n, right, n_conf, conf_sum, conf_right


def _sum(cells: Sequence[Sequence[float]]) -> Evidence:
    out: Evidence = [0, 0, 0, 0.0, 0]
    for c in cells:
        out = [a + b for a, b in zip(out, c, strict=True)]
    return out


def since_change(st: PerfState) -> Evidence:
    """Sums over the recent labelled predictions made after the error last changed.

    The change is placed at the cell boundary where the error rate after it is the
    most significantly above the one before (a two-proportion z statistic over the
    cells kept, over 2 to count), keeping at least :data:`MIN_EVIDENCE` predictions
    after it; without such a boundary, every cell kept. Locating the change from the
    evidence itself, rather than from a detector (ADWIN's window still holds
    pre-change values after a cut), keeps pre-change predictions out of the verdict.
    """
    cells = [*st.cells, st.cell] if st.cell[0] else list(st.cells)
    best_k, best_z = 0, 2.0
    old: Evidence = [0, 0, 0, 0.0, 0]
    new = _sum(cells)
    for k in range(1, len(cells)):
        old = [a + b for a, b in zip(old, cells[k - 1], strict=True)]
        new = [a - b for a, b in zip(new, cells[k - 1], strict=True)]
        if new[0] < MIN_EVIDENCE:
            break
        e_old, e_new = old[0] - old[1], new[0] - new[1]
        p = (e_old + e_new) / (old[0] + new[0])
        se = math.sqrt(max(p * (1 - p), 1e-6) * (1 / old[0] + 1 / new[0]))
        z = (e_new / new[0] - e_old / old[0]) / se
        if z > best_z:
            best_k, best_z = k, z
    return _sum(cells[best_k:])


def bucket_evidence(buckets: Iterable[Bucket]) -> Evidence:
    """Sums over the labelled predictions of event-time buckets."""
    out: Evidence = [0, 0, 0, 0.0, 0]
    for b in buckets:
        out[0] += b.lab
        out[1] += b.correct
        out[2] += b.conf_n
        out[3] += b.conf_sum
        out[4] += b.conf_ok
    return out


def estimate_bias(st: PerfState) -> float:
    """How far the label-free estimate was above the realised accuracy on the stream's
    first labels (0 until :data:`MIN_BIAS_LABELS` of them had a top score)."""
    n, conf_sum, ok = st.learn_conf
    if n < MIN_BIAS_LABELS:
        return 0.0
    return float(conf_sum / n - ok / n)


def verdict(
    ev: Sequence[float],
    bias: float,
    threshold: float | None,
    settings: LabelsSettings,
    expected: float | None = None,
) -> str | None:
    """What the evidence says: ``concept_drift`` when the realised accuracy is clearly
    below the bias-corrected estimate on the same predictions, by at least half its drop
    from ``expected`` (the stream's accuracy before: its reference's), else
    ``covariate_shift_harmful`` when the accuracy is clearly below ``threshold``, else
    ``input_drift_benign``. None when fewer than half the predictions had a top score
    (no estimate to compare with).

    "Clearly": by ``min_error_increase`` at least and by ``confidence_z`` standard
    errors (one-sided), so the estimate's noise on a few hundred predictions is not
    taken for a concept change.
    """
    n, correct, conf_n, conf_sum, conf_ok = ev
    if conf_n <= 0 or conf_n < n / 2:
        return None
    acc = conf_ok / conf_n
    est = conf_sum / conf_n - bias
    sd = math.sqrt(max(est * (1.0 - est), 1e-4) / conf_n)
    unexplained = est - acc
    clear = unexplained >= max(settings.min_error_increase, settings.confidence_z * sd)
    # ... and it is most of the drop: a calibration that is a little off where the
    # inputs moved leaves part of a covariate shift's drop unexplained, not most of it.
    drop = None if expected is None else expected - acc
    if clear and (drop is None or (drop > 0 and unexplained >= drop / 2)):
        return "concept_drift"
    if threshold is not None and wilson_upper(int(correct), int(n), settings.confidence_z) < (
        threshold
    ):
        return "covariate_shift_harmful"
    return "input_drift_benign"


def alert_diagnosis(
    st: PerfState, settings: LabelsSettings, drift: DriftIndex, t0: int, t1: int
) -> str:
    """The diagnosis of a slow-loop alert (the error rose) on ``st``.

    From the evidence since the change (:func:`since_change`) when the stream has an
    estimate: the
    rise is ``concept_drift`` if the estimate does not explain it, else
    ``covariate_shift_harmful``. Without an estimate, by overlap with input drift
    (predictions made in ``[t0, t1]``).
    """
    said = verdict(since_change(st), estimate_bias(st), None, settings, st.ref_accuracy)
    if said is None:
        return overlap_diagnosis(drift, st, t0, t1)
    return "concept_drift" if said == "concept_drift" else "covariate_shift_harmful"


def episode_verdicts(
    st: PerfState,
    settings: LabelsSettings,
    threshold: float | None,
    drift: DriftIndex,
    bucket_ms: int,
) -> bool:
    """Judge every input-drift episode of ``st``'s (model, version) by the predictions
    made during it (the event-time buckets that meet its interval). Returns whether a
    verdict changed. An episode needs half a window of labelled predictions."""
    eps = drift.intervals.get((st.model_id, st.version))
    if not eps:
        return False
    changed = False
    bias = estimate_bias(st)
    for ep_id, (start, end) in eps.items():
        inside = [
            b for k, b in st.buckets.items() if k + bucket_ms > start and (end < 0 or k <= end)
        ]
        ev = bucket_evidence(inside)
        if ev[0] < max(20, settings.window_labels // 2):
            continue
        said = verdict(ev, bias, threshold, settings, st.ref_accuracy)
        if said is None:
            if threshold is None:
                continue
            harmful = wilson_upper(int(ev[1]), int(ev[0]), settings.confidence_z) < threshold
            said = "covariate_shift_harmful" if harmful else "input_drift_benign"
        if st.drift_diag.get(ep_id) != said:
            st.drift_diag[ep_id] = said
            changed = True
    return changed


# ----------------------------------------------------------------------- statistics


def wilson_upper(k: int, n: int, z: float) -> float:
    """Upper Wilson confidence bound of a proportion ``k/n``."""
    if n <= 0:
        return 1.0
    p = k / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z2 / n))


def wilson_lower(k: int, n: int, z: float) -> float:
    """Lower Wilson confidence bound of a proportion ``k/n``."""
    return 1.0 - wilson_upper(n - k, n, z) if n > 0 else 0.0


def norm_cdf(x: float) -> float:
    """Standard normal distribution function."""
    return 0.5 * math.erfc(-x / math.sqrt(2))
