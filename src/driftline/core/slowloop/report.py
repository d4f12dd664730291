"""Reports of the slow loop's state: performance per model and version, per segment,
and champion vs challengers on the same event-time buckets (``driftline labels
--report``)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from driftline.core.slowloop.perf_state import LAG_EDGES_S, SLOTS, Bucket, PerfState

__all__ = ["build_report", "figure", "format_report"]


def _lag_quantile(counts: Sequence[int], q: float) -> float | None:
    total = sum(counts)
    if not total:
        return None
    target = q * total
    run = 0
    for i, c in enumerate(counts):
        run += c
        if run >= target:
            return LAG_EDGES_S[i] if i < len(LAG_EDGES_S) else math.inf
    return math.inf


def _summarise(st: PerfState, buckets: Iterable[Bucket]) -> dict[str, Any]:
    tot = Bucket()
    for b in buckets:
        for s in SLOTS:
            setattr(tot, s, getattr(tot, s) + getattr(b, s))
        tot.lag = [x + y for x, y in zip(tot.lag, b.lag, strict=True)]
        for arr in ("tp", "pc", "ac"):
            mine, theirs = getattr(tot, arr), getattr(b, arr)
            if len(theirs) > len(mine):
                mine.extend([0] * (len(theirs) - len(mine)))
            for i, v in enumerate(theirs):
                mine[i] += v
    out: dict[str, Any] = {
        "predicted": int(tot.pred),
        "labelled": int(tot.lab),
        "coverage": round(tot.lab / tot.pred, 6) if tot.pred else None,
        "estimated_accuracy": round(tot.est_sum / tot.est_n, 6) if tot.est_n else None,
        "lag_p50_s": _lag_quantile(tot.lag, 0.5),
        "lag_p90_s": _lag_quantile(tot.lag, 0.9),
    }
    if st.task == "regression":
        n = tot.lab
        out["mae"] = round(tot.abs_sum / n, 6) if n else None
        out["rmse"] = round(math.sqrt(tot.sq_sum / n), 6) if n else None
        return out
    n = tot.lab
    out["accuracy"] = round(tot.correct / n, 6) if n else None
    out["correct"] = int(tot.correct)
    if tot.conf_n:
        est = tot.conf_sum / tot.conf_n
        out["estimated_on_labelled"] = round(est, 6)
        out["estimation_error"] = round(est - tot.correct / n, 6) if n else None
    if tot.ll_n:
        out["log_loss"] = round(tot.ll_sum / tot.ll_n, 6)
        out["brier"] = round(tot.brier_sum / tot.ll_n, 6)
    per_class = {}
    for i, name in enumerate(st.classes[: len(tot.ac) or len(tot.pc)]):
        tp = tot.tp[i] if i < len(tot.tp) else 0
        pc = tot.pc[i] if i < len(tot.pc) else 0
        ac = tot.ac[i] if i < len(tot.ac) else 0
        if pc or ac:
            per_class[name] = {
                "precision": round(tp / pc, 6) if pc else None,
                "recall": round(tp / ac, 6) if ac else None,
                "support": ac,
            }
    out["per_class"] = per_class
    return out


def _two_proportions(k1: int, n1: int, k2: int, n2: int) -> float | None:
    if n1 == 0 or n2 == 0:
        return None
    p = (k1 + k2) / (n1 + n2)
    se = math.sqrt(max(p * (1 - p) * (1 / n1 + 1 / n2), 1e-12))
    z = (k1 / n1 - k2 / n2) / se
    return round(math.erfc(abs(z) / math.sqrt(2)), 6)


def build_report(
    states: Iterable[PerfState],
    model: str | None = None,
    champion: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> dict[str, Any]:
    """Performance per model and version, and champion vs challengers on the same period.

    The comparison uses only event-time buckets in which every compared version has
    labelled predictions, so both are judged on the same period. The champion is
    ``champion`` or the version with the most predictions.
    """
    by_model: dict[str, dict[str, PerfState]] = {}
    segments: dict[tuple[str, str], list[PerfState]] = {}
    for st in states:
        if model is not None and st.model_id != model:
            continue
        if st.segment:
            segments.setdefault((st.model_id, st.version), []).append(st)
        else:
            by_model.setdefault(st.model_id, {})[st.version] = st

    def sel(st: PerfState) -> dict[int, Bucket]:
        return {
            k: b
            for k, b in st.buckets.items()
            if (since_ms is None or k >= since_ms) and (until_ms is None or k <= until_ms)
        }

    report: dict[str, Any] = {}
    for mid, versions in sorted(by_model.items()):
        entry: dict[str, Any] = {"versions": {}}
        for ver, st in sorted(versions.items()):
            kept = sel(st)
            v = _summarise(st, kept.values())
            v.update(
                # Event-time buckets summed (the label horizon's, or since/until's):
                # first and last bucket start, so a reader knows what "labelled" spans.
                period=[min(kept), max(kept)] if kept else None,
                # The latest prediction, where it is in the last bucket kept: the text
                # says where the span ends (a bucket's start says nothing of its end).
                latest_prediction=st.max_pred_ms
                if kept and until_ms is None and st.max_pred_ms >= max(kept)
                else None,
                task=st.task,
                reference_accuracy=st.ref_accuracy,
                reference_source=st.ref_source or None,
                diagnosis=st.current_diagnosis(),
                # The monitor's input-drift episodes, judged on their predictions.
                input_drift=dict(sorted(st.drift_diag.items())),
                episodes={k: e.firing for k, e in st.episodes.items()},
                last_window=st.last,
                segments={
                    s.segment: _summarise(s, sel(s).values())
                    for s in sorted(segments.get((mid, ver), []), key=lambda x: x.segment)
                },
            )
            if st.task == "regression":
                v["reference_mae"] = st.ref_mae
            entry["versions"][ver] = v
        if len(versions) >= 2:
            champ = champion if champion in versions else None
            if champ is None:
                champ = max(versions, key=lambda x: (versions[x].predicted, x))
            entry["champion"] = champ
            comps = []
            for ver, st in sorted(versions.items()):
                if ver == champ:
                    continue
                cb, xb = sel(versions[champ]), sel(st)
                common = sorted(k for k in cb.keys() & xb.keys() if cb[k].lab and xb[k].lab)
                c = _summarise(versions[champ], (cb[k] for k in common))
                x = _summarise(st, (xb[k] for k in common))
                row: dict[str, Any] = {
                    "challenger": ver,
                    "period": [common[0], common[-1]] if common else None,
                    "buckets": len(common),
                    "champion": {
                        k: c.get(k)
                        for k in ("labelled", "accuracy", "log_loss", "brier", "mae", "rmse")
                    },
                    "challenger_metrics": {
                        k: x.get(k)
                        for k in ("labelled", "accuracy", "log_loss", "brier", "mae", "rmse")
                    },
                }
                if c.get("accuracy") is not None and x.get("accuracy") is not None:
                    row["accuracy_diff"] = round(x["accuracy"] - c["accuracy"], 6)
                    row["p_value"] = _two_proportions(
                        x["correct"], x["labelled"], c["correct"], c["labelled"]
                    )
                comps.append(row)
            entry["comparisons"] = comps
        report[mid] = entry
    return report


def figure(v: float) -> str:
    """A figure as a person reads it: 4 significant digits, and large ones in full with
    thousands separators (a house price's MAE is ``39,560``, not ``3.956e+04``)."""
    if math.isfinite(v) and 1e4 <= abs(v) < 1e15:
        return f"{v:,.0f}"
    return f"{v:.4g}"


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf"
        return f"{v:.2%}" if pct else figure(v)
    return str(v)


def _lag(seconds: Any) -> str:
    """A label lag quantile as a person reads it. The quantile is the upper edge of its
    histogram bucket (:data:`LAG_EDGES_S`), so it says "at most": ``<=30 s``, ``<=1 h``,
    ``<=3 d``."""
    if not isinstance(seconds, int | float) or math.isnan(seconds):
        return "-"
    if math.isinf(seconds):
        return f">{_lag(LAG_EDGES_S[-1])[2:]}"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"<={seconds / size:.3g} {unit}"
    return f"<={seconds:.3g} s"


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%MZ")


def _span(period: Sequence[int], latest: int | None) -> str:
    """The event times a version's figures are of: from the first bucket's start to its
    latest prediction (``2026-12-07 17:00Z to 17:42Z``), to the seconds where the
    minutes alone would read as no time at all (``17:00Z to 17:00Z``)."""
    first, last = period
    if latest is None:
        if _utc(first) == _utc(last):
            return f"the event-time bucket from {_utc(first)} (event-time buckets kept)"
        return f"{_utc(first)} to {_utc(last)} (bucket starts; event-time buckets kept)"
    fine = _utc(first) == _utc(latest)
    a = datetime.fromtimestamp(first / 1000, tz=UTC)
    b = datetime.fromtimestamp(latest / 1000, tz=UTC)
    shape = "%H:%M:%SZ" if fine else "%H:%MZ"
    if a.strftime(shape) == b.strftime(shape) and a.date() == b.date():
        return f"{a.strftime(f'%Y-%m-%d {shape}')} (all in that second; event-time buckets kept)"
    end = b.strftime(shape if a.date() == b.date() else f"%Y-%m-%d {shape}")
    return f"{a.strftime(f'%Y-%m-%d {shape}')} to {end} (the latest; event-time buckets kept)"


def format_report(report: Mapping[str, Any]) -> str:
    """The report as readable text (the ``driftline labels --report`` view)."""
    lines: list[str] = []
    for mid, entry in report.items():
        lines.append(f"model {mid}")
        lines.append(
            "  version   labelled/predicted  coverage  accuracy  estimated  est.err  "
            "log_loss  brier   mae     rmse    lag p50/p90      diagnosis"
        )
        for ver, v in entry["versions"].items():
            lines.append(
                f"  {ver:<9} {v['labelled']:>8}/{v['predicted']:<9} "
                f"{_fmt(v['coverage'], True):>8}  {_fmt(v.get('accuracy'), True):>8}  "
                f"{_fmt(v.get('estimated_accuracy'), True):>9}  "
                f"{_fmt(v.get('estimation_error')):>7}  {_fmt(v.get('log_loss')):>8}  "
                f"{_fmt(v.get('brier')):>6}  {_fmt(v.get('mae')):>6}  {_fmt(v.get('rmse')):>6}  "
                f"{_lag(v['lag_p50_s']) + '/' + _lag(v['lag_p90_s']):<16} "
                f"{v['diagnosis'] or '-'}"
            )
            if v.get("period"):
                span = _span(v["period"], v.get("latest_prediction"))
                lines.append(f"      predictions of {span}")
            for ep, said in v.get("input_drift", {}).items():
                lines.append(f"      input drift episode {ep}: {said}")
            for name, pc in v.get("per_class", {}).items():
                # undefined, not 0: no prediction of the class (or no label of it) to
                # count the right ones among
                prec, rec = pc["precision"], pc["recall"]
                lines.append(
                    f"      class {name:<12} precision "
                    f"{'n/a (never predicted)' if prec is None else f'{_fmt(prec, True):>8}'}  "
                    f"recall {'n/a (never the label)' if rec is None else f'{_fmt(rec, True):>8}'}"
                    f"  support {pc['support']}"
                )
            for seg, sv in v.get("segments", {}).items():
                lines.append(
                    f"      segment {seg:<20} labelled {sv['labelled']:>7}  accuracy "
                    f"{_fmt(sv.get('accuracy'), True)}  mae {_fmt(sv.get('mae'))}"
                )
        if "comparisons" in entry:
            lines.append(
                f"  champion {entry['champion']} vs challengers (same event-time buckets):"
            )
            for row in entry["comparisons"]:
                c, x = row["champion"], row["challenger_metrics"]
                lines.append(
                    f"    {row['challenger']:<9} over {row['buckets']} buckets: accuracy "
                    f"{_fmt(x.get('accuracy'), True)} vs {_fmt(c.get('accuracy'), True)} "
                    f"(diff {_fmt(row.get('accuracy_diff'))}, p={_fmt(row.get('p_value'))}); "
                    f"log_loss {_fmt(x.get('log_loss'))} vs {_fmt(c.get('log_loss'))}; "
                    f"labelled {x.get('labelled')} vs {c.get('labelled')}"
                )
    return "\n".join(lines)
