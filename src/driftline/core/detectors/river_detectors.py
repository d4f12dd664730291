"""river's concept-drift detectors with explicit, versioned, pickle-free snapshots.

The slow loop watches the per-prediction error with a detector chosen per model
(:mod:`driftline.core.slowloop.concept`): our river-exact :class:`~.adwin.ADWIN` by
default, or one of river's own detectors run as they are -- ``DDM``, ``EDDM``,
``HDDM_A``, ``HDDM_W`` (river.drift.binary: a 0/1 error stream) and ``KSWIN``
(river.drift). :class:`RiverDetector` wraps one and adds what the slow loop needs:
a state that can be stored.

Snapshots are never pickles. For each river type, :data:`_CODECS` names its parameters
and writes its state field by field (floats exact through JSON, infinities as
strings) from the attributes river's source sets in ``_reset`` and ``update``; reading
a snapshot builds a fresh detector with the same parameters and sets those fields
back. Those attributes are river's internals, so a snapshot records river's version
and is refused (:class:`~driftline.errors.StateCorrupt`) by a build running another
one: a silent misreading would be worse than a clear error. ``KSWIN`` draws a random
sample at every test: its generator is always seeded (a detector without a seed would
not replay) and its Mersenne Twister state (``random.Random.getstate``: 625 integers)
is part of the snapshot, so a restored KSWIN continues the same random sequence.

The contract test (tests/unit/test_river_detectors.py) runs every type on seeded error
streams with a snapshot -> restore every few updates and checks the detections equal
those of one uninterrupted river detector (the oracle).

Examples
--------
>>> det = RiverDetector("ddm")
>>> for x in [0.0] * 200 + [1.0] * 50:
...     _ = det.update(x)
>>> RiverDetector.from_bytes(det.to_bytes()).to_dict() == det.to_dict()
True
"""

from __future__ import annotations

import collections
import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Self

import numpy as np
import numpy.typing as npt

from driftline.contract.codec import decode_float, encode_float, pack, unpack
from driftline.core.detectors._numeric import _I64, _as_1d
from driftline.errors import ConfigError, StateCorrupt

__all__ = ["RIVER_DETECTORS", "RiverDetector", "river_version"]


def river_version() -> str:
    """The installed river's version (imported on first use: river is slow to import)."""
    return str(importlib.import_module("river").__version__)


# ----------------------------------------------------------------------- field codecs
# Each helper reads or writes one river attribute (or small river object) as plain data.


def _mean_out(m: Any) -> list[float | str]:
    """``river.stats.Mean``: [n, mean]."""
    return [encode_float(float(m.n)), encode_float(float(m._mean))]


def _mean_in(d: Any, what: str) -> Any:
    from river import stats

    n, mean = _pair(d, what)
    m = stats.Mean()
    m.n, m._mean = n, mean
    return m


def _var_out(v: Any) -> list[Any]:
    """``river.stats.Var``: [ddof, [n, mean], S]."""
    return [v.ddof, _mean_out(v.mean), encode_float(float(v._S))]


def _var_in(d: Any, what: str) -> Any:
    from river import stats

    if not isinstance(d, list) or len(d) != 3 or not isinstance(d[0], int):
        raise StateCorrupt(f"{what}: expected [ddof, mean, S]")
    v = stats.Var(ddof=d[0])
    v.mean = _mean_in(d[1], f"{what}.mean")
    v._S = decode_float(d[2], f"{what}.S")
    return v


def _sample_out(s: Any) -> list[Any]:
    """HDDM_W's ``SampleInfo``: [initialised, ewma, independent bound condition]."""
    return [
        bool(s._is_init),
        encode_float(float(s.ewma) if s._is_init else 0.0),
        encode_float(float(s._ibc)),
    ]


def _sample_in(d: Any, lambda_val: float, what: str) -> Any:
    from river.drift.binary.hddm_w import SampleInfo

    if not isinstance(d, list) or len(d) != 3 or not isinstance(d[0], bool):
        raise StateCorrupt(f"{what}: expected [initialised, ewma, ibc]")
    s = SampleInfo(lambda_val)
    s._is_init = d[0]
    s._ibc = decode_float(d[2], f"{what}.ibc")
    if d[0]:
        # river's EWMean (Rust) has no setter; its first update sets the mean to the
        # value exactly (checked in the tests), which restores it bit for bit.
        s._ewma.update(decode_float(d[1], f"{what}.ewma"))
    return s


def _pair(d: Any, what: str) -> tuple[float, float]:
    if not isinstance(d, list) or len(d) != 2:
        raise StateCorrupt(f"{what}: expected [n, mean]")
    return decode_float(d[0], f"{what}.n"), decode_float(d[1], f"{what}.mean")


def _opt_out(x: float | None) -> float | str | None:
    return None if x is None else encode_float(x)


def _opt_in(x: Any, what: str) -> float | None:
    return None if x is None else decode_float(x, what)


def _int_in(d: Mapping[str, Any], key: str, what: str) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise StateCorrupt(f"{what}: field {key!r} must be an integer")
    return v


# ----------------------------------------------------------------------- per type


def _ddm_state(det: Any) -> dict[str, Any]:
    return {
        "p": _mean_out(det._p),
        "p_min": _opt_out(None if det._p_min is None else float(det._p_min)),
        "s_min": _opt_out(None if det._s_min is None else float(det._s_min)),
        "ps_min": encode_float(float(det._ps_min)),
    }


def _ddm_load(det: Any, s: Mapping[str, Any]) -> None:
    det._p = _mean_in(s["p"], "ddm.p")
    det._p_min = _opt_in(s["p_min"], "ddm.p_min")
    det._s_min = _opt_in(s["s_min"], "ddm.s_min")
    det._ps_min = decode_float(s["ps_min"], "ddm.ps_min")


def _eddm_state(det: Any) -> dict[str, Any]:
    return {
        "distances": _var_out(det._error_distances),
        "n": det._n,
        "last_error": det._last_error,
        "n_errors": det._n_errors,
        "p2s_prime_max": encode_float(float(det._p2s_prime_max)),
    }


def _eddm_load(det: Any, s: Mapping[str, Any]) -> None:
    det._error_distances = _var_in(s["distances"], "eddm.distances")
    det._n = _int_in(s, "n", "eddm")
    det._last_error = _int_in(s, "last_error", "eddm")
    det._n_errors = _int_in(s, "n_errors", "eddm")
    det._p2s_prime_max = decode_float(s["p2s_prime_max"], "eddm.p2s_prime_max")


def _hddm_a_state(det: Any) -> dict[str, Any]:
    return {"x_min": _mean_out(det._x_min), "x_max": _mean_out(det._x_max), "z": _mean_out(det._z)}


def _hddm_a_load(det: Any, s: Mapping[str, Any]) -> None:
    det._x_min = _mean_in(s["x_min"], "hddm_a.x_min")
    det._x_max = _mean_in(s["x_max"], "hddm_a.x_max")
    det._z = _mean_in(s["z"], "hddm_a.z")


_HDDM_W_SAMPLES: Final = ("total", "s1_decr", "s1_incr", "s2_decr", "s2_incr")


def _hddm_w_state(det: Any) -> dict[str, Any]:
    out: dict[str, Any] = {k: _sample_out(getattr(det, f"_{k}")) for k in _HDDM_W_SAMPLES}
    out["incr_cutpoint"] = encode_float(float(det._incr_cutpoint))
    out["decr_cutpoint"] = encode_float(float(det._decr_cutpoint))
    return out


def _hddm_w_load(det: Any, s: Mapping[str, Any]) -> None:
    for k in _HDDM_W_SAMPLES:
        setattr(det, f"_{k}", _sample_in(s[k], det.lambda_val, f"hddm_w.{k}"))
    det._incr_cutpoint = decode_float(s["incr_cutpoint"], "hddm_w.incr_cutpoint")
    det._decr_cutpoint = decode_float(s["decr_cutpoint"], "hddm_w.decr_cutpoint")


def _kswin_state(det: Any) -> dict[str, Any]:
    version, words, gauss = det._rng.getstate()
    return {
        "n": det.n,
        "p_value": encode_float(float(det.p_value)),
        "window": [encode_float(float(x)) for x in det.window],
        "rng": [version, list(words), _opt_out(gauss)],
    }


def _kswin_load(det: Any, s: Mapping[str, Any]) -> None:
    det.n = _int_in(s, "n", "kswin")
    det.p_value = decode_float(s["p_value"], "kswin.p_value")
    window = s["window"]
    if not isinstance(window, list) or len(window) > det.window_size:
        raise StateCorrupt("kswin: window must be a list of at most window_size numbers")
    det.window = collections.deque(
        (decode_float(x, "kswin.window") for x in window), maxlen=det.window_size
    )
    rng = s["rng"]
    ok = isinstance(rng, list) and len(rng) == 3 and isinstance(rng[1], list)
    if not ok or len(rng[1]) != 625 or not all(type(w) is int for w in rng[1]):
        raise StateCorrupt("kswin: rng must be [version, 625 integers, gauss]")
    try:
        det._rng.setstate((rng[0], tuple(rng[1]), _opt_in(rng[2], "kswin.rng")))
    except (TypeError, ValueError, OverflowError):
        raise StateCorrupt("kswin: not a Mersenne Twister state") from None


@dataclass(frozen=True)
class _Codec:
    """How one river detector type is built, described and stored."""

    module: str
    cls: str
    #: Parameter name -> default (the stored parameters are checked against these names).
    params: Mapping[str, Any]
    state: Callable[[Any], dict[str, Any]]
    load: Callable[[Any, Mapping[str, Any]], None]
    #: True for detectors of a 0/1 stream (river.drift.binary).
    binary: bool = True


_CODECS: Final[dict[str, _Codec]] = {
    "ddm": _Codec(
        "river.drift.binary",
        "DDM",
        {"warm_start": 30, "warning_threshold": 2.0, "drift_threshold": 3.0},
        _ddm_state,
        _ddm_load,
    ),
    "eddm": _Codec(
        "river.drift.binary",
        "EDDM",
        {"warm_start": 30, "alpha": 0.95, "beta": 0.9},
        _eddm_state,
        _eddm_load,
    ),
    "hddm_a": _Codec(
        "river.drift.binary",
        "HDDMA",
        {"drift_confidence": 0.001, "warning_confidence": 0.005, "two_sided_test": False},
        _hddm_a_state,
        _hddm_a_load,
    ),
    "hddm_w": _Codec(
        "river.drift.binary",
        "HDDMW",
        {
            "drift_confidence": 0.001,
            "warning_confidence": 0.005,
            "lambda_val": 0.05,
            "two_sided_test": False,
        },
        _hddm_w_state,
        _hddm_w_load,
    ),
    "kswin": _Codec(
        "river.drift",
        "KSWIN",
        {"alpha": 0.005, "window_size": 100, "stat_size": 30, "seed": 0},
        _kswin_state,
        _kswin_load,
        binary=False,
    ),
}

#: The river detectors the slow loop can run, by name.
RIVER_DETECTORS: Final = tuple(_CODECS)


def _checked_params(kind: str, given: Mapping[str, Any]) -> dict[str, Any]:
    codec = _CODECS[kind]
    unknown = sorted(set(given) - set(codec.params))
    if unknown:
        raise ConfigError(
            f"{kind}: unknown parameter(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(codec.params))}"
        )
    out = dict(codec.params)
    for k, v in given.items():
        default = codec.params[k]
        if isinstance(default, bool):
            if not isinstance(v, bool):
                raise ConfigError(f"{kind}.{k} must be true or false, not {v!r}")
        elif isinstance(default, int):
            if isinstance(v, bool) or not float(v).is_integer():
                raise ConfigError(f"{kind}.{k} must be a whole number, not {v!r}")
            v = int(v)
        elif isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ConfigError(f"{kind}.{k} must be a finite number, not {v!r}")
        else:
            v = float(v)
        out[k] = v
    return out


class RiverDetector:
    """One of river's concept-drift detectors, with a stored state.

    Parameters
    ----------
    kind
        ``"ddm"``, ``"eddm"``, ``"hddm_a"``, ``"hddm_w"`` or ``"kswin"``.
    params
        The river detector's parameters (its defaults for those not given). KSWIN's
        ``seed`` defaults to 0: it is always seeded, so that a replay gives the same
        detections.

    Raises
    ------
    ConfigError
        Unknown kind or parameter, or a parameter river refuses.
    """

    TAG: Final = "river_detector"
    VERSION: Final = 1

    def __init__(self, kind: str, params: Mapping[str, Any] | None = None) -> None:
        if kind not in _CODECS:
            raise ConfigError(
                f"unknown river detector {kind!r}; choose one of {', '.join(RIVER_DETECTORS)}"
            )
        self.kind = kind
        self.params = _checked_params(kind, params or {})
        codec = _CODECS[kind]
        cls = getattr(importlib.import_module(codec.module), codec.cls)
        try:
            self._det = cls(**self.params)
        except ValueError as exc:
            raise ConfigError(f"{kind}: {exc}") from None
        #: Updates since the detector last started afresh (the span of its evidence).
        self._width = 0

    # ------------------------------------------------------------------ river's API
    @property
    def binary(self) -> bool:
        """Whether the detector expects a 0/1 stream (river.drift.binary)."""
        return _CODECS[self.kind].binary

    @property
    def drift_detected(self) -> bool:
        """Whether the last update signalled a change."""
        return bool(self._det.drift_detected)

    @property
    def warning_detected(self) -> bool:
        """Whether the last update is in the warning zone (False for KSWIN)."""
        return bool(getattr(self._det, "warning_detected", False))

    @property
    def width(self) -> int:
        """Updates since the detector last started afresh (after a detection)."""
        return self._width

    def update(self, x: float) -> Self:
        """Feed one value (an error: 0/1, or an absolute error for KSWIN)."""
        # river resets a detector on the update after a detection.
        self._width = 1 if self._det.drift_detected else self._width + 1
        self._det.update(x)
        return self

    def update_many(self, xs: npt.ArrayLike) -> _I64:
        """Feed a 1-D sequence; return the positions of the detections."""
        hits = []
        for i, x in enumerate(_as_1d(xs).tolist()):
            self.update(x)
            if self._det.drift_detected:
                hits.append(i)
        return np.asarray(hits, dtype=np.int64)

    # ------------------------------------------------------------------ snapshots
    def to_dict(self) -> dict[str, Any]:
        """Plain-data snapshot: kind, river's version, parameters and the whole state."""
        codec = _CODECS[self.kind]
        return {
            "kind": self.kind,
            "river": river_version(),
            "params": dict(self.params),
            "width": self._width,
            "drift": bool(self._det._drift_detected),
            "warning": bool(getattr(self._det, "_warning_detected", False)),
            "state": codec.state(self._det),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        StateCorrupt
            Not such a snapshot, a malformed field, or a snapshot written with another
            river version (its fields are river's internals: they are not guessed).
        """
        if not isinstance(d, Mapping) or d.get("kind") not in _CODECS:
            raise StateCorrupt("river detector snapshot: unknown or missing kind")
        have = river_version()
        if d.get("river") != have:
            raise StateCorrupt(
                f"river detector snapshot ({d.get('kind')}) written with river "
                f"{d.get('river')!r}, this build runs river {have}: its state cannot be "
                "read across river versions; run the version it was written with, or "
                "reset the slow loop's state"
            )
        params = d.get("params")
        state = d.get("state")
        if not isinstance(params, Mapping) or not isinstance(state, Mapping):
            raise StateCorrupt("river detector snapshot: params and state must be objects")
        try:
            det = cls(str(d["kind"]), params)
            det._width = _int_in(d, "width", "river detector")
            _CODECS[det.kind].load(det._det, state)
            drift, warning = d.get("drift"), d.get("warning")
            if not isinstance(drift, bool) or not isinstance(warning, bool):
                raise StateCorrupt("river detector snapshot: drift and warning are flags")
            det._det._drift_detected = drift
            if hasattr(det._det, "_warning_detected"):
                det._det._warning_detected = warning
        except ConfigError as exc:
            raise StateCorrupt(f"river detector snapshot: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise StateCorrupt(
                f"river detector snapshot ({d['kind']}): malformed ({type(exc).__name__})"
            ) from None
        return det

    def to_bytes(self) -> bytes:
        """The snapshot as a versioned record (:func:`driftline.contract.codec.pack`)."""
        return pack(self.TAG, self.VERSION, self.to_dict())

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Inverse of :meth:`to_bytes` (raises :class:`StateCorrupt`)."""
        return cls.from_dict(unpack(data, cls.TAG, cls.VERSION))

    def __repr__(self) -> str:
        return f"RiverDetector({self.kind!r}, {self.params!r}, width={self._width})"
