"""Data quality as a first-class alert kind: excess rates over the reference's own.

Missing values above the reference's rate, values outside the reference's range,
infinities, unseen categories, type mismatches and unknown features; each drifts when
it exceeds its margin (``quality_margin``, 5 points by default).
"""

from __future__ import annotations

from collections.abc import Sequence

from driftline.core.fastloop.plan import Plan
from driftline.core.fastloop.state import UNKNOWN_NAMES_KEPT, ModelState
from driftline.core.fastloop.window_tests import TestBlock
from driftline.core.fastloop.windows import OpenWindow
from driftline.core.reference import ReferenceProfile

__all__ = ["quality_tests"]


def quality_tests(
    st: ModelState, ref: ReferenceProfile, plan: Plan, window: OpenWindow
) -> TestBlock:
    """Data-quality signals of a closing window: excess rates over the reference's.

    Every row's p-value is 0 and its threshold the margin.
    """
    pol = ref.policy
    total = st.window.count
    feature: list[str] = []
    statistic: list[str] = []
    effect: list[float] = []

    def add(name: str, stat: str, value: float) -> None:
        feature.append(name)
        statistic.append(stat)
        effect.append(value)

    mism = dict(zip(plan.all_names, window.mism.tolist(), strict=True))
    num = window.num
    missing, n = num.missing.tolist(), num.n.tolist()
    below, above, nonfinite = num.below.tolist(), num.above.tolist(), num.nonfinite.tolist()
    for i, name in enumerate(plan.num_names):
        if name not in st.num:
            continue
        prof = plan.nprofs[i]
        rate = (missing[i] - mism.get(name, 0)) / total
        add(name, "missing_rate_excess", rate - prof.missing_rate)
        if n[i]:
            add(name, "out_of_range_rate", (below[i] + above[i]) / n[i])
        if nonfinite[i]:
            add(name, "nonfinite_rate", nonfinite[i] / total)
    cat = window.cat
    cmissing = cat.missing.tolist()
    sizes = plan.cat_bins.sizes
    for r, name in enumerate(plan.cat_names):
        if name not in st.cat:
            continue
        cprof = plan.cprofs[r]
        rate = cmissing[r] / total
        add(name, "missing_rate_excess", rate - cprof.missing_rate)
        counts = cat.counts[r, : sizes[r] + 1]
        cn = int(counts.sum())
        if cn and cprof.n:
            other = int(counts[-1]) / cn - int(cprof.counts[-1]) / cprof.n
            add(name, "unseen_category_rate", other)
    for name, count in mism.items():
        if count:
            add(name, "type_mismatch_rate", count / total)
    if st.unknown_features:
        add("__unknown_features__", "unknown_feature_rate", st.unknown_features / total)
    k = len(feature)
    return TestBlock(feature, statistic, [0.0] * k, effect, [pol.quality_margin] * k, {})


def note_unknown_names(st: ModelState, names: Sequence[str]) -> None:
    """Keep the names of unknown features a stream sent (``names``: a batch's, first
    seen first), at most :data:`UNKNOWN_NAMES_KEPT`, and whether there were more:
    the data-quality signal on unknown features counts them, these say which."""
    kept = st.unknown_names
    if len(kept) >= UNKNOWN_NAMES_KEPT:
        st.unknown_names_more = st.unknown_names_more or any(n not in kept for n in names)
        return
    for n in names:
        if n in kept:
            continue
        if len(kept) >= UNKNOWN_NAMES_KEPT:
            st.unknown_names_more = True
            return
        kept.append(n)
