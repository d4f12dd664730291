"""Performance windows and the slow loop's alert episodes.

Every ``window_labels`` labelled predictions of a stream close a tumbling window
(:meth:`Rules.close_window`): its summary becomes gauges and a history point, the
performance rule judges its accuracy, and the alert episodes (``performance`` and
``concept_drift``) step through their hysteresis (:meth:`Rules.step`): one alert per
episode and status, with deterministic ids.
"""

from __future__ import annotations

import math
from typing import Any

from driftline.config import LabelsSettings
from driftline.contract.events import (
    AlertWindow,
    DriftAlert,
    make_alert_id,
)
from driftline.contract.keys import StateKey
from driftline.core.slowloop.diagnosis import (
    DriftIndex,
    alert_diagnosis,
    norm_cdf,
    wilson_lower,
    wilson_upper,
)
from driftline.core.slowloop.pending import Horizons
from driftline.core.slowloop.perf_state import PerfState, PerfWindow, SlowEpisode, detector_name
from driftline.core.slowloop.results import JoinResult, PerfObservation

__all__ = ["Rules"]


class Rules:
    """The per-window rules of one batch: windows, episodes, alerts, diagnoses.

    Parameters
    ----------
    settings
        The slow loop's settings.
    result
        The batch's result (alerts, observations, points and diagnoses are added).
    drift
        Input-drift episodes reported by the monitor.
    """

    def __init__(self, settings: LabelsSettings, result: JoinResult, drift: DriftIndex) -> None:
        self.s = settings
        self.c = Horizons(settings)
        self.r = result
        self.drift = drift

    def diagnosis(self, st: PerfState, t0: int, t1: int) -> str:
        """The diagnosis of a slow-loop alert on ``st`` (see
        :func:`~driftline.core.slowloop.diagnosis.alert_diagnosis`)."""
        return alert_diagnosis(st, self.s, self.drift, t0, t1)

    def threshold(self, st: PerfState) -> float | None:
        """Accuracy under which a window is degraded (None: no rule for this stream)."""
        ref = st.reference_accuracy()
        if ref is None:
            return self.s.accuracy_floor if self.s.accuracy_floor > 0 else None
        # The reference's accuracy is itself measured on a sample: a window is held to
        # what its lower confidence bound allows (on 400 rows about 5 points lower, on
        # 20,000 under 1), so an unlucky small reference raises no false alert.
        rows = st.ref_rows
        se = math.sqrt(max(ref * (1 - ref), 0.0) / rows) if rows > 0 else 0.0
        return max(self.s.accuracy_floor, ref - self.s.accuracy_margin - self.s.confidence_z * se)

    def close_window(self, st: PerfState, t_label: int) -> None:
        """Close ``st``'s full window: summary, gauges, point, episodes, verdicts."""
        w = st.window
        regression = st.task == "regression"
        mean_err = w.err_sum / w.n
        summary: dict[str, Any] = {"window": w.index, "n": w.n, "start": w.start, "end": w.end}
        obs: list[tuple[str, float]] = []
        if regression:
            summary["mae"] = round(mean_err, 6)
            summary["rmse"] = round(math.sqrt(w.sq_sum / w.n), 6)
            obs += [("mae", mean_err), ("rmse", math.sqrt(w.sq_sum / w.n))]
        else:
            acc = w.correct / w.n
            summary["accuracy"] = round(acc, 6)
            obs.append(("accuracy", acc))
            if w.conf_n:
                est = w.conf_sum / w.conf_n
                summary["estimated"] = round(est, 6)
                summary["estimation_error"] = round(est - acc, 6)
                obs.append(("estimation_error", est - acc))
            if w.ll_n:
                summary["log_loss"] = round(w.ll_sum / w.ll_n, 6)
                summary["brier"] = round(w.brier_sum / w.ll_n, 6)
                obs += [("log_loss", w.ll_sum / w.ll_n), ("brier", w.brier_sum / w.ll_n)]
        pred = sum(b.pred for b in st.buckets.values())
        lab = sum(b.lab for b in st.buckets.values())
        if pred:
            obs.append(("coverage", lab / pred))
        st.last.update(summary)
        self.r.points.setdefault(st.model_id, []).append(
            {
                "model_version": st.version,
                "segment": st.segment,
                "at": max(0, w.end),
                "accuracy": summary.get("accuracy"),
                "estimated_accuracy": summary.get("estimated"),
                "coverage": (lab / pred) if pred else None,
                "lag_seconds": w.lag_sum / w.n,
                "labels": w.n,
                "mae": summary.get("mae"),
            }
        )
        if not st.segment:
            for name, v in obs:
                self.r.observations.append(PerfObservation(st.model_id, st.version, name, v))
        z = self.s.confidence_z
        # -- performance episode (classification with a threshold): fires when the
        # window's accuracy is clearly under the threshold; resolves once the run of
        # windows back over it is clearly over it (no flapping on a persistent drop).
        thr = self.threshold(st)
        if not regression and thr is not None:
            acc = w.correct / w.n
            ep = self._run(st, "performance", acc >= thr, w.n, w.correct)
            back = wilson_lower(ep.run_k, ep.run_n, z) >= thr
            upper = wilson_upper(w.correct, w.n, z)
            self.step(st, "performance", upper < thr, acc >= thr, back, acc, thr, w, t_label)
        # -- regression: the same episode on the mean absolute error, which fires when
        # the window's lower confidence bound is over the threshold
        # (a reference built without labels has no MAE: no rule)
        ref_mae = st.ref_mae if regression else None
        if ref_mae is not None:
            mae_thr = ref_mae * (1.0 + self.s.mae_margin)
            sd = math.sqrt(max(w.sq_sum / w.n - mean_err * mean_err, 0.0))
            se = max(sd / math.sqrt(w.n), 1e-12)
            clean = mean_err <= mae_thr
            self._run(st, "performance", clean, w.n, 0)
            severe = mean_err >= ref_mae * (1.0 + 2.0 * self.s.mae_margin)
            self.step(
                st,
                "performance",
                mean_err - z * se > mae_thr,
                clean,
                True,
                mean_err,
                mae_thr,
                w,
                t_label,
                detector="window_mae",
                severity="critical" if severe else "warning",
                p_value=norm_cdf((mae_thr - mean_err) / se),
            )
        # -- concept-drift episode: fired by the detector, resolved once the error is
        # back within the band of its level before the change, clearly so for 0/1 errors
        ep = st.episode("concept_drift")
        inc = self.s.min_error_increase
        if regression:
            clean = mean_err <= ep.baseline * (1 + inc / 2)
            self._run(st, "concept_drift", clean, w.n, 0)
            back = True
        else:
            clean = mean_err <= ep.baseline + inc / 2
            self._run(st, "concept_drift", clean, w.n, w.n - w.correct)
            back = wilson_upper(ep.run_k, ep.run_n, z) <= ep.baseline + inc
        self.step(st, "concept_drift", False, clean, back, mean_err, ep.baseline + inc, w, t_label)
        # -- the diagnosis of a firing episode follows the evidence as it grows
        for kind in ("performance", "concept_drift"):
            fired = st.episodes.get(kind)
            if fired is not None and fired.firing:
                said = self.diagnosis(st, w.start, w.end)
                if said != fired.diagnosis:
                    fired.diagnosis = said
                    self.diag_changed(st)
        self.prune(st)
        w.index += 1
        st.window = PerfWindow(index=w.index)

    @staticmethod
    def _run(st: PerfState, kind: str, clean: bool, n: int, k: int) -> SlowEpisode:
        """Extend (clean window) or end the firing episode's run of clean windows."""
        ep = st.episode(kind)
        if ep.firing and clean:
            ep.run_n += n
            ep.run_k += k
        else:
            ep.run_n = ep.run_k = 0
        return ep

    def step(
        self,
        st: PerfState,
        kind: str,
        degraded: bool,
        clean: bool,
        back: bool,
        value: float,
        threshold: float,
        w: PerfWindow,
        t_label: int,
        detector: str = "window_accuracy",
        severity: str | None = None,
        p_value: float | None = None,
    ) -> None:
        """One window of an episode's hysteresis: fire when ``degraded``; resolve once
        ``resolve_after_windows`` windows in a row were ``clean`` and their evidence
        together is ``back`` in the band; then cool down. ``severity`` and ``p_value``
        default to an accuracy's (``value`` under ``threshold``)."""
        ep = st.episode(kind)
        if not ep.firing:
            if ep.cooldown > 0:
                ep.cooldown -= 1
                return
            if degraded:
                ep.firing, ep.clean_windows = True, 0
                ep.run_n = ep.run_k = 0
                ep.number += 1
                ep.baseline = threshold
                drop = threshold - value
                if severity is None:
                    severity = "critical" if drop >= 2 * self.s.accuracy_margin else "warning"
                ep.severity = severity
                ep.diagnosis = self.diagnosis(st, w.start, w.end)
                p = p_value
                if p is None:
                    se = math.sqrt(max(threshold * (1 - threshold), 1e-9) / w.n)
                    p = norm_cdf((value - threshold) / se)
                self.r.alerts.append(
                    self.alert(
                        st,
                        kind,
                        "firing",
                        ep,
                        detector,
                        round(value, 6),
                        round(threshold, 6),
                        round(p, 6),
                        w.start,
                        w.end,
                        w.n,
                        t_label,
                    )
                )
                self.diag_changed(st)
            return
        if not clean:
            ep.clean_windows = 0
            return
        ep.clean_windows += 1
        if ep.clean_windows >= self.s.resolve_after_windows and back:
            ep.firing = False
            ep.cooldown = self.s.cooldown_windows
            ep.run_n = ep.run_k = 0
            if kind == "concept_drift":
                detector = detector_name(st.detector)
            self.r.alerts.append(
                self.alert(
                    st,
                    kind,
                    "resolved",
                    ep,
                    detector,
                    round(value, 6),
                    round(threshold, 6),
                    None,
                    w.start,
                    w.end,
                    w.n,
                    t_label,
                )
            )
            self.diag_changed(st)

    def alert(
        self,
        st: PerfState,
        kind: str,
        status: str,
        ep: SlowEpisode,
        detector: str,
        statistic: float,
        threshold: float,
        p_value: float | None,
        start: int,
        end: int,
        count: int,
        at: int,
    ) -> DriftAlert:
        """The alert event of ``st``'s episode ``ep`` in ``status``."""
        return DriftAlert(
            alert_id=make_alert_id(
                st.model_id,
                st.version,
                st.segment,
                kind,
                ep.number,
                status,
                *((st.origin,) if st.origin else ()),
            ),
            model_id=st.model_id,
            model_version=st.version,
            segment=StateKey(st.model_id, st.version, st.segment).segment_dict(),
            kind=kind,
            status=status,
            severity=ep.severity,
            feature=None,
            detector=detector,
            statistic=statistic,
            threshold=threshold,
            p_value=None if p_value is None else min(1.0, max(0.0, p_value)),
            window=AlertWindow(start=max(0, start), end=max(0, end), count=max(0, count)),
            reference=st.reference_id or f"labels:{st.ref_source or 'none'}",
            detected_at=max(0, at),
            episode=ep.number,
            diagnosis=ep.diagnosis,
        )

    def diag_changed(self, st: PerfState) -> None:
        """Report the (model, version)'s current diagnosis (whole-version streams)."""
        if not st.segment:
            self.r.diagnoses[(st.model_id, st.version)] = st.current_diagnosis()

    def prune(self, st: PerfState) -> None:
        """Drop buckets and verdicts of input-drift episodes older than the horizon."""
        keep_from = st.max_pred_ms - self.c.horizon_ms(st.model_id) - self.c.bucket_ms
        for k in [k for k in st.buckets if k < keep_from]:
            del st.buckets[k]
        for ep_id in list(st.drift_diag):
            iv = self.drift.intervals.get((st.model_id, st.version), {}).get(ep_id)
            if iv is not None and 0 <= iv[1] < keep_from:
                st.drift_diag.pop(ep_id)
