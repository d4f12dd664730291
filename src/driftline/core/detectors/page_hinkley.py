"""Page-Hinkley: ``river.drift.PageHinkley``'s detections, with a numpy-vectorised
:meth:`PageHinkley.update_many` for long arrays (tens of ns per value)."""

from __future__ import annotations

import functools
import math
import threading
from typing import Final, Self

import numpy as np
import numpy.typing as npt

from driftline.contract.codec import pack, unpack
from driftline.core.detectors._numeric import (
    _F64,
    _I64,
    _as_1d,
    _chunk_len,
    _enc,
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


class PageHinkley:
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

    TAG: Final = "page_hinkley"
    VERSION: Final = 1

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
    def drift_detected(self) -> bool:
        """Whether the last update signalled a change."""
        return self._drift

    @property
    def n(self) -> int:
        """Number of values seen since the last reset."""
        return self._n

    @property
    def mean(self) -> float:
        """Running mean of the values since the last reset."""
        return self._mean

    # ---- one value -------------------------------------------------------------------

    def update(self, x: float) -> Self:
        """Feed one value (river's arithmetic, operation for operation).

        Parameters
        ----------
        x
            The next value of the monitored sequence.

        Returns
        -------
        Self
            The detector, so that ``ph.update(x).drift_detected`` reads naturally.
        """
        if self._drift:
            self._reset()
        x = float(x)
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
        return self

    # ---- many values -----------------------------------------------------------------

    def update_many(self, xs: npt.ArrayLike) -> _I64:
        """Feed a whole 1-D array; return the positions at which a drift was detected.

        Equivalent to calling :meth:`update` on each value in turn (same detections,
        same ``n`` and ``drift_detected`` at the end; see the class notes on floats),
        but vectorised: a few tens of ns per value on long arrays.

        Parameters
        ----------
        xs
            The next values of the monitored sequence.

        Returns
        -------
        numpy.ndarray
            int64 positions within ``xs``, increasing.
        """
        x = _as_1d(xs)
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
        return np.asarray(hits, dtype=np.int64)

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

    def to_bytes(self) -> bytes:
        """Serialise parameters and state (tag ``"page_hinkley"``, version 1).

        Examples
        --------
        >>> ph = PageHinkley(threshold=20.0).update(1.5)
        >>> PageHinkley.from_bytes(ph.to_bytes()).to_bytes() == ph.to_bytes()
        True
        """
        return pack(
            self.TAG,
            self.VERSION,
            {
                "min_instances": self.min_instances,
                "delta": _enc(self.delta),
                "threshold": _enc(self.threshold),
                "alpha": _enc(self.alpha),
                "mode": self.mode,
                "n": self._n,
                "mean": _enc(self._mean),
                "sum_increase": _enc(self._inc),
                "sum_decrease": _enc(self._dec),
                "min_increase": _enc(self._min_inc),
                "max_decrease": _enc(self._max_dec),
                "drift_detected": self._drift,
            },
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Rebuild a detector from :meth:`to_bytes` output.

        Raises
        ------
        StateCorrupt
            Not a ``page_hinkley`` version-1 record, or a field is missing or malformed.
        """
        tag = cls.TAG
        f = unpack(data, tag, cls.VERSION)
        mode = f.get("mode")
        if mode not in _MODES:
            raise StateCorrupt(f"{tag}: unknown mode {mode!r}")
        n = _int(f, "n", tag)
        if n < 0:
            raise StateCorrupt(f"{tag}: negative count")
        try:
            obj = cls(
                min_instances=_int(f, "min_instances", tag),
                delta=_num(f, "delta", tag),
                threshold=_num(f, "threshold", tag),
                alpha=_num(f, "alpha", tag),
                mode=mode,
            )
        except ConfigError as exc:
            raise StateCorrupt(f"{tag}: {exc}") from None
        obj._n = n
        obj._mean = _num(f, "mean", tag)
        obj._inc = _num(f, "sum_increase", tag)
        obj._dec = _num(f, "sum_decrease", tag)
        obj._min_inc = _num(f, "min_increase", tag)
        obj._max_dec = _num(f, "max_decrease", tag)
        obj._drift = _flag(f, "drift_detected", tag)
        return obj

    def __repr__(self) -> str:
        return (
            f"PageHinkley(min_instances={self.min_instances}, delta={self.delta}, "
            f"threshold={self.threshold}, alpha={self.alpha}, mode={self.mode!r})"
        )


_NONE: Final = 0
_DETECT: Final = 1
_AMBIGUOUS: Final = 2


