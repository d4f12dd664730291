"""ADWIN: ``river.drift.ADWIN`` (whose core is Rust in river), re-implemented in plain
Python with the same floating-point operation order, so the window and its statistics
are bit-for-bit those of river 0.26.1."""

from __future__ import annotations

import math
from typing import Any, Final

from driftline.contract.codec import decode_float, encode_float
from driftline.core.detectors._base import DetectorBase, positions
from driftline.core.detectors._numeric import (
    _F64,
    _I64,
    _div,
    _flag,
    _int,
    _ln,
    _num,
    _whole,
)
from driftline.errors import StateCorrupt

# --------------------------------------------------------------------------------------
# ADWIN
# --------------------------------------------------------------------------------------

_I32_WRAP: Final = 1 << 31
#: Number of values a bucket of row i summarises, as a float.
_SIZES: Final = tuple(float(1 << i) for i in range(64))
_TWO_THIRDS: Final = 2.0 / 3.0
#: What :meth:`ADWIN._run` changes besides the buckets (:meth:`ADWIN._run_unless_detected`
#: puts them back).
_RUN_SCALARS: Final = ("_width", "_total", "_variance", "_tick", "_n_detections", "_drift")


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


def _merge_row0(totals: list[list[float]], variances: list[list[float]], max_buckets: int) -> None:
    """river's compress_buckets on a full row 0 (then upwards while rows are full)."""
    row_t = totals[0]
    # Buckets of row 0 hold one value (mean == total, variance 0.0), so river's
    # (0.0 + 0.0) + 0.5 * d * d is exactly 0.5 * d * d.
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


class ADWIN(DetectorBase):
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

    TAG = "adwin"
    VERSION = 1
    PARAMS = ("delta", "clock", "max_buckets", "min_window_length", "grace_period")

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

    def _step(self, x: float) -> None:
        """One value: :meth:`_run`'s loop body for a single value, without its setup
        (the label joiner feeds one error at a time). The clock tests after the
        update that brings the wrapping counter to a multiple of ``clock``."""
        if self._drift:  # river resets on the update after a detection
            self._reset()
        totals = self._totals
        row_t = totals[0]
        row_t.append(x)
        w1 = self._width
        width = w1 + 1.0
        total = self._total
        var = self._variance
        if w1:
            dv = x - total / w1
            var += w1 * dv * dv / width
        else:
            var += 0.0
        total += x
        if len(row_t) > self.max_buckets:
            _merge_row0(totals, self._variances, self.max_buckets)
        tick = self._tick
        self._tick = _wrap_i32(tick + 1)
        if _steps_to_test(tick, self.clock) == 1 and width > float(self.grace_period):
            cut, width, total, var = self._shrink(totals, self._variances, width, total, var)
            if cut:
                self._n_detections += 1
                self._drift = True
        self._width = width
        self._total = total
        self._variance = var

    def _feed(self, x: _F64) -> _I64:
        """Many values: exactly the one-by-one loop (on Python floats)."""
        hits: list[int] = []
        self._run(x.tolist(), hits)
        return positions(hits)

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
                _merge_row0(totals, variances, max_buckets)
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

    def _run_unless_detected(self, xs: list[float]) -> int:
        """:meth:`_run` of ``xs`` when none of their tests detects a change (-1); else
        the index in ``xs`` of the first value whose test does, and the detector is left
        as it was (the caller feeds them another way)."""
        totals = [row[:] for row in self._totals]
        variances = [row[:] for row in self._variances]
        scalars = [getattr(self, name) for name in _RUN_SCALARS]
        hits: list[int] = []
        self._run(xs, hits)
        if not hits:
            return -1
        self._totals, self._variances = totals, variances
        for name, value in zip(_RUN_SCALARS, scalars, strict=True):
            setattr(self, name, value)
        return hits[0]

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

    def _param_fields(self) -> dict[str, Any]:
        return {
            "delta": encode_float(self.delta),
            "clock": self.clock,
            "max_buckets": self.max_buckets,
            "min_window_length": self.min_window_length,
            "grace_period": self.grace_period,
        }

    def _state_fields(self) -> dict[str, Any]:
        return {
            "totals": [[encode_float(t) for t in row] for row in self._totals],
            "variances": [[0.0] * len(self._totals[0])]
            + [[encode_float(v) for v in row] for row in self._variances[1:]],
            "width": int(self._width),
            "total": encode_float(self._total),
            "variance": encode_float(self._variance),
            "tick": self._tick,
            "n_detections": self._n_detections,
            "drift_detected": self._drift,
        }

    @classmethod
    def _params_from(cls, f: dict[str, Any]) -> dict[str, Any]:
        tag = cls.TAG
        return {
            "delta": _num(f, "delta", tag),
            "clock": _int(f, "clock", tag),
            "max_buckets": _int(f, "max_buckets", tag),
            "min_window_length": _int(f, "min_window_length", tag),
            "grace_period": _int(f, "grace_period", tag),
        }

    def _load(self, f: dict[str, Any]) -> None:
        """The bucket rows must add up to ``width`` and every counter be in range."""
        tag = self.TAG
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
                or len(rt) > self.max_buckets
            ):
                raise StateCorrupt(f"{tag}: malformed bucket row {i}")
            totals.append([decode_float(t, f"{tag}.totals") for t in rt])
            variances.append([decode_float(v, f"{tag}.variances") for v in rv])
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
        self._totals = totals
        self._variances = variances
        self._width = float(width)
        self._total = _num(f, "total", tag)
        self._variance = _num(f, "variance", tag)
        self._tick = tick
        self._n_detections = n_det
        self._drift = _flag(f, "drift_detected", tag)
