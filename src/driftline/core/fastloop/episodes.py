"""Where episodes step: one alert per (stream, kind) episode and status.

An episode of an alert kind (``input_drift``, ``output_drift``, ``data_quality``)
fires on a sequential detection (:func:`on_detections`) or on a window whose tests
drift (:func:`step_episode`); it stays firing while windows keep drifting at half the
threshold (hysteresis, :func:`~driftline.core.fastloop.window_tests.decide`), resolves
after ``resolve_after_windows`` clean windows, then cools down for
``cooldown_windows`` windows (the state machine: :class:`driftline.core.episode.Episode`).
``alert_id = blake2b(model, version, segment, kind, episode, status)``: deterministic,
so replays and re-published outboxes dedupe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.contract.events import AlertWindow, DriftAlert, FeatureContribution, make_alert_id
from driftline.core.fastloop.result import BatchResult
from driftline.core.fastloop.sequential import Detection
from driftline.core.fastloop.state import DriftEpisode, ModelState
from driftline.core.fastloop.window_tests import WindowTest
from driftline.core.reference import ReferenceProfile

__all__ = ["fire_detection", "on_detections", "step_episode"]

#: Alert kinds that sequential detectors open, in the order they are handled.
_EARLY_KINDS = ("input_drift", "output_drift")


def on_detections(
    st: ModelState,
    ref: ReferenceProfile,
    found: Sequence[Detection],
    placed: NDArray[np.int64],
    count_at: int,
    result: BatchResult,
) -> None:
    """Detections at the events just absorbed into the open window.

    Each is marked in the window (``st.early``: a firing episode then does not count
    the window as clean), and the earliest detection of each kind fires that kind's
    episode, whatever the batch boundaries were. ``placed`` are the segment's placed
    event times (:mod:`~driftline.core.fastloop.clock`); ``count_at + i`` is the
    window's event count at segment event ``i``.
    """
    pol = ref.policy
    for kind in _EARLY_KINDS:
        mine = [d for d in found if d.kind == kind]
        if not mine:
            continue
        for d in mine:
            st.early[d.feature] = float(pol.ph_threshold) if d.detector == "page_hinkley" else 1.0
        first = mine[0]
        fire_detection(st, ref, first, int(placed[first.at]), count_at + first.at + 1, result)


def fire_detection(
    st: ModelState,
    ref: ReferenceProfile,
    d: Detection,
    at_ms: int,
    count: int,
    result: BatchResult,
) -> None:
    """Open ``d.kind``'s episode by detection ``d`` at ``at_ms`` (window count ``count``),
    unless it is firing or cooling down: a sequential detector's firing, or at a
    window's close a detector still away whose firing a cooldown swallowed
    (:func:`driftline.core.fastloop.multivariate.unalerted`)."""
    ep = st.episode(d.kind)
    if not ep.may_open:
        return
    ep.open()
    ep.severity, ep.feature = "warning", d.feature
    # The detector crossed its threshold: report the threshold as both numbers.
    pol = ref.policy
    level = float(pol.ph_threshold if d.detector == "page_hinkley" else pol.adwin_delta)
    t = WindowTest(d.feature, d.detector, 0.0, level, level, {})
    alert = _alert(st, ref, d.kind, "firing", ep, d.detector, [t], at_ms, count)
    update: dict[str, Any] = {"p_value": None}
    if d.threshold is not None and d.statistic is not None:
        # A detector that reports its own numbers and the features it names
        # (the multivariate detector, core/fastloop/multivariate.py).
        update["statistic"] = round(d.statistic, 6)
        update["threshold"] = round(d.threshold, 6)
    if d.top:
        update["top_features"] = [
            FeatureContribution(feature=f, score=score, contribution=share, statistic=stat)
            for f, score, share, stat in d.top
        ]
    result.alerts.append(alert.model_copy(update=update))


def step_episode(
    st: ModelState,
    ref: ReferenceProfile,
    kind: str,
    drifted: list[WindowTest],
    early: bool,
    result: BatchResult,
    detector: str,
) -> None:
    """A window of ``st`` closed: fire, keep, resolve or cool down ``kind``'s episode.

    ``drifted`` are the window's tests that drifted, ``early`` whether a sequential
    detector fired during the window.
    """
    ep = st.episode(kind)
    pol = ref.policy
    status = ep.close_window(
        bool(drifted),
        early,
        resolve_after=pol.resolve_after_windows,
        cooldown=pol.cooldown_windows,
    )
    if status is None:
        return
    if status == "firing":
        ep.severity = _severity(kind, drifted)
        ep.feature = sorted(drifted, key=lambda t: (-t.effect, t.feature))[0].feature
    w = st.window
    result.alerts.append(_alert(st, ref, kind, status, ep, detector, drifted, w.end_ms, w.count))


# ---------------------------------------------------------------------- the alert


def _severity(kind: str, drifted: Sequence[WindowTest]) -> str:
    if kind == "data_quality":
        return "critical" if any(t.effect >= 0.5 for t in drifted) else "warning"
    top = max((t.effect for t in drifted), default=0.0)
    return "critical" if top >= 0.25 or len(drifted) >= 3 else "warning"


def _top_features(drifted: Sequence[WindowTest]) -> list[FeatureContribution]:
    ranked = sorted(drifted, key=lambda t: (-t.effect, t.feature))[:20]
    total = sum(max(t.effect, 0.0) for t in ranked) or 1.0
    return [
        FeatureContribution(
            feature=t.feature,
            score=round(t.effect, 6),
            contribution=round(max(t.effect, 0.0) / total, 6),
            statistic=t.statistic,
        )
        for t in ranked
    ]


def _alert(
    st: ModelState,
    ref: ReferenceProfile,
    kind: str,
    status: str,
    ep: DriftEpisode,
    detector: str,
    drifted: Sequence[WindowTest],
    at_ms: int,
    count: int,
) -> DriftAlert:
    top = sorted(drifted, key=lambda t: (-t.effect, t.feature))
    first = top[0] if top else None
    key = st.key
    w = st.window
    start = w.start_ms if w.start_ms >= 0 else at_ms
    return DriftAlert(
        alert_id=make_alert_id(
            key.model_id,
            key.model_version,
            key.segment,
            kind,
            ep.number,
            status,
            *((st.origin,) if st.origin else ()),
        ),
        model_id=key.model_id,
        model_version=key.model_version,
        segment=key.segment_dict(),
        kind=kind,
        status=status,
        severity=ep.severity,
        feature=first.feature if first else ep.feature,
        detector=detector,
        statistic=round(first.effect, 6) if first else 0.0,
        threshold=round(first.threshold, 6) if first else 0.0,
        p_value=(min(1.0, max(0.0, first.p_value)) if first and first.statistic == "psi" else None),
        window=AlertWindow(start=max(0, start), end=max(0, at_ms), count=count),
        reference=ref.reference_id,
        detected_at=max(0, at_ms),
        episode=ep.number,
        diagnosis=_diagnosis(kind),
        top_features=_top_features(drifted),
    )


def _diagnosis(kind: str) -> Any:
    # The fast loop alone cannot tell benign from harmful input drift; the slow loop
    # (labels) refines this. Until then input drift is "undetermined".
    return {"output_drift": "output_drift", "data_quality": "data_quality"}.get(
        kind, "undetermined"
    )
