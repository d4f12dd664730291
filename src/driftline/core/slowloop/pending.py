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
from collections.abc import Iterable, Mapping, Sequence
from operator import methodcaller
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

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
    "batch_digests",
    "bucket_of",
    "encode_scored",
    "event_ms",
    "gen_expiry_ms",
    "model_tag",
    "prediction_digest",
    "prediction_digests",
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
    return _digest(f"{model_id}\x1f{prediction_id}")


#: The hash of a digest (:func:`_digest`), and its value, as C-level callables.
_BLAKE = functools.partial(hashlib.blake2b, digest_size=DIGEST_BYTES)
_DIGEST_OF = methodcaller("digest")


def _digest(raw: str) -> bytes:
    """The stored field of a prediction whose model and id, joined by the unit separator
    (0x1F), are ``raw``: the one formula of :func:`prediction_digest` and
    :func:`prediction_digests`."""
    return _BLAKE(raw.encode()).digest()


def prediction_digests(events: Iterable[Mapping[str, Any]], known: dict[str, bytes]) -> list[bytes]:
    """:func:`prediction_digest` of each event's model and prediction id.

    ``known`` maps the text a digest hashes to the digest; it is read and filled, so a
    label whose prediction came in the same batch hashes nothing again.

    Examples
    --------
    >>> known: dict[str, bytes] = {}
    >>> e = {"model_id": "churn", "prediction_id": "p1"}
    >>> prediction_digests([e, e], known) == [prediction_digest("churn", "p1")] * 2
    True
    """
    out: list[bytes] = []
    for e in events:
        raw = f"{e['model_id']}\x1f{e['prediction_id']}"
        d = known.get(raw)
        if d is None:
            d = known[raw] = _digest(raw)
        out.append(d)
    return out


def batch_digests(model_id: str, ids: Sequence[str], known: dict[str, bytes]) -> list[bytes]:
    """:func:`prediction_digests` of a batch's rows (model ``model_id``, prediction ids
    ``ids``), without an event per row; ``known`` is filled the same way."""
    prefix = f"{model_id}\x1f"
    raws = list(map(prefix.__add__, ids))
    out = list(map(_DIGEST_OF, map(_BLAKE, map(str.encode, raws))))
    known.update(zip(raws, out, strict=True))
    return out


@functools.lru_cache(maxsize=4096)
def model_tag(model_id: str) -> str:
    """Short fixed-length tag of a model id used inside record key names."""
    return hashlib.blake2b(model_id.encode(), digest_size=8).hexdigest()


def record_key(model_id: str, gen: int, bucket: int) -> str:
    """Name (relative to the partition) of one generation bucket of pending predictions."""
    return f"pp:{model_tag(model_id)}:{gen}:{bucket}"


#: The digest's first 4 bytes as a little-endian u32 (the bucket hash).
_DIGEST_U32 = struct.Struct("<I").unpack_from


def bucket_of(digest: bytes, n_buckets: int) -> int:
    """Hash bucket of a digest among ``n_buckets`` (its first 4 bytes, little-endian).

    Examples
    --------
    >>> bucket_of(bytes([1, 1, 0, 0]) + bytes(8), 256)
    1
    """
    h: int = _DIGEST_U32(digest)[0]
    return h % n_buckets


_HEADER_V1 = struct.Struct("<BHq")
#: The header with the 6-byte time read as its low 32 and high 16 bits.
_HEADER_NARROW = struct.Struct("<BHIh")
_HEADER_WIDE = struct.Struct("<BHq")
_U16 = struct.Struct("<H")
_F64 = struct.Struct("<d")
_RECORD_V1 = 0x10
_RECORD_VERSION = 0x20
_KIND_REGRESSION = 0x01
_HAS_TOP = 0x02
_HAS_SCORES = 0x04
_WIDE_TIME = 0x08
#: A narrow-time record with a score vector of n classes and its top score implied.
_SCORED = [struct.Struct(f"<BHIhH{n}H") for n in range(MAX_SCORED_CLASSES + 1)]
#: The flags of such a record.
_SCORED_FLAGS = _RECORD_VERSION | _HAS_SCORES
#: Such a record's layout by its size in bytes (one size per score count).
_SCORED_BY_SIZE = {s.size: s for s in _SCORED[1:]}
#: A named tuple from its values without the generated ``__new__`` (its keyword call).
_new_tuple = tuple.__new__
#: Event times within +-2**47 ms of the epoch (years 1829 to 2109) take 6 bytes.
_TIME48 = 1 << 47


class PendingPrediction(NamedTuple):
    """What the join needs from one prediction, as stored in Redis.

    A named tuple (read-only; built for every prediction and every joined label, where a
    frozen dataclass's ``__init__`` cost about a microsecond more).

    Binary layout, version 2 (little-endian)::

        u8  0x20 | flags (0x01 regression, 0x02 top score stored, 0x04 score vector,
                          0x08 wide time)
        u16 stream index (the model's (version, segment) table in the state)
        i48 event time, epoch ms (i64 with 0x08, outside years 1829-2109)
        regression:     f64 predicted value
        classification: u16 predicted class index
                        [u16 top score * 65535]           (0x02)
                        [n * u16 score of class 0..n-1 * 65535]  (0x04; n from the length)

    With a score vector and no ``0x02``, the top score is the vector's largest
    (the join's records are always so: both are rounded from the same scores). A
    3-class prediction with scores is 17 bytes (22 in version 1); a regression 17.
    Version 1 records (``0x10``: i64 time, top score always stored, a count byte
    before the vector) still decode; other versions are refused (:class:`StateCorrupt`).

    Examples
    --------
    >>> p = PendingPrediction(stream=0, time_ms=5, cls=1, top_q=52428, scores_q=(13107, 52428))
    >>> PendingPrediction.decode(p.encode()) == p, len(p.encode())
    (True, 15)
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
        """The binary record (version 2).

        Raises
        ------
        ValueError
            A score vector without a top score (the join never makes one).
        """
        flags = _RECORD_VERSION
        t = self.time_ms
        scores, top = self.scores_q, self.top_q
        if (
            scores
            and len(scores) <= MAX_SCORED_CLASSES
            and not self.regression
            and top is not None
            and top == max(scores)
            and -_TIME48 <= t < _TIME48
        ):
            # The join's usual record, in one pack: header, class, scores (top implied).
            return _SCORED[len(scores)].pack(
                flags | _HAS_SCORES, self.stream, t & 0xFFFFFFFF, t >> 32, self.cls, *scores
            )
        wide = not -_TIME48 <= t < _TIME48
        if wide:
            flags |= _WIDE_TIME
        if self.regression:
            flags |= _KIND_REGRESSION
            tail = _F64.pack(self.value)
        else:
            tail = _U16.pack(self.cls)
            if scores is not None:
                if top is None:
                    raise ValueError("pending prediction: a score vector needs a top score")
                flags |= _HAS_SCORES
                if not scores or top != max(scores):
                    flags |= _HAS_TOP
                    tail += _U16.pack(top)
                tail += struct.pack(f"<{len(scores)}H", *scores)
            elif top is not None:
                flags |= _HAS_TOP
                tail += _U16.pack(top)
        if wide:
            return _HEADER_WIDE.pack(flags, self.stream, t) + tail
        return _HEADER_NARROW.pack(flags, self.stream, t & 0xFFFFFFFF, t >> 32) + tail

    @classmethod
    def decode(cls, data: bytes) -> PendingPrediction:
        """Inverse of :meth:`encode`; reads version 1 records too.

        Raises
        ------
        StateCorrupt
            Not a pending-prediction record of a known version.
        """
        try:
            if not data:
                raise StateCorrupt("pending prediction: empty record")
            if data[0] == _SCORED_FLAGS:
                # The join's usual record (encode's one pack): read in one unpack.
                usual = _SCORED_BY_SIZE.get(len(data))
                if usual is not None:
                    v = usual.unpack(data)
                    scores_q = v[5:]
                    t = (v[3] << 32) | v[2]
                    return _new_tuple(cls, (v[1], t, False, 0.0, v[4], max(scores_q), scores_q))
            version = data[0] & 0xF0
            if version == _RECORD_V1:
                return cls._decode_v1(data)
            if version != _RECORD_VERSION:
                raise StateCorrupt(
                    f"pending prediction: unknown record version {version >> 4} "
                    f"(this release reads versions 1 and 2)"
                )
            flags = data[0]
            if flags & _WIDE_TIME:
                _, stream, time_ms = _HEADER_WIDE.unpack_from(data, 0)
                pos = _HEADER_WIDE.size
            else:
                _, stream, lo, hi = _HEADER_NARROW.unpack_from(data, 0)
                time_ms = (hi << 32) | lo
                pos = _HEADER_NARROW.size
            return cls._decode_body(data, pos, flags, stream, time_ms, v1=False)
        except (struct.error, IndexError):
            raise StateCorrupt("pending prediction: truncated record") from None

    @classmethod
    def _decode_v1(cls, data: bytes) -> PendingPrediction:
        """A version 1 record (written before the 6-byte time and the implied top)."""
        flags, stream, time_ms = _HEADER_V1.unpack_from(data, 0)
        return cls._decode_body(data, _HEADER_V1.size, flags, stream, time_ms, v1=True)

    @classmethod
    def _decode_body(
        cls, data: bytes, pos: int, flags: int, stream: int, time_ms: int, *, v1: bool
    ) -> PendingPrediction:
        """What follows the header. Version 1 counts its scores in a byte and always
        stores the top score when it has one; version 2 takes the count from the
        record's length and implies the top as the largest score unless stored."""
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
            if v1:
                n = data[pos]
                pos += 1
            else:
                rest = len(data) - pos
                if rest & 1:
                    raise StateCorrupt("pending prediction: trailing bytes")
                n = rest >> 1
            scores_q = struct.unpack_from(f"<{n}H", data, pos)
            pos += 2 * n
            if top_q is None and not v1:
                if not scores_q:
                    raise StateCorrupt("pending prediction: empty score vector")
                top_q = max(scores_q)
        if pos != len(data):
            raise StateCorrupt("pending prediction: trailing bytes")
        return cls(stream, time_ms, cls=klass, top_q=top_q, scores_q=scores_q)


def encode_scored(
    stream: int, times: Sequence[int], cls: Sequence[int], scores: NDArray[np.int64]
) -> list[bytes] | None:
    """:meth:`PendingPrediction.encode` of many classification records of one stream
    with a score vector each (``scores[i]``, all of one length) and the largest as the
    top score: one array, not a pack a record. ``None`` when a field does not fit the
    usual record (a time beyond 48 bits, a stream or class index beyond 16): those are
    encoded one by one.
    """
    n, k = scores.shape
    if not 0 < k <= MAX_SCORED_CLASSES or not n:
        return None
    try:
        t = np.asarray(times, dtype=np.int64)
        c = np.asarray(cls, dtype=np.int64)
    except OverflowError:
        return None
    if not (0 <= stream <= 0xFFFF and int(c.min()) >= 0 and int(c.max()) <= 0xFFFF):
        return None
    if int(t.min()) < -_TIME48 or int(t.max()) >= _TIME48:
        return None
    rec = np.empty(n, dtype=_scored_dtype(k))
    rec["f"] = _SCORED_FLAGS
    rec["s"] = stream
    rec["lo"] = t & 0xFFFFFFFF
    rec["hi"] = t >> 32
    rec["c"] = c
    rec["q"] = scores
    out: list[bytes] = rec.view(f"V{rec.dtype.itemsize}").tolist()
    return out


@functools.lru_cache(maxsize=MAX_SCORED_CLASSES + 1)
def _scored_dtype(k: int) -> np.dtype[Any]:
    """The usual record with ``k`` scores as a packed numpy record (``_SCORED[k]``)."""
    return np.dtype(
        [("f", "u1"), ("s", "<u2"), ("lo", "<u4"), ("hi", "<i2"), ("c", "<u2"), ("q", "<u2", (k,))]
    )


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
