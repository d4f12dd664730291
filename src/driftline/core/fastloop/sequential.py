"""Where the sequential detectors run: a stream's stacked detector banks, event by event.

Every feature and output of a reference has a calibrated bank of one-sided CUSUMs
(:mod:`driftline.core.detectors.plans`); a stream runs them all as one
:class:`~driftline.core.detectors.bank.CusumBank`. :class:`BankRun` reads a segment's
columns into the banks' channels once (one matrix: standardised numeric values and
their squares, low-confidence indicators, category indicators), then the window loop
(:mod:`driftline.core.fastloop.process`) feeds it chunk by chunk, so the bank's state is
exact at every window boundary; the transitions go to the episodes
(:func:`driftline.core.fastloop.episodes.on_transitions`). The kernel gives the same
transitions and state whatever the chunks.
"""

from __future__ import annotations

import numpy as np

from driftline.core.detectors.bank import Transition
from driftline.core.fastloop.plan import Plan, SegmentArrays
from driftline.core.fastloop.state import ModelState

__all__ = ["BankRun"]


class BankRun:
    """A segment's events as the stream's bank channels, fed chunk by chunk."""

    def __init__(self, st: ModelState, plan: Plan, data: SegmentArrays) -> None:
        self.st = st
        self.v: np.ndarray | None = None
        if st.bank is not None:
            # The state was read against the same reference (same rows); share its layout.
            st.bank.layout = plan.bank_layout
            self.v = plan.bank_layout.channels(
                data.x[plan.bank_x_rows], data.codes[plan.bank_code_rows]
            )

    def update(self, a: int, b: int) -> list[Transition]:
        """Feed events ``a:b`` of the segment; the transitions (positions from ``a``)."""
        bank = self.st.bank
        if self.v is None or bank is None or b <= a:
            return []
        return bank.update_many(self.v[:, a:b])
