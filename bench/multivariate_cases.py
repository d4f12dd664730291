"""Streams of the multivariate benchmark (``bench_multivariate.py``): cases and generators.

Seeded, our own (no external data). Features come from a Gaussian copula: latent
normals with a fixed correlation structure, each pushed through its marginal's
inverse CDF, so changing a latent correlation leaves every marginal exactly as it was.

Narrow layout (20 numeric + 2 categorical features):

* marginals cycle through normal (x0, x5, ...), log-normal (x1, ...), Student t5 (x2,
  ...), Poisson(4) (x3, ...) and uniform (x4, ...);
* pair A: latent correlation 0.8 between x0 and x1 (the pair the cases break);
* a group x2, x3, x4 sharing one factor (pairwise latent correlation 0.5);
* pair B: x5 and x6 at 0.6;
* ``tier`` (basic 50%, pro 30%, team 20%) cut from a latent correlated 0.7 with x7's;
* ``region`` (4 categories) independent; x8..x19 independent.

Wide layout (300 numeric features, no categoricals): pair A, 20 more pairs at 0.6
(x2/x3 ... x40/x41), 10 groups of 5 features sharing a factor (x50..x99), the rest
independent.

The change starts at event ``CHANGE`` (10,000 of 20,000).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special, stats

N_EVENTS = 20_000
CHANGE = 10_000
WITHIN = 1_000
BATCH = 500
T0 = 1_767_225_600_000
STEP_MS = 10

REGION = (("eu", 0.4), ("us", 0.3), ("apac", 0.2), ("latam", 0.1))
TIER = (("basic", 0.5), ("pro", 0.3), ("team", 0.2))


@dataclass(frozen=True)
class Case:
    """One case: what changes at event 10,000, and whether the multivariate alert should fire."""

    title: str
    expect: str  # "fire", "quiet" or "report" (mean shifts: what it does is measured)


CASES: dict[str, Case] = {
    "corr_neg": Case("pair x0,x1: correlation +0.8 -> -0.8, marginals unchanged", "fire"),
    "corr_zero": Case("pair x0,x1: correlation +0.8 -> 0, marginals unchanged", "fire"),
    "cat_link": Case("tier no longer follows x7 (shares unchanged)", "fire"),
    "stationary": Case("stationary", "quiet"),
    "mean_indep_05": Case("mean shift +0.5 sd in x8 (independent)", "report"),
    "mean_indep_1": Case("mean shift +1 sd in x8 (independent)", "report"),
    "mean_pair_05": Case("mean shift +0.5 sd in x0 (pair A)", "report"),
    "mean_pair_1": Case("mean shift +1 sd in x0 (pair A)", "report"),
}
WIDE_CASES = ("corr_neg", "corr_zero", "stationary")


@dataclass(frozen=True)
class Layout:
    """Which features exist and how their latents are tied."""

    n_numeric: int
    categorical: bool

    @property
    def numeric(self) -> tuple[str, ...]:
        return tuple(f"x{j}" for j in range(self.n_numeric))

    @property
    def names(self) -> tuple[str, ...]:
        return self.numeric + (("region", "tier") if self.categorical else ())


NARROW = Layout(20, True)
WIDE = Layout(300, False)


@dataclass
class Stream:
    """Columns of one stream (or of training rows)."""

    x: np.ndarray  # (n_numeric, n) floats
    cats: dict[str, list[str]]

    @property
    def n(self) -> int:
        return int(self.x.shape[1])


def _latent(rng: np.random.Generator, layout: Layout, n: int, rho_a: np.ndarray) -> np.ndarray:
    d = layout.n_numeric
    g = rng.standard_normal((d, n))
    g[1] = rho_a * g[0] + np.sqrt(1 - rho_a**2) * g[1]
    if layout is WIDE:
        for p in range(20):
            a, b = 2 + 2 * p, 3 + 2 * p
            g[b] = 0.6 * g[a] + 0.8 * g[b]
        for q in range(10):
            f = rng.standard_normal(n)
            for j in range(50 + 5 * q, 55 + 5 * q):
                g[j] = math.sqrt(0.5) * f + math.sqrt(0.5) * g[j]
    else:
        f = rng.standard_normal(n)
        for j in (2, 3, 4):
            g[j] = math.sqrt(0.5) * f + math.sqrt(0.5) * g[j]
        g[6] = 0.6 * g[5] + 0.8 * g[6]
    return g


def _marginal(j: int, g: np.ndarray) -> np.ndarray:
    kind = j % 5
    if kind == 0:
        return 50.0 + 10.0 * g
    if kind == 1:
        return 20.0 * np.exp(0.6 * g)
    u = special.ndtr(g)
    if kind == 2:
        return 100.0 + 3.0 * stats.t.ppf(u, 5)
    if kind == 3:
        return stats.poisson.ppf(u, 4.0).astype(np.float64)
    return u


#: Marginal sd of each shape (for mean shifts in sd units).
def _sd(j: int) -> float:
    return [
        10.0,
        20.0 * math.sqrt((math.exp(0.36) - 1) * math.exp(0.36)),
        3.0 * math.sqrt(5 / 3),
        2.0,
        math.sqrt(1 / 12),
    ][j % 5]


def _cut(u: np.ndarray, shares: tuple[tuple[str, float], ...]) -> list[str]:
    edges = np.cumsum([p for _, p in shares])[:-1]
    idx = np.searchsorted(edges, u, side="right")
    names = [c for c, _ in shares]
    return [names[i] for i in idx.tolist()]


def generate(rng: np.random.Generator, layout: Layout, n: int, case: str | None) -> Stream:
    """``n`` events; from ``CHANGE`` on, the change of ``case`` (None: training rows)."""
    after = np.arange(n) >= CHANGE if case else np.zeros(n, dtype=bool)
    rho = np.full(n, 0.8)
    if case == "corr_neg":
        rho[after] = -0.8
    elif case == "corr_zero":
        rho[after] = 0.0
    g = _latent(rng, layout, n, rho)
    x = np.empty_like(g)
    for j in range(layout.n_numeric):
        x[j] = _marginal(j, g[j])
    shifts = {
        "mean_indep_05": (8, 0.5),
        "mean_indep_1": (8, 1.0),
        "mean_pair_05": (0, 0.5),
        "mean_pair_1": (0, 1.0),
    }
    if case in shifts:
        j, size = shifts[case]
        x[j] = np.where(after, x[j] + size * _sd(j), x[j])
    cats: dict[str, list[str]] = {}
    if layout.categorical:
        cats["region"] = _cut(rng.random(n), REGION)
        h = 0.7 * g[7] + math.sqrt(1 - 0.49) * rng.standard_normal(n)
        if case == "cat_link":
            h = np.where(after, rng.standard_normal(n), h)
        cats["tier"] = _cut(special.ndtr(h), TIER)
    return Stream(x=x, cats=cats)


def stream_rng(seed: int, run: int, what: str) -> np.random.Generator:
    return np.random.default_rng([seed, run, zlib.crc32(what.encode())])


def rows_of(s: Stream, layout: Layout) -> list[dict[str, Any]]:
    """Feature dicts (for ``build_reference``)."""
    xs = s.x.T.tolist()
    names = layout.numeric
    out = []
    for i in range(s.n):
        row: dict[str, Any] = dict(zip(names, xs[i], strict=True))
        for k, v in s.cats.items():
            row[k] = v[i]
        out.append(row)
    return out


def events_of(s: Stream, layout: Layout) -> list[dict[str, Any]]:
    """Prediction events (dicts, as the monitor's core takes them)."""
    return [
        {
            "prediction_id": f"p{i}",
            "model_id": "mv",
            "model_version": "1",
            "timestamp": T0 + i * STEP_MS,
            "features": row,
            "prediction": "yes",
        }
        for i, row in enumerate(rows_of(s, layout))
    ]
