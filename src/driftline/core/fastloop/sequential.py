"""Where the sequential detectors run: every event of a segment, before the windows.

A stream's sequential detectors watch event by event, independently of windows:
Page-Hinkley on every numeric feature (standardised against the reference and
clipped, so one threshold fits every feature), all of them at once through
:meth:`~driftline.core.detectors.PageHinkley.update_bank`, and ADWIN on the mean
confidence of consecutive blocks of ``adwin_block`` events. :func:`run_detectors`
feeds them a whole segment and returns their detections in event order; the window
loop (:mod:`driftline.core.fastloop.process`) then meets each detection in the chunk
that holds its event and hands it to the episodes (:func:`~driftline.core.fastloop.
episodes.on_detections`). A new detector is one more function here that returns
:class:`Detection` objects.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from driftline.core.detectors import PageHinkley
from driftline.core.fastloop.plan import Plan, SegmentArrays
from driftline.core.fastloop.state import ModelState
from driftline.core.reference import ReferenceProfile

__all__ = ["Detection", "Detections", "run_detectors"]


@dataclass(frozen=True, slots=True)
class Detection:
    """A sequential detector crossed its threshold at event ``at`` of the segment."""

    at: int
    #: The alert kind the detection opens (``input_drift``, ``output_drift``).
    kind: str
    feature: str
    detector: str
    #: The crossing statistic and threshold, when the detector reports them
    #: (the multivariate detector: nats), and the features it names
    #: (``(feature, score, share, statistic)``, largest first).
    statistic: float | None = None
    threshold: float | None = None
    top: tuple[tuple[str, float, float, str], ...] = ()


class Detections:
    """A segment's detections, in event order, looked up by chunk of events."""

    def __init__(self, found: list[Detection]) -> None:
        self.found = sorted(found, key=lambda d: (d.at, d.feature))
        self._at = [d.at for d in self.found]

    def __bool__(self) -> bool:
        return bool(self.found)

    def between(self, a: int, b: int) -> list[Detection]:
        """The detections at events ``a:b``."""
        return self.found[bisect.bisect_left(self._at, a) : bisect.bisect_left(self._at, b)]


def run_detectors(
    st: ModelState, ref: ReferenceProfile, plan: Plan, data: SegmentArrays
) -> Detections:
    """Feed the segment's events to ``st``'s sequential detectors; their detections."""
    return Detections([*_page_hinkley(st, plan, data), *_adwin(st, ref, plan, data)])


def _page_hinkley(st: ModelState, plan: Plan, data: SegmentArrays) -> list[Detection]:
    """Page-Hinkley on every numeric feature that varies (missing values skipped)."""
    rows = plan.ph_rows
    if not rows:
        return []
    x = data.x[rows]
    with np.errstate(over="ignore", invalid="ignore"):
        z = (x - plan.ph_mean[:, None]) / plan.ph_std[:, None]
        np.clip(z, -plan.ph_clip, plan.ph_clip, out=z)
    for j, finite in enumerate(data.finite[rows].tolist()):
        if not finite:  # an infinite value is no value here (clipping would keep it)
            z[j, ~np.isfinite(x[j])] = np.nan
    names = [plan.num_names[i] for i in rows]
    hits = PageHinkley.update_bank([st.ph[name] for name in names], z)
    return [
        Detection(at, "input_drift", name, "page_hinkley")
        for name, row in zip(names, hits, strict=True)
        for at in row.tolist()
    ]


def _adwin(
    st: ModelState, ref: ReferenceProfile, plan: Plan, data: SegmentArrays
) -> list[Detection]:
    """ADWIN on the mean confidence of consecutive blocks of ``adwin_block`` events."""
    c = plan.conf_col
    if c < 0 or st.confidence is None or st.adwin is None:
        return []
    conf = data.x[c]
    if data.finite[c]:
        pos = np.arange(conf.size)
    else:
        pos = np.flatnonzero(np.isfinite(conf))
        conf = conf[pos]
    block = ref.policy.adwin_block
    means: list[float] = []
    ends: list[int] = []
    # Each block's mean is summed over the same array whatever the batch boundaries,
    # so a replay in other batches gives bit-identical ADWIN state.
    i = 0
    while i < conf.size:
        take = min(block - len(st.block), conf.size - i)
        st.block.extend(conf[i : i + take].tolist())
        i += take
        if len(st.block) == block:
            means.append(float(np.sum(np.asarray(st.block)) / block))
            ends.append(int(pos[i - 1]))
            st.block = []
    if not means:
        return []
    hits = st.adwin.update_many(np.asarray(means))
    return [Detection(ends[h], "output_drift", "__confidence__", "adwin") for h in hits.tolist()]
