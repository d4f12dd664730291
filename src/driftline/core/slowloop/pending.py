"""Pending predictions: what the join keeps of a prediction until its label comes.

A prediction is stored as a fixed binary struct (:class:`PendingPrediction`) in Redis
hashes keyed by model, event-time *generation* and hash bucket of its digest
(:func:`record_key`); docs/slow-loop.md gives the layout and its measured memory. This
module owns that layout: digests, key names, generations, expiries, the record.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from driftline.config import LabelsSettings
from driftline.contract.events import (
    event_time_ms,
)
from driftline.errors import StateCorrupt

__all__ = [
    "DIGEST_BYTES",
    "FUTURE_TOLERANCE_MS",
    "LOG_LOSS_EPS",
    "MAX_BUCKETS",
    "MAX_SCORED_CLASSES",
    "SCORE_SCALE",
    "TARGET_PER_BUCKET",
    "TOMBSTONE",
    "Horizons",
    "PendingPrediction",
    "bucket_of",
    "event_ms",
    "gen_expiry_ms",
    "model_tag",
    "prediction_digest",
    "record_key",
    "retention_ms",
]

#: Bytes of the prediction digest used as the hash field of a pending prediction.
DIGEST_BYTES = 12
#: Value a pending prediction is replaced with once a label joined it.
TOMBSTONE = b"\x00"
#: Scores are stored as 16-bit fractions of 1.
SCORE_SCALE = 65_535
#: Probability floor of the log loss (half the score resolution).
LOG_LOSS_EPS = 0.5 / SCORE_SCALE
#: Classes whose scores are stored with a pending prediction (dense, by class index).
MAX_SCORED_CLASSES = 16
#: A prediction this far ahead of the newest one does not move the model's clock.
FUTURE_TOLERANCE_MS = 5 * 60 * 1000
#: Pending-prediction hash buckets aimed at per generation bucket (listpack-sized).
TARGET_PER_BUCKET = 250
MAX_BUCKETS = 65_536


def event_ms(e: Mapping[str, Any]) -> int:
    """Event time of a prediction or label event, epoch ms."""
    ts = e["timestamp"]
    return ts if type(ts) is int else event_time_ms(ts)


def prediction_digest(model_id: str, prediction_id: str) -> bytes:
    """The 12-byte field a pending prediction is stored under (blake2b of model and id).

    Examples
    --------
    >>> len(prediction_digest("churn", "p1"))
    12
    """
    raw = f"{model_id}\x1f{prediction_id}".encode()
    return hashlib.blake2b(raw, digest_size=DIGEST_BYTES).digest()


@functools.lru_cache(maxsize=4096)
def model_tag(model_id: str) -> str:
    """Short fixed-length tag of a model id used inside record key names."""
    return hashlib.blake2b(model_id.encode(), digest_size=8).hexdigest()


def record_key(model_id: str, gen: int, bucket: int) -> str:
    """Name (relative to the partition) of one generation bucket of pending predictions."""
    return f"pp:{model_tag(model_id)}:{gen}:{bucket}"


def bucket_of(digest: bytes, n_buckets: int) -> int:
    """Hash bucket of a digest among ``n_buckets``."""
    return int.from_bytes(digest[:4], "little") % n_buckets


_HEADER = struct.Struct("<BHq")
_U16 = struct.Struct("<H")
_F64 = struct.Struct("<d")
_RECORD_VERSION = 0x10
_KIND_REGRESSION = 0x01
_HAS_TOP = 0x02
_HAS_SCORES = 0x04


@dataclass(frozen=True, slots=True)
class PendingPrediction:
    """What the join needs from one prediction, as stored in Redis.

    Binary layout (little-endian)::

        u8  0x10 | flags (0x01 regression, 0x02 top score, 0x04 score vector)
        u16 stream index (the model's (version, segment) table in the state)
        i64 event time, epoch ms
        regression:     f64 predicted value
        classification: u16 predicted class index
                        [u16 top score * 65535]
                        [u8 n, n * u16 score of class 0..n-1 * 65535]

    A 3-class prediction with scores is 22 bytes; a regression 19.

    Examples
    --------
    >>> p = PendingPrediction(stream=0, time_ms=5, cls=1, top_q=52428, scores_q=(13107, 52428))
    >>> PendingPrediction.decode(p.encode()) == p
    True
    """

    stream: int
    time_ms: int
    regression: bool = False
    value: float = 0.0
    cls: int = 0
    top_q: int | None = None
    scores_q: tuple[int, ...] | None = None

    @property
    def top(self) -> float | None:
        """Top score (the model's confidence), or ``None`` without scores."""
        return None if self.top_q is None else self.top_q / SCORE_SCALE

    def encode(self) -> bytes:
        """The binary record."""
        flags = _RECORD_VERSION
        if self.regression:
            return _HEADER.pack(flags | _KIND_REGRESSION, self.stream, self.time_ms) + (
                _F64.pack(self.value)
            )
        if self.top_q is not None:
            flags |= _HAS_TOP
        if self.scores_q is not None:
            flags |= _HAS_SCORES
        out = bytearray(_HEADER.pack(flags, self.stream, self.time_ms))
        out += _U16.pack(self.cls)
        if self.top_q is not None:
            out += _U16.pack(self.top_q)
        if self.scores_q is not None:
            out.append(len(self.scores_q))
            out += struct.pack(f"<{len(self.scores_q)}H", *self.scores_q)
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> PendingPrediction:
        """Inverse of :meth:`encode`.

        Raises
        ------
        StateCorrupt
            Not a pending-prediction record of a known version.
        """
        try:
            flags, stream, time_ms = _HEADER.unpack_from(data, 0)
            if flags & 0xF0 != _RECORD_VERSION:
                raise StateCorrupt(f"pending prediction: unknown record version {flags >> 4}")
            pos = _HEADER.size
            if flags & _KIND_REGRESSION:
                (value,) = _F64.unpack_from(data, pos)
                if pos + _F64.size != len(data):
                    raise StateCorrupt("pending prediction: trailing bytes")
                return cls(stream, time_ms, regression=True, value=value)
            (klass,) = _U16.unpack_from(data, pos)
            pos += 2
            top_q = None
            if flags & _HAS_TOP:
                (top_q,) = _U16.unpack_from(data, pos)
                pos += 2
            scores_q = None
            if flags & _HAS_SCORES:
                n = data[pos]
                scores_q = struct.unpack_from(f"<{n}H", data, pos + 1)
                pos += 1 + 2 * n
            if pos != len(data):
                raise StateCorrupt("pending prediction: trailing bytes")
            return cls(stream, time_ms, cls=klass, top_q=top_q, scores_q=scores_q)
        except (struct.error, IndexError):
            raise StateCorrupt("pending prediction: truncated record") from None


class Horizons:
    """The join's settings in the units the core uses (ms), per-model values cached.

    Parameters
    ----------
    s
        The slow loop's settings.
    """

    def __init__(self, s: LabelsSettings) -> None:
        self.s = s
        self._hz: dict[str, int] = {}
        self._gen: dict[str, int] = {}

    def horizon_ms(self, model: str) -> int:
        """Label horizon of ``model`` (``model_horizons`` or ``horizon_seconds``)."""
        v = self._hz.get(model)
        if v is None:
            v = self._hz[model] = int(
                self.s.model_horizons.get(model, self.s.horizon_seconds) * 1000
            )
        return v

    def gen_ms(self, model: str) -> int:
        """Width of one generation of ``model``'s pending predictions."""
        v = self._gen.get(model)
        if v is None:
            v = self._gen[model] = max(1, self.horizon_ms(model) // self.s.generations)
        return v

    @property
    def bucket_ms(self) -> int:
        """Width of the performance history's event-time buckets."""
        return max(1, int(self.s.bucket_seconds * 1000))

    @property
    def grace_ms(self) -> int:
        """How long (prediction event time) a held label waits for its prediction."""
        return int(self.s.grace_seconds * 1000)


def gen_expiry_ms(settings: LabelsSettings, model: str, gen: int) -> int:
    """Event time after which a generation's pending predictions are useless.

    The generation's end plus the horizon plus one more generation (so labels just past
    the horizon still find their prediction and are counted as expired, not orphans).
    """
    c = Horizons(settings)
    g = c.gen_ms(model)
    return (gen + 1) * g + c.horizon_ms(model) + g


def retention_ms(settings: LabelsSettings, model: str) -> int:
    """Minimum time to live of a generation bucket in Redis (wall clock, from a write)."""
    c = Horizons(settings)
    return c.horizon_ms(model) + 2 * c.gen_ms(model)
