"""Event times in tables: ISO 8601 text, epoch numbers, and the layouts spreadsheets
and locales write (``31.01.2026 14:05``, ``1/31/2026 2:05 PM``).

A time column of text that is not ISO 8601 is read in the one common layout that reads
every value tried (values spread over the column); day first or month first with no
value to tell them apart (no day after the 12th) is asked, not guessed. A time without
a zone is UTC.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.contract.values import EPOCH_SECONDS, event_time, plain
from driftline.errors import InputError
from driftline.offline.options import option

__all__ = ["TIME_TEXT", "epoch_times", "infer_layout", "time_ms"]

#: ISO 8601 text (a date, a time of day, a zone).
TIME_TEXT = re.compile(
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:[Zz]|[+-]\d{2}:?\d{2})?$"
)
#: Date layouts that are not ISO 8601: day or month first (or year first with other
#: separators), with or without a time of day.
_DATE_LAYOUTS = tuple(
    f"{a}{sep}{b}{sep}{c}"
    for sep in ".-/"
    for a, b, c in (("%d", "%m", "%Y"), ("%m", "%d", "%Y"), ("%d", "%m", "%y"), ("%m", "%d", "%y"))
) + ("%Y/%m/%d", "%Y.%m.%d")
_TIME_LAYOUTS = ("", " %H:%M", " %H:%M:%S", " %H:%M:%S.%f", " %I:%M %p", " %I:%M:%S %p")
LAYOUTS = tuple(d + t for d in _DATE_LAYOUTS for t in _TIME_LAYOUTS)
#: Distinct values a layout is tried on, spread over the column (rows it does not read
#: are refused one by one).
_LAYOUT_SAMPLE = 2000


def _reads_all(layout: str, texts: Sequence[str]) -> bool:
    try:
        for v in texts:
            datetime.strptime(v, layout)
    except ValueError:
        return False
    return True


def epoch_times(x: NDArray[np.float64]) -> bool:
    """Whether every number of ``x`` (NaN: missing) is an epoch time of this century, in
    seconds or in milliseconds: how a table holds times as numbers."""
    x = x[~np.isnan(x)]
    if x.size == 0:
        return False
    lo, hi = float(x.min()), float(x.max())
    first, last = EPOCH_SECONDS
    return any(first * k <= lo and hi <= last * k for k in (1.0, 1000.0))


def infer_layout(distinct: Sequence[str], given: str | None, where: str) -> str:
    """The ``strptime`` layout of a time column's distinct texts, in column order: the
    one ``given`` (checked), or the one of :data:`LAYOUTS` that reads every value tried.

    Raises
    ------
    InputError
        No layout reads the values, ``given`` does not, or day first and month first
        both do (``where`` starts the message).
    """
    # spread over the column: a minute's data has its 13th day far down the file
    texts = list(distinct[:: max(1, len(distinct) // _LAYOUT_SAMPLE)]) + list(distinct[-1:])
    if given is not None:
        if not _reads_all(given, texts[:100]):
            bad = next(v for v in texts if not _reads_all(given, [v]))
            raise InputError(
                f"{where}: {bad!r} is not in the layout {given!r} ({option('time-format')})"
            )
        return given
    found = [lay for lay in LAYOUTS if _reads_all(lay, texts)]
    if not found:
        raise InputError(
            f"{where}: {texts[0]!r} is not a time Driftline reads: give its layout in "
            f"strptime codes ({option('time-format', '%d.%m.%Y %H:%M')}), or name "
            f"another time column ({option('timestamp', 'COLUMN')})"
        )
    if len(found) > 1:
        choices = " or ".join(repr(lay) for lay in found[:2])
        raise InputError(
            f"{where}: {texts[0]!r} could be day first or month first (no day after the "
            f"12th): say which with {option('time-format')} {choices}"
        )
    return found[0]


def time_ms(v: Any, scale: int, layout: str | None = None) -> int:
    """Epoch milliseconds of a time cell: epoch numbers times ``scale`` (1000 for
    seconds), text in ``layout`` (UTC without a zone), or what
    :func:`~driftline.contract.values.event_time` reads (ISO 8601 text, datetimes).
    """
    v = plain(v)
    if layout is not None and isinstance(v, str):
        try:
            t = datetime.strptime(v, layout)
        except ValueError:
            raise ValueError(f"timestamp {v!r} is not in the layout {layout!r}") from None
        return event_time(t if t.tzinfo else t.replace(tzinfo=UTC))
    if isinstance(v, float):
        if not v.is_integer():
            v = v * scale
            return int(round(v))
        v = int(v)
    if isinstance(v, int) and not isinstance(v, bool):
        return v * scale
    return event_time(v, assume_utc=True)
