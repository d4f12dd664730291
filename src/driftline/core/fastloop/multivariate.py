"""The multivariate detector in the fast loop (issue 15): one stream's joint watch.

A reference with a multivariate model (:mod:`driftline.core.multivariate`) gives each
stream a :class:`~driftline.core.multivariate.MultivariateDetector` in its
``ModelState`` (``st.mv``). Per batch and stream:

1. :class:`MultivariateRun` scores the segment's events from the arrays the window
   already has (numeric bin indices: one table lookup; category codes; the layout is
   the plan's :class:`~driftline.core.fastloop.plan.MultivariatePlan`) and computes
   their channels once (exact per event, so any split gives the same values);
2. the window loop hands it each chunk of events that falls in the open window
   (:meth:`MultivariateRun.absorb`): the CUSUM rows run, the window's component sketch
   grows, and its transitions (fire, update, return, resolve; a fire carries the
   features whose joint behaviour moved most) go to the episodes with the banks'
   (:func:`driftline.core.fastloop.episodes.on_transitions`), as the unit
   ``__multivariate__`` of the stream's ``input_drift`` episode;
3. at the window's close, :func:`window_row` gives the window's highest CUSUM level
   (statistic over threshold: 1 is the threshold) as one more test row of the window
   summary (feature ``__multivariate__``), which history, the report and the status
   page show over time.

One episode per change: the detector is one more detector of the stream's
``input_drift`` episode. It opens the episode when it is the first to fire (a
correlation change no marginal shows; the alert's detector is ``multivariate``), adds
nothing to an open one (a mean shift the univariate tests caught first;
docs/multivariate.md has the measurements), and the episode stays open while it is
away.
"""

from __future__ import annotations

import math

from driftline.core.fastloop.plan import Plan, SegmentArrays
from driftline.core.fastloop.state import ModelState
from driftline.core.fastloop.window_tests import WindowTest
from driftline.core.multivariate import Attribution, Transition
from driftline.core.reference import ReferenceProfile

__all__ = ["FEATURE", "MultivariateRun", "holding", "start", "top_features", "window_row"]

#: The window summary's test row (the metrics' feature label, the episode's unit) of
#: the detector.
FEATURE = "__multivariate__"
#: How many features an alert names.
TOP = 10


class MultivariateRun:
    """One stream's segment of a batch, fed to its detector window chunk by chunk."""

    def __init__(self, st: ModelState, ref: ReferenceProfile, plan: Plan, data: SegmentArrays):
        model, joint = ref.multivariate, plan.joint
        assert model is not None and joint is not None and st.mv is not None
        self.det = st.mv
        self.channels = model.channels(joint.scores(data))

    def absorb(self, a: int, b: int) -> list[Transition]:
        """Events ``a:b`` of the segment; the detector's transitions (positions from ``a``)."""
        self.det.update_channels(self.channels.slice(a, b))
        return self.det.transitions


def top_features(att: Attribution | None) -> tuple[tuple[str, float, float, str], ...]:
    """``(feature, score, share, statistic)`` of the features that moved most."""
    if att is None:
        return ()
    return tuple((f, score, share, "joint_change") for f, score, share in att.features[:TOP])


def start(
    st: ModelState, ref: ReferenceProfile, plan: Plan, data: SegmentArrays
) -> MultivariateRun | None:
    """The segment's run, or None when the reference has no multivariate model."""
    if ref.multivariate is None or st.mv is None:
        return None
    return MultivariateRun(st, ref, plan, data)


def holding(st: ModelState) -> bool:
    """Whether the detector is away from the reference (an open episode stays open)."""
    return st.mv is not None and st.mv.drifting


def window_row(st: ModelState) -> WindowTest | None:
    """Close the detector's window: its row in the window summary (None without one).

    ``effect`` is the highest CUSUM level of the window (statistic over threshold of
    the detection rows, so the threshold is 1); ``extra`` holds the Frobenius distance
    of the window's whitened covariance from the reference's identity.
    """
    det = st.mv
    if det is None:
        return None
    sketch, level = det.close_window()
    return WindowTest(
        FEATURE,
        "cusum_level",
        math.nan,
        level if math.isfinite(level) else 0.0,
        1.0,
        {"distance": sketch.distance()},
    )
