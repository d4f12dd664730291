"""Numeric helpers of the detectors: checked state fields, IEEE-754 arithmetic where
Python raises, and linear recurrences (vectorised)."""

from __future__ import annotations

import functools
import math
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from driftline.contract.codec import decode_float
from driftline.errors import ConfigError, StateCorrupt

_F64 = npt.NDArray[np.float64]
_I64 = npt.NDArray[np.int64]


def _int(fields: dict[str, Any], key: str, tag: str) -> int:
    value = fields.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise StateCorrupt(f"{tag}: field {key!r} must be an integer")
    return value


def _num(fields: dict[str, Any], key: str, tag: str) -> float:
    if key not in fields:
        raise StateCorrupt(f"{tag}: field {key!r} is missing")
    return decode_float(fields[key], f"{tag}.{key}")


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
