"""Concept drift: a change detector on the per-prediction error, and the rise it confirms.

Every joined label gives an error (0/1, or the absolute error of a regression), fed in
join order to the stream's detector, chosen per model (``labels.concept_detector``,
``labels.model_concept_detectors``; docs/slow-loop.md):

* ``adwin`` (default): :class:`~driftline.core.detectors.ADWIN`, our river-exact
  implementation. After a cut its window still holds pre-change values, so the error
  level before the change is the mean of what it dropped;
* ``ddm``, ``eddm``, ``hddm_a``, ``hddm_w``, ``kswin``: river's own detectors
  (:class:`~driftline.core.detectors.river_detectors.RiverDetector`). They keep no
  window to read a level from, so the level before the change is the stream's
  expected error: one minus the reference accuracy, else the error of the first
  ``learn_reference_labels`` labels. river's binary detectors expect a 0/1 stream: a
  regression model configured with one runs ADWIN instead.

A detection alone does not alert: ADWIN's rise is confirmed when a short exponential
average of the error (span ~64) exceeds the level before the change by
``min_error_increase`` (for regression, by that fraction of it) within one window of
labels; a river detector's rise by the mean of the :data:`CONFIRM_LABELS` errors after
its detection (see :func:`_river_rise` for why). Then the ``concept_drift`` episode
fires. Decreases of the error never alert.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Final

from driftline.config import LabelsSettings
from driftline.core.detectors import ADWIN
from driftline.core.detectors.adwin import _steps_to_test
from driftline.core.detectors.river_detectors import RIVER_DETECTORS, RiverDetector
from driftline.core.slowloop.episodes import Rules
from driftline.core.slowloop.pending import PendingPrediction
from driftline.core.slowloop.perf_state import ConceptDetector, PerfState, detector_name
from driftline.errors import ConfigError

__all__ = [
    "CONCEPT_DETECTORS",
    "CONFIRM_LABELS",
    "EWMA_ALPHA",
    "ErrorFeed",
    "check_concept_settings",
    "configured_detector",
    "detector_name",
    "ensure_detector",
    "new_detector",
    "observe_error",
]

#: Detectors the slow loop can run on the error stream.
CONCEPT_DETECTORS: Final = ("adwin", *RIVER_DETECTORS)
#: Weight of the newest error in the short error average (span of ~64 labels).
EWMA_ALPHA = 1.0 / 64
#: Errors after a river detector's detection that confirm (or not) the rise.
CONFIRM_LABELS = 100


def configured_detector(settings: LabelsSettings, model: str) -> str:
    """The name of the detector configured for ``model``."""
    return settings.model_concept_detectors.get(model, settings.concept_detector)


def check_concept_settings(settings: LabelsSettings) -> None:
    """Build every configured detector once, so a bad name or parameter is a clear
    :class:`~driftline.errors.ConfigError` at start rather than in the middle of a batch."""
    names = {settings.concept_detector, *settings.model_concept_detectors.values()}
    unknown = sorted(set(settings.concept_detector_params) - set(CONCEPT_DETECTORS))
    if unknown:
        raise ConfigError(
            f"labels.concept_detector_params: unknown detector(s) {', '.join(unknown)}; "
            f"choose among {', '.join(CONCEPT_DETECTORS)}"
        )
    for name in sorted(names | set(settings.concept_detector_params)):
        new_detector(settings, name, "classification", "check")


def new_detector(settings: LabelsSettings, name: str, task: str, key: str) -> ConceptDetector:
    """A fresh detector ``name`` for a stream of ``task`` whose state field is ``key``.

    KSWIN's random generator is seeded from ``key`` unless a seed is configured, so a
    replay of the stream gives the same detections.
    """
    if name not in CONCEPT_DETECTORS:
        raise ConfigError(
            f"unknown concept detector {name!r}; choose one of {', '.join(CONCEPT_DETECTORS)}"
        )
    params: dict[str, Any] = next(
        (dict(p) for k, p in settings.concept_detector_params.items() if k == name), {}
    )
    if name == "adwin":
        try:
            return ADWIN(delta=params.pop("delta", settings.adwin_delta), **params)
        except TypeError:
            raise ConfigError(
                f"adwin: unknown parameter(s) {', '.join(sorted(params))}; known: delta, "
                "clock, max_buckets, min_window_length, grace_period"
            ) from None
    det = RiverDetector(name, params)
    if det.binary and task == "regression":
        return ADWIN(delta=settings.adwin_delta)
    if name == "kswin" and "seed" not in params:
        seed = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "little")
        det = RiverDetector(name, {**params, "seed": seed})
    return det


def _expected_error(st: PerfState) -> float | None:
    """The error level a river detector's change is measured from."""
    if st.task != "regression" and st.ref_accuracy is not None:
        return 1.0 - st.ref_accuracy
    if st.learn_n:
        return st.learn_err / st.learn_n
    return None


def observe_error(
    rules: Rules, st: PerfState, rec: PendingPrediction, err: float, t_label: int
) -> None:
    """Feed one error to ``st``'s detector; fire ``concept_drift`` on a confirmed rise."""
    if isinstance(st.detector, ADWIN):
        _adwin_rise(rules, st, st.detector, rec, err, t_label)
    else:
        _river_rise(rules, st, st.detector, rec, err, t_label)


class _Pending:
    """One ADWIN's errors not fed yet, and what it would say of them."""

    __slots__ = ("errors", "fed", "left", "width")

    def __init__(self, a: ADWIN) -> None:
        self.errors: list[float] = []
        #: The next :meth:`ErrorFeed.run` brings errors already fed (``run_through``).
        self.fed = False
        self.sync(a)

    def sync(self, a: ADWIN) -> None:
        """Read the detector after it was fed: its width, and the updates until and
        including its next test (1 after a detection: the next update resets it)."""
        self.width = a.width
        self.left = 1 if a.drift_detected else _steps_to_test(a._tick, a.clock)


class ErrorFeed:
    """Errors to the streams' detectors for one batch, ADWIN's in runs.

    ADWIN changes its window only at its tests (every ``clock`` updates): between two,
    an update appends one value and the width grows by one, and no change can be
    detected. So the errors between its tests wait here and go through ADWIN's loop in
    one run (:meth:`ADWIN._run <driftline.core.detectors.ADWIN>`) at the next test,
    while each label keeps the short average and the evidence start as one by one does
    (they need only the width). The test's update itself, every update after a
    detection, and every update while a rise is pending go one by one
    (:func:`observe_error`), after the run. River's detectors go one by one.
    :meth:`flush` feeds what waits (the end of a batch's labels).

    A longer run may cross tests (:meth:`run_through`): fed at once when none of its
    tests detects a change, since such a test changes nothing but the counts either.
    """

    def __init__(self) -> None:
        self._pending: dict[int, tuple[ADWIN, _Pending]] = {}

    def observe(
        self, rules: Rules, st: PerfState, rec: PendingPrediction, err: float, t_label: int
    ) -> None:
        """Feed one error of ``st`` (in join order); fire on a confirmed rise."""
        a = st.detector
        if type(a) is not ADWIN:
            observe_error(rules, st, rec, err, t_label)
            return
        got = self._pending.get(id(st))
        if got is None or got[0] is not a:
            got = self._pending[id(st)] = (a, _Pending(a))
        p = got[1]
        if p.left == 1 or st.rise_until >= 0:
            if p.errors:
                a._run(p.errors, None)
                p.errors = []
            _adwin_rise(rules, st, a, rec, err, t_label)
            p.sync(a)
            return
        # an update between tests: as _adwin_rise on an update that detects nothing
        # with no rise pending
        p.errors.append(err)
        p.left -= 1
        p.width += 1
        st.ewma = err if st.ewma < 0 else st.ewma + EWMA_ALPHA * (err - st.ewma)
        t = rec.time_ms
        st.adwin_start = t if p.width <= 1 else min(st.adwin_start, t)

    def quiet(self, st: PerfState) -> int:
        """How many of ``st``'s next errors :meth:`run` may take: those that wait for
        ADWIN's next test (0 for a river detector, or while a rise is pending)."""
        a = st.detector
        if type(a) is not ADWIN or st.rise_until >= 0:
            return 0
        got = self._pending.get(id(st))
        if got is None or got[0] is not a:
            got = self._pending[id(st)] = (a, _Pending(a))
        return got[1].left - 1

    def through(self, st: PerfState) -> bool:
        """Whether :meth:`run_through` may take ``st``'s next errors: an ADWIN with no
        rise pending whose last update detected nothing (after :meth:`quiet`)."""
        a = st.detector
        return type(a) is ADWIN and st.rise_until < 0 and not a.drift_detected

    def run_through(self, st: PerfState, errors: list[float]) -> int:
        """Feed ``errors`` of ``st`` (with those waiting) to its ADWIN now, across its
        tests, when none of those detects a change: -1, and :meth:`run` of the same
        errors then keeps only the short average and the evidence start. Else the index
        in ``errors`` of the first whose test detects, and nothing is fed."""
        p = self._pending[id(st)][1]
        waiting = p.errors
        hit = st.detector._run_unless_detected(waiting + errors)  # type: ignore[union-attr]
        if hit >= 0:
            return hit - len(waiting)
        p.errors = []
        p.fed = True
        return -1

    def run(self, st: PerfState, errors: list[float], times: list[int]) -> None:
        """Errors of ``st`` (with their predictions' times), at most :meth:`quiet` of
        them: each as :meth:`observe` takes an update between tests."""
        p = self._pending[id(st)][1]
        if not p.fed:
            p.errors += errors
            p.left -= len(errors)
        width = p.width
        ewma, start = st.ewma, st.adwin_start
        for err, t in zip(errors, times, strict=True):
            width += 1
            ewma = err if ewma < 0 else ewma + EWMA_ALPHA * (err - ewma)
            start = t if width <= 1 else min(start, t)
        p.width = width
        st.ewma, st.adwin_start = ewma, start
        if p.fed:
            p.fed = False
            p.sync(st.detector)  # type: ignore[arg-type]

    def flush(self) -> None:
        """Feed every error that waits to its ADWIN."""
        for a, p in self._pending.values():
            if p.errors:
                a._run(p.errors, None)
                p.errors = []


def _adwin_rise(
    rules: Rules, st: PerfState, a: ADWIN, rec: PendingPrediction, err: float, t_label: int
) -> None:
    """ADWIN decides that the error changed; a short average says by how much.

    On a detection, the error before the change is the mean of what ADWIN dropped
    (the older part of its window). The rise is confirmed when the short average of
    the error exceeds it by ``min_error_increase`` (a fraction of it for regression)
    within one window of labels.
    """
    s = rules.s
    w0, est0 = a.width, a.estimation
    a.update(err)
    st.ewma = err if st.ewma < 0 else st.ewma + EWMA_ALPHA * (err - st.ewma)
    st.adwin_start = rec.time_ms if a.width <= 1 else min(st.adwin_start, rec.time_ms)
    if a.drift_detected:
        w1, est1 = a.width, a.estimation
        dropped = w0 + 1 - w1
        if dropped > 0:
            old = (est0 * w0 + err - est1 * w1) / dropped
            if est1 > old:  # the error went up (a fall is good news)
                st.rise_from = old
                st.rise_until = st.labelled + s.window_labels
    if st.rise_until < 0:
        return
    if st.labelled > st.rise_until:
        st.rise_from, st.rise_until = -1.0, -1
        return
    old = st.rise_from
    rise = st.ewma - old
    inc = s.min_error_increase
    confirmed = st.ewma >= old * (1.0 + inc) if rec.regression else rise >= inc
    if not (rise > 0 and confirmed):
        return
    st.rise_from, st.rise_until = -1.0, -1
    _fire(rules, st, rec, old, st.ewma, max(1, a.width), t_label)


def _river_rise(
    rules: Rules,
    st: PerfState,
    det: RiverDetector,
    rec: PendingPrediction,
    err: float,
    t_label: int,
) -> None:
    """A river detector decides that the error changed; the errors after it confirm.

    river's detectors keep no window to read the error before the change from, and
    some flag readily (DDM right after its warm-up, EDDM on the spacing of errors), at
    moments the recent errors happen to be high: judging the rise on the errors that
    triggered the detection would confirm those false alarms. So the level before the
    change is the stream's expected error, and the rise is judged on the next
    :data:`CONFIRM_LABELS` errors only: their mean must exceed the expected error by
    ``min_error_increase`` (a fraction of it for regression) and, for a 0/1 error, be
    significantly above it (one-sided z = ``confidence_z``).
    """
    s = rules.s
    det.update(err)
    st.ewma = err if st.ewma < 0 else st.ewma + EWMA_ALPHA * (err - st.ewma)
    st.adwin_start = rec.time_ms if det.width <= 1 else min(st.adwin_start, rec.time_ms)
    if st.rise_until >= 0:
        st.confirm_n += 1
        st.confirm_sum += err
        if st.confirm_n < CONFIRM_LABELS:
            return
        old = st.rise_from
        mean = st.confirm_sum / st.confirm_n
        st.rise_from, st.rise_until, st.confirm_n, st.confirm_sum = -1.0, -1, 0, 0.0
        inc = s.min_error_increase
        if rec.regression:
            confirmed = mean >= old * (1.0 + inc)
        else:
            sd = math.sqrt(max(old * (1.0 - old), 1e-6) / CONFIRM_LABELS)
            confirmed = mean - old >= max(inc, s.confidence_z * sd)
        if confirmed:
            _fire(rules, st, rec, old, mean, max(1, det.width), t_label)
        return
    if det.drift_detected:
        expected = _expected_error(st)
        if expected is not None:
            st.rise_from = expected
            st.rise_until = st.labelled + CONFIRM_LABELS
            st.confirm_n, st.confirm_sum = 0, 0.0


def _fire(
    rules: Rules,
    st: PerfState,
    rec: PendingPrediction,
    old: float,
    level: float,
    width: int,
    t_label: int,
) -> None:
    """Open a ``concept_drift`` episode: the error rose from ``old`` to ``level``."""
    ep = st.episode("concept_drift")
    if ep.firing or ep.cooldown > 0:
        return
    inc = rules.s.min_error_increase
    ep.firing, ep.clean_windows = True, 0
    ep.number += 1
    ep.baseline = old
    big = level - old >= 0.15 if not rec.regression else level >= 2 * old
    ep.severity = "critical" if big else "warning"
    start = st.window.start if st.window.start >= 0 else rec.time_ms
    ep.diagnosis = rules.diagnosis(st, start, rec.time_ms)
    rules.r.alerts.append(
        rules.alert(
            st,
            "concept_drift",
            "firing",
            ep,
            detector_name(st.detector),
            round(level, 6),
            round(old + inc if not rec.regression else old * (1 + inc), 6),
            None,
            min(st.adwin_start, rec.time_ms) if st.adwin_start >= 0 else rec.time_ms,
            rec.time_ms,
            width,
            t_label,
        )
    )
    rules.diag_changed(st)


def ensure_detector(settings: LabelsSettings, st: PerfState) -> None:
    """Give ``st`` the detector configured for its model if it runs another one.

    A changed choice (settings of a restarted worker) starts the new detector afresh:
    the old detector's state cannot be carried over.
    """
    name = configured_detector(settings, st.model_id)
    have = detector_name(st.detector)
    if have != name and not (have == "adwin" and st.task == "regression" and name != "kswin"):
        st.detector = new_detector(settings, name, st.task, st.key)
