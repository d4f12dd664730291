"""What Python values from model servers and tables become on the wire.

Model servers hand over what their libraries return: numpy scalars and 0-d arrays
(``np.float64`` features, ``np.int64`` classes, ``np.float32`` scores), ``bool`` and
``np.bool_``, pandas ``Timestamp`` and ``datetime`` times, pandas' missing markers.
Tables (CSV, Parquet, DataFrames) hold the same. This module turns them into the wire
types of the contract in ONE place, used by the SDK (:mod:`driftline.producer`) and by
the readers of files and tables (:mod:`driftline.offline`):

* numpy scalars and 0-d arrays become the Python scalar they hold; ``NaN``, ``None``,
  ``pd.NA`` and ``NaT`` are missing (``None``); an ``np.float32`` (or ``float16``)
  becomes the float of its own shortest decimal (``np.float32(0.1)`` is ``0.1``, as
  ``str`` prints it and as ``send_batch`` writes float32 arrays), not the binary
  widening ``0.10000000149011612``;
* an infinite feature value is missing too: JSON has no infinity. The wire would carry
  ``null`` anyway; :func:`prepare_prediction` says which features it was, for the SDK
  to warn (:mod:`driftline.producer`);
* a ``Decimal`` (what database drivers return for SQL ``NUMERIC``) becomes an ``int``
  when it is whole (an id or a class stays exact), else a ``float``;
* a boolean feature stays a boolean (a category ``true``/``false`` for the monitor);
  a boolean prediction or label becomes the class name ``"true"``/``"false"`` (the
  contract's labels are numbers or strings), the name the monitor gives it anyway;
* a time is epoch milliseconds; a ``datetime`` must carry a time zone (a naive one is
  refused, saying so: its instant is unknown).

Pure: imports numpy only (pandas is recognised by duck typing, never imported).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np

from driftline.contract.events import (
    event_time_ms,
)

__all__ = [
    "EPOCH_SECONDS",
    "boolean_score_keys",
    "class_key",
    "class_value",
    "event_time",
    "infinite_features",
    "plain",
    "prepare_label",
    "prepare_prediction",
    "seconds_for_ms",
]


def plain(v: Any) -> Any:
    """A Python scalar for ``v``: numpy and pandas scalars unwrapped, missing as ``None``.

    Examples
    --------
    >>> plain(np.float32(0.5)), plain(np.int64(3)), plain(np.bool_(True))
    (0.5, 3, True)
    >>> plain(np.float32(0.1)), float(np.float32(0.1))
    (0.1, 0.10000000149011612)
    >>> plain(float("nan")) is None and plain(np.array(2.0)) == 2.0
    True
    >>> plain(Decimal("12.50")), plain(Decimal("4000000000000000001"))
    (12.5, 4000000000000000001)
    """
    if v is None:
        return None
    t = type(v)
    if t is str or t is bool or t is int:
        return v
    if t is float:
        return None if math.isnan(v) else v
    if isinstance(v, np.ndarray) and v.ndim == 0:
        v = v[()]
        t = type(v)
    if isinstance(v, np.generic):
        if isinstance(v, np.datetime64 | np.timedelta64):
            return None if np.isnat(v) else v
        if t is np.float32 or t is np.float16:
            x = float(str(v))  # its shortest decimal ('inf' and 'nan' read back as such)
            return None if x != x else x
        v = v.item()
        if isinstance(v, float) and math.isnan(v):
            return None
        return v
    if isinstance(v, float):  # a float subclass
        return None if math.isnan(v) else float(v)
    if t.__name__ in ("NAType", "NaTType"):  # pandas' missing markers
        return None
    if isinstance(v, Decimal):
        if v.is_nan():
            return None
        return int(v) if v.is_finite() and v == v.to_integral_value() else float(v)
    return v


def class_value(v: Any) -> Any:
    """A prediction or label as the contract carries it (a number or a string).

    Booleans become ``"true"``/``"false"`` (as the monitor names boolean categories);
    a float holding an integer stays a float (``1.0``), numbers and strings pass.
    """
    v = plain(v)
    if v is True:
        return "true"
    if v is False:
        return "false"
    return v


def event_time(v: Any, *, assume_utc: bool = False) -> int:
    """Event time in epoch milliseconds from what callers hold.

    Accepts epoch milliseconds (int, numpy integer), an RFC 3339 string, or a
    time-zone aware ``datetime`` / pandas ``Timestamp``. A naive ``datetime`` and a
    ``numpy.datetime64`` (which has no time zone) are refused unless ``assume_utc``
    (files: the readers say so when they do it).

    Raises
    ------
    ValueError
        Naive times, non-integer numbers, booleans and unparsable strings, with the reason.
    """
    v = plain(v)
    if v is None:
        raise ValueError("timestamp is missing")
    if type(v) is int or type(v) is float:
        if (wrong := seconds_for_ms(v)) is not None:
            raise ValueError(wrong)
    if type(v) is int:
        if v < 0:
            raise ValueError("timestamp: negative epoch milliseconds")
        return v
    if isinstance(v, datetime):
        if v.tzinfo is None or v.utcoffset() is None:
            if not assume_utc:
                raise ValueError(
                    "timestamp: naive datetime (no time zone): pass an aware one, e.g. "
                    "datetime.now(timezone.utc) or pd.Timestamp(..., tz='UTC')"
                )
            return _naive_utc_ms(v)
        return int(round(v.timestamp() * 1000))
    if isinstance(v, np.datetime64):
        if not assume_utc:
            raise ValueError(
                "timestamp: numpy datetime64 has no time zone: pass epoch ms or an aware datetime"
            )
        return int(v.astype("datetime64[ms]").astype(np.int64))
    if type(v) is str:
        try:
            return event_time_ms(v) if _aware_text(v) else _naive_text(v, assume_utc)
        except ValueError as exc:
            raise ValueError(f"timestamp: {exc}") from None
    if type(v) is float:
        raise ValueError(
            f"timestamp: expected integer epoch ms or a date-time, got float {v!r}: "
            "pass int(time.time() * 1000) or an aware datetime"
        )
    raise ValueError(f"timestamp: expected epoch ms or a date-time, got {type(v).__name__}")


#: Epoch seconds of 2000-01-01 and 2100-01-01 UTC: numbers in this range are times of
#: this century in seconds (as milliseconds they would be January 1970).
EPOCH_SECONDS = (946_684_800, 4_102_444_800)


def seconds_for_ms(v: float) -> str | None:
    """Why ``v``, given as epoch milliseconds, is not: it is a time of this century in
    epoch seconds (``int(time.time())``), which as milliseconds is January 1970 and
    would be taken as such, silently. ``None`` when ``v`` is not in that range."""
    first, last = EPOCH_SECONDS
    if not first <= v <= last:
        return None
    meant = datetime.fromtimestamp(v, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    taken = datetime.fromtimestamp(v / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f"timestamp: {v!r} is epoch seconds ({meant}); epoch milliseconds are expected "
        f"(as ms it is {taken}): pass int(time.time() * 1000) or an aware datetime"
    )


def _aware_text(v: str) -> bool:
    tail = v[-6:]
    return v.endswith(("Z", "z")) or (len(v) > 10 and tail[0] in "+-" and tail[3] == ":")


def _naive_utc_ms(dt: datetime) -> int:
    return (dt - _EPOCH) // _ONE_MS


def _naive_text(v: str, assume_utc: bool) -> int:
    dt = datetime.fromisoformat(v)
    if dt.tzinfo is not None:
        return int(round(dt.timestamp() * 1000))
    if not assume_utc:
        raise ValueError(f"{v!r} has no time zone")
    return _naive_utc_ms(dt)


_EPOCH = datetime(1970, 1, 1)
_ONE_MS = timedelta(milliseconds=1)


def _mapping(
    v: Any, what: str, hint: str = "", key: Callable[[Any], str] | None = None
) -> dict[str, Any] | None:
    """``v`` as a dict of plain values, its keys as text (``key``'s, else ``str``)."""
    if v is None:
        return None
    if not isinstance(v, Mapping):
        raise ValueError(f"{what}: expected a mapping{hint}, got {type(v).__name__}")
    if key is not None:
        return {key(k): plain(x) for k, x in v.items()}
    return {k if type(k) is str else str(k): plain(x) for k, x in v.items()}


def class_key(k: Any) -> str:
    """A class name as a score key: text, as :func:`class_value` gives the class."""
    if type(k) is str:
        return k
    v = class_value(k)
    return v if type(v) is str else str(v)


def boolean_score_keys(scores: dict[str, Any]) -> dict[str, Any]:
    """The scores of a boolean prediction with keys written as Python writes the
    booleans (``{"True": p, "False": 1 - p}``, ``str(True)``; any case) keyed as the
    prediction's classes are, ``"true"``/``"false"``. Other keys are left as they are:
    only both spellings of both booleans say they are the prediction's classes."""
    if {k.lower() for k in scores} != {"true", "false"} or len(scores) != 2:
        return scores
    return {k.lower(): p for k, p in scores.items()}


def prepare_prediction(
    event: Mapping[str, Any], infinite: list[str] | None = None
) -> dict[str, Any]:
    """The wire form of a prediction event given with everyday Python values.

    Unwraps numpy and pandas values, turns a ``datetime`` into epoch milliseconds
    (refusing a naive one) and a boolean prediction into ``"true"``/``"false"`` (and
    the keys of its scores, ``"True"``/``"False"``, likewise).
    Other fields pass as they are; the contract check comes after. An infinite feature
    value becomes missing (``None``), its feature's name appended to ``infinite``.

    Raises
    ------
    ValueError
        The reason, e.g. a naive timestamp or features that are not a mapping.
    """
    out = dict(event)
    if "timestamp" in out and type(out["timestamp"]) is not str:
        out["timestamp"] = event_time(out["timestamp"])
    if "features" in out:
        features = out["features"] = _mapping(out["features"], "features")
        if features is not None and _has_infinity(features):
            infinite_features(features, infinite)
    if "scores" in out:
        # A class is named as the prediction names it: dict(zip(model.classes_, proba))
        # of a boolean target has keys np.True_/np.False_, the prediction "true"/"false".
        scores = _mapping(
            out["scores"],
            "scores",
            " of class -> probability (dict(zip(model.classes_, proba)))",
            class_key,
        )
        if scores is not None:
            scores = {k: p for k, p in scores.items() if p is not None}
        out["scores"] = scores or None
        if out["scores"] is None:
            del out["scores"]
    if "prediction" in out:
        given = plain(out["prediction"])
        out["prediction"] = class_value(given)
        if type(given) is bool and "scores" in out:
            out["scores"] = boolean_score_keys(out["scores"])
    for name in ("prediction_id", "model_id", "model_version"):
        if name in out:
            out[name] = plain(out[name])
    return out


def infinite_features(features: dict[str, Any], names: list[str] | None = None) -> None:
    """Set the infinite values of plain ``features`` to ``None`` (missing: what a JSON
    encoder writes for them anyway), their names appended to ``names``."""
    for k, x in features.items():
        if type(x) is float and (x == _INF or x == -_INF):
            features[k] = None
            if names is not None:
                names.append(k)


_INF = math.inf
_INFINITIES = frozenset((math.inf, -math.inf))


def _has_infinity(features: dict[str, Any]) -> bool:
    """Whether a plain value of ``features`` is infinite: one hashed pass in C."""
    try:
        return not _INFINITIES.isdisjoint(features.values())
    except TypeError:  # an unhashable value (the contract check refuses it after)
        return True


def prepare_label(event: Mapping[str, Any]) -> dict[str, Any]:
    """The wire form of a label event (see :func:`prepare_prediction`)."""
    out = dict(event)
    if "timestamp" in out and type(out["timestamp"]) is not str:
        out["timestamp"] = event_time(out["timestamp"])
    if "label" in out:
        out["label"] = class_value(out["label"])
    for name in ("prediction_id", "model_id"):
        if name in out:
            out[name] = plain(out[name])
    return out
