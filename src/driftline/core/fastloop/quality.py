"""Data quality as a first-class alert kind: excess rates over the reference's own.

Missing values above the reference's rate, values outside the reference's range,
infinities, unseen categories, type mismatches and unknown features; each drifts when
it exceeds its margin (``quality_margin``, 5 points by default).
"""

from __future__ import annotations

from driftline.core.fastloop.plan import Plan
from driftline.core.fastloop.state import ModelState
from driftline.core.fastloop.window_tests import WindowTest
from driftline.core.fastloop.windows import OpenWindow
from driftline.core.reference import ReferenceProfile

__all__ = ["quality_tests"]


def quality_tests(
    st: ModelState, ref: ReferenceProfile, plan: Plan, window: OpenWindow
) -> list[WindowTest]:
    """Data-quality signals of a closing window: excess rates over the reference's."""
    pol = ref.policy
    total = st.window.count
    tests: list[WindowTest] = []
    margin = pol.quality_margin
    mism = dict(zip(plan.all_names, window.mism.tolist(), strict=True))
    num = window.num
    missing, n = num.missing.tolist(), num.n.tolist()
    below, above, nonfinite = num.below.tolist(), num.above.tolist(), num.nonfinite.tolist()
    for i, name in enumerate(plan.num_names):
        if name not in st.num:
            continue
        prof = plan.nprofs[i]
        rate = (missing[i] - mism.get(name, 0)) / total
        tests.append(
            WindowTest(name, "missing_rate_excess", 0.0, rate - prof.missing_rate, margin, {})
        )
        if n[i]:
            oor = (below[i] + above[i]) / n[i]
            tests.append(WindowTest(name, "out_of_range_rate", 0.0, oor, margin, {}))
        if nonfinite[i]:
            tests.append(WindowTest(name, "nonfinite_rate", 0.0, nonfinite[i] / total, margin, {}))
    cat = window.cat
    cmissing = cat.missing.tolist()
    sizes = plan.cat_bins.sizes
    for r, name in enumerate(plan.cat_names):
        if name not in st.cat:
            continue
        cprof = plan.cprofs[r]
        rate = cmissing[r] / total
        tests.append(
            WindowTest(name, "missing_rate_excess", 0.0, rate - cprof.missing_rate, margin, {})
        )
        counts = cat.counts[r, : sizes[r] + 1]
        cn = int(counts.sum())
        if cn and cprof.n:
            other = int(counts[-1]) / cn - int(cprof.counts[-1]) / cprof.n
            tests.append(WindowTest(name, "unseen_category_rate", 0.0, other, margin, {}))
    for name, count in mism.items():
        if count:
            tests.append(WindowTest(name, "type_mismatch_rate", 0.0, count / total, margin, {}))
    if st.unknown_features:
        tests.append(
            WindowTest(
                "__unknown_features__",
                "unknown_feature_rate",
                0.0,
                st.unknown_features / total,
                margin,
                {},
            )
        )
    return tests
