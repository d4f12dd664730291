"""The open window of a stream: its sketches while a batch runs.

During a batch the open window lives in sketch banks (:class:`OpenWindow`): the
ModelState's sketches are read into them when the batch starts and written back when
it ends, so a window's events are counted by one vectorised update per chunk, and
closing a window zeroes the banks in place. Which events join which window is event
time's business (:mod:`driftline.core.fastloop.clock`).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

from driftline.core.fastloop.plan import Plan, SegmentArrays
from driftline.core.fastloop.state import ModelState
from driftline.core.sketches import CategoricalSketchBank, NumericSketchBank

__all__ = ["OpenWindow"]

S = TypeVar("S")


class OpenWindow:
    """The open window's sketches as banks (numeric and categorical columns of the
    plan) and its type-mismatch counts per feature."""

    def __init__(self, st: ModelState, plan: Plan) -> None:
        """Read ``st``'s window sketches and counts into banks on ``plan``'s columns."""
        self.plan = plan
        nums = [st.num.get(k) for k in plan.num_names]
        if plan.conf_col >= 0:
            nums.append(st.confidence)
        if plan.pred_col >= 0:
            nums.append(st.prediction)
        self.num = NumericSketchBank.of(plan.num_bins, nums)
        cats = [st.cat.get(k) for k in plan.cat_names]
        if plan.class_row >= 0:
            cats.append(st.classes)
        self.cat = CategoricalSketchBank.of(plan.cat_bins, cats)
        tm = st.type_mismatch
        self.mism = np.array([tm.get(k, 0) for k in plan.all_names], dtype=np.int64)

    def store(self, st: ModelState) -> None:
        """Write the window back into ``st``'s sketches and type-mismatch counts."""
        plan = self.plan
        nums = self.num.sketches()
        _put(st.num, plan.num_names, nums)
        if plan.conf_col >= 0 and st.confidence is not None:
            st.confidence = nums[plan.conf_col]
        if plan.pred_col >= 0 and st.prediction is not None:
            st.prediction = nums[plan.pred_col]
        cats = self.cat.sketches()
        _put(st.cat, plan.cat_names, cats)
        if plan.class_row >= 0 and st.classes is not None:
            st.classes = cats[plan.class_row]
        st.type_mismatch = dict(zip(plan.all_names, self.mism.tolist(), strict=True))

    def absorb(self, data: SegmentArrays, a: int, b: int) -> None:
        """Count events ``a:b`` into every sketch and type-mismatch counter."""
        plan = self.plan
        if plan.nc:
            self.num.update(data.x[:, a:b], data.located[:, a:b])
        for where, mm in data.mism:
            self.mism[where] += int(np.count_nonzero(mm[a:b]))
        if plan.kc:
            self.cat.update(data.codes[:, a:b])

    def reset(self) -> None:
        """The window closed: start the next one empty."""
        self.num.reset()
        self.cat.reset()
        self.mism.fill(0)


def _put(into: dict[str, S], names: list[str], sketches: list[S]) -> None:
    """The window's sketch of each watched feature (a feature ``into`` lacks stays out)."""
    for name, sketch in zip(names, sketches, strict=False):
        if name in into:
            into[name] = sketch
