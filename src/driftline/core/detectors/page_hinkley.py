"""Page-Hinkley: ``river.drift.PageHinkley``'s detections, with a numpy-vectorised
:meth:`PageHinkley.update_many` for long arrays (tens of ns per value)."""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from driftline.contract.codec import encode_float
from driftline.core.detectors._base import DetectorBase, positions
from driftline.core.detectors._numeric import (
    _F64,
    _I64,
    _chunk_len,
    _flag,
    _int,
    _linrec,
    _num,
    _powers,
    _whole,
)
from driftline.errors import ConfigError, StateCorrupt

# --------------------------------------------------------------------------------------
# Page-Hinkley
# --------------------------------------------------------------------------------------

_MODES: Final = ("up", "down", "both")
_BLOCK_MIN: Final = 256
_BLOCK_START: Final = 4096
_BLOCK_MAX: Final = 16384
_T: Final = np.arange(1, _BLOCK_MAX + 1, dtype=np.float64)
_T.flags.writeable = False


_INV_T: Final = 1.0 / _T
_INV_T.flags.writeable = False


class _Scratch(threading.local):
    """Per-thread work buffers of :meth:`PageHinkley._block` (no allocation per block)."""

    def __init__(self) -> None:
        self.buf: _F64 | None = None
        self.mask: npt.NDArray[np.bool_] | None = None

    def get(self) -> tuple[_F64, npt.NDArray[np.bool_]]:
        if self.buf is None or self.mask is None:
            self.buf = np.empty((5, _BLOCK_MAX + 1))
            self.mask = np.empty(_BLOCK_MAX, dtype=np.bool_)
        return self.buf, self.mask


_SCRATCH: Final = _Scratch()


@functools.lru_cache(maxsize=16)
def _fade_tables(
    alpha: float, delta: float
) -> tuple[_F64, _F64, int, tuple[_F64, _F64, _F64] | None]:
    """Tables of the faded sums for ``t = 1 .. _BLOCK_MAX`` (|alpha| <= 1).

    ``alpha**t``; ``dec_t - inc_t`` from a fresh start (it follows
    ``alpha * (dec_{t-1} - inc_{t-1}) + 2 delta`` whatever the data, so the decreasing
    sum is the increasing one plus this table); and the chunk length and powers of
    :func:`_linrec` for ``alpha`` (None when it takes another path).
    """
    pw = np.power(alpha, _T)
    gap = _linrec(np.full(_BLOCK_MAX, 2.0 * delta), alpha, 0.0)
    pw.flags.writeable = False
    gap.flags.writeable = False
    if alpha in (0.0, 1.0) or _chunk_len(alpha) < 4:
        return pw, gap, 0, None
    chunk = _chunk_len(alpha)
    return pw, gap, chunk, _powers(alpha, chunk)


class PageHinkley(DetectorBase):
    """Page-Hinkley test for a change in the mean, as ``river.drift.PageHinkley``.

    A running mean ``m_t`` of the values since the last reset is kept (river's
    ``stats.Mean``), and two faded cumulative sums of the deviations::

        inc_t = alpha * inc_{t-1} + (x_t - m_t) - delta
        dec_t = alpha * dec_{t-1} + (x_t - m_t) + delta

    A drift is signalled, once at least ``min_instances`` values were seen, when
    ``inc_t - min(inc)`` (mode ``"up"``), ``max(dec) - dec_t`` (``"down"``), or either
    (``"both"``) exceeds ``threshold``. The running maximum of ``dec`` starts at -1,
    as in river. After a detection the next update first resets the detector.

    Parameters
    ----------
    min_instances
        Values needed since the last reset before a drift can be signalled.
    delta
        Magnitude of change tolerated (subtracted from / added to each deviation).
    threshold
        Detection threshold (lambda).
    alpha
        Forgetting factor of the cumulative sums.
    mode
        ``"up"``, ``"down"`` or ``"both"``: which direction of change to detect.

    Raises
    ------
    ConfigError
        ``mode`` is not one of the three, ``alpha`` is not finite, or
        ``min_instances`` is not a whole number.

    Notes
    -----
    :meth:`update` repeats river's arithmetic operation for operation, so the state
    is bit-for-bit river's. :meth:`update_many` computes the same quantities with
    vectorised closed forms (a cumulative sum for the mean, a blocked solver for
    the faded sums); they differ from the one-at-a-time values only by rounding
    (1e-15 to 1e-12 relative). Wherever a test statistic falls within a tolerance of
    ``threshold`` that covers this rounding (a thousand times wider), the values are
    recomputed one by one with river's arithmetic before deciding, so the detection
    indices are river's. The state after :meth:`update_many` has the same ``n`` and
    ``drift_detected`` as after the same updates one by one, and floats equal up to
    that rounding, which never carries over a detection (the detector restarts).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(7)
    >>> xs = np.r_[rng.normal(0, 1, 1000), rng.normal(3, 1, 1000)]
    >>> ph = PageHinkley(delta=0.25, threshold=40.0)
    >>> ph.update_many(xs).tolist()
    [1011]
    >>> ph = PageHinkley(delta=0.25, threshold=40.0)
    >>> [i for i, x in enumerate(xs) if ph.update(x).drift_detected]
    [1011]
    """

    TAG = "page_hinkley"
    VERSION = 1
    PARAMS = ("min_instances", "delta", "threshold", "alpha", "mode")

    def __init__(
        self,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        mode: str = "both",
    ) -> None:
        if mode not in _MODES:
            raise ConfigError(f"PageHinkley mode must be one of {_MODES}, not {mode!r}")
        if not math.isfinite(alpha):
            raise ConfigError(f"PageHinkley alpha must be finite, not {alpha}")
        self.min_instances = _whole(min_instances, "PageHinkley min_instances")
        self.delta = float(delta)
        self.threshold = float(threshold)
        self.alpha = float(alpha)
        self.mode = mode
        self._drift = False
        self._reset()

    def _reset(self) -> None:
        self._drift = False
        self._n = 0
        self._mean = 0.0
        self._inc = 0.0
        self._dec = 0.0
        self._min_inc = math.inf
        self._max_dec = -1.0

    # ---- results ---------------------------------------------------------------------

    @property
    def n(self) -> int:
        """Number of values seen since the last reset."""
        return self._n

    @property
    def mean(self) -> float:
        """Running mean of the values since the last reset."""
        return self._mean

    # ---- one value -------------------------------------------------------------------

    def _step(self, x: float) -> None:
        """One value, with river's arithmetic operation for operation."""
        if self._drift:
            self._reset()
        n = self._n + 1
        self._n = n
        mean = self._mean
        mean += (1.0 / n) * (x - mean)
        self._mean = mean
        dev = x - mean
        inc = self.alpha * self._inc + dev - self.delta
        dec = self.alpha * self._dec + dev + self.delta
        self._inc = inc
        self._dec = dec
        if inc < self._min_inc:
            self._min_inc = inc
        if dec > self._max_dec:
            self._max_dec = dec
        if n >= self.min_instances:
            mode = self.mode
            up = mode != "down" and inc - self._min_inc > self.threshold
            down = mode != "up" and self._max_dec - dec > self.threshold
            self._drift = up or down

    # ---- many values -----------------------------------------------------------------

    def _feed(self, x: _F64) -> _I64:
        """Many values, vectorised by blocks (a few tens of ns per value)."""
        size = x.size
        hits: list[int] = []
        pos = 0
        block = _BLOCK_START
        while pos < size:
            if self._drift:
                self._reset()
            if self._n and math.isnan(self._mean):
                self._poisoned(size - pos)
                break
            stop = min(size, pos + block)
            seg_start = pos - self._n
            kind, j = self._block(x[pos:stop])
            if kind == _NONE:
                pos = stop
                block = min(2 * block, _BLOCK_MAX)
                continue
            if kind == _DETECT:
                hits.append(pos + j)
            else:  # too close to the threshold to trust rounding: replay exactly
                for k in range(pos, pos + j + 1):
                    if self.update(x[k])._drift:
                        hits.append(k)
            pos += j + 1
            if self._drift:  # size the next block after this segment's length
                seg = pos - seg_start
                block = min(_BLOCK_MAX, max(_BLOCK_MIN, seg))
        return positions(hits)

    # ---- many detectors --------------------------------------------------------------

    @classmethod
    def update_bank(cls, detectors: Sequence[PageHinkley], xs: npt.ArrayLike) -> list[_I64]:
        """Feed row ``j`` of ``xs`` to ``detectors[j]``; the detections of every row.

        The monitor runs one detector per feature on the same events: this feeds them
        all. Detection positions are :meth:`update_many`'s (and so river's) exactly;
        NaN marks a missing value, which is skipped (not fed). Detectors that share
        their parameters (``alpha = 1``, mode ``"both"``, ``delta >= 0``) run together
        as the rows of one matrix, in blocks of up to 16384 values: the closed forms
        of :meth:`_block` along axis 1. A row whose statistic comes anywhere near the
        threshold in a block (a margin a million times wider than rounding), or that
        has missing values, a pending reset or other parameters, continues alone
        through :meth:`update_many` from that block on. States equal those of
        :meth:`update_many` up to rounding (tests/unit/test_detectors.py).

        Parameters
        ----------
        detectors
            ``k`` detectors, updated in place.
        xs
            ``(k, m)`` values.

        Returns
        -------
        list of numpy.ndarray
            Per row, the int64 positions (columns of ``xs``) of its detections.

        Examples
        --------
        >>> import numpy as np
        >>> xs = np.r_[np.zeros(500), np.full(500, 5.0)]
        >>> bank = [PageHinkley(), PageHinkley()]
        >>> [h.tolist() for h in PageHinkley.update_bank(bank, np.stack([xs, -xs]))]
        [[510], [510]]
        """
        x = np.asarray(xs, dtype=np.float64)
        k, m = x.shape
        if k != len(detectors):
            raise ValueError(f"{len(detectors)} detectors for {k} rows")
        hits: list[_I64] = [np.zeros(0, dtype=np.int64)] * k
        gaps: list[bool] = np.asarray(np.isnan(x).any(axis=1)).tolist()
        alone_from = [0] * k  # where each row leaves the bank (m: never)
        first = detectors[0] if k else None
        together = [j for j in range(k) if not gaps[j] and detectors[j]._bankable(first)]
        start = 0
        while together and start < m:
            stop = min(m, start + _BLOCK_MAX)
            rows = x[together, start:stop] if len(together) < k else x[:, start:stop]
            near = set(cls._bank_block([detectors[j] for j in together], rows))
            for i in near:
                alone_from[together[i]] = start
            together = [j for i, j in enumerate(together) if i not in near]
            start = stop
        for j in together:
            alone_from[j] = m
        for j in range(k):
            lo = alone_from[j]
            if lo >= m:
                continue
            row = x[j, lo:]
            if gaps[j]:
                at = np.flatnonzero(~np.isnan(row))
                hits[j] = lo + at[detectors[j].update_many(row[at])]
            else:
                hits[j] = lo + detectors[j].update_many(row)
        return hits

    def _bankable(self, first: PageHinkley | None) -> bool:
        """Can this detector run in a bank led by ``first``?"""
        return (
            first is not None
            and not self._drift
            and self.alpha == 1.0
            and self.mode == "both"
            and self.delta >= 0.0
            and self.delta == first.delta
            and self.threshold == first.threshold
            and self.min_instances == first.min_instances
            and (self._n == 0 or math.isfinite(self._mean))
            and math.isfinite(self._inc)
            and math.isfinite(self._dec)
        )

    @staticmethod
    def _bank_block(detectors: Sequence[PageHinkley], z: _F64) -> list[int]:
        """Feed row ``j`` of ``z`` to ``detectors[j]`` where that certainly detects nothing.

        Returns the rows it left untouched (they came near the threshold).
        """
        k, m = z.shape
        p0 = detectors[0]
        delta, thr, mi = p0.delta, p0.threshold, p0.min_instances
        n0 = np.array([p._n for p in detectors], dtype=np.float64)
        mean0 = np.array([p._mean for p in detectors], dtype=np.float64)
        inc0 = np.array([p._inc for p in detectors], dtype=np.float64)
        dec0 = np.array([p._dec for p in detectors], dtype=np.float64)
        min0 = np.array([p._min_inc for p in detectors], dtype=np.float64)
        max0 = np.array([p._max_dec for p in detectors], dtype=np.float64)
        started = n0 > 0
        with np.errstate(over="ignore", invalid="ignore"):
            center = np.where(started, mean0, z[:, 0])
            inc = z - center[:, None]
            frac = np.cumsum(inc, axis=1)
            if started.all():
                frac /= _T[:m] + n0[:, None]
            elif not started.any():
                frac *= _INV_T[:m]
            else:
                frac = np.where(started[:, None], frac / (_T[:m] + n0[:, None]), frac * _INV_T[:m])
            inc -= frac  # deviations from the running mean
            inc -= delta
            np.cumsum(inc, axis=1, out=inc)
            inc += inc0[:, None]
            # dec_t - inc_t of an unfaded detector grows by 2 delta per value.
            dec = inc + _fade_tables(1.0, delta)[1][:m]
            shift = dec0 - inc0
            moved = shift != 0.0
            if moved.any():
                dec[moved] += shift[moved, None]
            lo = np.fmin.accumulate(inc, axis=1)
            np.fmin(lo, min0[:, None], out=lo)
            hi = np.fmax.accumulate(dec, axis=1)
            np.fmax(hi, max0[:, None], out=hi)
            stat = np.fmax(inc - lo, hi - dec)
            first = np.maximum(0.0, mi - n0 - 1.0)
            if (first > 0).any():
                stat[np.arange(m)[None, :] < first[:, None]] = -math.inf
            worst = stat.max(axis=1)
            scale = np.maximum(np.abs(lo[:, -1]), np.abs(hi[:, -1]))
            tol = 1e-6 * (1.0 + abs(thr) + scale)
            tol += 1e-9 * (n0 + m) * (np.abs(center) + np.abs(frac[:, -1]))
            safe = (worst < thr - tol) & np.isfinite(tol)
        n_end = (n0 + m).tolist()
        mean_end = (center + frac[:, -1]).tolist()
        inc_end, dec_end = inc[:, -1].tolist(), dec[:, -1].tolist()
        lo_end, hi_end = lo[:, -1].tolist(), hi[:, -1].tolist()
        near: list[int] = []
        for j, ok in enumerate(safe.tolist()):
            if not ok:
                near.append(j)
                continue
            p = detectors[j]
            p._n = int(n_end[j])
            p._mean = mean_end[j]
            p._inc = inc_end[j]
            p._dec = dec_end[j]
            p._min_inc = lo_end[j]
            p._max_dec = hi_end[j]
        return near

    def _poisoned(self, count: int) -> None:
        """Advance over ``count`` values once the mean is NaN (as river: never detects)."""
        self._n += count
        self._inc = self._dec = math.nan
        if self._n >= self.min_instances:
            self._drift = False

    def _block(self, xb: _F64) -> tuple[int, int]:
        """Process ``xb`` from the current state (no reset pending), vectorised.

        Returns ``(_NONE, 0)`` (state moved to the end of ``xb``), ``(_DETECT, k)``
        (state moved to position k, where a drift is signalled), or ``(_AMBIGUOUS, k)``
        (state untouched; positions 0..k must be replayed one by one).
        """
        m = xb.size
        n0 = self._n
        alpha = self.alpha
        delta = self.delta
        min0 = self._min_inc
        max0 = self._max_dec
        buf, mask = _SCRATCH.get()
        # Rows 0 and 2 hold inc and dec from column 1: column 0 receives the running
        # extrema carried in, so that one accumulate gives min(min0, inc_0..t).
        inc, frac, dec = buf[0, 1 : m + 1], buf[1, :m], buf[2, 1 : m + 1]
        lo, hi = buf[3, 1 : m + 1], buf[4, 1 : m + 1]
        # Running mean, centred for accuracy: mean_t = c + sum(x - c) / n_t.
        center = self._mean if n0 else float(xb[0])
        np.subtract(xb, center, out=inc)
        np.cumsum(inc, out=frac)
        if n0:
            np.add(_T[:m], n0, out=lo)
            frac /= lo
        else:
            frac *= _INV_T[:m]
        inc -= frac  # deviations x_t - mean_t
        # Faded sums: inc_t = alpha * inc_{t-1} + dev_t - delta, dec_t likewise + delta.
        inc -= delta
        if abs(alpha) <= 1.0:
            pw, gap, chunk, powers = _fade_tables(alpha, delta)
            if m <= chunk and powers is not None:  # one chunk: _linrec, inlined
                up, down, up1 = powers
                inc *= down[:m]
                np.cumsum(inc, out=inc)
                inc *= up[:m]
                if self._inc != 0.0:
                    inc += np.multiply(up1[:m], self._inc, out=lo)
            else:
                _linrec(inc, alpha, self._inc, overwrite=True)
            # dec_t - inc_t follows its own recurrence, independent of the data.
            np.add(inc, gap[:m], out=dec)
            gap0 = self._dec - self._inc
            if gap0 != 0.0:
                dec += np.multiply(pw[:m], gap0, out=lo)
        else:
            np.add(inc, 2.0 * delta, out=dec)  # dev + delta, up to rounding
            dec[:] = _linrec(dec, alpha, self._dec)
            inc[:] = _linrec(inc, alpha, self._inc)
        buf[0, 0] = min0  # fmin/fmax: a NaN never becomes the extremum (as in river)
        buf[2, 0] = max0
        np.fmin.accumulate(buf[0, : m + 1], out=buf[3, : m + 1])
        np.fmax.accumulate(buf[2, : m + 1], out=buf[4, : m + 1])
        lo_end = float(lo[-1])
        hi_end = float(hi[-1])

        # Tolerance on the test statistics: a generous bound on the difference between
        # these values and river's one-by-one ones (both ~1e-13 relative in practice).
        # Non-finite data make frac[-1] non-finite, and the exact loop decides.
        if delta >= 0.0 and alpha >= 0.0:  # then inc <= dec everywhere
            scale = max(abs(lo_end), abs(hi_end))
        else:
            scale = max(abs(float(inc.min())), abs(float(dec.max())), abs(lo_end), abs(hi_end))
        horizon = float(n0 + m)
        if abs(alpha) < 1.0:
            horizon = min(horizon, 1.0 / (1.0 - abs(alpha)))
        thr = self.threshold
        tol = 1e-9 * (abs(thr) + scale) + 1e-300
        tol += 1e-12 * horizon * (abs(center) + abs(float(frac[-1])))
        if not math.isfinite(tol):
            return _AMBIGUOUS, m - 1

        first = max(0, self.min_instances - n0 - 1)  # earlier positions cannot detect
        if first < m:
            mode = self.mode
            # stat = inc - running min (up), running max - dec (down), or the larger.
            if mode != "down":
                np.subtract(inc, lo, out=lo)
            if mode != "up":
                np.subtract(hi, dec, out=hi)
            stat = hi if mode == "down" else lo
            if mode == "both":
                np.fmax(lo, hi, out=lo)
            stat = stat[first:]
            over = np.greater(stat, thr - tol, out=mask[: m - first])
            j = int(over.argmax())
            if over[j]:
                k = first + j
                if not stat[j] > thr + tol:
                    return _AMBIGUOUS, k
                self._n = n0 + k + 1
                self._mean = center + float(frac[k])
                self._inc = float(inc[k])
                self._dec = float(dec[k])
                self._min_inc = min(min0, float(np.fmin.reduce(inc[: k + 1])))
                self._max_dec = max(max0, float(np.fmax.reduce(dec[: k + 1])))
                self._drift = True
                return _DETECT, k
        self._n = n0 + m
        self._mean = center + float(frac[-1])
        self._inc = float(inc[-1])
        self._dec = float(dec[-1])
        self._min_inc = lo_end
        self._max_dec = hi_end
        return _NONE, 0

    # ---- state -----------------------------------------------------------------------

    def _param_fields(self) -> dict[str, Any]:
        return {
            "min_instances": self.min_instances,
            "delta": encode_float(self.delta),
            "threshold": encode_float(self.threshold),
            "alpha": encode_float(self.alpha),
            "mode": self.mode,
        }

    def _state_fields(self) -> dict[str, Any]:
        return {
            "n": self._n,
            "mean": encode_float(self._mean),
            "sum_increase": encode_float(self._inc),
            "sum_decrease": encode_float(self._dec),
            "min_increase": encode_float(self._min_inc),
            "max_decrease": encode_float(self._max_dec),
            "drift_detected": self._drift,
        }

    @classmethod
    def _params_from(cls, f: dict[str, Any]) -> dict[str, Any]:
        tag = cls.TAG
        mode = f.get("mode")
        if mode not in _MODES:
            raise StateCorrupt(f"{tag}: unknown mode {mode!r}")
        return {
            "min_instances": _int(f, "min_instances", tag),
            "delta": _num(f, "delta", tag),
            "threshold": _num(f, "threshold", tag),
            "alpha": _num(f, "alpha", tag),
            "mode": mode,
        }

    def _load(self, f: dict[str, Any]) -> None:
        tag = self.TAG
        n = _int(f, "n", tag)
        if n < 0:
            raise StateCorrupt(f"{tag}: negative count")
        self._n = n
        self._mean = _num(f, "mean", tag)
        self._inc = _num(f, "sum_increase", tag)
        self._dec = _num(f, "sum_decrease", tag)
        self._min_inc = _num(f, "min_increase", tag)
        self._max_dec = _num(f, "max_decrease", tag)
        self._drift = _flag(f, "drift_detected", tag)


_NONE: Final = 0
_DETECT: Final = 1
_AMBIGUOUS: Final = 2
