"""The diagnosis: what the slow loop says caused a change, from both loops' evidence.

The monitor's ``input_drift`` alerts become event-time intervals (:class:`DriftIndex`,
fed from the alert topic). A slow-loop alert whose window meets an input-drift
interval is a harmful covariate shift, otherwise concept drift; an input-drift episode
is judged by the accuracy of the predictions made during it (:func:`episode_verdicts`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from driftline.config import LabelsSettings
from driftline.contract.keys import segment_key
from driftline.core.slowloop.perf_state import PerfState

__all__ = [
    "DIAGNOSES",
    "DriftIndex",
    "episode_verdicts",
    "norm_cdf",
    "overlap_diagnosis",
    "wilson_upper",
]

#: Diagnoses this loop decides (values of events.Diagnosis).
DIAGNOSES = ("input_drift_benign", "covariate_shift_harmful", "concept_drift")


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
    """The diagnosis of a slow-loop alert whose window is ``[t0, t1]`` (prediction time)."""
    if drift.overlapping(st.model_id, st.version, t0, t1):
        return "covariate_shift_harmful"
    return "concept_drift"


def episode_verdicts(st: PerfState, settings: LabelsSettings, threshold: float) -> None:
    """Judge each input-drift episode by the accuracy of the predictions made during it.

    An episode with at least half a window of labelled predictions is harmful when its
    accuracy is clearly (upper Wilson bound) below ``threshold``, else benign. The
    verdicts are kept in ``st.drift_diag``.
    """
    for ep_id, (n, k) in st.drift_acc.items():
        if n < max(20, settings.window_labels // 2):
            continue
        harmful = wilson_upper(k, n, settings.confidence_z) < threshold
        diag = "covariate_shift_harmful" if harmful else "input_drift_benign"
        if st.drift_diag.get(ep_id) != diag:
            st.drift_diag[ep_id] = diag


def wilson_upper(k: int, n: int, z: float) -> float:
    """Upper Wilson confidence bound of a proportion ``k/n``."""
    if n <= 0:
        return 1.0
    p = k / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z2 / n))


def norm_cdf(x: float) -> float:
    """Standard normal distribution function."""
    return 0.5 * math.erfc(-x / math.sqrt(2))
