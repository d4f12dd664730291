"""The summary of a closing window: plain data for history, reports and charts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.core.fastloop.plan import Plan
from driftline.core.fastloop.state import ModelState
from driftline.core.fastloop.window_tests import TestBlock
from driftline.core.fastloop.windows import OpenWindow
from driftline.core.reference import ReferenceProfile

__all__ = ["round6", "summarise_tests", "window_summary"]


def window_summary(
    st: ModelState,
    ref: ReferenceProfile,
    plan: Plan,
    window: OpenWindow,
    grouped: NDArray[np.int64],
    tests: Sequence[TestBlock],
    drifted: set[str],
) -> dict[str, Any]:
    """Plain-data summary of a closing window: its tests and its (grouped) histograms,
    and the stream's ``late_events`` and ``future_events`` so far when either is not
    zero."""
    # One tolist() each, then list slices (a numpy slice and tolist() per feature cost more).
    hist: dict[str, list[int]] = {}
    groups: list[int] = grouped.tolist()
    gslice = plan.gslice
    for i, name in enumerate(plan.num_names):
        if name in st.num:
            hist[name] = groups[gslice[i]]
    rows: list[list[int]] = window.cat.counts.tolist()
    sizes = plan.cat_bins.sizes
    for r, name in enumerate(plan.cat_names):
        if name in st.cat:
            hist[name] = rows[r][: sizes[r] + 1]
    if st.classes is not None and plan.class_row >= 0:
        r = plan.class_row
        hist["__class__"] = rows[r][: sizes[r] + 1]
    if st.confidence is not None and ref.outputs.confidence is not None and plan.conf_col >= 0:
        hist["__confidence__"] = groups[gslice[plan.conf_col]]
    w = st.window
    # The stream's late and future-dated events so far, only when there are some: a
    # stream in time order keeps the summary (and its history entry) it always had.
    odd: dict[str, Any] = (
        {"late_events": st.late_events, "future_events": st.future_events}
        if st.late_events or st.future_events
        else {}
    )
    # The names of the unknown features seen so far, only when there are some.
    if st.unknown_names:
        odd["unknown_names"] = list(st.unknown_names)
        if st.unknown_names_more:
            odd["unknown_names_more"] = True
    return {
        "model_id": st.key.model_id,
        "model_version": st.key.model_version,
        "segment": st.key.segment,
        "reference": ref.reference_id,
        "window": w.index,
        "start": w.start_ms,
        "end": w.end_ms,
        "count": w.count,
        "tests": summarise_tests(tests, drifted),
        "hist": hist,
        "episodes": {k: e.firing for k, e in st.episodes.items()},
        **odd,
    }


def summarise_tests(blocks: Sequence[TestBlock], drifted: set[str]) -> list[dict[str, Any]]:
    """The tests as plain data, numbers rounded to 6 places (one :func:`round6` for all).

    A test is drifted when its feature is among ``drifted`` and its effect reaches half
    its threshold; its p-value is kept for PSI tests only.
    """
    flat: list[float] = []
    for b in blocks:
        flat += b.effect
        flat += b.threshold
        for v in b.extra.values():
            flat += v
    rounded = round6(flat)
    out: list[dict[str, Any]] = []
    at = 0
    for b in blocks:
        k = len(b.feature)
        value, threshold = rounded[at : at + k], rounded[at + k : at + 2 * k]
        at += 2 * k
        rows = [
            {
                "feature": f,
                "statistic": s,
                "value": v,
                "threshold": t,
                "p_value": p if s == "psi" else None,
                "drifted": d,
            }
            for f, s, v, t, p, d in zip(
                b.feature,
                b.statistic,
                value,
                threshold,
                b.p_value,
                _drifted(b, drifted),
                strict=True,
            )
        ]
        for name in b.extra:
            for row, x in zip(rows, rounded[at : at + k], strict=True):
                row[name] = x
            at += k
        out += rows
    return out


def _drifted(b: TestBlock, drifted: set[str]) -> list[bool]:
    """Per test of ``b``: its feature drifted and its effect reaches half its threshold."""
    if not drifted:  # most windows
        return [False] * len(b.feature)
    rows = zip(b.feature, b.effect, b.threshold, strict=True)
    return [f in drifted and e >= 0.5 * t for f, e, t in rows]


def round6(values: list[float]) -> list[float]:
    """``[round(v, 6) for v in values]``, vectorised.

    ``round`` gives the double nearest to ``k / 10**6``, ``k`` the exact value times
    ``10**6`` rounded half-even; numpy's ``rint(v * 1e6) / 1e6`` gives the same unless
    the product's rounding moved it across a half-integer, so values within a wide
    band of one (and non-finite or huge ones) take ``round`` itself.
    """
    if not values:
        return []
    a = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        v = a * 1e6
        out: list[float] = (np.rint(v) / 1e6).tolist()
        risky = ~(np.abs(v - np.floor(v) - 0.5) > 1e-9 * np.maximum(1.0, np.abs(v)))
        risky |= ~(np.abs(v) < 2.0**52)
    for i in np.flatnonzero(risky).tolist():
        out[i] = round(values[i], 6)
    return out
