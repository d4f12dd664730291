"""Thresholds of one-sided CUSUMs for a false-alarm budget, by the Markov-chain method.

A CUSUM ``S_t = max(0, S_{t-1} + Y_t)`` alarms when ``S_t >= h``. With i.i.d.
increments its in-control average run length (ARL) from ``S = 0`` is computed by the
method of Brook and Evans (1972): ``[0, h)`` is cut into ``m`` cells, ``S`` becomes a
Markov chain on ``{0}`` and the cells' midpoints, and the ARL solves
``(I - P) L = 1``. The increments' distribution is an empirical one (held-out
reference rows), so skew, ties and tails are those of the data, and no simulation is
involved: the result is deterministic. Accuracy: within about 1% of simulation at
``m = 100`` for the increments used here (``tests/unit/test_multivariate.py``).

The live stream is not the held-out sample: the channel's live mean differs from the
sample's by the sample's own error, ``eps ~ N(0, sd^2 / n)``. A row's false-alarm rate
is therefore averaged over ``eps`` (Gauss-Hermite nodes): ``1 / ARL_eff(h) =
E_eps[1 / ARL(h | eps)]``. A row whose averaged rate cannot reach the target below
``max_threshold`` is disabled (threshold ``inf``): its reference is too small for it.

This is a second route to what ``bench/DETECTION.md`` does by importance sampling; it
fits here because each multivariate channel is one scalar with a few thousand sample
points, where the chain is exact and cheap.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from numpy.typing import NDArray

__all__ = ["calibrate_thresholds", "run_length"]

F64 = NDArray[np.float64]

#: Cells of the Markov chain on [0, h): at least, and at most.
STATES = 100
MAX_STATES = 2000
#: Cells per standard deviation of a row's increments.
CELLS_PER_SD = 4.0
#: Gauss-Hermite nodes for the reference's sampling error.
NODES = 5


def _cdf(sorted_y: F64, points: F64) -> F64:
    """``P(Y <= x)`` of the empirical distribution ``sorted_y`` at each point (one row)."""
    out: F64 = np.searchsorted(sorted_y, points, side="right") / sorted_y.size
    return out


def _banded_solve(band: F64, rhs: F64) -> F64:
    """Solve ``A x = rhs`` for a batch of banded matrices, without pivoting.

    ``band[r, i, b + o]`` holds ``A[i, i + o]`` for ``|o| <= b``. ``A = I - P`` of a
    sub-stochastic chain is an M-matrix (weakly diagonally dominant), for which
    elimination without pivoting is stable.
    """
    a = np.ascontiguousarray(band, dtype=np.float64).copy()
    x = np.array(rhs, dtype=np.float64)
    rows, n, width = a.shape
    b = (width - 1) // 2
    item = a.itemsize
    # Below pivot i, rows i+1..i+b at columns i..i+b: in the flat band, entry
    # (i + k, column i + c) sits at i W + k (W - 1) + b + c (k >= 1), a strided view
    # that does not overlap itself; padding keeps the last pivots' views in bounds.
    flat = np.zeros((rows, (n + b + 1) * width))
    flat[:, : n * width] = a.reshape(rows, -1)
    a = flat[:, : n * width].reshape(rows, n, width)
    blocks = np.lib.stride_tricks.as_strided(
        flat[:, (width - 1) + b :],
        shape=(rows, n, b, b + 1),
        strides=(flat.strides[0], width * item, (width - 1) * item, item),
        writeable=True,
    )
    for i in range(n - 1):
        lo = min(b, n - 1 - i)
        block = blocks[:, i, :lo, :]
        pivot = a[:, i, b:]
        factor = block[:, :, 0] / pivot[:, 0:1]
        block -= factor[:, :, None] * pivot[:, None, :]
        x[:, i + 1 : i + 1 + lo] -= factor * x[:, i, None]
    for i in range(n - 1, -1, -1):
        hi = min(b, n - 1 - i)
        acc = x[:, i]
        if hi:
            acc = acc - np.einsum("rk,rk->r", a[:, i, b + 1 : b + 1 + hi], x[:, i + 1 : i + 1 + hi])
        x[:, i] = acc / a[:, i, b]
    return x


def run_length(
    samples: F64,
    h: F64,
    shift: F64 | None = None,
    states: int | None = None,
    cells_per_sd: float = CELLS_PER_SD,
) -> F64:
    """In-control ARL from ``S = 0`` of a CUSUM per row (Brook and Evans' chain).

    Parameters
    ----------
    samples
        ``(rows, n)`` increments, each row sorted ascending (its empirical distribution).
    h
        ``(rows,)`` thresholds (> 0).
    shift
        ``(rows,)`` added to every increment of the row (default 0).
    states
        Cells of the chain on ``[0, h)``; by default ``cells_per_sd`` cells per
        standard deviation of the increments (4: within about 2% of simulation).

    Returns
    -------
    NDArray[float64]
        ``(rows,)`` average run lengths (events until ``S >= h``).

    Examples
    --------
    >>> y = np.sort(np.random.default_rng(0).normal(-0.125, 0.5, 20000))[None, :]
    >>> 78 < float(run_length(y, np.array([2.0]))[0]) < 88  # simulation: 82.6 +- 1.4
    True
    """
    rows = samples.shape[0]
    sh = np.zeros(rows) if shift is None else shift
    sd = samples.std(axis=1)
    m = states or _cells(h, sd, cells_per_sd)
    w = h / m
    reach = np.maximum(np.abs(samples[:, 0] + sh), np.abs(samples[:, -1] + sh))
    b = int(min(m, math.ceil(float(np.max(reach / w))) + 2))
    offsets = np.arange(-b - 1, b + 1, dtype=np.float64)  # G(o) = F((o + 1/2) w)
    steps = np.arange(0, b + 1, dtype=np.float64)  # H(j) = F(j w)
    g = np.empty((rows, offsets.size))
    hh = np.empty((rows, steps.size))
    for r in range(rows):
        g[r] = _cdf(samples[r], (offsets + 0.5) * w[r] - sh[r])
        hh[r] = _cdf(samples[r], steps * w[r] - sh[r])
    n = m + 1
    band = np.zeros((rows, n, 2 * b + 1))
    # From cell i >= 1 (midpoint (i - 1/2) w) to cell i + o >= 1: G(o) - G(o - 1).
    diff = g[:, 1:] - g[:, :-1]  # index o + b  for o = -b..b
    band[:, 1:, :] = -diff[:, None, :]
    # Cell i + o must be a cell (beyond the last one the chain has alarmed: absorbed).
    target = np.arange(n)[:, None] + np.arange(-b, b + 1)[None, :]
    band[:, (target < 0) | (target > m)] = 0.0
    # Cell 0 is the atom: from cell i, S' <= 0 with probability G(-i).
    for ii in range(1, min(b, m) + 1):
        band[:, ii, b - ii] = -g[:, b + 1 - ii]
    # From the atom: to cell j >= 1 with H(j) - H(j - 1), stay with H(0).
    band[:, 0, :] = 0.0
    band[:, 0, b] = -hh[:, 0]
    jmax = min(b, m)
    band[:, 0, b + 1 : b + 1 + jmax] = -(hh[:, 1 : jmax + 1] - hh[:, :jmax])
    band[:, :, b] += 1.0
    lengths = _banded_solve(band, np.ones((rows, n)))[:, 0]
    out: F64 = np.where(lengths > 0, lengths, math.inf)
    return out


def _cells(h: F64, sd: F64, cells_per_sd: float) -> int:
    return int(min(MAX_STATES, max(STATES, math.ceil(float(np.max(h * cells_per_sd / sd))))))


def _effective_log_arl(
    samples: F64, coef: F64, h: F64, eps_sd: float, nodes: F64, weights: F64, states: int
) -> F64:
    """``log ARL_eff(h)`` per row, the false-alarm rate averaged over the sampling error."""
    rows = samples.shape[0]
    big = np.repeat(samples, nodes.size, axis=0)
    shift = (coef[:, None] * nodes[None, :] * eps_sd).ravel()
    lengths = run_length(big, np.repeat(h, nodes.size), shift, states).reshape(rows, nodes.size)
    rate = (weights[None, :] / lengths).sum(axis=1)
    out: F64 = -np.log(np.maximum(rate, 1e-300))
    return out


def calibrate_thresholds(
    samples: F64,
    coef: F64,
    target: F64,
    n_reference: int,
    *,
    max_factor: float = 1.5,
    tolerance: float = 0.005,
) -> tuple[F64, F64]:
    """Thresholds ``h`` with ``ARL_eff(h) = target`` per row (``inf``: row disabled).

    Parameters
    ----------
    samples
        ``(rows, n)`` increments under the row's in-control distribution, sorted per row.
    coef
        ``(rows,)`` the increment's coefficient on the standardised channel: the live
        channel's mean error ``eps`` moves the increment by ``coef * eps``.
    target
        ``(rows,)`` in-control ARL each row must reach (events between false alarms).
    n_reference
        Size of the sample the channel was standardised on: ``eps ~ N(0, 1 / n)``.
    max_factor
        A row needing ``h > max_factor * log(target)`` is disabled: its reference is
        too small for it (an exact LLR row needs about ``log(target)``).
    tolerance
        Stop when ``|log ARL_eff - log target|`` is below this (0.5% of the ARL).

    Returns
    -------
    (thresholds, log_arl)
        Per row, ``h`` (``inf`` if disabled) and the achieved ``log ARL_eff(h)``.
    """
    rows = samples.shape[0]
    thresholds = np.full(rows, math.inf)
    achieved = np.full(rows, math.nan)
    # Rows of one increment scale share a chain grid, fixed while their root is sought
    # (a grid that moved with h would make log ARL(h) jump by a percent or so).
    scale = np.round(np.abs(coef), 12)
    for value in np.unique(scale):
        sel = np.flatnonzero(scale == value)
        h, got = _solve_rows(
            samples[sel], coef[sel], np.log(target[sel]), n_reference, max_factor, tolerance
        )
        thresholds[sel] = h
        achieved[sel] = got
    return thresholds, achieved


def _solve_rows(
    samples: F64,
    coef: F64,
    log_t: F64,
    n_reference: int,
    max_factor: float,
    tolerance: float,
) -> tuple[F64, F64]:
    rows = samples.shape[0]
    nodes, weights = hermegauss(NODES)
    weights = weights / weights.sum()
    eps_sd = 1.0 / math.sqrt(max(n_reference, 1))
    cap = max_factor * np.maximum(log_t, 1.0)
    states = _cells(cap, samples.std(axis=1), CELLS_PER_SD)

    def f(sel: NDArray[np.intp], h: F64) -> F64:
        got = _effective_log_arl(samples[sel], coef[sel], h, eps_sd, nodes, weights, states)
        out: F64 = got - log_t[sel]
        return out

    # log ARL grows about linearly in h (slope: the tilt, 1 for an exact LLR), so a
    # secant step from the first guess is close; then regula falsi in the bracket.
    h = np.minimum(np.maximum(log_t, 1.0), cap)
    fh = f(np.arange(rows), h)
    lo = np.where(fh < 0, h, 0.0)
    f_lo = np.where(fh < 0, fh, math.nan)
    hi = np.where(fh >= 0, h, math.nan)
    f_hi = np.where(fh >= 0, fh, math.nan)
    result = np.where(np.abs(fh) < tolerance, h, math.nan)
    achieved = np.where(np.abs(fh) < tolerance, fh + log_t, math.nan)
    for _ in range(30):
        active = np.flatnonzero(np.isnan(result))
        if active.size == 0:
            break
        a_lo, a_hi, af_lo, af_hi = lo[active], hi[active], f_lo[active], f_hi[active]
        no_hi, no_lo = np.isnan(a_hi), np.isnan(af_lo)
        with np.errstate(invalid="ignore", divide="ignore"):
            step = np.where(
                no_hi,
                a_lo - af_lo * 1.1,  # slope about 1: step past the root
                np.where(
                    no_lo,
                    a_hi - af_hi * 1.1,
                    a_lo - af_lo * (a_hi - a_lo) / (af_hi - af_lo),
                ),
            )
        step = np.clip(step, 0.05, cap[active] * 1.001)
        give_up = no_hi & (a_lo >= cap[active])
        result[active[give_up]] = math.inf
        achieved[active[give_up]] = af_lo[give_up] + log_t[active[give_up]]
        active, step = active[~give_up], step[~give_up]
        if active.size == 0:
            break
        fs = f(active, step)
        ok = np.abs(fs) < tolerance
        result[active[ok]] = step[ok]
        achieved[active[ok]] = fs[ok] + log_t[active[ok]]
        below = fs < 0
        up, down = active[below], active[~below]
        # Illinois: an end kept twice has its value halved, so the bracket shrinks.
        f_hi[up] = f_hi[up] / 2
        lo[up], f_lo[up] = step[below], fs[below]
        f_lo[down] = f_lo[down] / 2
        hi[down], f_hi[down] = step[~below], fs[~below]
    left = np.isnan(result)
    result[left] = np.where(np.isnan(hi[left]), math.inf, hi[left])
    thresholds: F64 = np.where(result <= cap, result, math.inf)
    return thresholds, achieved
