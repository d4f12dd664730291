"""Calibrated banks of one-sided CUSUMs: the fast loop's drift detectors.

Every detector is a one-sided CUSUM of a log-likelihood ratio (LLR),
``S_t = max(0, S_{t-1} + a v_t + b)``, on one *channel* ``v`` of a watched quantity
(a *unit*: a feature or an output):

* numeric unit: ``z = clip((x - mean_ref) / sd_ref, +-clip)`` (channel ``mean``) and
  ``z**2`` (channel ``spread``); each row is the Gaussian LLR of the channel's mean
  moving by ``+-delta`` of its own reference sd (``shifts``, ``scale_shifts``);
* categorical unit: the indicator of each category with a reference share of at least
  ``min_category_share`` (the rest pooled); rows are the exact Bernoulli LLR of the
  share moving by ``+-delta`` sd of the indicator (``category_shifts``);
* rate unit: the indicator ``x < cut`` (e.g. a low-confidence answer), rises only.

The rows on one channel form a *group* (one thing that can drift). A group is at
reference or *away* (+1 / -1). A detection row crossing its threshold sends its group
away; the unit's episode opens with its first group away (``fire``), later groups give
``update``. While away, the group's detection rows are idle and a **return row** runs:
the LLR of the reference against the boundary drift ``resolve_at x min(shifts)`` in the
direction the group went. A persistent drift keeps it at zero; it crosses only once the
data is back within about half the boundary (``return``; the unit's last group back
gives ``resolve``). Detection accumulates above the smallest shift and return below half
of it, so the two zones never touch: no flapping. While a group is away its channel's
mean since it went away is its *effect* (in reference sd of the channel).

Thresholds come from :mod:`driftline.core.detectors.arl` at reference build
(:func:`compile_numeric`, :func:`compile_categorical`, :func:`compile_rate`); a
:class:`FeaturePlan` is one unit's rows and thresholds, stored with the reference.

Exact and batch-invariant: increments are rounded to fixed point (:data:`SCALE` units
per nat) and over a batch ``S_t = C_t - min(0, min_{j<=t} C_j)`` on integer-valued
cumulative sums (one ``cumsum`` and one ``minimum.accumulate`` per row, every unit's rows
stacked in one matrix); the batch is cut at each crossing, handled and resumed. A pass
where no row can cross (bounds from blocks of 20 events) walks only the few blocks that
may cross or hold the peak event by event (``CusumBank._quiet``), with the same result. Any
batch boundaries give the same transitions and the same integer state, which is plain
JSON (never pickle). :class:`CusumBank` runs the stacked rows of a stream (what the
monitor runs); :class:`FeatureBank` is one unit with river's surface (``update``,
``update_many``, ``drift_detected``) and a versioned record, on the same kernel.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> plan = compile_numeric("x", rng.normal(0, 1, 5000), n_ref=5000, target_arl=1e4, seed=0)
>>> det = FeatureBank(plan)
>>> det.update_many(rng.normal(0, 1, 3000)).tolist()
[]
>>> hits = det.update_many(rng.normal(1.0, 1, 3000))
>>> len(hits), det.drifting, sorted(det.effects())
(1, True, ['mean', 'spread'])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray

from driftline.core.detectors._base import DetectorBase
from driftline.core.detectors._numeric import _F64, _I64
from driftline.core.detectors.plans import (
    DETECT,
    RETURN,
    BankSettings,
    FeaturePlan,
    Group,
    compile_categorical,
    compile_numeric,
    compile_rate,
    quantile_points,
)
from driftline.errors import StateCorrupt

__all__ = [
    "DETECT",
    "RETURN",
    "SCALE",
    "BankLayout",
    "BankSettings",
    "CusumBank",
    "FeatureBank",
    "FeaturePlan",
    "Group",
    "Transition",
    "compile_categorical",
    "compile_numeric",
    "compile_rate",
    "quantile_points",
    "unit_channels",
    "use_compiled_pass",
]

#: Fixed-point scale of the statistics: 2**24 units per nat.
SCALE = 1 << 24
#: Threshold of a disabled row (never crossed).
NEVER = 1 << 62
#: Largest increment of a row on given (unbounded) channels, in nats per event.
MAX_STEP = 1024.0
#: Events per block of :meth:`CusumBank._quiet`, and the least rows x events it runs on
#: (below, the running minimum of every row costs less than its set-up).
_BLOCK = 20
_QUIET_MIN = 4096
#: Statistics below this keep the cumulative sums of a pass exact in float64.
_QUIET_MAX_S = 1 << 51

TransitionKind = Literal["fire", "update", "return", "resolve"]

#: The compiled pass of :mod:`driftline.core.detectors.bank_compiled`, when the process
#: turned it on (:func:`use_compiled_pass`); None: the numpy pass (the oracle).
_compiled_pass: Any = None


def use_compiled_pass(on: bool) -> bool:
    """Run every bank of this process with the compiled pass (numba) or with numpy.

    The two give the same results bit for bit; the compiled one is about three times
    faster. Returns whether the compiled pass is on (False when asked without numba).
    The monitor sets it from its ``compiled_core`` setting at start-up.
    """
    global _compiled_pass
    if not on:
        _compiled_pass = None
        return False
    from driftline.core.detectors import bank_compiled

    _compiled_pass = bank_compiled.load(float(SCALE))
    return _compiled_pass is not None


# ------------------------------------------------------------------------- the kernel


@dataclass(frozen=True, slots=True)
class Transition:
    """Something that happened at one event of an update.

    ``kind``: ``fire`` (the unit's first group went away: its episode opens), ``update``
    (another group of a drifting unit went away), ``return`` (a group came back, others
    of the unit still away) or ``resolve`` (the unit's last group came back).
    ``measured`` is the returning group's ``(events, fixed-point channel sum)`` since it
    went away (``(0, 0)`` for fire and update); ``away`` ``(group, events, sum,
    direction)`` for every group of the bank away after the transition, so what an alert
    says about this moment does not depend on where the batch ended. ``evidence`` is,
    for each other group of the unit still at reference, ``(group, direction, level)``
    of its detection row nearest its threshold (level: statistic / threshold) at this
    event: how far the unit's other channels were from detecting too (what an alert
    reads a fresh detection by, :mod:`driftline.core.fastloop.episodes`).
    ``statistic`` and ``threshold`` are the crossing row's, in nats.
    """

    position: int
    kind: TransitionKind
    unit: int
    group: int
    direction: int
    #: The crossing row's shift (signed, in sd of its channel).
    shift: float
    measured: tuple[int, int]
    away: tuple[tuple[int, int, int, int], ...]
    statistic: float
    threshold: float
    evidence: tuple[tuple[int, int, float], ...] = ()


class BankLayout:
    """The rows of several units stacked in one matrix, and their channel transform.

    Immutable; built once per reference (:meth:`of`) and shared by the streams' banks.
    Channels are stacked as: every numeric unit's ``z``, then their ``z**2``, then every
    rate unit's indicator, then the categorical units' channels, unit by unit, then the
    channels of ``channels`` units (computed by their owner: :meth:`from_rows`).
    """

    def __init__(self, plans: Sequence[FeaturePlan]) -> None:
        self.plans = tuple(plans)
        self.names = [p.name for p in plans]
        num = [u for u, p in enumerate(plans) if p.kind == "numeric"]
        rate = [u for u, p in enumerate(plans) if p.kind == "rate"]
        cat = [u for u, p in enumerate(plans) if p.kind == "categorical"]
        #: Units that take a row of the float matrix (numeric, rate), and of the code
        #: matrix (categorical), in the order :meth:`channels` expects them.
        self.float_units = [u for u, p in enumerate(plans) if p.kind != "categorical"]
        self.code_units = cat
        fpos = {u: i for i, u in enumerate(self.float_units)}
        self._num_rows = np.asarray([fpos[u] for u in num], dtype=np.intp)
        self._num_mean = np.asarray([plans[u].mean for u in num], dtype=np.float64)[:, None]
        self._num_std = np.asarray([plans[u].std for u in num], dtype=np.float64)[:, None]
        self._num_clip = np.asarray([plans[u].clip for u in num], dtype=np.float64)[:, None]
        self._rate_rows = np.asarray([fpos[u] for u in rate], dtype=np.intp)
        self._rate_cut = np.asarray([plans[u].cut for u in rate], dtype=np.float64)[:, None]
        base: dict[int, int] = {}
        k = len(num)
        for j, u in enumerate(num):
            base[u] = j  # channel 0 -> j, channel 1 -> k + j
        nxt = 2 * k
        for u in rate:
            base[u] = nxt
            nxt += 1
        self._cat_channels: list[tuple[int, tuple[int, ...]]] = []
        for r, u in enumerate(cat):
            base[u] = nxt
            for codes in plans[u].channel_codes:
                self._cat_channels.append((r, codes))
                nxt += 1
        #: Units whose channels are given, not computed here (no bound on their values).
        self.given_units = [u for u, p in enumerate(plans) if p.kind == "channels"]
        for u in self.given_units:
            base[u] = nxt
            nxt += plans[u].n_channels
        self.n_channels = nxt

        def chan(u: int, c: int) -> int:
            if plans[u].kind == "numeric":
                return base[u] + c * k
            return base[u] + c

        chans: list[int] = []
        grp: list[int] = []
        dirs: list[int] = []
        roles: list[int] = []
        h: list[int] = []
        a: list[float] = []
        b: list[float] = []
        shifts: list[float] = []
        g_unit: list[int] = []
        g_chan: list[int] = []
        g_mean: list[float] = []
        g_sd: list[float] = []
        g_name: list[str] = []
        self.unit_groups: list[list[int]] = []
        for u, p in enumerate(plans):
            first = len(g_unit)
            self.unit_groups.append(list(range(first, first + len(p.groups))))
            for grp_ in p.groups:
                g_unit.append(u)
                g_chan.append(chan(u, grp_.channel))
                g_mean.append(grp_.mean)
                g_sd.append(grp_.sd)
                g_name.append(grp_.name)
            for r in range(p.n_rows):
                chans.append(chan(u, p.channel[r]))
                a.append(p.a[r])
                b.append(p.b[r])
                grp.append(first + p.group[r])
                dirs.append(p.direction[r])
                roles.append(p.role[r])
                shifts.append(p.shift[r])
                t = p.threshold[r]
                h.append(math.ceil(t * SCALE) if math.isfinite(t) else NEVER)
        self.row_chan = np.asarray(chans, dtype=np.intp)
        self.row_a = np.asarray(a, dtype=np.float64)
        self.row_b = np.asarray(b, dtype=np.float64)
        self.row_group = np.asarray(grp, dtype=np.intp)
        self.row_dir = np.asarray(dirs, dtype=np.int64)
        self.row_role = np.asarray(roles, dtype=np.int64)
        self.row_shift = tuple(shifts)
        self.row_h = np.asarray(h, dtype=np.int64)
        self.row_hf = self.row_h.astype(np.float64)
        self.detect_rows = np.flatnonzero(self.row_role == DETECT)
        self.group_unit = np.asarray(g_unit, dtype=np.intp)
        self.group_chan = np.asarray(g_chan, dtype=np.intp)
        self.group_mean = g_mean
        self.group_sd = g_sd
        self.group_name = g_name
        # Integer-valued float64 sums are exact below 2**53: cut long updates so that
        # a pass's cumulative sums stay there (channel values are bounded).
        vmax = np.ones(self.n_channels)
        for j in range(k):
            vmax[j] = self._num_clip[j, 0]
            vmax[k + j] = self._num_clip[j, 0] ** 2
        step = (
            np.abs(self.row_a) * vmax[self.row_chan] + np.abs(self.row_b) if chans else np.ones(1)
        )
        #: Given channels are unbounded: their increments are clipped to +-MAX_STEP nats.
        self.clip_steps = bool(self.given_units)
        top = MAX_STEP if self.clip_steps else float(step.max())
        self.max_pass = int(max(1, min(1 << 20, 2.0**51 / (SCALE * (top + 1.0)))))

    _CACHE: ClassVar[dict[int, tuple[tuple[FeaturePlan, ...], BankLayout]]] = {}

    @classmethod
    def from_rows(
        cls,
        channel: Sequence[int],
        a: Sequence[float],
        b: Sequence[float],
        group: Sequence[int],
        direction: Sequence[int],
        role: Sequence[int],
        threshold: Sequence[float],
        names: Sequence[str] | None = None,
    ) -> BankLayout:
        """One unit of rows on channels computed by the caller (already standardised:
        a group's effect is its channel's mean), e.g. the multivariate detector's.

        Parameters
        ----------
        channel, a, b, group, direction, role, threshold
            Per row, as in :class:`~driftline.core.detectors.plans.FeaturePlan`
            (thresholds in nats, ``inf`` disabled); group ``g`` reads channel ``g``'s rows.
        names
            Per group, its name (default ``"0"``, ``"1"``, ...).
        """
        k = 1 + max(group, default=-1)
        chan_of = {g: c for g, c in zip(group, channel, strict=True)}
        labels = list(names) if names is not None else [str(g) for g in range(k)]
        plan = FeaturePlan(
            name="channels",
            kind="channels",
            groups=tuple(Group(labels[g], chan_of.get(g, 0), 0.0, 1.0) for g in range(k)),
            channel=tuple(channel),
            a=tuple(a),
            b=tuple(b),
            group=tuple(group),
            direction=tuple(direction),
            role=tuple(role),
            shift=tuple(0.0 for _ in channel),
            threshold=tuple(threshold),
            theta=tuple(0.0 for _ in channel),
            inflation=tuple(1.0 for _ in channel),
        )
        plan.check()
        return cls([plan])

    @classmethod
    def of(cls, plans: Sequence[FeaturePlan]) -> BankLayout:
        """The layout of ``plans`` (cached while the same plan objects are in use)."""
        key = hash(tuple(id(p) for p in plans))
        hit = cls._CACHE.get(key)
        if (
            hit is not None
            and len(hit[0]) == len(plans)
            and all(x is y for x, y in zip(hit[0], plans, strict=True))
        ):
            return hit[1]
        if len(cls._CACHE) >= 256:
            cls._CACHE.clear()
        layout = cls(plans)
        cls._CACHE[key] = (tuple(plans), layout)
        return layout

    @property
    def n_rows(self) -> int:
        """Rows of every unit."""
        return int(self.row_chan.size)

    @property
    def n_groups(self) -> int:
        """Groups of every unit."""
        return len(self.group_unit)

    def channels(self, floats: _F64, codes: _I64) -> _F64:
        """The stacked channel matrix of one stretch of events.

        Parameters
        ----------
        floats
            One row per unit in :attr:`float_units` (numeric and rate units): the values
            (NaN missing; infinities count as missing here).
        codes
            One row per unit in :attr:`code_units`: category codes (-1 missing).

        Raises
        ------
        ValueError
            The layout has units whose channels are given (:meth:`from_rows`).
        """
        if self.given_units:
            raise ValueError("this layout's channels are computed by its owner")
        n = floats.shape[1] if floats.ndim == 2 and floats.shape[0] else codes.shape[1]
        out = np.empty((self.n_channels, n), dtype=np.float64)
        k = self._num_rows.size
        if k:
            x = floats[self._num_rows]
            with np.errstate(invalid="ignore", over="ignore"):
                z = out[:k]
                np.subtract(x, self._num_mean, out=z)
                z /= self._num_std
                np.clip(z, -self._num_clip, self._num_clip, out=z)
                np.multiply(z, z, out=out[k : 2 * k])
            bad = ~np.isfinite(x)
            if bad.any():
                out[:k][bad] = math.nan
                out[k : 2 * k][bad] = math.nan
        nxt = 2 * k
        if self._rate_rows.size:
            x = floats[self._rate_rows]
            r = self._rate_rows.size
            out[nxt : nxt + r] = x < self._rate_cut
            bad = ~np.isfinite(x)
            if bad.any():
                out[nxt : nxt + r][bad] = math.nan
            nxt += r
        for r, members in self._cat_channels:
            row = codes[r]
            if len(members) == 1:
                np.equal(row, members[0], out=out[nxt])
            else:
                out[nxt] = np.isin(row, members)
            nxt += 1
        if self._cat_channels:
            start = nxt - len(self._cat_channels)
            for j, (r, _) in enumerate(self._cat_channels):
                missing = codes[r] < 0
                if missing.any():
                    out[start + j][missing] = math.nan
        return out


class CusumBank:
    """The stacked CUSUMs of one stream: statistics, away groups and their effects.

    Parameters
    ----------
    layout
        The units' rows (:class:`BankLayout`); the bank holds only the state.
    """

    TAG: ClassVar[str] = "cusum_bank_state"
    VERSION: ClassVar[int] = 1

    def __init__(self, layout: BankLayout) -> None:
        self.layout = layout
        self.s = np.zeros(layout.n_rows, dtype=np.int64)
        #: Per group: 0 (at reference) or the direction it went away in (+1 / -1).
        self.away = np.zeros(layout.n_groups, dtype=np.int64)
        #: Per group while away: events and fixed-point sum of its channel since then.
        self.away_n = np.zeros(layout.n_groups, dtype=np.int64)
        self.away_sum = np.zeros(layout.n_groups, dtype=np.int64)
        self.n = 0
        #: Highest level (statistic / threshold of a detection row) during the last update.
        self.peak = 0.0
        self._last: list[Transition] = []

    # ---------------------------------------------------------------- properties
    @property
    def level(self) -> float:
        """The highest statistic / threshold among the detection rows now."""
        lay = self.layout
        det = lay.detect_rows
        if det.size == 0:
            return 0.0
        return float(np.max(self.s[det] / lay.row_hf[det]))

    @property
    def drift_detected(self) -> bool:
        """Whether the last update opened a unit's episode."""
        return any(t.kind == "fire" for t in self._last)

    @property
    def drifting(self) -> bool:
        """Whether some group is away."""
        return bool(self.away.any())

    @property
    def transitions(self) -> list[Transition]:
        """What the last update did, in event order."""
        return list(self._last)

    def away_units(self) -> list[int]:
        """Units with a group away, in unit order."""
        return sorted({int(self.layout.group_unit[g]) for g in np.flatnonzero(self.away).tolist()})

    def effect(self, group: int, n: int, total: int) -> float:
        """The effect of ``group`` from ``n`` events summing to ``total`` (fixed point):
        the channel's mean against the reference's, in reference sd of the channel."""
        lay = self.layout
        if n <= 0:
            return 0.0
        return (total / SCALE / n - lay.group_mean[group]) / lay.group_sd[group]

    def effects(self) -> dict[int, float]:
        """Per away group (global index): its effect since it went away."""
        return {
            g: self.effect(g, int(self.away_n[g]), int(self.away_sum[g]))
            for g in np.flatnonzero(self.away).tolist()
            if self.away_n[g]
        }

    # ---------------------------------------------------------------- updates
    def update_many(self, v: _F64) -> list[Transition]:
        """Feed the stacked channels ``v`` (``(channels, n)``) in event order.

        Returns
        -------
        list of Transition
            What happened, in event order (also :attr:`transitions`).
        """
        m = v.shape[1]
        self._last = []
        self.peak = 0.0
        step = self.layout.max_pass
        # The compiled pass reads each channel as a contiguous row; an infinite channel
        # value (never from the monitor's channels, which are clipped or indicators)
        # takes the numpy pass, whose arithmetic on it is the reference.
        kernel = _compiled_pass
        if kernel is not None and v.dtype == np.float64 and not np.isinf(v).any():
            v = np.ascontiguousarray(v)
            for lo in range(0, m, step):
                self._run_compiled(kernel, v, lo, min(m, lo + step))
        else:
            for lo in range(0, m, step):
                self._run(v, lo, min(m, lo + step))
        self.n += m
        return list(self._last)

    def _run_compiled(self, kernel: Any, v: _F64, pos: int, end: int) -> None:
        """:meth:`_run` with the compiled pass (same statistics, peaks and transitions)."""
        lay = self.layout
        while pos < end:
            act = self._active()
            if act.size == 0:
                return
            t, top = kernel(
                v, pos, end, act.astype(np.intp, copy=False), lay.row_chan, lay.row_a,
                lay.row_b, lay.row_hf, lay.clip_steps, self.s, float(SCALE), MAX_STEP * SCALE,
            )  # fmt: skip
            self._note_peak(act, top)
            if t < 0:
                self._track(v, pos, end)
                return
            self._track(v, pos, t + 1)
            stats = self.s[act]  # a copy: a transition may reset its group's rows
            for i in np.flatnonzero(stats >= lay.row_hf[act]).tolist():
                self._transition(int(act[i]), t, float(stats[i]))
            pos = t + 1

    def _run(self, v: _F64, pos: int, end: int) -> None:
        lay = self.layout
        finite: bool | None = None
        while pos < end:
            act = self._active()
            if act.size == 0:
                return
            if finite is None:
                finite = bool(np.isfinite(v[:, pos:end]).all())
            if self._quiet(v, act, pos, end, finite):
                self._track(v, pos, end)
                return
            y = self._increments(v, act, pos, end, finite).T
            c = np.cumsum(y, axis=1)  # integer-valued: exact (BankLayout.max_pass)
            c += self.s[act, None]
            low = np.minimum.accumulate(c, axis=1)
            np.minimum(low, 0.0, out=low)
            c -= low  # S_t = C_t - min(0, min_{j<=t} C_j): the CUSUM recursion, exactly
            h = lay.row_hf[act]
            top = c.max(axis=1)
            if not (top >= h).any():
                self._note_peak(act, top)
                self._track(v, pos, end)
                self.s[act] = c[:, -1]
                return
            hit = c >= h[:, None]
            t = int(np.flatnonzero(hit.any(axis=0))[0])
            self._note_peak(act, c[:, : t + 1].max(axis=1))
            self._track(v, pos, pos + t + 1)
            self.s[act] = c[:, t]
            for i in np.flatnonzero(hit[:, t]).tolist():
                self._transition(int(act[i]), pos + t, float(c[i, t]))
            pos += t + 1

    def _increments(self, v: _F64, act: NDArray[np.intp], pos: int, end: int, finite: bool) -> _F64:
        """The fixed-point increments of rows ``act`` over events ``pos:end``, one row
        per event (``(end - pos, act.size)``): integer-valued, 0 for a missing value."""
        lay = self.layout
        # Events as rows (the block pass runs along them): one C-level gather.
        y = np.asarray(v[:, pos:end].T).take(lay.row_chan[act], axis=1)
        y *= lay.row_a[act]
        y += lay.row_b[act]
        y *= SCALE
        np.rint(y, out=y)
        if lay.clip_steps:
            np.clip(y, -MAX_STEP * SCALE, MAX_STEP * SCALE, out=y)
        if not finite:
            y[np.isnan(y)] = 0.0  # a missing value leaves the statistic unchanged
        return y

    def _quiet(self, v: _F64, act: NDArray[np.intp], pos: int, end: int, finite: bool) -> bool:
        """Run rows ``act`` over events ``pos:end`` when provably no row crosses its
        threshold there (statistics and peak exact); False, with nothing changed, when
        one may cross (the caller runs the exact pass, which finds where).

        The events are cut in blocks of :data:`_BLOCK`. With ``w`` a block's running
        sums, ``O`` the cumulative sum before it and ``P`` the running minimum of the
        cumulative sums before it (``min(0, .)``), every statistic in the block lies
        between ``O + max(w) - P`` and ``O + max(w) - min(P, O + min(w))``; only the
        blocks whose upper bound reaches a threshold, or the peak's lower bound, are
        walked event by event. Every number is an integer below 2**53, so the bounds and
        the statistics are exact, and equal to the running minimum's.
        """
        m, r = end - pos, act.size
        if r * m < _QUIET_MIN or not self.s[act].max(initial=0) < _QUIET_MAX_S:
            return False
        lay = self.layout
        y = self._increments(v, act, pos, end, finite)
        nb = -(-m // _BLOCK)
        if nb * _BLOCK != m:  # zero increments after the end change no bound
            padded = np.zeros((nb * _BLOCK, r), dtype=np.float64)
            padded[:m] = y
            y = padded
        w = y.reshape(nb, _BLOCK, r)  # event t of block k at w[k, t]
        for t in range(1, _BLOCK):
            np.add(w[:, t - 1], w[:, t], out=w[:, t])
        total = w[:, -1]
        off = np.cumsum(total, axis=0)  # (nb, r): cumulative sum through each block
        off -= total  # ... before it
        off += self.s[act]
        hi = w.max(axis=1)
        hi += off  # the block's largest cumulative sum
        lo = w.min(axis=1)
        lo += off  # and its smallest
        through = np.minimum.accumulate(lo, axis=0)
        before = np.empty_like(through)  # min(0, running minimum before the block)
        before[0] = 0.0
        np.minimum(through[:-1], 0.0, out=before[1:])
        upper = hi - np.minimum(before, lo)
        h = lay.row_hf[act]
        need = upper >= h
        det = lay.row_role[act] == DETECT
        best = -math.inf
        if det.any():
            lower = hi - before
            best = float((lower.max(axis=0)[det] / h[det]).max())
            need |= det & (upper / h >= best)
        ks, rs = np.nonzero(need)
        if ks.size:
            c = w[ks, :, rs]  # (blocks, _BLOCK): running sums
            c += off[ks, rs, None]
            run = np.minimum.accumulate(c, axis=1)
            np.minimum(run, before[ks, rs, None], out=run)
            c -= run
            top = c.max(axis=1)
            if (top >= h[rs]).any():
                return False
            on = det[rs]
            if on.any():
                best = max(best, float((top[on] / h[rs[on]]).max()))
        if det.any():
            self.peak = max(self.peak, best)
        self.s[act] = off[-1] + total[-1] - np.minimum(through[-1], 0.0)
        return True

    def _note_peak(self, act: NDArray[np.intp], top: _F64) -> None:
        lay = self.layout
        det = lay.row_role[act] == DETECT
        if det.any():
            self.peak = max(self.peak, float((top[det] / lay.row_hf[act[det]]).max()))

    def _active(self) -> NDArray[np.intp]:
        """Rows that run now: detection rows of groups at reference, return rows of
        groups away in their direction."""
        lay = self.layout
        if not self.away.any():
            return lay.detect_rows
        away = self.away[lay.row_group]
        return np.flatnonzero(np.where(lay.row_role == DETECT, away == 0, away == lay.row_dir))

    def _track(self, v: _F64, lo: int, hi: int) -> None:
        for g in np.flatnonzero(self.away).tolist():
            seg = v[self.layout.group_chan[g], lo:hi]
            if not np.isfinite(seg).all():
                seg = seg[np.isfinite(seg)]
            self.away_n[g] += seg.size
            self.away_sum[g] += int(np.rint(seg * SCALE).sum())

    def _snapshot(self) -> tuple[tuple[int, int, int, int], ...]:
        return tuple(
            (g, int(self.away_n[g]), int(self.away_sum[g]), int(self.away[g]))
            for g in np.flatnonzero(self.away).tolist()
        )

    def evidence(self, unit: int, but: int = -1) -> tuple[tuple[int, int, float], ...]:
        """For each group of ``unit`` at reference (except ``but``): ``(group,
        direction, level)`` of its detection row nearest its threshold now (level:
        statistic / threshold, 0 when the group has no enabled row)."""
        lay = self.layout
        out: list[tuple[int, int, float]] = []
        for g in lay.unit_groups[unit]:
            if g == but or self.away[g]:
                continue
            rows = np.flatnonzero((lay.row_group == g) & (lay.row_role == DETECT))
            if rows.size == 0:
                continue
            levels = self.s[rows] / lay.row_hf[rows]
            best = int(np.argmax(levels))
            out.append((g, int(lay.row_dir[rows[best]]), float(levels[best])))
        return tuple(out)

    def _transition(self, row: int, at: int, statistic: float) -> None:
        lay = self.layout
        g = int(lay.row_group[row])
        unit = int(lay.group_unit[g])
        same = lay.row_group == g
        unit_away = bool(self.away[lay.unit_groups[unit]].any())
        if lay.row_role[row] == DETECT:
            if self.away[g]:
                return  # another row of the group crossed at the same event
            self.away[g] = lay.row_dir[row]
            self.away_n[g] = self.away_sum[g] = 0
            self.s[same & (lay.row_role == RETURN)] = 0
            kind: TransitionKind = "update" if unit_away else "fire"
            measured = (0, 0)
        else:
            direction = int(self.away[g])
            measured = (int(self.away_n[g]), int(self.away_sum[g]))
            self.away[g] = 0
            self.away_n[g] = self.away_sum[g] = 0
            self.s[same] = 0  # the group starts afresh against the reference
            kind = "resolve" if not self.away[lay.unit_groups[unit]].any() else "return"
            assert direction == lay.row_dir[row]
        self._last.append(
            Transition(
                at,
                kind,
                unit,
                g,
                int(lay.row_dir[row]),
                lay.row_shift[row],
                measured,
                self._snapshot(),
                statistic / SCALE,
                float(lay.row_h[row]) / SCALE,
                self.evidence(unit, g) if lay.row_role[row] == DETECT else (),
            )
        )

    # ---------------------------------------------------------------- state
    def state_fields(self) -> dict[str, Any]:
        """The state as plain JSON (integers only); the rows live in the layout."""
        return {
            "s": self.s.tolist(),
            "away": self.away.tolist(),
            "away_n": self.away_n.tolist(),
            "away_sum": self.away_sum.tolist(),
            "n": self.n,
        }

    def load_state(self, f: Mapping[str, Any]) -> None:
        """Restore :meth:`state_fields`.

        Raises
        ------
        StateCorrupt
            A field is missing, not a list of integers of the layout's size, or out of
            range.
        """
        lay = self.layout
        try:
            s = _ints(f["s"], lay.n_rows)
            away = _ints(f["away"], lay.n_groups)
            away_n = _ints(f["away_n"], lay.n_groups)
            away_sum = _ints(f["away_sum"], lay.n_groups)
            n = f["n"]
            if isinstance(n, bool) or not isinstance(n, int):
                raise TypeError("n is not an integer")
        except (KeyError, TypeError, ValueError) as exc:
            raise StateCorrupt(f"{self.TAG}: {exc}") from None
        if not np.all(np.abs(away) <= 1) or (s < 0).any() or (away_n < 0).any() or n < 0:
            raise StateCorrupt(f"{self.TAG}: counters out of range")
        self.s, self.away, self.away_n, self.away_sum, self.n = s, away, away_n, away_sum, n

    def same_state(self, other: CusumBank) -> bool:
        """Exactly the same statistics, groups and counters."""
        return (
            np.array_equal(self.s, other.s)
            and np.array_equal(self.away, other.away)
            and np.array_equal(self.away_n, other.away_n)
            and np.array_equal(self.away_sum, other.away_sum)
            and self.n == other.n
        )

    def to_bytes(self) -> bytes:
        """The state as a tagged, versioned record (:func:`~driftline.contract.codec.pack`)."""
        from driftline.contract.codec import pack

        return pack(self.TAG, self.VERSION, self.state_fields())

    @classmethod
    def from_bytes(cls, data: bytes, layout: BankLayout) -> CusumBank:
        """Rebuild a bank on ``layout`` from :meth:`to_bytes`."""
        from driftline.contract.codec import unpack

        bank = cls(layout)
        bank.load_state(unpack(data, cls.TAG, cls.VERSION))
        return bank


def unit_channels(plan: FeaturePlan, xs: NDArray[Any]) -> _F64:
    """The channels of one unit's values ``xs`` (floats; category codes for a categorical
    unit), one row per channel, NaN where a value is missing."""
    layout = BankLayout.of([plan])
    n = len(xs)
    if plan.kind == "categorical":
        return layout.channels(np.zeros((0, n)), np.asarray(xs, dtype=np.int64)[None, :])
    return layout.channels(np.asarray(xs, dtype=np.float64)[None, :], np.zeros((0, n), np.int64))


def _ints(v: Any, size: int) -> _I64:
    if not isinstance(v, list) or len(v) != size or not all(type(x) is int for x in v):
        raise ValueError(f"not a list of {size} integers")
    return np.asarray(v, dtype=np.int64)


# ------------------------------------------------------------------ one unit, river-like


class FeatureBank(DetectorBase):
    """One unit's bank with river's surface, on the kernel the monitor runs.

    ``update(x)`` feeds one value (a float; a category code for a categorical unit),
    ``update_many(xs)`` an array and returns the positions where the unit's episode
    opened; ``drift_detected``, ``drifting``, ``transitions`` and :meth:`effects` read
    the result. The record (:meth:`to_bytes`) holds the plan and the integer state.

    Parameters
    ----------
    plan
        The compiled, calibrated bank (:func:`compile_numeric` and friends).
    """

    TAG = "cusum_bank"
    VERSION = 1
    PARAMS = ("plan",)

    def __init__(self, plan: FeaturePlan) -> None:
        self.plan = plan
        self._bank = CusumBank(BankLayout.of([plan]))
        self._drift = False

    @property
    def drifting(self) -> bool:
        """Whether the unit's episode is open (some group is away)."""
        return self._bank.drifting

    @property
    def transitions(self) -> list[Transition]:
        """What the last update did, in event order."""
        return self._bank.transitions

    @property
    def n(self) -> int:
        """Values seen."""
        return self._bank.n

    def effects(self) -> dict[str, float]:
        """Per away group (by name): its effect since it went away, in sd of its channel."""
        names = self._bank.layout.group_name
        return {names[g]: e for g, e in self._bank.effects().items()}

    def _step(self, x: float) -> None:
        self._feed(np.asarray([x], dtype=np.float64))

    def _feed(self, x: _F64) -> _I64:
        trans = self._bank.update_many(unit_channels(self.plan, x))
        self._drift = any(t.kind == "fire" for t in trans)
        return np.asarray([t.position for t in trans if t.kind == "fire"], dtype=np.int64)

    def _param_fields(self) -> dict[str, Any]:
        return {"plan": self.plan.to_dict()}

    def _state_fields(self) -> dict[str, Any]:
        return {**self._bank.state_fields(), "drift": self._drift}

    @classmethod
    def _params_from(cls, fields: dict[str, Any]) -> dict[str, Any]:
        plan = fields.get("plan")
        if not isinstance(plan, dict):
            raise StateCorrupt(f"{cls.TAG}: field 'plan' must be an object")
        return {"plan": FeaturePlan.from_dict(plan)}

    def _load(self, fields: dict[str, Any]) -> None:
        self._bank.load_state(fields)
        drift = fields.get("drift")
        if not isinstance(drift, bool):
            raise StateCorrupt(f"{self.TAG}: field 'drift' must be a boolean")
        self._drift = drift

    def __repr__(self) -> str:
        return f"FeatureBank({self.plan.name!r}, {self.plan.kind}, rows={self.plan.n_rows})"
