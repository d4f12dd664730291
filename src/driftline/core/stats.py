"""Window-versus-reference drift statistics on two count vectors (numpy only).

Every test here takes the reference's and the window's counts on the *same* bins (see
:mod:`driftline.core.sketches`): ``ref_counts[i]`` and ``cur_counts[i]`` count the values in
bin ``i``. Counts must be finite and non-negative (they need not be integers) and each
vector must have a positive total; vectors of different lengths raise
:class:`~driftline.errors.SketchMismatch`, other bad arguments :class:`ValueError`.

The distribution functions (:func:`kolmogorov_sf`, :func:`chi2_sf`, :func:`chi2_isf`,
:func:`chi2_ppf`) are written from their series and continued fractions so the service
does not depend on scipy; the test suite checks them against scipy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from driftline.errors import SketchMismatch

__all__ = [
    "Chi2Result",
    "KSResult",
    "calibrate_psi_threshold",
    "cdf_rows",
    "chi2_homogeneity",
    "chi2_homogeneity_rows",
    "chi2_isf",
    "chi2_ppf",
    "chi2_sf",
    "holm",
    "js_distance",
    "js_distance_rows",
    "kolmogorov_sf",
    "ks_binned",
    "ks_binned_rows",
    "ks_pvalue",
    "psi",
    "psi_js_rows",
    "psi_rows",
    "rate_excess_p_value",
    "wasserstein_binned",
]

_EPS = 2.220446049250313e-16  # float64 machine epsilon
_TINY = 1e-300  # guards divisions in the modified Lentz algorithm


class KSResult(NamedTuple):
    """Binned two-sample KS statistic and how far the exact one can exceed it.

    ``statistic <= D_exact <= statistic + error_bound``.
    """

    statistic: float
    error_bound: float


class Chi2Result(NamedTuple):
    """Pearson chi-square statistic, its degrees of freedom and upper-tail p-value."""

    statistic: float
    dof: int
    p_value: float


# --------------------------------------------------------------------------- inputs


def _counts(x: npt.ArrayLike, name: str) -> npt.NDArray[np.float64]:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"{name} must be finite and non-negative")
    if not a.sum() > 0:
        raise ValueError(f"{name} has no observations")
    return a


def _pair(
    ref_counts: npt.ArrayLike, cur_counts: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    r = _counts(ref_counts, "ref_counts")
    c = _counts(cur_counts, "cur_counts")
    if r.size != c.size:
        raise SketchMismatch(f"count vectors on different bins: {r.size} vs {c.size}")
    return r, c


# ----------------------------------------------------------------- Kolmogorov–Smirnov


def ks_binned(ref_counts: npt.ArrayLike, cur_counts: npt.ArrayLike) -> KSResult:
    r"""Two-sample Kolmogorov–Smirnov statistic evaluated at the bin edges.

    With ``F_ref`` and ``F_cur`` the empirical CDFs (``F(t) = #{x <= t} / N``) and bins
    ``(e_i, e_{i+1}]``, the counts give both ECDFs exactly at every interior edge:
    ``F(e_j) = sum(counts[:j+1]) / N``. The result is

    .. math:: D_{binned} = \max_j |F_{ref}(e_j) - F_{cur}(e_j)|, \qquad
              \varepsilon = \max_i \max(p_{ref,i}, p_{cur,i}),

    with ``p_i = counts[i] / N``, and it satisfies
    ``D_binned <= D_exact <= D_binned + error_bound`` where ``D_exact = sup_t |F_ref -
    F_cur|`` is the statistic of the raw samples (``scipy.stats.ks_2samp``).

    Proof. The left inequality holds because the edges are points where the sup is
    taken. For ``t`` in bin ``i``, both ECDFs are monotone between their edge values, so
    ``F_ref(t) - F_cur(t) <= F_ref(e_{i+1}) - F_cur(e_i) = d_{i+1} + p_cur_i`` and
    ``F_cur(t) - F_ref(t) <= F_cur(e_{i+1}) - F_ref(e_i) = -d_{i+1} + p_ref_i``, where
    ``d_j = F_ref(e_j) - F_cur(e_j)`` and ``|d_j| <= D_binned`` (``d = 0`` at ``+-inf``).

    Parameters
    ----------
    ref_counts, cur_counts
        Counts per bin on the same ``B`` bins.

    Returns
    -------
    KSResult
        ``(statistic, error_bound)``.

    Examples
    --------
    >>> ks_binned([5, 5], [0, 10])
    KSResult(statistic=0.5, error_bound=1.0)
    """
    r, c = _pair(ref_counts, cur_counts)
    stat = float(ks_binned_rows(cdf_rows(r[None, :]), c[None, :], [r.size])[0])
    pr, pc = r / r.sum(), c / c.sum()
    return KSResult(stat, float(np.maximum(pr, pc).max()))


def cdf_rows(counts: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The empirical CDF at the upper edge of every bin, row by row (counts ``(k, B)``).

    Computed once per reference, it is the first argument of :func:`ks_binned_rows`.
    Rows whose counts sum to zero give NaN.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        out: npt.NDArray[np.float64] = np.cumsum(counts / counts.sum(axis=1, keepdims=True), axis=1)
    return out


def ks_binned_rows(
    ref_cdf: npt.NDArray[np.float64],
    cur_counts: npt.ArrayLike,
    sizes: Sequence[int] | npt.NDArray[np.intp],
) -> npt.NDArray[np.float64]:
    """:func:`ks_binned`'s statistic for every row at once, equal to it bit for bit.

    Parameters
    ----------
    ref_cdf
        :func:`cdf_rows` of the reference counts, ``(k, B)``.
    cur_counts
        The current counts on the same bins, ``(k, B)``; row ``i`` uses its first
        ``sizes[i]`` columns (rows of fewer bins are padded at the end).
    sizes
        Number of bins of each row.

    Returns
    -------
    numpy.ndarray
        ``k`` statistics; NaN for a row whose current counts sum to zero. No input
        checks (the caller validated the counts).
    """
    cur = np.asarray(cur_counts)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = cur / cur.sum(axis=1, keepdims=True, dtype=np.float64)
        d = np.abs(ref_cdf - np.cumsum(share, axis=1))
    # The CDFs are compared at the interior edges only (positions < size - 1).
    d[np.arange(d.shape[1])[None, :] >= (np.asarray(sizes) - 1)[:, None]] = 0.0
    out: npt.NDArray[np.float64] = d.max(axis=1) if d.shape[1] else np.zeros(d.shape[0])
    return out


def kolmogorov_sf(x: float) -> float:
    r"""Survival function of the Kolmogorov distribution, ``P(K > x)``.

    Two exact series, each used where it converges fast and without cancellation:

    * ``x >= 1``: :math:`Q(x) = 2 \sum_{k \ge 1} (-1)^{k-1} e^{-2 k^2 x^2}`
      (each term is at most ``e^{-6 x^2}`` times the one before);
    * ``x < 1``: the Jacobi-theta form of the CDF,
      :math:`K(x) = \frac{\sqrt{2\pi}}{x} \sum_{k \ge 1} e^{-(2k-1)^2 \pi^2 / (8 x^2)}`,
      and ``Q = 1 - K``, where ``Q >= 0.27`` so the subtraction loses nothing.
      Below ``x = 0.05``, ``K < 1e-200`` and ``Q`` is 1 to double precision.

    Examples
    --------
    >>> round(kolmogorov_sf(1.3581), 4)
    0.05
    """
    x = float(x)
    if math.isnan(x):
        return math.nan
    if x < 0.05:
        return 1.0
    if x < 1.0:
        a = math.pi * math.pi / (8.0 * x * x)
        total = 0.0
        k = 1
        while True:
            term = math.exp(-((2 * k - 1) ** 2) * a)
            total += term
            if term <= _EPS * total:
                break
            k += 1
        return 1.0 - math.sqrt(2.0 * math.pi) / x * total
    b = 2.0 * x * x
    total = 0.0
    k = 1
    while True:
        term = math.exp(-b * k * k)
        total += term if k % 2 else -term
        if term <= _EPS * abs(total) or term == 0.0:
            break
        k += 1
    return max(0.0, min(1.0, 2.0 * total))


def ks_pvalue(d: float, n: float, m: float) -> float:
    r"""Asymptotic two-sample KS p-value, ``kolmogorov_sf(sqrt(n m / (n + m)) d)``.

    The limit law of :math:`\sqrt{nm/(n+m)}\,D_{n,m}` under H0 (continuous data) is
    Kolmogorov's. For small samples it is conservative-to-anti-conservative by a few
    percent; with binned data pass the binned statistic (a lower bound of the exact
    one, so the p-value is an upper bound of the asymptotic p-value of the raw data).

    Parameters
    ----------
    d
        KS statistic in ``[0, 1]``.
    n, m
        Sizes of the two samples (positive).

    Examples
    --------
    >>> round(ks_pvalue(0.1, 1000, 1000), 7)
    9.08e-05
    """
    if not (n > 0 and m > 0):
        raise ValueError("sample sizes must be positive")
    if not 0.0 <= d <= 1.0:
        raise ValueError(f"KS statistic must be in [0, 1], got {d!r}")
    return kolmogorov_sf(math.sqrt(n * m / (n + m)) * d)


# ------------------------------------------------------------------- chi-square


def _gamma_pq(a: float, x: float) -> tuple[float, float]:
    r"""Regularised incomplete gamma functions ``(P(a, x), Q(a, x))``, ``a > 0``.

    With the prefactor :math:`f = e^{-x} x^a / \Gamma(a)` (formed in log space):

    * ``x < a + 1``: the series
      :math:`P = \frac{f}{a} \sum_{n \ge 0} \frac{x^n}{(a+1)\cdots(a+n)}` (all terms
      positive, ratio ``x / (a + n) < 1``), ``Q = 1 - P``;
    * otherwise Legendre's continued fraction
      :math:`Q = f \cdot \cfrac{1}{x + 1 - a - \cfrac{1 (1 - a)}{x + 3 - a -
      \cfrac{2 (2 - a)}{x + 5 - a - \cdots}}}` evaluated by the modified Lentz
      method, ``P = 1 - Q``.

    The directly computed one of the pair has full relative accuracy.
    """
    if x <= 0.0:
        return 0.0, 1.0
    if math.isinf(x):
        return 1.0, 0.0
    log_f = -x + a * math.log(x) - math.lgamma(a)
    max_iter = 10_000 + int(20.0 * math.sqrt(a))
    if x < a + 1.0:
        ap = a
        term = 1.0 / a
        total = term
        for _ in range(max_iter):
            ap += 1.0
            term *= x / ap
            total += term
            if term < total * _EPS:
                break
        p = total * math.exp(log_f)
        p = min(p, 1.0)
        return p, 1.0 - p
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, max_iter):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        if abs(d) < _TINY:
            d = _TINY
        c = b + an / c
        if abs(c) < _TINY:
            c = _TINY
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    q = min(math.exp(log_f) * h, 1.0)
    return 1.0 - q, q


def _check_dof(k: float) -> float:
    k = float(k)
    if not (k > 0 and math.isfinite(k)):
        raise ValueError(f"degrees of freedom must be positive and finite, got {k!r}")
    return k


def chi2_sf(x: float, k: float) -> float:
    r"""Chi-square survival function ``P(X > x)`` with ``k`` degrees of freedom.

    Defined as :math:`Q(k/2, x/2)`, the regularised upper incomplete gamma function,
    computed by its power series for ``x/2 < k/2 + 1`` and by Legendre's continued
    fraction otherwise (see ``_gamma_pq``). Relative accuracy is about ``1e-14`` for
    small ``k`` and degrades slowly with ``k`` (rounding of the log prefactor): about
    ``5e-12`` at ``k = 5000``.

    Examples
    --------
    >>> round(chi2_sf(3.841458820694124, 1), 12)
    0.05
    """
    k = _check_dof(k)
    x = float(x)
    if math.isnan(x):
        return math.nan
    return _gamma_pq(0.5 * k, 0.5 * x)[1]


def _chi2_solve(k: float, target: float, upper: bool) -> float:
    """The x with ``Q(x) = target`` (``upper``) or ``P(x) = target``, by bisection.

    ``Q`` (resp. ``P``) is monotone in ``x``, so after doubling an upper bracket the
    bisection halves ``[lo, hi]`` until it is below ``4 eps * hi``: the root is found to
    about machine precision relative to itself, whatever its magnitude.
    """
    a = 0.5 * k
    side = 1 if upper else 0

    def above_target(x: float) -> bool:  # True while x is left of the root
        v = _gamma_pq(a, 0.5 * x)[side]
        return v > target if upper else v < target

    lo, hi = 0.0, max(1.0, k)
    while above_target(hi):
        lo, hi = hi, 2.0 * hi
    for _ in range(2_000):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi or hi - lo <= 4.0 * _EPS * hi:
            break
        if above_target(mid):
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def chi2_isf(p: float, k: float) -> float:
    """Inverse survival function: the ``x`` with ``chi2_sf(x, k) == p``.

    Solved by bracketing and bisection on :func:`chi2_sf` (or on the CDF when
    ``p > 0.5``, which keeps full relative accuracy near both ends). ``p = 0`` gives
    ``inf`` and ``p = 1`` gives ``0``.

    Examples
    --------
    >>> round(chi2_isf(0.05, 1), 9)
    3.841458821
    """
    return _chi2_quantile(p, k, upper=True)


def chi2_ppf(q: float, k: float) -> float:
    """Quantile function: the ``x`` with ``P(X <= x) == q``.

    Bisection like :func:`chi2_isf`. For a far upper tail prefer
    ``chi2_isf(alpha, k)`` to ``chi2_ppf(1 - alpha, k)``, which rounds ``1 - alpha``.

    Examples
    --------
    >>> round(chi2_ppf(0.95, 1), 9)
    3.841458821
    """
    return _chi2_quantile(q, k, upper=False)


def _chi2_quantile(p: float, k: float, upper: bool) -> float:
    """The ``x`` whose upper (``upper``) or lower tail probability is ``p``."""
    k = _check_dof(k)
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {p!r}")
    if p in (0.0, 1.0):
        return math.inf if (p == 0.0) == upper else 0.0
    return _chi2_solve(k, p, upper) if p <= 0.5 else _chi2_solve(k, 1.0 - p, not upper)


def chi2_homogeneity(ref_counts: npt.ArrayLike, cur_counts: npt.ArrayLike) -> Chi2Result:
    r"""Pearson chi-square test that both count vectors come from one distribution.

    The 2 x K contingency table has rows ``ref_counts`` and ``cur_counts``; columns with
    no observation in either row are dropped first (they carry no information and would
    divide by zero), leaving ``K'`` columns. With row totals ``R_r``, column totals
    ``C_j`` and grand total ``N``, the expected counts are ``E_rj = R_r C_j / N`` and

    .. math:: X^2 = \sum_{r, j} (O_{rj} - E_{rj})^2 / E_{rj}, \qquad
              \mathrm{dof} = K' - 1, \qquad p = \mathrm{chi2\_sf}(X^2, \mathrm{dof}),

    without continuity correction (``scipy.stats.chi2_contingency(correction=False)``).
    With ``K' = 1`` the table has no freedom: ``(0.0, 0, 1.0)``.

    Examples
    --------
    >>> r = chi2_homogeneity([10, 20, 0], [20, 10, 0])
    >>> round(r.statistic, 6), r.dof, round(r.p_value, 6)
    (6.666667, 1, 0.009823)
    """
    r, c = _pair(ref_counts, cur_counts)
    stat, dof = _chi2_pair(r, c)
    return Chi2Result(stat, dof, _chi2_p(stat, dof))


def _chi2_p(stat: float, dof: int) -> float:
    return chi2_sf(stat, dof) if dof >= 1 else 1.0


def _chi2_pair(r: npt.NDArray[np.float64], c: npt.NDArray[np.float64]) -> tuple[float, int]:
    """:func:`chi2_homogeneity`'s statistic and dof, without input checks."""
    keep = (r + c) > 0
    r, c = r[keep], c[keep]
    if r.size <= 1:
        return 0.0, 0
    nr, nc = r.sum(), c.sum()
    col = r + c
    n = nr + nc
    er, ec = col * (nr / n), col * (nc / n)
    return float(np.sum((r - er) ** 2 / er) + np.sum((c - ec) ** 2 / ec)), int(r.size - 1)


def chi2_homogeneity_rows(
    ref_counts: npt.NDArray[np.float64],
    cur_counts: npt.NDArray[np.float64],
    p_values: Sequence[bool] | None = None,
) -> tuple[list[float], list[int], list[float]]:
    """:func:`chi2_homogeneity` of every row pair at once, equal to it bit for bit.

    Columns empty on both sides are dropped, as in the one-row test, by giving them
    zero terms: numpy adds fewer than eight terms one by one, so a zero term changes
    nothing there; wider rows that have such columns take the one-row computation.

    Parameters
    ----------
    ref_counts, cur_counts
        Counts ``(k, B)`` on the same bins, no input checks.
    p_values
        Rows whose p-value to compute (the upper tail is a series per row); default
        all. The others get NaN.

    Returns
    -------
    tuple of lists
        ``(statistic, dof, p_value)`` per row.
    """
    r, c = ref_counts, cur_counts
    k, w = r.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        col = r + c
        kept = col > 0
        nr, nc = r.sum(axis=1), c.sum(axis=1)
        ntot = nr + nc
        er = col * (nr / ntot)[:, None]
        ec = col * (nc / ntot)[:, None]
        tr = np.where(kept, (r - er) ** 2 / er, 0.0)
        tc = np.where(kept, (c - ec) ** 2 / ec, 0.0)
        stats: list[float] = (tr.sum(axis=1) + tc.sum(axis=1)).tolist()
    dofs: list[int] = (kept.sum(axis=1) - 1).tolist()
    full: list[bool] = np.asarray(kept.all(axis=1)).tolist()
    ps = [math.nan] * k
    for j in range(k):
        if not (full[j] or w < 8):
            stats[j], dofs[j] = _chi2_pair(r[j], c[j])
        elif dofs[j] < 1:
            stats[j], dofs[j] = 0.0, 0
        if p_values is None or p_values[j]:
            ps[j] = _chi2_p(stats[j], dofs[j])
    return stats, dofs, ps


# ----------------------------------------------------------- divergences / distances


def psi_rows(
    ref_counts: npt.NDArray[np.float64], cur_counts: npt.NDArray[np.float64], eps: float = 1e-4
) -> npt.NDArray[np.float64]:
    """:func:`psi` of every row pair (counts ``(k, B)``), equal to it bit for bit.

    No input checks; a row whose counts sum to zero gives NaN.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return _psi_shares(_shares(ref_counts), _shares(cur_counts), eps)


def psi_js_rows(
    ref_counts: npt.NDArray[np.float64], cur_counts: npt.NDArray[np.float64], eps: float = 1e-4
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``(psi_rows(...), js_distance_rows(...))`` of the same row pairs, equal to them
    bit for bit: the rows' proportions are computed once for both."""
    with np.errstate(divide="ignore", invalid="ignore"):
        p, q = _shares(ref_counts), _shares(cur_counts)
        return _psi_shares(p, q, eps), _js_shares(ref_counts, cur_counts, p, q)


def _shares(counts: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Each row's counts over the row's sum (NaN for an empty row)."""
    out: npt.NDArray[np.float64] = counts / counts.sum(axis=-1, keepdims=True)
    return out


def _psi_shares(
    p: npt.NDArray[np.float64], q: npt.NDArray[np.float64], eps: float
) -> npt.NDArray[np.float64]:
    """:func:`psi_rows` from the rows' proportions (floating-point errors ignored by the caller)."""
    p, q = np.maximum(p, eps), np.maximum(q, eps)
    out: npt.NDArray[np.float64] = np.sum((q - p) * np.log(q / p), axis=-1)
    return out


def psi(ref_counts: npt.ArrayLike, cur_counts: npt.ArrayLike, eps: float = 1e-4) -> float:
    r"""Population stability index.

    .. math:: \mathrm{PSI} = \sum_i (q_i - p_i) \ln(q_i / p_i),

    with ``p = ref_counts / sum(ref_counts)`` and ``q = cur_counts / sum(cur_counts)``
    each floored element-wise at ``eps`` *after* normalising and *not* renormalised
    (so an empty bin contributes ``(q - eps) ln(q / eps)`` instead of infinity). PSI is
    the symmetrised Kullback–Leibler divergence (natural log), ``>= 0``, and ``0`` iff
    the floored proportions are equal. The floor bounds a single bin's contribution by
    about ``ln(1 / eps) = 9.2`` for the default ``eps = 1e-4``.

    Examples
    --------
    >>> round(psi([50, 50], [60, 40]), 6)
    0.040547
    """
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must be in (0, 1), got {eps!r}")
    r, c = _pair(ref_counts, cur_counts)
    return float(psi_rows(r, c, eps))


def js_distance(ref_counts: npt.ArrayLike, cur_counts: npt.ArrayLike) -> float:
    r"""Jensen–Shannon distance (base 2), in ``[0, 1]``.

    .. math:: \mathrm{JS} = \sqrt{\tfrac12 \mathrm{KL}_2(p \,\|\, m)
              + \tfrac12 \mathrm{KL}_2(q \,\|\, m)}, \quad m = (p + q) / 2,

    with ``p``, ``q`` the normalised counts, ``KL_2`` in bits and ``0 log 0 = 0``. This
    is the square root of the JS divergence, a metric; it equals
    ``scipy.spatial.distance.jensenshannon(p, q, base=2)``.

    Examples
    --------
    >>> js_distance([1, 0], [0, 1])
    1.0
    """
    r, c = _pair(ref_counts, cur_counts)
    return _js_pair(r, c)


def _js_pair(r: npt.NDArray[np.float64], c: npt.NDArray[np.float64]) -> float:
    """:func:`js_distance` without input checks."""
    p, q = r / r.sum(), c / c.sum()
    m = 0.5 * (p + q)

    def kl(a: npt.NDArray[np.float64]) -> float:
        pos = a > 0
        return float(np.sum(a[pos] * np.log2(a[pos] / m[pos])))

    div = 0.5 * (kl(p) + kl(q))
    return math.sqrt(min(1.0, max(0.0, div)))


def js_distance_rows(
    ref_counts: npt.NDArray[np.float64], cur_counts: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """:func:`js_distance` of every row pair (counts ``(k, B)``), equal to it bit for bit.

    Zero proportions become zero terms; numpy adds fewer than eight terms one by one,
    so that changes nothing there, and wider rows with a zero proportion (and counts
    on both sides) take the one-row computation. No input checks; a row whose counts
    sum to zero gives NaN.
    """
    r, c = ref_counts, cur_counts
    with np.errstate(divide="ignore", invalid="ignore"):
        return _js_shares(r, c, _shares(r), _shares(c))


def _js_shares(
    r: npt.NDArray[np.float64],
    c: npt.NDArray[np.float64],
    p: npt.NDArray[np.float64],
    q: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """:func:`js_distance_rows` of counts ``r``, ``c`` whose proportions are ``p``, ``q``
    (floating-point errors ignored by the caller)."""
    mid = 0.5 * (p + q)
    kp = np.where(p > 0, p * np.log2(p / mid), 0.0).sum(axis=-1)
    kq = np.where(q > 0, q * np.log2(q / mid), 0.0).sum(axis=-1)
    # np.clip(x, 0.0, 1.0) with less call overhead (NaN stays NaN in both).
    out: npt.NDArray[np.float64] = np.sqrt(np.minimum(np.maximum(0.5 * (kp + kq), 0.0), 1.0))
    if r.shape[-1] >= 8:
        zero = ~((r > 0) & (c > 0)).all(axis=-1)
        for j in np.flatnonzero(zero & (c.sum(axis=-1) > 0) & (r.sum(axis=-1) > 0)).tolist():
            out[j] = _js_pair(r[j], c[j])
    return out


def wasserstein_binned(
    edges: npt.ArrayLike,
    ref_counts: npt.ArrayLike,
    cur_counts: npt.ArrayLike,
    scale: float,
) -> float:
    r"""Wasserstein-1 distance between the binned distributions, divided by ``scale``.

    :math:`W_1 = \int |F_{ref}(t) - F_{cur}(t)|\,dt`. From counts, the CDF difference
    ``d_j = F_ref(e_j) - F_cur(e_j)`` is known exactly at the ``B - 1`` interior edges;
    between consecutive edges it is taken as linear (mass spread uniformly within each
    interior bin) and the integral of ``|.|`` is computed exactly per bin:
    ``h (|d_j| + |d_{j+1}|) / 2`` if ``d_j d_{j+1} >= 0``, else
    ``h (d_j^2 + d_{j+1}^2) / (2 (|d_j| + |d_{j+1}|))``, with ``h = e_{j+1} - e_j``.
    The two unbounded end bins contribute nothing: their mass is put at ``e_1``,
    resp. ``e_{B-1}``. The result is ``W / scale`` (``scale``: the reference's standard
    deviation, so ``0.1`` means "a tenth of a reference sd"); with fewer than two edges
    there is no interior and the result is ``0``.

    Error bound. Let :math:`W_{[e_1, e_{B-1}]} = \int_{e_1}^{e_{B-1}} |F_{ref} -
    F_{cur}|\,dt`, which is exactly :math:`W_1` of both raw samples clipped to
    ``[e_1, e_{B-1}]`` and at most :math:`W_1` of the raw samples. Inside interior bin
    ``i`` the raw difference and its linear interpolant both lie in
    ``[F_ref(e_i) - F_cur(e_{i+1}), F_ref(e_{i+1}) - F_cur(e_i)]``, an interval of width
    ``p_ref_i + p_cur_i``, hence

    .. math:: |\,\mathrm{scale} \cdot W_{binned} - W_{[e_1, e_{B-1}]}\,|
              \le \sum_{i=1}^{B-2} h_i (p_{ref,i} + p_{cur,i}).

    The tails beyond the outer edges are not seen, so the result under-estimates the
    raw :math:`W_1` by the tail integrals (for a small location shift about ``2/B`` of
    it when the edges are reference quantiles).

    Parameters
    ----------
    edges
        The ``B - 1`` interior edges, strictly increasing.
    ref_counts, cur_counts
        Counts on the ``B`` bins.
    scale
        Positive normaliser, normally the reference standard deviation.

    Examples
    --------
    >>> wasserstein_binned([0.0, 1.0, 2.0], [0, 1, 1, 0], [0, 0, 1, 1], 1.0)
    0.75
    """
    r, c = _pair(ref_counts, cur_counts)
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size != r.size - 1:
        raise SketchMismatch(f"{e.size} edges do not fit {r.size} bins")
    if not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
        raise ValueError("edges must be finite and strictly increasing")
    scale = float(scale)
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be positive and finite, got {scale!r}")
    if e.size < 2:
        return 0.0
    d = np.cumsum(r / r.sum())[:-1] - np.cumsum(c / c.sum())[:-1]
    a, b = np.abs(d[:-1]), np.abs(d[1:])
    h = np.diff(e)
    same = d[:-1] * d[1:] >= 0
    s = a + b
    crossing = np.divide(a * a + b * b, 2.0 * s, out=np.zeros_like(s), where=s > 0)
    w = float(np.sum(h * np.where(same, 0.5 * s, crossing)))
    return w / scale


# ---------------------------------------------------------------- multiple testing


def rate_excess_p_value(rate: float, rate0: float, n: int) -> float:
    """One-sided p-value that a rate observed over ``n`` events exceeds ``rate0``.

    The normal approximation of the binomial: ``z = (rate - p0) / sqrt(p0 (1 - p0) / n)``
    with ``p0 = rate0`` kept inside ``[1e-6, 1 - 1e-6]``, and ``P(Z > z)``.

    Examples
    --------
    >>> round(rate_excess_p_value(0.2, 0.1, 100), 4)
    0.0004
    """
    p0 = min(max(rate0, 1e-6), 1 - 1e-6)
    z = (rate - p0) / math.sqrt(p0 * (1 - p0) / n)
    return 0.5 * math.erfc(z / math.sqrt(2))


def holm(p_values: npt.ArrayLike, alpha: float) -> npt.NDArray[np.bool_]:
    """Holm–Bonferroni step-down rejections at family-wise error rate ``alpha``.

    Sort the ``m`` p-values ascending, ``p_(1) <= ... <= p_(m)``; with ``k`` the
    smallest (1-based) rank such that ``p_(k) > alpha / (m - k + 1)``, reject the
    hypotheses of ranks ``1 .. k - 1`` (all of them if there is no such ``k``). Ties
    are all rejected or all kept. ``NaN`` p-values are never rejected but count in
    ``m`` (conservative).

    Returns
    -------
    NDArray[bool]
        Rejection flags in the input order.

    Examples
    --------
    >>> holm([0.01, 0.04, 0.03, 0.5], 0.05).tolist()
    [True, False, False, False]
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError("p_values must be one-dimensional")
    m = p.size
    reject = np.zeros(m, dtype=np.bool_)
    if m == 0:
        return reject
    order = np.argsort(p, kind="stable")  # NaN sorts last
    ok = p[order] <= alpha / (m - np.arange(m))
    k = m if ok.all() else int(np.argmin(ok))
    reject[order[:k]] = True
    return reject


# ------------------------------------------------------------------- calibration


def calibrate_psi_threshold(
    ref_counts: npt.ArrayLike,
    window_events: int,
    alpha: float,
    rng: np.random.Generator,
    resamples: int = 200,
    *,
    eps: float = 1e-4,
) -> float:
    r"""PSI alarm threshold for windows of ``window_events`` at false-alarm rate ``alpha``.

    Model. Under H0 the reference (``M`` values) and the window (``n`` values) are
    independent samples of one distribution ``p`` over ``B'`` bins (``B'`` the bins
    with reference mass). To second order PSI equals Pearson's two-sample statistic
    over ``n_eff = n M / (n + M)``, so

    .. math:: \mathrm{PSI} \approx c\, \chi^2_{B'-1} / n_{eff},

    where the scale ``c`` (1 in the limit) absorbs the ``eps`` floor and higher-order
    terms. ``c`` is estimated by matching means on ``resamples`` parametric-bootstrap
    draws from ``p = ref_counts / M``: each draw is a pseudo-reference
    ``Multinomial(M, p)`` and a window ``Multinomial(n, p)``, so the reference's own
    sampling noise is part of the null (it dominates when ``M`` is not much larger
    than ``n``):

    .. math:: \hat c = \overline{\mathrm{PSI}^*}\, n_{eff} / (B' - 1), \qquad
              t = \hat c\, \chi^2_{B'-1}(1 - \alpha) / n_{eff}.

    The quantile comes from :func:`chi2_isf` (``chi2_ppf(1 - alpha)`` without the
    rounding of ``1 - alpha``), so ``alpha`` may be far below ``1 / resamples``; the
    tail then rests on the chi-square shape, which is good when every bin expects
    many window events (``n p_i >> 1``). Raise the alarm when ``PSI > t``. With
    ``B' = 1`` every null window has ``PSI = 0`` and the threshold is ``0``. Given a
    seeded ``rng`` the result is deterministic.

    Parameters
    ----------
    ref_counts
        Reference counts per bin.
    window_events
        Number of events in a window (``n``).
    alpha
        Per-test false-alarm probability, in ``(0, 1)``.
    rng
        Source of the resamples.
    resamples
        Number of bootstrap draws (at least 2).
    eps
        The proportion floor of :func:`psi`; use the same value as the live test.

    Examples
    --------
    >>> t = calibrate_psi_threshold([1000] * 10, 1000, 0.01, np.random.default_rng(0))
    >>> 0.02 < t < 0.03  # about chi2_isf(0.01, 9) / n_eff = 21.67 / 909
    True
    """
    r = _counts(ref_counts, "ref_counts")
    if isinstance(window_events, bool) or int(window_events) != window_events:
        raise ValueError("window_events must be an integer")
    n = int(window_events)
    if n <= 0:
        raise ValueError("window_events must be positive")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if resamples < 2:
        raise ValueError("resamples must be at least 2")
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must be in (0, 1), got {eps!r}")
    m_ref = float(r.sum())
    dof = int(np.count_nonzero(r)) - 1
    if dof == 0:
        return 0.0
    p = r / m_ref
    n_eff = n * m_ref / (n + m_ref)
    ref_star = rng.multinomial(max(1, round(m_ref)), p, size=resamples).astype(np.float64)
    cur_star = rng.multinomial(n, p, size=resamples).astype(np.float64)
    c_hat = float(np.mean(psi_rows(ref_star, cur_star, eps))) * n_eff / dof
    return c_hat * chi2_isf(alpha, dof) / n_eff
