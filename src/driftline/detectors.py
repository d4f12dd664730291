"""Sequential change detectors with explicit, versioned, pickle-free state.

Two detectors, each giving exactly the detection indices of its ``river`` 0.26.1
counterpart on the same sequence:

* :class:`PageHinkley` -- ``river.drift.PageHinkley``, with a numpy-vectorised
  :meth:`PageHinkley.update_many` for long arrays (tens of ns per value);
* :class:`ADWIN` -- ``river.drift.ADWIN`` (whose core is Rust in river), re-implemented
  in plain Python with the same floating-point operation order, so the window and
  its statistics are bit-for-bit those of river.

Both follow river's style: one verb (``update``), results as read-only properties
(``drift_detected`` ...). As in river, a detector that reported a drift resets itself
on the *next* update. State is written with :func:`driftline.codec.pack` (a tagged,
versioned JSON record: never pickle) and read back with ``from_bytes``, which raises
:class:`~driftline.errors.StateCorrupt` on anything it does not recognise.

Examples
--------
>>> import numpy as np
>>> xs = np.r_[np.zeros(500), np.full(500, 5.0)]
>>> ph = PageHinkley()
>>> ph.update_many(xs)
array([510])
>>> ADWIN().update_many(xs)
array([511])
>>> DETECTORS["adwin"].from_bytes(ADWIN().update(1.0).to_bytes()).width
1
"""

from __future__ import annotations

import functools
import math
import threading
from typing import Any, Final, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt

from driftline.contract.codec import pack, unpack
from driftline.errors import ConfigError, StateCorrupt

__all__ = ["ADWIN", "DETECTORS", "Detector", "PageHinkley"]

_F64 = npt.NDArray[np.float64]
_I64 = npt.NDArray[np.int64]


@runtime_checkable
class Detector(Protocol):
    """What every sequential change detector offers.

    Examples
    --------
    >>> all(isinstance(cls(), Detector) for cls in DETECTORS.values())
    True
    """

    @property
    def drift_detected(self) -> bool:
        """Whether the last update signalled a change."""
        ...

    def update(self, x: float) -> Self:
        """Feed one value; return the detector itself."""
        ...

    def update_many(self, xs: npt.ArrayLike) -> _I64:
        """Feed a 1-D sequence; return the positions (within it) of the detections."""
        ...

    def to_bytes(self) -> bytes:
        """Serialise the parameters and the whole state."""
        ...

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Rebuild a detector written by :meth:`to_bytes`."""
        ...


# --------------------------------------------------------------------------------------
# Helpers: exact float round trip through JSON, linear recurrences.
# --------------------------------------------------------------------------------------

_NONFINITE: Final = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def _enc(x: float) -> float | str:
    """A float for JSON: orjson keeps finite floats exact; the others become strings."""
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _dec(value: Any, what: str) -> float:
    """Inverse of :func:`_enc`, refusing anything that is not a number."""
    if isinstance(value, bool):
        raise StateCorrupt(f"{what}: expected a number, got a boolean")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value in _NONFINITE:
        return _NONFINITE[value]
    raise StateCorrupt(f"{what}: expected a number, got {type(value).__name__}")


def _int(fields: dict[str, Any], key: str, tag: str) -> int:
    value = fields.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise StateCorrupt(f"{tag}: field {key!r} must be an integer")
    return value


def _num(fields: dict[str, Any], key: str, tag: str) -> float:
    if key not in fields:
        raise StateCorrupt(f"{tag}: field {key!r} is missing")
    return _dec(fields[key], f"{tag}.{key}")


def _flag(fields: dict[str, Any], key: str, tag: str) -> bool:
    value = fields.get(key)
    if not isinstance(value, bool):
        raise StateCorrupt(f"{tag}: field {key!r} must be a boolean")
    return value


def _div(a: float, b: float) -> float:
    """IEEE-754 division (Python raises on a zero divisor; Rust and C do not)."""
    if b != 0.0:
        return a / b
    if a != a or a == 0.0:
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _ln(a: float) -> float:
    """IEEE-754 natural logarithm (``math.log`` raises where C's ``log`` does not)."""
    if a > 0.0:
        return math.log(a)
    return -math.inf if a == 0.0 else math.nan


def _whole(value: float, what: str, least: int = -(2**31)) -> int:
    """``value`` as an int in ``[least, 2**31)``, or :class:`ConfigError`."""
    if isinstance(value, bool) or not float(value).is_integer():
        raise ConfigError(f"{what} must be a whole number, not {value!r}")
    if not least <= int(value) < 2**31:
        raise ConfigError(f"{what} must be in [{least}, 2**31), not {value!r}")
    return int(value)


#: Longest chunk of the blocked linear-recurrence solver.
_CHUNK: Final = 16384
#: Largest |log2| of a power of the factor used inside one chunk (no overflow).
_SPAN_LOG2: Final = 64.0


def _chunk_len(a: float) -> int:
    """Chunk length L for s_t = a*s_{t-1} + d_t such that |a|^(+-L) stays in range."""
    span = abs(math.log2(abs(a)))
    if span == 0.0:
        return _CHUNK
    return max(1, min(_CHUNK, int(_SPAN_LOG2 / span)))


@functools.lru_cache(maxsize=32)
def _powers(a: float, length: int) -> tuple[_F64, _F64, _F64]:
    """``(a**t, a**-t, a**(t+1))`` for ``t = 0 .. length-1`` (cached, read-only)."""
    t = np.arange(length, dtype=np.float64)
    up = np.power(a, t)
    down = np.power(a, -t)
    up1 = np.power(a, t + 1.0)
    for arr in (up, down, up1):
        arr.flags.writeable = False
    return up, down, up1


def _linrec(d: _F64, a: float, s0: float, *, overwrite: bool = False) -> _F64:
    """Solve ``s_t = a * s_{t-1} + d_t`` (``s_{-1} = s0``) for every t, vectorised.

    The sequence is cut in chunks of L values, L chosen so that ``|a|**(+-L)`` stays
    within ``2**+-64`` (and L <= 16384). Inside a chunk the scaled form
    ``s_t = a^t (sum_k a^-k d_k)`` is one cumulative sum, whose rounding error stays
    of the order of ``eps * L * sum_k |a^(t-k) d_k|`` whatever ``a`` (as accurate as
    the one-by-one recurrence in practice). The chunks are then chained by the same
    recurrence on their last values (factor ``a^L``), solved recursively. With
    ``overwrite`` the result is written into ``d`` (and ``d`` returned).
    """
    n = d.size
    if n == 0:
        return d.copy()
    if a == 1.0:
        out = np.cumsum(d, out=d if overwrite else None)
        out += s0
        return out
    if a == 0.0:
        out = d if overwrite else d.copy()
        out[0] += 0.0 * s0
        return out
    length = _chunk_len(a)
    if length < 4:  # |a| is astronomically small or large: plain loop
        out = d if overwrite else np.empty(n)
        s = s0
        for i, v in enumerate(d.tolist()):
            s = a * s + v
            out[i] = s
        return out
    up, down, up1 = _powers(a, length)
    if n <= length:
        out = np.multiply(d, down[:n], out=d if overwrite else None)
        np.cumsum(out, out=out)
        out *= up[:n]
        if s0 != 0.0:
            out += s0 * up1[:n]
        return out
    m = -(-n // length)
    work = d if overwrite and m * length == n else np.zeros(m * length)
    if work is not d:
        work[:n] = d
    loc = work.reshape(m, length)
    loc *= down
    np.cumsum(loc, axis=1, out=loc)
    loc *= up
    ends = _linrec(np.ascontiguousarray(loc[:, -1]), a**length, s0)
    prev = np.empty(m)
    prev[0] = s0
    prev[1:] = ends[:-1]
    loc += prev[:, None] * up1
    if overwrite and work is not d:
        d[:] = work[:n]
        return d
    return work[:n]


def _as_1d(xs: npt.ArrayLike) -> _F64:
    arr = np.ascontiguousarray(xs, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"update_many expects a 1-D sequence, got shape {arr.shape}")
    return arr


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


# --------------------------------------------------------------------------------------
# ADWIN
# --------------------------------------------------------------------------------------

_I32_WRAP: Final = 1 << 31
#: Number of values a bucket of row i summarises, as a float.
_SIZES: Final = tuple(float(1 << i) for i in range(64))
_TWO_THIRDS: Final = 2.0 / 3.0


def _wrap_i32(tick: int) -> int:
    """``tick`` as river's wrapping 32-bit counter holds it."""
    return (tick + _I32_WRAP) % (2 * _I32_WRAP) - _I32_WRAP


def _steps_to_test(tick: int, clock: int) -> int:
    """Updates until the wrapping counter, now at ``tick``, is next a multiple of clock."""
    steps = clock - tick % clock
    if tick + steps < _I32_WRAP:
        return steps
    # The counter wraps to -2**31 after 2**31 - tick steps, then counts up again.
    return _I32_WRAP - tick + _I32_WRAP % clock


def _compress_from(
    totals: list[list[float]], variances: list[list[float]], idx: int, max_buckets: int
) -> None:
    """river's compress_buckets from row ``idx`` up, while a row is over-full."""
    while len(totals[idx]) > max_buckets:
        row_t = totals[idx]
        row_v = variances[idx]
        size = _SIZES[idx]
        t0 = row_t[0]
        t1 = row_t[1]
        mu1 = t0 / size
        mu2 = t1 / size
        merged_v = row_v[0] + row_v[1] + size * 0.5 * (mu1 - mu2) * (mu1 - mu2)
        del row_t[:2]
        del row_v[:2]
        idx += 1
        if idx == len(totals):
            totals.append([])
            variances.append([])
        totals[idx].append(t0 + t1)
        variances[idx].append(merged_v)


class ADWIN:
    r"""ADaptive WINdowing change detector, as ``river.drift.ADWIN`` (0.26.1).

    The window is kept as rows of buckets (exponential histogram): row ``i`` holds
    up to ``max_buckets`` buckets of ``2**i`` values each, every bucket storing the
    sum of its values and their sum of squared deviations. Every ``clock`` updates
    (once more than ``grace_period`` values are in the window), every split of the
    window at a bucket boundary into an older part W0 and a newer part W1, both of
    at least ``min_window_length`` values, is tested; when the means differ by more
    than

    .. math:: \epsilon = \sqrt{2 m \sigma^2 \delta'} + \tfrac23 \delta' m,\quad
              m = \tfrac{1}{n_0 - l + 1} + \tfrac{1}{n_1 - l + 1},\quad
              \delta' = \ln(2 \ln(W) / \delta)

    the oldest bucket is dropped and the test repeats; a drift is signalled if
    anything was dropped. As in river, the update after a detection starts again
    from an empty window (so ``n_detections`` is 1 right after a detection and 0
    otherwise).

    Parameters
    ----------
    delta
        Significance of the test.
    clock
        Test for a change every ``clock`` updates (at least 1).
    max_buckets
        Buckets kept per row before the two oldest are merged (at least 2).
    min_window_length
        Smallest sub-window, in values, a split may leave on either side.
    grace_period
        No test until the window holds more than this many values.

    Raises
    ------
    ConfigError
        A count is not a whole number in the 32-bit range river uses, ``clock`` is
        below 1 (river panics on the first update), or ``max_buckets`` is below 2
        (river panics once a detection leaves an empty row of buckets on top).

    Notes
    -----
    Every floating-point operation is done in river's order, so ``width``,
    ``estimation``, ``variance`` and the buckets are bit-for-bit river's (checked in
    the tests against river's own serialised state), and so are the detections.
    ``variance`` is, like river's, the *sum* of squared deviations over the window
    (divide by ``width`` for the variance).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> errors = np.r_[rng.random(2000) < 0.1, rng.random(2000) < 0.4].astype(float)
    >>> adwin = ADWIN()
    >>> adwin.update_many(errors).tolist()
    [2079]
    >>> adwin.width, round(adwin.estimation, 2)
    (1920, 0.41)
    """

    TAG: Final = "adwin"
    VERSION: Final = 1

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
    ) -> None:
        self.delta = float(delta)
        self.clock = _whole(clock, "ADWIN clock", 1)
        self.max_buckets = _whole(max_buckets, "ADWIN max_buckets", 2)
        self.min_window_length = _whole(min_window_length, "ADWIN min_window_length")
        self.grace_period = _whole(grace_period, "ADWIN grace_period")
        self._drift = False
        self._reset()

    def _reset(self) -> None:
        self._drift = False
        self._totals: list[list[float]] = [[]]
        self._variances: list[list[float]] = [[]]
        self._width = 0.0
        self._total = 0.0
        self._variance = 0.0
        self._tick = 0
        self._n_detections = 0

    # ---- results ---------------------------------------------------------------------

    @property
    def drift_detected(self) -> bool:
        """Whether the last update signalled a change."""
        return self._drift

    @property
    def width(self) -> int:
        """Number of values in the current window."""
        return int(self._width)

    @property
    def total(self) -> float:
        """Sum of the values in the window."""
        return self._total

    @property
    def estimation(self) -> float:
        """Mean of the window (0.0 when it is empty)."""
        if self._width == 0.0:
            return 0.0
        return self._total / self._width

    @property
    def variance(self) -> float:
        """Sum of squared deviations from the mean over the window (river's ``variance``)."""
        return self._variance

    @property
    def n_detections(self) -> int:
        """Detections since the last reset (0 or 1, as in river)."""
        return self._n_detections

    # ---- updates ---------------------------------------------------------------------

    def update(self, x: float) -> Self:
        """Feed one value.

        Parameters
        ----------
        x
            The next value of the monitored sequence.

        Returns
        -------
        Self
            The detector, so that ``adwin.update(x).drift_detected`` reads naturally.
        """
        self._run((float(x),), None)
        return self

    def update_many(self, xs: npt.ArrayLike) -> _I64:
        """Feed a whole 1-D array; return the positions at which a drift was detected.

        Exactly equivalent to calling :meth:`update` on each value in turn.

        Parameters
        ----------
        xs
            The next values of the monitored sequence.

        Returns
        -------
        numpy.ndarray
            int64 positions within ``xs``, increasing.
        """
        hits: list[int] = []
        self._run(_as_1d(xs).tolist(), hits)
        return np.asarray(hits, dtype=np.int64)

    def _run(self, xs: list[float] | tuple[float, ...], hits: list[int] | None) -> None:
        """The update loop, on local variables; appends detection positions to ``hits``.

        The operations are river's, in river's order. The clock is not incremented
        per value: the index of the next test is computed instead, and ``tick`` is
        brought up to date at each test and at the end.
        """
        totals = self._totals
        variances = self._variances  # row 0 is kept empty: its variances are all 0.0
        row_t = totals[0]
        width = self._width
        total = self._total
        var = self._variance
        n_det = self._n_detections
        drift = self._drift
        max_buckets = self.max_buckets
        clock = self.clock
        grace = float(self.grace_period)
        base_i = -1  # tick had the value base_tick after the value at index base_i
        base_tick = self._tick
        test_at = _steps_to_test(base_tick, clock) - 1
        for i, x in enumerate(xs):
            if drift:  # river resets on the update after a detection
                totals = [[]]
                variances = [[]]
                row_t = totals[0]
                width = total = var = 0.0
                n_det = 0
                drift = False
                base_i = i - 1
                base_tick = 0
                test_at = i + _steps_to_test(0, clock) - 1
            # insert_element (width is an integer-valued float: w1 == width - 1.0)
            row_t.append(x)
            w1 = width
            width = w1 + 1.0
            if w1:
                dv = x - total / w1
                var += w1 * dv * dv / width
            else:
                var += 0.0
            total += x
            # compress_buckets: merge the two oldest buckets of a full row upwards
            if len(row_t) > max_buckets:
                # Buckets of row 0 hold one value (mean == total, variance 0.0), so
                # river's (0.0 + 0.0) + 0.5 * d * d is exactly 0.5 * d * d.
                t0 = row_t[0]
                t1 = row_t[1]
                d = t0 - t1
                merged_v = 0.5 * d * d
                del row_t[:2]
                if len(totals) == 1:
                    totals.append([])
                    variances.append([])
                up = totals[1]
                up.append(t0 + t1)
                variances[1].append(merged_v)
                if len(up) > max_buckets:
                    _compress_from(totals, variances, 1, max_buckets)
            # detect_change
            if i == test_at:
                tick = _wrap_i32(base_tick + (i - base_i))
                base_i = i
                base_tick = tick
                test_at = i + _steps_to_test(tick, clock)
                if width > grace:
                    cut, width, total, var = self._shrink(totals, variances, width, total, var)
                    if cut:
                        n_det += 1
                        drift = True
                        if hits is not None:
                            hits.append(i)
        self._totals = totals
        self._variances = variances
        self._width = width
        self._total = total
        self._variance = var
        self._tick = _wrap_i32(base_tick + (len(xs) - 1 - base_i))
        self._n_detections = n_det
        self._drift = drift

    def _shrink(
        self,
        totals: list[list[float]],
        variances: list[list[float]],
        width: float,
        total: float,
        var: float,
    ) -> tuple[bool, float, float, float]:
        """Drop the oldest bucket while some split of the window shows a change."""
        delta = self.delta
        mwl = float(self.min_window_length)
        k1 = 1.0 - mwl  # n - mwl + 1.0 == n + k1 exactly: all are integer-valued
        may_be_empty = mwl <= 0.0  # W1 can then be empty (n1 == 0)
        sizes = _SIZES
        sqrt = math.sqrt
        change = False
        while True:
            delta_prime = _ln(_div(2.0 * _ln(width), delta))
            var_w = _div(var, width)
            c23 = _TWO_THIRDS * delta_prime
            # epsilon grows with m_recip = 1/n0' + 1/n1' (n' = n - mwl + 1); within a
            # row n0' and n1' are at most their values at its last and first split, so
            # epsilon there is at least the one computed with those. A difference of
            # means below that floor (less a margin far wider than rounding) is no cut,
            # and the exact test is skipped. No floor for odd parameters (-1.0).
            bounded = var_w >= 0.0 and 0.0 <= delta_prime < math.inf
            n0 = 0.0
            n1 = width
            u0 = 0.0
            u1 = total
            cut = False
            for idx in range(len(totals) - 1, -1, -1):
                size = sizes[idx]
                # The last bucket of row 0 is never a split point (W1 would be empty).
                row = totals[idx] if idx else totals[0][:-1]
                floor = -1.0
                if bounded:
                    hi0 = n0 + len(row) * size + k1
                    hi1 = n1 - size + k1
                    if hi0 > 0.0 and hi1 > 0.0:
                        m_lo = 1.0 / hi0 + 1.0 / hi1
                        floor = sqrt(2.0 * m_lo * var_w * delta_prime) + c23 * m_lo
                        floor *= 1.0 - 1e-9
                for t in row:
                    n0 += size
                    n1 -= size
                    u0 += t
                    u1 -= t
                    if n1 < mwl:  # n1 only decreases: no split left to test
                        break
                    if n0 < mwl:
                        continue
                    if may_be_empty and not n1:
                        dmean = abs(u0 / n0 - _div(u1, n1))
                    else:
                        dmean = abs(u0 / n0 - u1 / n1)
                    if dmean <= floor:
                        continue
                    m_recip = 1.0 / (n0 + k1) + 1.0 / (n1 + k1)
                    a = 2.0 * m_recip * var_w * delta_prime
                    # sqrt of a negative or NaN is NaN in river: the comparison is false
                    if a >= 0.0 and dmean > sqrt(a) + c23 * m_recip:
                        cut = True
                        break
                else:
                    continue
                break
            if not cut:
                return change, width, total, var
            change = True
            # delete_element: drop the oldest bucket (first of the last row)
            last = len(totals) - 1
            size = sizes[last]
            u = totals[last][0]
            v = variances[last][0] if last else 0.0
            mu = u / size
            width -= size
            total -= u
            mu_w = _div(total, width)
            var -= v + _div(size * width * (mu - mu_w) * (mu - mu_w), size + width)
            del totals[last][0]
            if last:
                del variances[last][0]
            if not totals[last] and last:
                totals.pop()
                variances.pop()

    # ---- state -----------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Serialise parameters and state (tag ``"adwin"``, version 1).

        Examples
        --------
        >>> a = ADWIN().update_many([0.0, 1.0, 0.5])
        >>> ADWIN.from_bytes(ADWIN().to_bytes()).width
        0
        """
        return pack(
            self.TAG,
            self.VERSION,
            {
                "delta": _enc(self.delta),
                "clock": self.clock,
                "max_buckets": self.max_buckets,
                "min_window_length": self.min_window_length,
                "grace_period": self.grace_period,
                "totals": [[_enc(t) for t in row] for row in self._totals],
                "variances": [[0.0] * len(self._totals[0])]
                + [[_enc(v) for v in row] for row in self._variances[1:]],
                "width": int(self._width),
                "total": _enc(self._total),
                "variance": _enc(self._variance),
                "tick": self._tick,
                "n_detections": self._n_detections,
                "drift_detected": self._drift,
            },
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Rebuild a detector from :meth:`to_bytes` output.

        Raises
        ------
        StateCorrupt
            Not an ``adwin`` version-1 record, or a field is missing, malformed or
            inconsistent (bucket rows that do not add up to ``width``, ...).
        """
        tag = cls.TAG
        f = unpack(data, tag, cls.VERSION)
        try:
            obj = cls(
                delta=_num(f, "delta", tag),
                clock=_int(f, "clock", tag),
                max_buckets=_int(f, "max_buckets", tag),
                min_window_length=_int(f, "min_window_length", tag),
                grace_period=_int(f, "grace_period", tag),
            )
        except ConfigError as exc:
            raise StateCorrupt(f"{tag}: {exc}") from None
        rows_t = f.get("totals")
        rows_v = f.get("variances")
        if (
            not isinstance(rows_t, list)
            or not isinstance(rows_v, list)
            or not rows_t
            or len(rows_t) != len(rows_v)
            or len(rows_t) > len(_SIZES)
        ):
            raise StateCorrupt(f"{tag}: malformed bucket rows")
        totals: list[list[float]] = []
        variances: list[list[float]] = []
        count = 0
        for i, (rt, rv) in enumerate(zip(rows_t, rows_v, strict=True)):
            if (
                not isinstance(rt, list)
                or not isinstance(rv, list)
                or len(rt) != len(rv)
                or len(rt) > obj.max_buckets
            ):
                raise StateCorrupt(f"{tag}: malformed bucket row {i}")
            totals.append([_dec(t, f"{tag}.totals") for t in rt])
            variances.append([_dec(v, f"{tag}.variances") for v in rv])
            count += len(rt) << i
        if any(v != 0.0 for v in variances[0]):
            raise StateCorrupt(f"{tag}: single-value buckets with a nonzero variance")
        variances[0] = []  # kept implicit, see _run
        if len(totals) > 1 and not totals[-1]:
            raise StateCorrupt(f"{tag}: empty last bucket row")
        width = _int(f, "width", tag)
        if width != count:
            raise StateCorrupt(f"{tag}: width {width} does not match the buckets ({count})")
        n_det = _int(f, "n_detections", tag)
        tick = _int(f, "tick", tag)
        if not 0 <= n_det < _I32_WRAP or not -_I32_WRAP <= tick < _I32_WRAP:
            raise StateCorrupt(f"{tag}: counter out of range")
        obj._totals = totals
        obj._variances = variances
        obj._width = float(width)
        obj._total = _num(f, "total", tag)
        obj._variance = _num(f, "variance", tag)
        obj._tick = tick
        obj._n_detections = n_det
        obj._drift = _flag(f, "drift_detected", tag)
        return obj

    def __repr__(self) -> str:
        return (
            f"ADWIN(delta={self.delta}, clock={self.clock}, max_buckets={self.max_buckets}, "
            f"min_window_length={self.min_window_length}, grace_period={self.grace_period})"
        )


#: Detector classes by the tag of their serialised state.
DETECTORS: Final[dict[str, type[Detector]]] = {
    PageHinkley.TAG: PageHinkley,
    ADWIN.TAG: ADWIN,
}
