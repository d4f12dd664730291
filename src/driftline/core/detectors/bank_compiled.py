"""The CUSUM bank's pass compiled with numba: the optional ``driftline[compiled]``.

:meth:`driftline.core.detectors.bank.CusumBank._run` advances every active row of a
stream's bank over a run of events in numpy: about ten passes over an (events x rows)
array (increments, running sums, running minima, block bounds). This module does the
same work in one loop per row over its events, in the same arithmetic: the fixed-point
increment ``rint((x * a + b) * SCALE)`` (clipped when the layout clips, 0 for a missing
value) and the integer statistic ``S = max(0, S + y)``. The numpy pass stays the
oracle: both give the same statistics, peaks, crossings and states, bit for bit
(tests/unit/test_bank_compiled.py, on random sequences and on the monitor's stream).

It is used only when numba is installed and the monitor's ``compiled_core`` setting
allows it (docs/performance.md, "Round thirteen"); nothing else in Driftline imports
numba. Compiling takes about a second the first time; numba caches the machine code
beside this file (or under ``NUMBA_CACHE_DIR``) for the next process.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["CompiledPass", "available", "load"]

log = logging.getLogger(__name__)

#: ``(v, pos, end, act, chan, a, b, h, clip, s, scale, max_step) -> (first, top)``:
#: runs rows ``act`` over events ``pos:end`` of the channels ``v`` until the first
#: event where one crosses its threshold ``h`` (``first``, -1 if none; the rows'
#: statistics ``s`` are then at that event, else at ``end - 1``) and returns each row's
#: peak statistic over what it ran (``top``).
CompiledPass = Callable[..., tuple[int, Any]]

_loaded: CompiledPass | None = None


def available() -> bool:
    """Whether numba is installed (without importing it)."""
    return importlib.util.find_spec("numba") is not None


def _kernel(scale_check: float) -> CompiledPass:
    import numba

    def cusum_pass(
        v: Any,
        pos: int,
        end: int,
        act: Any,
        chan: Any,
        ra: Any,
        rb: Any,
        hf: Any,
        clip: bool,
        s: Any,
        scale: float,
        max_step: float,
    ) -> tuple[int, Any]:
        # Row by row: a row's events are contiguous in ``v``. The first walk stops each
        # row at the earliest crossing found so far; when no row crosses (most passes)
        # it is the only walk, else a second walk runs every row to that event, so all
        # rows end at the same event, as the numpy pass cuts the batch there.
        r = act.size
        first = end
        top = np.zeros(r, np.float64)
        final = np.empty(r, np.int64)
        for k in range(r):
            row = act[k]
            a, b, h, c, peak = ra[row], rb[row], hf[row], s[row], 0
            x = v[chan[row]]
            for t in range(pos, first):
                y = np.rint((x[t] * a + b) * scale)
                if y != y:
                    y = 0.0  # a missing value leaves the statistic unchanged
                elif clip:
                    y = min(max(y, -max_step), max_step)
                c = max(c + np.int64(y), 0)
                peak = max(peak, c)
                if c >= h:
                    first = t
                    break
            final[k] = c
            top[k] = peak
        if first == end:
            for k in range(r):
                s[act[k]] = final[k]
            return -1, top
        for k in range(r):
            row = act[k]
            a, b, c, peak = ra[row], rb[row], s[row], 0
            x = v[chan[row]]
            for t in range(pos, first + 1):
                y = np.rint((x[t] * a + b) * scale)
                if y != y:
                    y = 0.0
                elif clip:
                    y = min(max(y, -max_step), max_step)
                c = max(c + np.int64(y), 0)
                peak = max(peak, c)
            s[row] = c
            top[k] = peak
        return first, top

    try:
        compiled = numba.njit(cache=True, nogil=True)(cusum_pass)
        _warm(compiled, scale_check)
    except Exception as exc:  # a read-only install without NUMBA_CACHE_DIR: no cache
        log.info("driftline: numba cannot cache the compiled pass (%s); compiling in memory", exc)
        compiled = numba.njit(cache=False, nogil=True)(cusum_pass)
        _warm(compiled, scale_check)
    return compiled


def _warm(kernel: Any, scale: float) -> None:
    """Compile now (at start-up), not at the first batch: the arguments' types are the
    bank's (float64 channels, intp rows, int64 statistics)."""
    v = np.zeros((1, 2), np.float64)
    rows = np.zeros(1, np.intp)
    s = np.zeros(1, np.int64)
    f = np.ones(1, np.float64)
    kernel(v, 0, 2, rows, rows, f, f, f * 1e18, True, s, scale, 1024.0 * scale)
    kernel(v, 0, 2, rows, rows, f, f, f * 1e18, False, s, scale, 1024.0 * scale)


def load(scale: float) -> CompiledPass | None:
    """The compiled pass (compiled once per process), or None without numba."""
    global _loaded
    if _loaded is None and available():
        _loaded = _kernel(scale)
    return _loaded
