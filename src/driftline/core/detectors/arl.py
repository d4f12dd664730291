"""Thresholds of one-sided CUSUMs for a false-alarm budget, by simulation from a reference.

A CUSUM row ``S_t = max(0, S_{t-1} + Y_t)`` with ``E[Y] < 0`` on reference data raises a
false alarm when ``S`` first reaches its threshold ``h``; its in-control *average run
length* (ARL) is the expected number of events until then. :func:`calibrate_rows`
finds, per row, the ``h`` whose ARL is a target, with ``Y`` distributed as on the
reference (a discrete distribution: the reference's values, or quantile points of them,
each with a weight):

1. the tilt ``theta > 0`` with ``E[exp(theta Y)] = 1`` (:func:`tilt`): the ARL grows as
   ``exp(theta h)`` (Cramer-Lundberg); ``theta = 1`` for an exact log-likelihood ratio,
   otherwise it carries the reference's skew, tails and ties;
2. ``ARL(h) = E[cycle length] / P(a cycle reaches h)``, since the CUSUM renews each time
   it returns to 0 (:func:`arl_estimate`): the mean cycle length by plain simulation,
   the small probability by importance sampling under the tilted distribution
   ``q = w exp(theta y)`` (Siegmund), whose relative error does not grow with ``h``;
3. the live data differ from the reference by the reference's own sampling error: a
   channel's mean is off by about ``sd / sqrt(n_ref)``, fixed for the reference's whole
   life, and a mean moved towards a row's drift shortens its ARL exponentially (or
   worse, once the error nears the row's allowance). So each detection row is
   calibrated on the reference moved towards its drift by :data:`MARGIN_SD` standard
   errors (:func:`_moved`: the weights tilted to that mean), which holds its ARL to the
   target for all but about 1 reference in 700 (Gaussian errors; heavier-tailed
   columns, as the spread of a log-normal one, somewhat more). A row whose allowance is
   inside the margin (a reference too small for it) is disabled (threshold ``inf``).
   Averaging the rate over the error instead (the unconditional ARL) held the budget
   on average only: unlucky 400-row references raised false alerts within a few
   thousand events (``bench/bench_small_reference.py``).

Deterministic: the only randomness is the ``numpy.random.Generator`` passed in (the
caller seeds it from the reference's seed). The oracle is brute force: run lengths of
the CUSUM simulated to the alarm at the calibrated threshold average the target
(``tests/unit/test_bank.py``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["Calibration", "RowDistribution", "arl_estimate", "calibrate_rows", "tilt"]

F64 = NDArray[np.float64]

#: Walks under the tilted distribution per row (the crossing probability).
PATHS = 300
#: Plain cycles per row (the mean cycle length).
CYCLES = 1000


@dataclass(frozen=True)
class RowDistribution:
    """The increment ``Y = a v + b`` of one row on reference data.

    ``values`` are the increments, ``weights`` their probabilities (summing to 1), and
    ``scale`` the standard deviation of the channel times ``|a|`` (how much a shift of
    the channel's mean moves ``Y``: the sampling-error correction of step 3).
    """

    values: F64
    weights: F64
    scale: float


@dataclass(frozen=True)
class Calibration:
    """A row's threshold (nats; ``inf``: disabled) and how it was found."""

    threshold: float
    #: The tilt of step 1 (0: the increment never climbs, the row cannot alarm).
    theta: float
    #: How many times the target ARL the row has on the reference exactly as measured
    #: (``exp((theta_0 - theta) h)``): what the margin of step 3 costs.
    inflation: float


def _log_mgf(theta: F64, ys: F64, logw: F64) -> tuple[F64, F64]:
    """Per row: ``log E[exp(theta Y)]`` and its derivative ``E_theta[Y]``."""
    a = theta[:, None] * ys + logw
    m = a.max(axis=1, keepdims=True)
    e = np.exp(a - m)
    s = e.sum(axis=1)
    return m[:, 0] + np.log(s), (e * ys).sum(axis=1) / s


def tilt(ys: F64, ws: F64) -> F64:
    """Per row, the positive root ``theta`` of ``E[exp(theta Y)] = 1`` (0 if none).

    Parameters
    ----------
    ys, ws
        ``(rows, points)``: increments and their weights (zero weights pad short rows).

    Returns
    -------
    numpy.ndarray
        ``theta`` per row; 0 where ``E[Y] >= 0`` or ``Y`` is never positive.
    """
    with np.errstate(divide="ignore"):
        logw = np.where(ws > 0, np.log(np.where(ws > 0, ws, 1.0)), -np.inf)
    live = ws > 0
    mu = (ws * ys).sum(axis=1)
    var = (ws * (ys - mu[:, None]) ** 2).sum(axis=1)
    top = np.where(live, ys, -np.inf).max(axis=1)
    ok = (mu < 0) & (top > 0)
    # 2|mu|/var is the Gaussian root; move right of the true root, then Newton from the
    # right, which converges monotonically (the log-MGF is convex).
    theta = np.where(ok, 2 * -mu / np.maximum(var, 1e-300), 0.0)
    for _ in range(200):
        g, _ = _log_mgf(np.where(ok, theta, 0.0), ys, logw)
        low = ok & (g <= 0)
        if not low.any():
            break
        theta = np.where(low, theta * 2, theta)
    for _ in range(100):
        g, dg = _log_mgf(np.where(ok, theta, 0.0), ys, logw)
        step = np.where(ok, g / np.where(dg > 0, dg, 1.0), 0.0)
        theta = theta - step
        if np.all(np.abs(step) <= 1e-12 * np.maximum(theta, 1e-12)):
            break
    out: F64 = np.where(ok, theta, 0.0)
    return out


class _Scratch:
    """Work arrays reused from one chunk of walks to the next (fresh big arrays cost page
    faults: as much as the arithmetic on them)."""

    def __init__(self) -> None:
        self._arrays: dict[str, NDArray[np.generic]] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: type[np.generic]) -> Any:
        size = math.prod(shape)
        have = self._arrays.get(name)
        if have is None or have.size < size:
            grown = 2 * have.size if have is not None else 0
            have = self._arrays[name] = np.empty(max(size, grown), dtype)
        return have[:size].reshape(shape)


class _Sampler:
    """Exact draws from one discrete distribution per row (inverse CDF with a guide table).

    A guide table of as many cells as points gives each uniform draw a starting index a
    few points below its answer at most (Chen and Asau), so a draw costs O(1) instead of
    a binary search; the answer is the inverse CDF, exactly. That search defines a draw:
    the first point at or after the guide's start whose cumulative weight plus the row's
    number (which keeps all rows in one sorted array) exceeds ``u`` plus the row's
    number, both sums rounded as doubles; clipped to the row.

    Most draws skip the search: a finer table of ``fine`` cells per row (a power of two,
    so ``u * fine`` is exact) holds the value itself wherever the search gives the same
    answer for every ``u`` of the cell, NaN elsewhere (a cell holding a cumulative
    weight); only those draws are searched. Same values, bit for bit.
    """

    #: Fine cells per point at least (a power of two per row), within :data:`_CELLS`.
    _PER_POINT = 16
    _CELLS = 1 << 19

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
        fine = 1 << max(0, (self._PER_POINT * width - 1).bit_length())
        while fine > 1 and fine * rows > self._CELLS:
            fine >>= 1
        self.fine = fine
        self._table(rows, fine)

    def _table(self, rows: int, fine: int) -> None:
        """Per row and fine cell: the value every ``u`` of the cell draws, else NaN
        (:attr:`table`); where the search may start for a ``u`` of the cell, the answer
        at its left edge (:attr:`start`); whether the guide's start can be further than
        that (:attr:`guided`).

        The search's answer is monotone in ``u``, so it is constant on a cell where it is
        the same at both edges. An edge ``u = c / fine`` and its target ``u + row`` are
        exact; there the answer is the number of cumulative weights at or below the
        target where the guide's start is no further (``k / width <= u``, ``k`` the
        guide's cell: checked), which grows by one at the first edge reaching each
        weight: the cell before such an edge is NaN.
        """
        w, cdf = self.width, self.flat_cdf
        exact_edges, across, k_last = _fine_cells(w, fine)
        if not (exact_edges and np.isfinite(cdf).all() and (np.diff(cdf) >= 0).all()):
            # no closed form: search every draw from the guide's start
            self.guided = True
            self.start = np.zeros(rows * fine, np.int32)
            self.table = np.full(rows * fine, np.nan)
            return
        # The first edge reaching each weight p (cdf + row, sorted), as a flat index
        # (row * fine + c: exact targets; a row's last edge is the next row's first).
        first = np.ceil(cdf * fine).astype(np.intp)
        runs = np.diff(first, prepend=0, append=rows * fine)  # edges landing on each point
        landed = np.minimum(np.arange(cdf.size + 1, dtype=np.int32), cdf.size - 1)
        self.start = np.repeat(landed, runs)
        self.table = np.repeat(self.flat_y[landed], runs)
        self.table[first[first > 0] - 1] = np.nan
        # A cell holding a guide cell's edge: there the guide's start (of the cell's last
        # guide cell, the furthest) can be further than the cell's left edge's answer.
        offsets = np.arange(rows)[:, None]
        guide = self.guide[offsets * w + k_last]
        self.guided = bool((guide > self.start[offsets * fine + across]).any())

    def draw(
        self, r: NDArray[np.intp], u: F64, out: F64 | None = None, work: _Scratch | None = None
    ) -> F64:
        """Values for rows ``r[:, None]`` at uniforms ``u`` (same shape as ``u``), into
        ``out`` if given (``work``: reusable work arrays)."""
        work = work or _Scratch()
        cell = work.get("cell", u.shape, np.intp)
        np.multiply(u, self.fine, out=cell, casting="unsafe")  # exact: a power of two
        cell += (r * self.fine)[:, None]
        values: F64 = np.take(self.table, cell, out=out, mode="clip")  # all in range
        nan = np.isnan(values, out=work.get("nan", u.shape, np.bool_))
        if nan.any():
            miss = np.flatnonzero(nan)
            cells = cell.reshape(-1)[miss]
            values.reshape(-1)[miss] = self.flat_y[self._resume(cells, u.reshape(-1)[miss])]
        return values

    def _resume(self, cells: NDArray[np.intp], u: F64) -> NDArray[np.intp]:
        """The search (class notes) for draws at ``u`` in the fine ``cells``, from each
        cell's :attr:`start` (no further than the answer: monotone) or the guide's."""
        w, cdf = self.width, self.flat_cdf
        r = cells // self.fine
        j = self.start[cells].astype(np.intp)
        if self.guided:
            k = np.minimum((u * w).astype(np.intp), w - 1)
            np.maximum(j, self.guide[k + r * w], out=j)
        target = u + r
        last = cdf.size - 1
        lag = np.flatnonzero(cdf[np.minimum(j, last)] <= target)
        while lag.size:  # a step or two at most
            j[lag] += 1
            at = j[lag]
            lag = lag[(at <= last) & (cdf[np.minimum(at, last)] <= target[lag])]
        lo = r * w
        np.clip(j, lo, lo + (w - 1), out=j)  # as the search: the row's first or last point
        return j


@functools.lru_cache(maxsize=16)
def _fine_cells(width: int, fine: int) -> tuple[bool, NDArray[np.intp], NDArray[np.intp]]:
    """For guide cells of ``1 / width`` and fine cells of ``1 / fine``: whether no guide
    cell starts after a fine cell's left edge that it holds (``k / width <= c / fine``);
    the fine cells holding a guide cell's edge, and their last guide cells."""
    edges = np.arange(fine + 1) / fine
    k = np.minimum((edges * width).astype(np.intp), width - 1)
    k_last = np.minimum((np.nextafter(edges[1:], 0.0) * width).astype(np.intp), width - 1)
    across = np.flatnonzero(k_last != k[:-1])
    k_across = k_last[across]
    across.flags.writeable = k_across.flags.writeable = False  # shared by the cache
    return bool((k / width <= edges).all()), across, k_across


#: Blocks of a walk's first chunk of steps, drawn at once but mapped and summed block by
#: block for the walks still going: most walks of a cycle end within a few steps.
_FIRST_BLOCKS = ((0, 2), (2, 4), (4, 8), (8, 16))


def _walks(
    sampler: _Sampler,
    counts: NDArray[np.intp],
    h: F64,
    rng: np.random.Generator,
    max_steps: int,
    work: _Scratch | None = None,
) -> tuple[NDArray[np.intp], F64, F64]:
    """``counts[r]`` walks of row ``r`` from 0, each until ``S <= 0`` or ``S >= h``.

    All walks advance together, in chunks of steps that double from 16 up to 256: a
    chunk's uniforms are drawn at once (the generator's stream), then a walk's path in
    the chunk is ``S`` before it plus the running sum of its increments from the chunk's
    start. Returns each walk's row, steps and ``S`` at its end.
    """
    row_of = np.repeat(np.arange(counts.size), counts)
    total = row_of.size
    s = np.zeros(total)
    steps = np.zeros(total)
    end = np.zeros(total)
    alive = np.arange(total)
    chunk, taken = 16, 0
    work = work or _Scratch()
    while alive.size and taken < max_steps:
        shape = (alive.size, chunk)
        u = rng.random(shape, out=work.get("u", shape, np.float64))
        going = np.arange(alive.size)  # this chunk's walks not ended yet
        carry = last = np.zeros(0)
        for lo, hi in _FIRST_BLOCKS if taken == 0 else ((0, chunk),):
            walk = alive[going]
            r = row_of[walk]
            block = u[:, lo:hi] if going.size == alive.size else u[going, lo:hi]
            path = sampler.draw(r, block, work.get("path", block.shape, np.float64), work)
            if lo:
                path[:, 0] += carry  # the running sum goes on from the chunk's start
            np.cumsum(path, axis=1, out=path)
            carry = path[:, -1].copy()
            path += s[walk, None]
            stop = np.less_equal(path, 0.0, out=work.get("stop", block.shape, np.bool_))
            high = np.greater_equal(path, h[r, None], out=work.get("high", block.shape, np.bool_))
            stop |= high
            first = np.argmax(stop, axis=1)
            stopped = stop[np.arange(walk.size), first]
            done = np.flatnonzero(stopped)
            end[walk[done]] = path[done, first[done]]
            steps[walk[done]] += lo + first[done] + 1
            more = np.flatnonzero(~stopped)
            going, carry, last = going[more], carry[more], path[more, -1]
            if not going.size:
                break
        alive = alive[going]
        s[alive] = last
        steps[alive] += chunk
        taken += chunk
        chunk = min(chunk * 2, 256)
    end[alive] = s[alive]  # cut at max_steps: neither boundary reached
    return row_of, steps, end


#: The reference's sampling error taken as adverse, in its standard errors (step 3).
MARGIN_SD = 3.0

#: Relative standard error the two simulated means are held to (each)...
REL_ERROR = 0.08
#: ... unless a row's walks of that kind would then total more than this many steps.
STEP_BUDGET = 400_000


class _Means:
    """Per row: count, sum and sum of squares of simulated values, and steps walked."""

    def __init__(self, rows: int) -> None:
        self.count = np.zeros(rows)
        self.total = np.zeros(rows)
        self.squares = np.zeros(rows)
        self.steps = np.zeros(rows)

    def add(self, row_of: NDArray[np.intp], values: F64, steps: F64) -> None:
        k = self.count.size
        self.count += np.bincount(row_of, minlength=k)
        self.total += np.bincount(row_of, values, minlength=k)
        self.squares += np.bincount(row_of, values * values, minlength=k)
        self.steps += np.bincount(row_of, steps, minlength=k)

    def mean(self) -> F64:
        out: F64 = self.total / np.maximum(self.count, 1)
        return out

    def more(self, live: NDArray[np.bool_]) -> NDArray[np.intp]:
        """Walks to add per row for a relative standard error of :data:`REL_ERROR`
        (from the variance seen so far), within :data:`STEP_BUDGET`."""
        n = np.maximum(self.count, 1)
        m = self.mean()
        var = np.maximum(self.squares / n - m * m, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            want = np.where(m != 0, var / (m * REL_ERROR) ** 2, 0.0)
        per_walk = np.maximum(self.steps / n, 1.0)
        # Crossing weights of a high threshold (about exp(-theta h)) can be so small that
        # their squares underflow: the variance is then unknown (0/0), so the row gets the
        # whole budget rather than a NaN count.
        want = np.minimum(np.where(np.isnan(want), np.inf, want), STEP_BUDGET / per_walk)
        out: NDArray[np.intp] = np.where(live, np.maximum(np.ceil(want - n), 0), 0).astype(np.intp)
        return out


def arl_estimate(
    ys: F64,
    ws: F64,
    h: F64,
    theta: F64,
    rng: np.random.Generator,
    paths: int = PATHS,
    cycles: int = CYCLES,
) -> F64:
    """Per row: the in-control ARL of the CUSUM at threshold ``h``, by simulation.

    ``ARL = E[cycle length] / P(a cycle reaches h)`` (Wald: the CUSUM renews at 0). The mean
    cycle length comes from plain cycles, as ``E[S at the cycle's end] / E[Y]`` (Wald's
    identity: the end value varies far less than the length); the probability from
    walks under the tilted
    distribution ``q = w exp(theta y)``, where a walk ending at ``S >= h`` has likelihood
    ratio ``exp(-theta S)`` (Siegmund's importance sampling). First ``cycles`` and
    ``paths`` per row, then as many more as the variance seen says are needed for a
    relative standard error of :data:`REL_ERROR` each (rows with big steps, e.g. rare
    categories, overshoot ``h`` widely; their walks are short), within
    :data:`STEP_BUDGET` steps per row.

    Returns
    -------
    numpy.ndarray
        The ARL per row (``inf`` where ``theta <= 0`` or no tilted walk crossed).
    """
    live = theta > 0
    with np.errstate(over="ignore"):
        q = ws * np.exp(np.where(live[:, None], theta[:, None] * ys, 0.0))
    q /= q.sum(axis=1, keepdims=True)
    mean_q = (q * ys).sum(axis=1)
    span = np.where(live, h / np.maximum(mean_q, 1e-9), 0.0)
    longest = max(4096, int(min(1 << 20, 20 * float(span.max(initial=0.0)))))
    plain, tilted = _Sampler(ys, ws), _Sampler(ys, q)
    work = _Scratch()
    rows = len(ys)
    lengths, weights = _Means(rows), _Means(rows)
    n_c = np.where(live, cycles, 0).astype(np.intp)
    n_p = np.where(live, paths, 0).astype(np.intp)
    for _ in range(2):
        if n_c.any():
            row_of, steps, end = _walks(plain, n_c, h, rng, longest, work)
            lengths.add(row_of, end, steps)
        if n_p.any():
            row_of, steps, end = _walks(tilted, n_p, h, rng, longest, work)
            hit = end >= h[row_of]
            w = np.where(hit, np.exp(-theta[row_of] * np.where(hit, end, 0.0)), 0.0)
            weights.add(row_of, w, steps)
        n_c, n_p = lengths.more(live), weights.more(live)
    # Wald: a cycle is a sum of increments from 0, so E[S at its end] = E[length] E[Y].
    # S at the end is a small undershoot (or h): far less spread than the length.
    mean_y = (ws * ys).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cycle = lengths.mean() / np.where(live, mean_y, -1.0)
    p = weights.mean()
    out: F64 = np.where(live & (p > 0), cycle / np.maximum(p, 1e-300), math.inf)
    return out


def _along(h_a: F64, log_arl_a: F64, theta: F64, log_t: float) -> F64:
    """``h`` with ``log ARL(h_a) + theta (h - h_a) = log_t`` (the exponential law)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        h: F64 = h_a + (log_t - log_arl_a) / theta
    return h


def _moved(ys: F64, ws: F64, shift: F64) -> tuple[F64, NDArray[np.bool_]]:
    """Per row: the weights exponentially tilted so that the mean of ``Y`` rises by
    ``shift`` (of all distributions on the same values with that mean, the closest to
    the reference: for a Bernoulli row, the share moved; for a Gaussian one, the mean),
    and whether that mean is reachable (below the row's largest value)."""
    with np.errstate(divide="ignore"):
        logw = np.log(ws)
    target = (ws * ys).sum(axis=1) + shift
    top = np.where(ws > 0, ys, -np.inf).max(axis=1)
    reachable = target < top
    move = reachable & (shift > 0)
    if not move.any():
        return ws, reachable
    # E_lambda[Y] rises with lambda (its derivative is the variance): Newton from 0, kept
    # inside the bracket of lambdas known below and above the target (else bisection).
    lam, lo, hi = np.zeros(shift.shape), np.zeros(shift.shape), np.full(shift.shape, np.inf)
    tol = 1e-12 * (1.0 + np.abs(target))
    w = ws
    for _ in range(100):
        a = lam[:, None] * ys + logw
        e = np.exp(a - a.max(axis=1, keepdims=True))
        w = e / e.sum(axis=1, keepdims=True)
        m = (w * ys).sum(axis=1)
        going = move & (np.abs(m - target) > tol)
        if not going.any():
            break
        below = m < target
        lo, hi = np.where(below, lam, lo), np.where(below, hi, lam)
        var = (w * (ys - m[:, None]) ** 2).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = lam + (target - m) / var
        inside = (step > lo) & (step < hi)
        fallback = np.where(np.isfinite(hi), (lo + hi) / 2, 2 * np.maximum(lam, 1.0))
        lam = np.where(going, np.where(inside, step, fallback), lam)
    out: F64 = np.where(move[:, None], w, ws)
    return out, reachable


def calibrate_rows(
    rows: Sequence[RowDistribution],
    target_arl: float,
    n_ref: int | Sequence[int],
    rng: np.random.Generator,
    *,
    paths: int = PATHS,
    cycles: int = CYCLES,
) -> list[Calibration]:
    """Thresholds such that each row's in-control ARL is ``target_arl``.

    Parameters
    ----------
    rows
        Each row's increment on the reference (:class:`RowDistribution`).
    target_arl
        Expected events between false alarms of *each* row.
    n_ref
        Reference rows the distributions were estimated from (their sampling error), one
        number or one per row; 0 leaves a row's sampling error out.
    rng
        The simulation's generator (seeded by the caller: a rebuild is identical).

    Returns
    -------
    list of Calibration
        One per row, in order. A first ``h0`` from the closed form
        ``ARL ~ exp(theta h) / (theta |E Y|)``, ``ARL(h0)`` by :func:`arl_estimate`, then
        ``h`` from that anchor along the exponential law; detection rows on the
        reference moved by the margin for its sampling error (module notes).
    """
    if not rows:
        return []
    width = max(r.values.size for r in rows)
    ys = np.zeros((len(rows), width))
    ws = np.zeros((len(rows), width))
    a_sd = np.zeros(len(rows))
    for i, r in enumerate(rows):
        ys[i, : r.values.size] = r.values
        ws[i, : r.weights.size] = r.weights
        a_sd[i] = r.scale
    n = np.broadcast_to(np.asarray(n_ref, dtype=np.float64), a_sd.shape)
    # Step 3: the channel's mean on live data may be off the reference's by its standard
    # error sd / sqrt(n_ref); each row is calibrated as if it already were MARGIN_SD of
    # them towards its drift.
    margin = np.where(n > 0, MARGIN_SD * a_sd / np.sqrt(np.maximum(n, 1.0)), 0.0)
    theta_exact = tilt(ys, ws)
    ws, reachable = _moved(ys, ws, margin)
    theta = np.where(reachable, tilt(ys, ws), 0.0)
    live = theta > 0
    th = np.where(live, theta, 1.0)
    mu = -(ws * ys).sum(axis=1)
    log_t = math.log(target_arl)
    h0 = _along(np.zeros_like(th), -np.log(th * np.maximum(mu, 1e-12)), th, log_t)
    h0 = np.where(live & np.isfinite(h0), np.maximum(h0, 0.5), 1.0)
    arl = arl_estimate(ys, ws, h0, np.where(live, theta, 0.0), rng, paths, cycles)
    # A row whose mean is within simulation noise of 0 (as one moved by the margin can
    # be) may get a cycle length of the wrong sign: no ARL, so the row is disabled.
    with np.errstate(divide="ignore", invalid="ignore"):
        h = _along(h0, np.log(arl), th, log_t)
    ok = live & np.isfinite(h) & (h > 0)
    out: list[Calibration] = []
    for i in range(len(rows)):
        if ok[i]:
            infl = math.exp(min(50.0, max(0.0, float((theta_exact[i] - theta[i]) * h[i]))))
            out.append(Calibration(float(h[i]), float(theta[i]), infl))
        else:
            out.append(Calibration(math.inf, float(theta[i]), math.inf))
    return out
