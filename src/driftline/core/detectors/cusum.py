"""A bank of one-sided CUSUMs over channels, in exact fixed point, with episodes.

The kernel of the calibrated sequential detectors (``bench/DETECTION.md``): each *row*
is ``S_t = max(0, S_{t-1} + a v_t + b)`` on one channel ``v`` of the input; rows are
grouped (a group is one thing that can drift: a feature's location, its scale, a
category, a multivariate channel). A group is at reference or *away* (+1 / -1): a
detection row crossing its threshold sends its group away (``fire`` when no group was
away, else ``update``); while away, the group's detection rows are idle and its
return row in the direction it went runs, and crossing it brings the group back
(``return``, or ``resolve`` for the last group away).

Exact and batch-invariant: increments are rounded to fixed point (:data:`SCALE` units
per nat) and over a batch ``S_t = C_t - min(0, min_{j<=t} C_j)`` on integer cumulative
sums (one ``cumsum`` and one ``minimum.accumulate`` per row); the batch is cut at each
crossing, handled, and resumed. Any batch boundaries give the same transitions and the
same integer state. A missing channel value (NaN) leaves the rows on it unchanged.

Thresholds are calibrated elsewhere (e.g. :mod:`driftline.core.multivariate.arl`);
``inf`` disables a row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["DETECT", "RETURN", "SCALE", "CusumBank", "Crossing"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

#: Fixed-point scale of the statistics (2**24 units per nat).
SCALE = 1 << 24
#: Threshold of a disabled row (never crossed).
NEVER = 1 << 62
DETECT, RETURN = 0, 1


@dataclass(frozen=True)
class Crossing:
    """A transition at one event: ``fire``, ``update``, ``return`` or ``resolve``.

    ``position`` is the event's index in the batch given to :meth:`CusumBank.update`;
    ``statistic`` and ``threshold`` are the crossing row's, in nats.
    """

    position: int
    kind: str
    group: int
    direction: int
    statistic: float
    threshold: float


class CusumBank:
    """Rows of CUSUMs on the channels of a stream, grouped into things that drift.

    Parameters
    ----------
    channel, a, b
        Per row: the channel it reads and its increment ``a * v + b`` (nats).
    group, direction, role
        Per row: its group, the direction it watches (+1 / -1) and whether it detects
        (:data:`DETECT`) or returns (:data:`RETURN`).
    threshold
        Per row, in nats (``inf``: disabled).
    """

    def __init__(
        self,
        channel: Sequence[int],
        a: Sequence[float],
        b: Sequence[float],
        group: Sequence[int],
        direction: Sequence[int],
        role: Sequence[int],
        threshold: Sequence[float],
    ) -> None:
        self._chan = np.asarray(channel, dtype=np.intp)
        self._a = np.asarray(a, dtype=np.float64)
        self._b = np.asarray(b, dtype=np.float64)
        self._group = np.asarray(group, dtype=np.intp)
        self._dir = np.asarray(direction, dtype=np.int64)
        self._role = np.asarray(role, dtype=np.int64)
        self._h = np.asarray(
            [math.ceil(t * SCALE) if math.isfinite(t) else NEVER for t in threshold],
            dtype=np.int64,
        )
        self._hf = self._h.astype(np.float64)
        self._detect_rows = np.flatnonzero(self._role == DETECT)
        groups = int(self._group.max()) + 1 if self._group.size else 0
        #: The channel of each group (for its effect size).
        self._group_chan = np.zeros(groups, dtype=np.intp)
        for r in range(self._group.size - 1, -1, -1):
            self._group_chan[self._group[r]] = self._chan[r]
        self.s = np.zeros(self._chan.size, dtype=np.int64)
        #: Per group: 0 (at reference) or the direction it went away in.
        self.away = np.zeros(groups, dtype=np.int64)
        #: Per group while away: events and fixed-point sum of its channel.
        self.away_n = np.zeros(groups, dtype=np.int64)
        self.away_sum = np.zeros(groups, dtype=np.int64)
        self.n = 0
        self.episodes = 0
        #: Highest level (statistic / threshold of a detection row) in the last update.
        self.peak = 0.0

    # ---------------------------------------------------------------- properties
    @property
    def drifting(self) -> bool:
        """Whether some group is away."""
        return bool(self.away.any())

    @property
    def level(self) -> float:
        """Highest statistic / threshold among the detection rows now."""
        det = self._role == DETECT
        return float(np.max(self.s[det] / self._hf[det], initial=0.0))

    def effects(self) -> dict[int, float]:
        """Per away group: the mean of its channel since it went away."""
        out: dict[int, float] = {}
        for g in np.flatnonzero(self.away).tolist():
            if self.away_n[g]:
                out[g] = float(self.away_sum[g]) / SCALE / float(self.away_n[g])
        return out

    # ---------------------------------------------------------------- updates
    def update(self, v: F64) -> list[Crossing]:
        """Feed channels ``v`` (``(channels, n)``) in event order; the transitions."""
        m = v.shape[1]
        out: list[Crossing] = []
        self.peak = 0.0
        finite = bool(np.isfinite(v).all())
        pos = 0
        while pos < m:
            act = self._active()
            y = v[self._chan[act], pos:]
            y *= self._a[act, None]  # y is a copy (fancy indexing)
            y += self._b[act, None]
            y *= SCALE
            np.rint(y, out=y)
            if not finite:
                y[np.isnan(y)] = 0.0  # a missing value leaves the statistic unchanged
            c = np.cumsum(y.astype(np.int64), axis=1)
            c += self.s[act, None]
            low = np.minimum.accumulate(c, axis=1)
            np.minimum(low, 0, out=low)
            c -= low  # S_t = C_t - min(0, min_{j<=t} C_j): the CUSUM recursion, exactly
            top = c.max(axis=1)
            h = self._h[act]
            if not (top >= h).any():
                self._note_peak(act, top)
                self._track(v, pos, m)
                self.s[act] = c[:, -1]
                break
            hit = c >= h[:, None]
            t = int(np.flatnonzero(hit.any(axis=0))[0])
            self._note_peak(act, c[:, : t + 1].max(axis=1))
            self._track(v, pos, pos + t + 1)
            self.s[act] = c[:, t]
            for i in np.flatnonzero(hit[:, t]).tolist():
                self._transition(int(act[i]), pos + t, float(c[i, t]) / SCALE, out)
            pos += t + 1
        self.n += m
        return out

    def _active(self) -> NDArray[np.intp]:
        """Rows that run now: detection rows of groups at reference, return rows of groups
        away in their direction."""
        if not self.away.any():
            return self._detect_rows
        away = self.away[self._group]
        return np.flatnonzero(np.where(self._role == DETECT, away == 0, away == self._dir))

    def _note_peak(self, act: NDArray[np.intp], top: I64) -> None:
        det = self._role[act] == DETECT
        if det.any():
            self.peak = max(self.peak, float((top[det] / self._hf[act[det]]).max()))

    def _track(self, v: F64, lo: int, hi: int) -> None:
        for g in np.flatnonzero(self.away).tolist():
            seg = v[self._group_chan[g], lo:hi]
            if not np.isfinite(seg).all():
                seg = seg[np.isfinite(seg)]
            self.away_n[g] += seg.size
            self.away_sum[g] += int(np.rint(seg * SCALE).astype(np.int64).sum())

    def _transition(self, row: int, at: int, statistic: float, out: list[Crossing]) -> None:
        g = int(self._group[row])
        same = self._group == g
        threshold = float(self._h[row]) / SCALE
        was = self.drifting
        if self._role[row] == DETECT:
            if self.away[g]:
                return  # another row of the group crossed at the same event
            self.away[g] = self._dir[row]
            self.away_n[g] = self.away_sum[g] = 0
            self.s[same & (self._role == RETURN)] = 0
            if not was:
                self.episodes += 1
            kind = "update" if was else "fire"
            out.append(Crossing(at, kind, g, int(self._dir[row]), statistic, threshold))
        else:
            direction = int(self.away[g])
            self.away[g] = 0
            self.s[same] = 0  # the group starts afresh against the reference
            kind = "resolve" if not self.drifting else "return"
            out.append(Crossing(at, kind, g, direction, statistic, threshold))

    # ---------------------------------------------------------------- state
    def to_fields(self) -> dict[str, Any]:
        """The state as plain JSON fields (integers only); the rows are not stored."""
        return {
            "s": self.s.tolist(),
            "away": self.away.tolist(),
            "away_n": self.away_n.tolist(),
            "away_sum": self.away_sum.tolist(),
            "n": self.n,
            "episodes": self.episodes,
        }

    def load_fields(self, f: Mapping[str, Any]) -> None:
        """Restore :meth:`to_fields` (raises ValueError on a malformed or foreign state)."""
        s = _ints(f["s"], self.s.size)
        away = _ints(f["away"], self.away.size)
        away_n = _ints(f["away_n"], self.away.size)
        away_sum = _ints(f["away_sum"], self.away.size)
        n, episodes = f["n"], f["episodes"]
        if type(n) is not int or type(episodes) is not int or not np.all(np.abs(away) <= 1):
            raise ValueError("malformed counters")
        self.s, self.away, self.away_n, self.away_sum = s, away, away_n, away_sum
        self.n, self.episodes = n, episodes

    def same_state(self, other: CusumBank) -> bool:
        """Exactly the same statistics, groups and counters."""
        return (
            np.array_equal(self.s, other.s)
            and np.array_equal(self.away, other.away)
            and np.array_equal(self.away_n, other.away_n)
            and np.array_equal(self.away_sum, other.away_sum)
            and self.n == other.n
            and self.episodes == other.episodes
        )


def _ints(v: Any, size: int) -> I64:
    if not isinstance(v, list) or len(v) != size or not all(type(x) is int for x in v):
        raise ValueError("not a list of integers of the right size")
    return np.asarray(v, dtype=np.int64)
