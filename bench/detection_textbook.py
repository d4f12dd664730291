"""Textbook detectors of the detection benchmark, on the same streams (river, scipy).

* Page-Hinkley: ``river.drift.PageHinkley(delta=0.1)`` (its defaults otherwise) on
  ``(x - mean_ref) / sd_ref``;
* KS (two-sample against the reference values; scipy's asymptotic p-value, as
  ``ks_2samp`` uses at these sizes), PSI on 10 reference-decile bins, chi-square
  (goodness of fit to the reference shares), each on a sliding window of the last 500
  events evaluated every 50 events; alarm at p < 0.001 or PSI > 0.1;
* ADWIN (``river.drift.ADWIN()``, delta 0.002) on the error stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from detection_cases import CATEGORICAL, CHANGE, NUMERIC, Stream
from river import drift as river_drift
from scipy import stats as sps

WINDOW, EVERY = 500, 50
ALPHA = 0.001
PSI_ALARM = 0.1

Alarms = dict[str, list[int]]  # feature -> event indices where an alarm (episode) started


@dataclass
class Baseline:
    """What the textbook detectors keep of the training rows."""

    x: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    sorted_x: np.ndarray
    deciles: list[np.ndarray]
    decile_p: list[np.ndarray]
    shares: list[np.ndarray]


def baseline(train: Stream, n_categories: tuple[int, ...]) -> Baseline:
    """Means, sds, sorted values, decile bins and category shares of the training rows."""
    deciles, decile_p = [], []
    for i in range(len(NUMERIC)):
        edges = np.unique(np.quantile(train.x[i], np.arange(1, 10) / 10))
        deciles.append(edges)
        counts = np.bincount(
            np.searchsorted(edges, train.x[i], side="right"), minlength=edges.size + 1
        )
        decile_p.append(counts / counts.sum())
    shares = [np.bincount(train.c[j], minlength=k) / train.n for j, k in enumerate(n_categories)]
    return Baseline(
        x=train.x,
        mean=train.x.mean(axis=1),
        sd=train.x.std(axis=1),
        sorted_x=np.sort(train.x, axis=1),
        deciles=deciles,
        decile_p=decile_p,
        shares=shares,
    )


def standardised(base: Baseline, s: Stream, i: int) -> np.ndarray:
    """Numeric feature ``i`` of ``s`` as ``(x - mean_ref) / sd_ref``."""
    z: np.ndarray = (s.x[i] - base.mean[i]) / base.sd[i]
    return z


def page_hinkley_river(base: Baseline, s: Stream) -> Alarms:
    """river's Page-Hinkley (delta 0.1, its defaults otherwise) per numeric feature."""
    out: Alarms = {}
    for i, name in enumerate(NUMERIC):
        det = river_drift.PageHinkley(delta=0.1)
        hits = []
        for j, v in enumerate(standardised(base, s, i).tolist()):
            det.update(v)
            if det.drift_detected:
                hits.append(j)
        out[name] = hits
    return out


def adwin_river(errors: np.ndarray) -> list[int]:
    """river's ADWIN (defaults) on a 0/1 error stream: detection positions."""
    det = river_drift.ADWIN()
    hits = []
    for j, v in enumerate(errors.tolist()):
        det.update(v)
        if det.drift_detected:
            hits.append(j)
    return hits


def _rising(reject: np.ndarray, ends: np.ndarray) -> list[int]:
    """Alarm episodes of a window test: ends of windows that reject after one that did not."""
    prev = np.r_[False, reject[:-1]]
    out: list[int] = ends[reject & ~prev].tolist()
    return out


def _first_reject(reject: np.ndarray, ends: np.ndarray) -> int | None:
    after = np.flatnonzero(reject & (ends >= CHANGE))
    return int(ends[after[0]]) if after.size else None


@dataclass
class WindowResult:
    episodes: list[int]
    first_after_change: int | None


def run_windows(ref: Baseline, s: Stream) -> dict[str, dict[str, WindowResult]]:
    """KS and PSI per numeric feature, chi-square per categorical one, sliding windows."""
    starts = np.arange(0, s.n - WINDOW + 1, EVERY)
    ends = starts + WINDOW - 1
    take = starts[:, None] + np.arange(WINDOW)[None, :]
    out: dict[str, dict[str, WindowResult]] = {"ks": {}, "psi": {}, "chi2": {}}
    for i, name in enumerate(NUMERIC):
        p = ks_pvalues(ref.sorted_x[i], s.x[i], take)
        out["ks"][name] = WindowResult(_rising(p < ALPHA, ends), _first_reject(p < ALPHA, ends))
        counts = np.stack(
            [
                np.bincount(
                    np.searchsorted(ref.deciles[i], row, side="right"),
                    minlength=ref.deciles[i].size + 1,
                )
                for row in s.x[i][take]
            ]
        )
        cur = np.maximum(counts / WINDOW, 1e-4)
        base = np.maximum(ref.decile_p[i], 1e-4)
        psi = ((cur - base) * np.log(cur / base)).sum(axis=1)
        alarm = psi > PSI_ALARM
        out["psi"][name] = WindowResult(_rising(alarm, ends), _first_reject(alarm, ends))
    for j, name in enumerate(CATEGORICAL):
        k_cats = ref.shares[j].size
        counts = np.stack([np.bincount(row, minlength=k_cats) for row in s.c[j][take]])
        chi = sps.chisquare(counts, f_exp=ref.shares[j][None, :] * WINDOW, axis=1)
        alarm = chi.pvalue < ALPHA
        out["chi2"][name] = WindowResult(_rising(alarm, ends), _first_reject(alarm, ends))
    return out


def ks_pvalues(ref_sorted: np.ndarray, x: np.ndarray, take: np.ndarray) -> np.ndarray:
    """Two-sample KS p-value of each window ``x[take[j]]`` against the reference.

    ``D = sup |F_ref - F_win|`` evaluated on every distinct value of either sample (so
    ties, as in the Poisson feature, are handled exactly); the p-value is scipy's
    asymptotic two-sample one (``kstwo.sf(D, round(n m / (n + m)))``), which
    ``ks_2samp`` uses when a sample exceeds 10,000 values.
    """
    m = ref_sorted.size
    grid = np.unique(np.r_[ref_sorted, x])
    f_ref = np.searchsorted(ref_sorted, grid, side="right") / m
    where = np.searchsorted(grid, x)
    if grid.size <= 4 * WINDOW:  # few distinct values: count per value
        counts = np.stack([np.bincount(where[row], minlength=grid.size) for row in take])
        f_win = np.cumsum(counts, axis=1) / WINDOW
        d = np.abs(f_win - f_ref[None, :]).max(axis=1)
    else:  # continuous: the sup is reached at a window point, just before or at it
        win = np.sort(x[take], axis=1)
        hi = np.searchsorted(ref_sorted, win, side="right") / m
        lo = np.searchsorted(ref_sorted, win, side="left") / m
        k = np.arange(1, WINDOW + 1) / WINDOW
        d = np.maximum(np.abs(k - hi), np.abs(k - 1 / WINDOW - lo)).max(axis=1)
    pvalues: np.ndarray = sps.kstwo.sf(d, round(WINDOW * m / (WINDOW + m)))
    return pvalues


def check_ks_against_scipy(ref: Baseline, s: Stream) -> float:
    """Largest gap between this script's windowed KS p-values and ``scipy.stats.ks_2samp``."""
    worst = 0.0
    starts = np.asarray([0, 4_750, 9_800, 15_000])
    take = starts[:, None] + np.arange(WINDOW)[None, :]
    for i in range(len(NUMERIC)):
        got = ks_pvalues(ref.sorted_x[i], s.x[i], take)
        for j, start in enumerate(starts.tolist()):
            win = s.x[i][start : start + WINDOW]
            want = sps.ks_2samp(win, ref.x[i], method="asymp").pvalue
            worst = max(worst, abs(float(got[j]) - float(want)))
    return worst
