"""Output monitoring: what the model answers, window by window.

The predicted class mix (chi-square and PSI against the reference's, plus the share
of the most frequent class), the confidence (KS and PSI on its sketch, plus the rate
of low-confidence answers) and a regression's predicted value (KS and PSI).
"""

from __future__ import annotations

from driftline.core.fastloop.state import ModelState
from driftline.core.fastloop.window_tests import WindowStats, WindowTest
from driftline.core.reference import ReferenceProfile
from driftline.core.sketches import CategoricalSketchBank
from driftline.core.stats import rate_excess_p_value

__all__ = ["output_tests"]


def output_tests(
    st: ModelState, ref: ReferenceProfile, stats: WindowStats, classes: CategoricalSketchBank
) -> list[WindowTest]:
    """The output-drift tests of a closing window (outputs with enough events)."""
    plan = stats.plan
    pol = ref.policy
    out = ref.outputs
    least = pol.min_window_events
    tests: list[WindowTest] = []
    r, cn = plan.class_row, stats.cn
    if _watched(st.classes, out.classes, r, cn, least):
        if t := stats.categorical_test("__class__", r):
            tests.append(t)
        share = int(classes.counts[r].max()) / cn[r]
        p = rate_excess_p_value(share, out.top_class_share, cn[r])
        excess = share - out.top_class_share
        tests.append(
            WindowTest("__top_class_share__", "share_excess", p, excess, pol.quality_margin * 2, {})
        )
    c, n = plan.conf_col, stats.n
    if _watched(st.confidence, out.confidence, c, n, least):
        if t := stats.numeric_test("__confidence__", c):
            tests.append(t)
        rate = st.low_confidence / n[c]
        p = rate_excess_p_value(rate, out.low_confidence_rate, n[c])
        excess = rate - out.low_confidence_rate
        tests.append(
            WindowTest("__low_confidence__", "rate_excess", p, excess, pol.quality_margin, {})
        )
    pc = plan.pred_col
    if _watched(st.prediction, out.prediction, pc, n, least) and (
        t := stats.numeric_test("__prediction__", pc)
    ):
        tests.append(t)
    return tests


def _watched(sketch: object, profile: object, col: int, n: list[int], least: int) -> bool:
    """The output is watched (sketch and profile), and its window has enough events."""
    return sketch is not None and profile is not None and col >= 0 and n[col] >= least
