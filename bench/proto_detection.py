"""Prototype for issue 13: per-feature banks of calibrated sequential tests.

Not production code: the design that ``bench/bench_detection.py`` measures and that will
move into the fast-loop core (``driftline.core.detectors`` / ``core.fastloop``) once the
package layout settles. ``bench/DETECTION.md`` has the design and the figures.

Every detector is a one-sided CUSUM of a log-likelihood ratio (LLR),
``S_t = max(0, S_{t-1} + a * v_t + b)``, on one *channel* ``v`` of a feature:

* numeric features: ``z = clip((x - mean_ref) / sd_ref, +-clip)`` (location rows: a mean
  shift of ``+-delta`` sd) and ``z**2`` (scale rows: sd times ``ratio`` or divided by it);
* categorical features: the indicator of one category (Bernoulli rows: that category's
  share moves by ``+-delta`` standard deviations of its indicator).

A feature's rows form a *bank*; a feature is *away* from its reference once any row
crosses its threshold, and *returns* only when a return test says so: per channel group
(location, scale, one category) a CUSUM of the LLR "reference against the boundary drift"
(``resolve_at`` times the smallest shift) in the direction the group went. Persistent
drift keeps that statistic near zero, so an episode ends only when the data came back.

Thresholds are calibrated at reference build, by simulation from the reference (see
:func:`calibrate_rows`): each row gets an equal share of the false-alarm budget.
Statistics are kept in fixed point (integers), so a batch gives bit-identical state and
the same detections whatever its boundaries, and the state is plain JSON.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

#: Fixed-point scale of the CUSUM statistics (2**24 units per nat).
SCALE = 1 << 24
#: Threshold of a row that cannot be calibrated (never fires).
NEVER = 1 << 62

DETECT, RETURN = 0, 1


@dataclass(frozen=True)
class BankPolicy:
    """Settings of the detector banks; what would go into the reference's Policy."""

    #: Mean shifts (sd of the standardised value) each numeric feature watches, both ways.
    shifts: tuple[float, ...] = (0.25, 0.5)
    #: Scale rows: shifts of the mean of ``z**2`` in sd of ``z**2``, both ways (for
    #: Gaussian data, 0.5 is the sd times 1.3 or divided by 1.2). Empty: no scale rows.
    scale_shifts: tuple[float, ...] = (0.5,)
    #: Share shifts (sd of the category's indicator) per category, both ways.
    category_shifts: tuple[float, ...] = (0.25, 0.5)
    #: Categories below this reference share are pooled into one "rest" channel.
    min_category_share: float = 0.01
    #: A group has returned when its drift is back below ``resolve_at`` x the smallest
    #: shift (the boundary of the return test; hysteresis against flapping).
    resolve_at: float = 0.5
    #: Standardised values are clipped to +-this (outliers cannot accumulate).
    clip: float = 4.0
    #: Calibration: reference quantile points, importance-sampled paths, plain cycles.
    calibration_points: int = 4096
    paths: int = 300
    cycles: int = 1000


# ----------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class FeaturePlan:
    """One feature's compiled bank: channel transform, rows and calibrated thresholds."""

    name: str
    kind: Literal["numeric", "categorical"]
    mean: float = 0.0
    std: float = 1.0
    clip: float = 4.0
    #: Categorical: the reference's categories, in code order (code len() = "other").
    categories: tuple[str, ...] = ()
    #: Categorical: which codes each channel counts (a tracked category, or the rest).
    channel_codes: tuple[tuple[int, ...], ...] = ()
    group_names: tuple[str, ...] = ()
    chan: tuple[int, ...] = ()
    a: tuple[float, ...] = ()
    b: tuple[float, ...] = ()
    group: tuple[int, ...] = ()
    direction: tuple[int, ...] = ()
    role: tuple[int, ...] = ()
    #: Threshold in nats (inf: the row cannot be calibrated and never fires).
    threshold: tuple[float, ...] = ()
    #: Per row: calibration diagnostics (tilt, estimated ARL, inflation for the
    #: reference's own sampling error).
    notes: tuple[Mapping[str, float], ...] = ()

    @property
    def n_rows(self) -> int:
        """Rows of the bank (detection and return)."""
        return len(self.chan)

    @property
    def n_groups(self) -> int:
        """Channel groups (location, scale, or one per tracked category)."""
        return len(self.group_names)

    def codes(self, values: Sequence[Any]) -> I64:
        """Category codes of raw values (-1: missing; len(categories): other)."""
        index = {c: i for i, c in enumerate(self.categories)}
        other = len(self.categories)
        return np.fromiter(
            (-1 if v is None else index.get(str(v), other) for v in values),
            dtype=np.int64,
            count=len(values),
        )

    def channels(self, xs: NDArray[Any]) -> F64:
        """Channel values, one row per channel (NaN where the value is missing).

        Numeric: ``xs`` are floats (NaN missing). Categorical: ``xs`` are codes.
        """
        if self.kind == "numeric":
            z = (np.asarray(xs, dtype=np.float64) - self.mean) / self.std
            np.clip(z, -self.clip, self.clip, out=z)
            return np.stack([z, z * z])
        codes = np.asarray(xs, dtype=np.int64)
        out = np.zeros((len(self.channel_codes), codes.size), dtype=np.float64)
        for c, members in enumerate(self.channel_codes):
            out[c] = np.isin(codes, members) if len(members) > 1 else codes == members[0]
        out[:, codes < 0] = math.nan
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form (stored with the reference)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["threshold"] = [t if math.isfinite(t) else None for t in self.threshold]
        d["notes"] = [dict(n) for n in self.notes]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeaturePlan:
        """Inverse of :meth:`to_dict`."""
        kw = dict(d)
        kw["threshold"] = tuple(math.inf if t is None else float(t) for t in d["threshold"])
        kw["channel_codes"] = tuple(tuple(c) for c in d["channel_codes"])
        kw["notes"] = tuple(d["notes"])
        for k in ("categories", "group_names", "chan", "a", "b", "group", "direction", "role"):
            kw[k] = tuple(d[k])
        return cls(**kw)


@dataclass
class _Rows:
    chan: list[int] = field(default_factory=list)
    a: list[float] = field(default_factory=list)
    b: list[float] = field(default_factory=list)
    group: list[int] = field(default_factory=list)
    direction: list[int] = field(default_factory=list)
    role: list[int] = field(default_factory=list)
    #: Distribution of the row's increment for calibration: (values, weights, channel sd).
    dist: list[tuple[F64, F64, float]] = field(default_factory=list)

    def add(
        self,
        chan: int,
        a: float,
        b: float,
        group: int,
        direction: int,
        role: int,
        values: F64,
        weights: F64,
        sd: float,
    ) -> None:
        self.chan.append(chan)
        self.a.append(a)
        self.b.append(b)
        self.group.append(group)
        self.direction.append(direction)
        self.role.append(role)
        self.dist.append((a * values + b, weights, abs(a) * sd))


def _points(z: F64, n: int) -> F64:
    """``n`` equal-mass quantile points of a sample (the calibration's reference)."""
    if z.size <= n:
        return np.sort(z)
    qs = (np.arange(n) + 0.5) / n
    return np.quantile(z, qs, method="inverted_cdf")


def _shift_rows(
    rows: _Rows, chan: int, group: int, v: F64, w: F64, sizes: Sequence[float], pol: BankPolicy
) -> None:
    """Rows of one channel group: mean shifts of ``+-size`` sd of the channel.

    With ``u = (v - m) / sd`` (the channel standardised by the reference's own mean and
    sd), a detection row is the Gaussian LLR ``d size u - size^2 / 2``; the return
    row of direction ``d`` is the LLR of the reference against the boundary drift
    ``d edge``, ``-d edge u + edge^2 / 2``, with ``edge = resolve_at * min(sizes)``.
    Its calibration distribution is the reference shifted to the boundary.
    """
    m = float(w @ v)
    sd = float(np.sqrt(w @ (v - m) ** 2))
    if sd <= 0:
        return
    for delta in sizes:
        for d in (1, -1):
            rows.add(
                chan,
                d * delta / sd,
                -d * delta * m / sd - delta * delta / 2,
                group,
                d,
                DETECT,
                v,
                w,
                sd,
            )
    edge = pol.resolve_at * min(sizes)
    for d in (1, -1):
        rows.add(
            chan,
            -d * edge / sd,
            d * edge * m / sd + edge * edge / 2,
            group,
            d,
            RETURN,
            v + d * edge * sd,
            w,
            sd,
        )


def _numeric_rows(values: F64, pol: BankPolicy) -> tuple[float, float, _Rows, tuple[str, ...]]:
    finite = values[np.isfinite(values)]
    mean, std = float(finite.mean()), float(finite.std())
    rows = _Rows()
    if std <= 0:
        return mean, 1.0, rows, ()
    z = np.clip((finite - mean) / std, -pol.clip, pol.clip)
    pts = _points(z, pol.calibration_points)
    w = np.full(pts.size, 1.0 / pts.size)
    _shift_rows(rows, 0, 0, pts, w, pol.shifts, pol)
    groups: tuple[str, ...] = ("location",)
    if pol.scale_shifts:
        _shift_rows(rows, 1, 1, pts * pts, w, pol.scale_shifts, pol)
        groups += ("scale",)
    return mean, std, rows, groups


def _bernoulli(p0: float, p1: float) -> tuple[float, float]:
    """``(a, b)`` of the LLR of Bernoulli(p1) against Bernoulli(p0): ``a * v + b``."""
    b = math.log((1 - p1) / (1 - p0))
    return math.log(p1 / p0) - b, b


def _categorical_rows(
    counts: Sequence[int], pol: BankPolicy
) -> tuple[tuple[tuple[int, ...], ...], _Rows, tuple[str, ...], list[int]]:
    """Channels (tracked categories and the pooled rest) and their Bernoulli rows."""
    total = float(sum(counts))
    shares = [c / total for c in counts]
    tracked = [i for i, p in enumerate(shares) if p >= pol.min_category_share and p < 1]
    rest = tuple(i for i in range(len(shares)) if i not in tracked)
    channels: list[tuple[int, ...]] = [(i,) for i in tracked]
    if rest and 0 < sum(shares[i] for i in rest) < 1:
        channels.append(rest)
    rows = _Rows()
    two = np.array([1.0, 0.0])
    edge = pol.resolve_at * min(pol.category_shifts)
    for g, members in enumerate(channels):
        p0 = sum(shares[i] for i in members)
        sd = math.sqrt(p0 * (1 - p0))
        w0 = np.array([p0, 1 - p0])
        for delta in pol.category_shifts:
            for d in (1, -1):
                p1 = p0 + d * delta * sd
                if 0 < p1 < 1:
                    a, b = _bernoulli(p0, p1)
                    rows.add(g, a, b, g, d, DETECT, two, w0, sd)
        for d in (1, -1):
            pb = min(max(p0 + d * edge * sd, p0 / 4), 1 - (1 - p0) / 4)
            a, b = _bernoulli(pb, p0)
            rows.add(g, a, b, g, d, RETURN, two, np.array([pb, 1 - pb]), sd)
    names = tuple(f"cat:{m[0]}" if len(m) == 1 else "cat:rest" for m in channels)
    return tuple(channels), rows, names, tracked


def build_plan(
    name: str,
    values: F64 | Sequence[Any],
    *,
    kind: Literal["numeric", "categorical"],
    target_arl: float,
    seed: int = 0,
    policy: BankPolicy | None = None,
) -> FeaturePlan:
    """Compile and calibrate one feature's bank from its reference column.

    Parameters
    ----------
    values
        The reference column: floats (NaN missing) or raw categories (None missing).
    target_arl
        Expected events between false alarms *of this feature* (the model's budget
        times its number of features); each detection row gets an equal share.
    seed
        Seed of the calibration's simulation (a rebuild is identical).
    """
    pol = policy or BankPolicy()
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    if kind == "numeric":
        col = np.asarray(values, dtype=np.float64)
        mean, std, rows, groups = _numeric_rows(col, pol)
        n_ref = int(np.isfinite(col).sum())
        cats: tuple[str, ...] = ()
        chan_codes: tuple[tuple[int, ...], ...] = ()
    else:
        present = [str(v) for v in values if v is not None]
        freq = Counter(present)
        cats = tuple(sorted(freq, key=lambda c: (-freq[c], c)))
        counts = [freq[c] for c in cats] + [0]
        chan_codes, rows, groups, _ = _categorical_rows(counts, pol)
        groups = tuple(g if g == "cat:rest" else cats[int(g[4:])] for g in groups)
        mean, std, n_ref = 0.0, 1.0, len(present)
    n_detect = sum(1 for r in rows.role if r == DETECT)
    row_arl = target_arl * max(1, n_detect)
    thresholds, notes = calibrate_rows(rows.dist, row_arl, n_ref, rng, pol)
    return FeaturePlan(
        name=name,
        kind=kind,
        mean=mean,
        std=std,
        clip=pol.clip,
        categories=cats,
        channel_codes=chan_codes,
        group_names=groups,
        chan=tuple(rows.chan),
        a=tuple(rows.a),
        b=tuple(rows.b),
        group=tuple(rows.group),
        direction=tuple(rows.direction),
        role=tuple(rows.role),
        threshold=tuple(thresholds),
        notes=tuple(notes),
    )


def build_rate_plan(
    name: str,
    p0: float,
    n_ref: int,
    *,
    target_arl: float,
    seed: int = 0,
    policy: BankPolicy | None = None,
) -> FeaturePlan:
    """A Bernoulli rate watched for rises only (e.g. a classifier's error rate).

    Values fed to the detector are codes: 0 for the event (an error), 1 otherwise,
    -1 missing. ``p0`` is the reference rate, estimated from ``n_ref`` rows.
    """
    pol = policy or BankPolicy()
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    rows = _Rows()
    sd = math.sqrt(p0 * (1 - p0))
    two, w0 = np.array([1.0, 0.0]), np.array([p0, 1 - p0])
    for delta in pol.category_shifts:
        p1 = p0 + delta * sd
        if p1 < 1:
            a, b = _bernoulli(p0, p1)
            rows.add(0, a, b, 0, 1, DETECT, two, w0, sd)
    pb = p0 + pol.resolve_at * min(pol.category_shifts) * sd
    a, b = _bernoulli(pb, p0)
    rows.add(0, a, b, 0, 1, RETURN, two, np.array([pb, 1 - pb]), sd)
    n_detect = sum(1 for r in rows.role if r == DETECT)
    thresholds, notes = calibrate_rows(rows.dist, target_arl * n_detect, n_ref, rng, pol)
    return FeaturePlan(
        name=name,
        kind="categorical",
        categories=("event",),
        channel_codes=((0,),),
        group_names=("rate",),
        chan=tuple(rows.chan),
        a=tuple(rows.a),
        b=tuple(rows.b),
        group=tuple(rows.group),
        direction=tuple(rows.direction),
        role=tuple(rows.role),
        threshold=tuple(thresholds),
        notes=tuple(notes),
    )


# ----------------------------------------------------------------------- calibration


def _log_mgf(theta: F64, ys: F64, logw: F64) -> tuple[F64, F64]:
    """Per row: ``log E[exp(theta Y)]`` and its derivative ``E_theta[Y]``."""
    a = theta[:, None] * ys + logw
    m = a.max(axis=1, keepdims=True)
    e = np.exp(a - m)
    s = e.sum(axis=1)
    return m[:, 0] + np.log(s), (e * ys).sum(axis=1) / s


def tilt(ys: F64, ws: F64) -> F64:
    """Per row, the positive root ``theta`` of ``E[exp(theta Y)] = 1`` (0 if none).

    The exponential rate of the CUSUM's false alarms (Cramer-Lundberg): the in-control
    ARL grows as ``exp(theta h)``; for an exact LLR row ``theta = 1``.
    """
    with np.errstate(divide="ignore"):
        logw = np.where(ws > 0, np.log(ws), -np.inf)
    live = ws > 0
    mu = (ws * ys).sum(axis=1)
    var = (ws * (ys - mu[:, None]) ** 2).sum(axis=1)
    top = np.where(live, ys, -np.inf).max(axis=1)
    ok = (mu < 0) & (top > 0)
    theta = np.where(ok, 2 * -mu / np.maximum(var, 1e-300), 0.0)
    for _ in range(200):  # move right of the root (g > 0)
        g, _ = _log_mgf(np.where(ok, theta, 0.0), ys, logw)
        low = ok & (g <= 0)
        if not low.any():
            break
        theta = np.where(low, theta * 2, theta)
    for _ in range(100):  # Newton from the right converges monotonically (g convex)
        g, dg = _log_mgf(np.where(ok, theta, 0.0), ys, logw)
        step = np.where(ok, g / np.where(dg > 0, dg, 1.0), 0.0)
        theta = theta - step
        if np.all(np.abs(step) <= 1e-12 * np.maximum(theta, 1e-12)):
            break
    return np.where(ok, theta, 0.0)


class _Sampler:
    """Exact draws from one discrete distribution per row (inverse CDF with a guide table).

    A guide table of as many cells as points gives each uniform draw a starting index
    at most a few points below its answer (Chen and Asau), so a draw costs O(1) instead
    of a binary search; the answer is the inverse CDF, exactly.
    """

    def __init__(self, ys: F64, ws: F64) -> None:
        rows, width = ys.shape
        cdf = np.cumsum(ws, axis=1)
        cdf /= cdf[:, -1:]
        cdf[ws == 0] = 1.0  # padding after the last real point is never drawn
        cdf[:, -1] = 1.0
        cdf = np.maximum.accumulate(cdf, axis=1)
        self.width = width
        self.flat_cdf = (cdf + np.arange(rows)[:, None]).ravel()
        self.flat_y = ys.ravel()
        cells = (np.arange(width) / width)[None, :] + np.arange(rows)[:, None]
        self.guide = np.searchsorted(self.flat_cdf, cells.ravel(), side="right")

    def draw(self, r: NDArray[np.intp], u: F64) -> F64:
        """Values for rows ``r[:, None]`` at uniforms ``u`` (same shape as ``u``)."""
        cell = np.minimum((u * self.width).astype(np.intp), self.width - 1)
        cell += (r * self.width)[:, None]
        j = self.guide[cell]
        target = u + r[:, None]
        lag = self.flat_cdf[np.minimum(j, self.flat_cdf.size - 1)] <= target
        while lag.any():  # a few steps forward at most
            j += lag
            lag = self.flat_cdf[np.minimum(j, self.flat_cdf.size - 1)] <= target
        np.clip(j, (r * self.width)[:, None], (r * self.width + self.width - 1)[:, None], out=j)
        values: F64 = self.flat_y[j]
        return values


def _walks(
    sampler: _Sampler, rows: int, h: F64, n: int, rng: np.random.Generator, max_steps: int
) -> tuple[F64, F64]:
    """``n`` walks per row from 0, each until ``S <= 0`` or ``S >= h``: (steps, S_end).

    Walks are advanced in chunks of steps, all rows and walks at once.
    """
    row_of = np.repeat(np.arange(rows), n)
    s = np.zeros(rows * n)
    steps = np.zeros(rows * n)
    end = np.zeros(rows * n)
    alive = np.arange(rows * n)
    chunk, taken = 16, 0
    while alive.size and taken < max_steps:
        r = row_of[alive]
        path = s[alive, None] + np.cumsum(sampler.draw(r, rng.random((alive.size, chunk))), axis=1)
        stop = (path <= 0) | (path >= h[r, None])
        stopped = stop.any(axis=1)
        first = np.argmax(stop, axis=1)
        done = np.flatnonzero(stopped)
        end[alive[done]] = path[done, first[done]]
        steps[alive[done]] += first[done] + 1
        keep = np.flatnonzero(~stopped)
        s[alive[keep]] = path[keep, -1]
        steps[alive[keep]] += chunk
        alive = alive[keep]
        taken += chunk
        chunk = min(chunk * 2, 256)
    end[alive] = s[alive]  # cut at max_steps: neither boundary reached
    return steps.reshape(rows, n), end.reshape(rows, n)


def arl_estimate(
    ys: F64, ws: F64, h: F64, theta: F64, rng: np.random.Generator, paths: int, cycles: int
) -> F64:
    """Per row: in-control ARL of the CUSUM at threshold ``h``, by simulation.

    The CUSUM renews each time it returns to 0, so ``ARL = E[cycle length] / P(a cycle
    reaches h)`` (Wald). The mean cycle length comes from plain simulation of
    ``cycles`` cycles; the small probability from ``paths`` walks under the
    exponentially tilted distribution ``q = w exp(theta y)`` (Siegmund's importance
    sampling: a walk ending at ``S >= h`` has likelihood ratio ``exp(-theta S)``), whose
    relative error does not grow with ``h``.
    """
    live = theta > 0
    q = ws * np.exp(np.where(live[:, None], theta[:, None] * ys, 0.0))
    q /= q.sum(axis=1, keepdims=True)
    mean_q = (q * ys).sum(axis=1)
    span = np.where(live, h / np.maximum(mean_q, 1e-9), 0.0)
    long = max(4096, int(min(1 << 20, 20 * float(span.max(initial=0.0)))))
    rows = len(ys)
    steps, _ = _walks(_Sampler(ys, ws), rows, h, cycles, rng, max_steps=long)
    _, end = _walks(_Sampler(ys, q), rows, h, paths, rng, max_steps=long)
    weight = np.where(end >= h[:, None], np.exp(-theta[:, None] * end), 0.0)
    p = weight.mean(axis=1)
    out: F64 = np.where(live & (p > 0), steps.mean(axis=1) / np.maximum(p, 1e-300), math.inf)
    return out


def _solve(h_a: F64, log_arl_a: F64, theta: F64, c2: F64, log_t: float) -> F64:
    """``h`` with ``log ARL(h_a) + theta (h - h_a) - c2 h^2 = log_t`` (NaN: none)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        k = log_t - log_arl_a + theta * h_a
        lin = k / theta
        disc = theta**2 - 4 * c2 * k
        quad = (theta - np.sqrt(disc)) / (2 * c2)
        h: F64 = np.where(c2 * lin * lin < 1e-9, lin, np.where(disc > 0, quad, np.nan))
    return h


def calibrate_rows(
    dists: Sequence[tuple[F64, F64, float]],
    target_arl: float,
    n_ref: int,
    rng: np.random.Generator,
    pol: BankPolicy,
) -> tuple[list[float], list[dict[str, float]]]:
    """Thresholds so that each row's in-control ARL is ``target_arl``.

    1. ``theta``, the tilt of the row's increment under the reference (:func:`tilt`):
       the ARL grows as ``exp(theta h)``.
    2. The live data differ from the reference by the reference's own sampling error:
       the channel's mean is off by ``eps ~ N(0, sd^2 / n_ref)``, which moves the tilt
       by ``-theta a eps / E_q[Y]`` and multiplies the false-alarm rate by
       ``exp(theta h a eps / E_q[Y])``: ``exp(c2 h^2)`` on average over ``eps``, with
       ``c2 = (theta a sd / (E_q[Y] sqrt(n_ref)))^2 / 2``. The threshold solves
       ``log ARL(h) - c2 h^2 = log target``; no solution means the reference is too
       small for the row, which is then disabled (threshold inf).
    3. A first ``h0`` from the closed form ``ARL ~ exp(theta h) / (theta |E Y|)``, then
       ``ARL(h0)`` by importance-sampled simulation from the reference
       (:func:`arl_estimate`), and the final ``h`` from that anchor along the
       exponential law.
    """
    if not dists:
        return [], []
    width = max(len(v) for v, _, _ in dists)
    ys = np.zeros((len(dists), width))
    ws = np.zeros((len(dists), width))
    a_sd = np.zeros(len(dists))
    for r, (v, w, sd) in enumerate(dists):
        ys[r, : len(v)] = v
        ws[r, : len(w)] = w
        a_sd[r] = sd
    theta = tilt(ys, ws)
    live = theta > 0
    th = np.where(live, theta, 1.0)
    q = ws * np.exp(np.where(live[:, None], theta[:, None] * ys, 0.0))
    q /= q.sum(axis=1, keepdims=True)
    mean_q = np.maximum((q * ys).sum(axis=1), 1e-12)
    c2 = (th * a_sd / (mean_q * math.sqrt(max(n_ref, 1)))) ** 2 / 2
    mu = -(ws * ys).sum(axis=1)
    log_t = math.log(target_arl)
    h0 = _solve(np.zeros_like(th), -np.log(th * np.maximum(mu, 1e-12)), th, c2, log_t)
    h0 = np.where(live & np.isfinite(h0), np.maximum(h0, 0.5), 1.0)
    arl = arl_estimate(ys, ws, h0, np.where(live, theta, 0.0), rng, pol.paths, pol.cycles)
    h = _solve(h0, np.log(arl), th, c2, log_t)
    ok = live & np.isfinite(h) & (h > 0)
    out: list[float] = []
    notes: list[dict[str, float]] = []
    for r in range(len(dists)):
        notes.append(
            {
                "theta": round(float(theta[r]), 6),
                "h0": round(float(h0[r]), 4),
                "arl_h0": float(arl[r]) if math.isfinite(arl[r]) else -1.0,
                "inflation": round(math.exp(min(50.0, float(c2[r] * h[r] ** 2))), 4)
                if ok[r]
                else -1.0,
            }
        )
        out.append(float(h[r]) if ok[r] else math.inf)
    return out, notes


# --------------------------------------------------------------------------- detector


@dataclass(frozen=True)
class Transition:
    """Something that happened at one event: ``fire`` (the feature's episode opens),
    ``update`` (another group went away during the episode), ``return`` (a group came
    back, others still away) or ``resolve`` (the last group came back)."""

    position: int
    kind: str
    group: str
    direction: int


class FeatureDetector:
    """The bank of one feature: river-style (``update``, ``update_many``, properties).

    State is integers only (fixed-point statistics), so it is exact across batch
    boundaries and round-trips through JSON (:meth:`to_dict` / :meth:`from_dict`).

    Parameters
    ----------
    plan
        The calibrated bank (:func:`build_plan`).
    """

    def __init__(self, plan: FeaturePlan) -> None:
        self.plan = plan
        self._chan = np.asarray(plan.chan, dtype=np.intp)
        self._a = np.asarray(plan.a, dtype=np.float64)
        self._b = np.asarray(plan.b, dtype=np.float64)
        self._group = np.asarray(plan.group, dtype=np.intp)
        self._dir = np.asarray(plan.direction, dtype=np.int64)
        self._role = np.asarray(plan.role, dtype=np.int64)
        self._h = np.asarray(
            [math.ceil(t * SCALE) if math.isfinite(t) else NEVER for t in plan.threshold],
            dtype=np.int64,
        )
        self.s = np.zeros(plan.n_rows, dtype=np.int64)
        #: Per group: 0 (at reference) or the direction it went away in (+1 / -1).
        self.away = np.zeros(plan.n_groups, dtype=np.int64)
        #: Per group while away: events and fixed-point sum of the channel (effect size).
        self.away_n = np.zeros(plan.n_groups, dtype=np.int64)
        self.away_sum = np.zeros(plan.n_groups, dtype=np.int64)
        self.n = 0
        self.episodes = 0
        self._last: list[Transition] = []

    # ---------------------------------------------------------------- properties
    @property
    def drift_detected(self) -> bool:
        """Whether the last update (or batch) opened an episode."""
        return any(t.kind == "fire" for t in self._last)

    @property
    def drifting(self) -> bool:
        """Whether an episode is open (some channel group is away)."""
        return bool(self.away.any())

    @property
    def transitions(self) -> list[Transition]:
        """What the last update (or batch) did, in event order."""
        return list(self._last)

    def effects(self) -> dict[str, float]:
        """Per away group: mean channel value since it went away (z, z**2 or share)."""
        out: dict[str, float] = {}
        for g in np.flatnonzero(self.away).tolist():
            if self.away_n[g]:
                out[self.plan.group_names[g]] = float(self.away_sum[g]) / SCALE / self.away_n[g]
        return out

    # ---------------------------------------------------------------- updates
    def update(self, x: Any) -> FeatureDetector:
        """Feed one value (a float, or a category code for categorical features)."""
        self.update_many(np.asarray([x]))
        return self

    def update_many(self, xs: NDArray[Any]) -> I64:
        """Feed values in order; return the positions where an episode opened."""
        v = self.plan.channels(xs)
        self._last = []
        m = v.shape[1]
        pos = 0
        while pos < m:
            act = np.flatnonzero(
                np.where(
                    self._role == DETECT,
                    self.away[self._group] == 0,
                    self.away[self._group] == self._dir,
                )
            )
            if act.size == 0:
                break
            with np.errstate(invalid="ignore"):
                y = self._a[act, None] * v[self._chan[act], pos:] + self._b[act, None]
            q = np.rint(y * SCALE)
            q[np.isnan(q)] = 0.0  # a missing value leaves the statistic unchanged
            c = np.cumsum(q.astype(np.int64), axis=1)
            c += self.s[act, None]
            low = np.minimum.accumulate(c, axis=1)
            np.minimum(low, 0, out=low)
            c -= low  # S_t = C_t - min(0, min_{j<=t} C_j): the CUSUM recursion, exactly
            hit = c >= self._h[act, None]
            cols = np.flatnonzero(hit.any(axis=0))
            if cols.size == 0:
                self._track(v, pos, m)
                self.s[act] = c[:, -1]
                break
            t = int(cols[0])
            self._track(v, pos, pos + t + 1)
            self.s[act] = c[:, t]
            for i in np.flatnonzero(hit[:, t]).tolist():
                self._transition(int(act[i]), pos + t)
            pos += t + 1
        self.n += m
        return np.asarray([t.position for t in self._last if t.kind == "fire"], dtype=np.int64)

    def _track(self, v: F64, lo: int, hi: int) -> None:
        for g in np.flatnonzero(self.away).tolist():
            ch = int(self._chan[np.flatnonzero(self._group == g)[0]])
            seg = v[ch, lo:hi]
            seg = seg[np.isfinite(seg)]
            self.away_n[g] += seg.size
            self.away_sum[g] += int(np.rint(seg * SCALE).astype(np.int64).sum())

    def _transition(self, row: int, at: int) -> None:
        g = int(self._group[row])
        name = self.plan.group_names[g]
        same = self._group == g
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
            self._last.append(Transition(self.n + at, kind, name, int(self._dir[row])))
        else:
            direction = int(self.away[g])
            self.away[g] = 0
            self.s[same] = 0  # the group starts afresh against the reference
            kind = "resolve" if not self.drifting else "return"
            self._last.append(Transition(self.n + at, kind, name, direction))

    # ---------------------------------------------------------------- state
    def to_dict(self) -> dict[str, Any]:
        """The state as plain JSON (integers only); the plan is stored separately."""
        return {
            "s": self.s.tolist(),
            "away": self.away.tolist(),
            "away_n": self.away_n.tolist(),
            "away_sum": self.away_sum.tolist(),
            "n": self.n,
            "episodes": self.episodes,
        }

    @classmethod
    def from_dict(cls, plan: FeaturePlan, d: Mapping[str, Any]) -> FeatureDetector:
        """Rebuild a detector from :meth:`to_dict` and its plan."""
        det = cls(plan)
        det.s = np.asarray(d["s"], dtype=np.int64)
        det.away = np.asarray(d["away"], dtype=np.int64)
        det.away_n = np.asarray(d["away_n"], dtype=np.int64)
        det.away_sum = np.asarray(d["away_sum"], dtype=np.int64)
        det.n = int(d["n"])
        det.episodes = int(d["episodes"])
        if det.s.size != plan.n_rows or det.away.size != plan.n_groups:
            raise ValueError("state does not match the plan")
        return det
