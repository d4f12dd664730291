"""The slow loop's pure core: predictions and delayed labels in, performance and alerts out.

No I/O. The ``driftline labels`` worker (:mod:`driftline.runtime.labels`) is the thin shell: it
fetches batches from Kafka, asks Redis for the pending predictions this module names
(:func:`plan_lookups`), calls :func:`join_batch`, and commits what it returns.

What happens to a batch of one partition (predictions and labels of the same models,
co-partitioned by ``model_id``):

1. **Predictions** are stored as *pending predictions* (:class:`PendingPrediction`, a
   fixed binary struct of ~20-30 bytes) in Redis hashes bucketed by event-time
   *generation* and by a hash of the prediction id (see docs/slow-loop.md for the
   layout and its measured memory). A prediction already stored (a producer retry) is
   counted as a duplicate and not stored again.
2. **Labels held** by earlier batches (they arrived before their prediction) are
   retried against this batch's predictions.
3. **Labels** are looked up (one Redis script call for the whole batch) and each gets
   exactly one outcome: ``joined``; ``duplicate`` (its prediction was joined already);
   ``expired`` (later than the model's horizon after the prediction, event time);
   ``invalid`` (e.g. a non-numeric label for a regression model: dead-lettered);
   or it is *held* and retried until the model's prediction event time passes the
   label's time by ``grace_seconds``, when it becomes an ``orphan``.
4. Each joined label updates the :class:`PerfState` of its (model, version, segment)
   and of its (model, version) as a whole: event-time buckets (accuracy, per-class
   precision and recall, log loss, Brier, MAE, RMSE, coverage, label lag, estimated
   accuracy), ADWIN on the per-prediction error (concept drift), tumbling windows of
   labelled predictions (performance alert), and the accuracy during each input-drift
   episode the monitor reported (diagnosis).

Everything is in event time and in partition order, so a replay of the same batches
gives the same state and the same alert ids.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from driftline.config import LabelsSettings
from driftline.contract.codec import pack, unpack
from driftline.contract.columnar import category_value
from driftline.contract.events import AlertWindow, DriftAlert, event_time_ms, make_alert_id
from driftline.contract.keys import segment_key
from driftline.core.calibration import Calibration
from driftline.core.detectors import ADWIN
from driftline.core.reference import ReferenceProfile
from driftline.errors import StateCorrupt

__all__ = [
    "DIGEST_BYTES",
    "TOMBSTONE",
    "DriftIndex",
    "JoinResult",
    "LookupPlan",
    "MemoryRecords",
    "ModelJoin",
    "PendingPrediction",
    "PerfState",
    "UnitState",
    "build_report",
    "format_report",
    "join_batch",
    "plan_lookups",
    "prediction_digest",
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
#: Classes a stream's class table names; later classes share the index ``OTHER_CLASS``.
MAX_CLASSES = 1_000
OTHER_CLASS = 0xFFFF
#: Classes with per-class precision and recall in the buckets.
MAX_CLASS_STATS = 64
#: Label-lag histogram: upper edges in seconds (the last bucket is everything above).
LAG_EDGES_S = (
    1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0,
    21_600.0, 43_200.0, 86_400.0, 259_200.0, 604_800.0,
)  # fmt: skip
#: A prediction this far ahead of the newest one does not move the model's clock.
FUTURE_TOLERANCE_MS = 5 * 60 * 1000
#: Pending-prediction hash buckets aimed at per generation bucket (listpack-sized).
TARGET_PER_BUCKET = 250
MAX_BUCKETS = 65_536
#: Weight of the newest error in the short error average (span of ~64 labels).
EWMA_ALPHA = 1.0 / 64
STATE_FORMAT = 1
#: Diagnoses this loop decides (values of events.Diagnosis).
DIAGNOSES = ("input_drift_benign", "covariate_shift_harmful", "concept_drift")

Outcome = Literal["joined", "duplicate", "expired", "orphan", "invalid"]
LABEL_OUTCOMES: tuple[Outcome, ...] = ("joined", "duplicate", "expired", "orphan", "invalid")
PREDICTION_OUTCOMES = ("stored", "duplicate", "too_old", "invalid")

RefLookup = Callable[[str, str], ReferenceProfile | None]


# ------------------------------------------------------------------------- identities


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


def stream_key(model_id: str, version: str, segment: str) -> str:
    """State field of one (model, version, segment) performance state."""
    return f"s\x1f{model_id}\x1f{version}\x1f{segment}"


def _segment_dict(segment: str) -> dict[str, str] | None:
    if not segment:
        return None
    return dict(kv.split("=", 1) for kv in segment.split(","))


# ------------------------------------------------------------------------- records

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


# ------------------------------------------------------------------------- input drift


class DriftIndex:
    """Input-drift episodes the monitor reported, as event-time intervals per model/version.

    Fed with the ``drift-alerts`` topic (:meth:`observe`). A firing ``input_drift``
    alert opens an interval at its window start; the resolved alert of the same episode
    closes it at its ``detected_at``. Plain memory: rebuilt from the topic on start.

    Examples
    --------
    >>> ix = DriftIndex()
    >>> a = {"kind": "input_drift", "status": "firing", "model_id": "m", "model_version": "1",
    ...      "segment": None, "episode": 1, "window": {"start": 100, "end": 150},
    ...      "detected_at": 150}
    >>> ix.observe(a), ix.containing("m", "1", 120), ix.containing("m", "1", 90)
    (True, ['#1'], [])
    """

    def __init__(self) -> None:
        self.intervals: dict[tuple[str, str], dict[str, list[int]]] = {}

    def observe(self, alert: Mapping[str, Any]) -> bool:
        """Take one alert event (dict); return whether it changed an interval."""
        if alert.get("kind") != "input_drift":
            return False
        key = (str(alert["model_id"]), str(alert["model_version"]))
        ep = f"{segment_key(alert.get('segment'))}#{int(alert['episode'])}"
        eps = self.intervals.setdefault(key, {})
        at = int(alert["detected_at"])
        if alert.get("status") == "firing":
            start = min(int(alert["window"]["start"]), at)
            cur = eps.get(ep)
            if cur is not None and cur[0] == start:
                return False
            eps[ep] = [start, cur[1] if cur else -1]
            return True
        cur = eps.setdefault(ep, [at, -1])
        if cur[1] == at:
            return False
        cur[1] = at
        return True

    def overlapping(self, model: str, version: str, t0: int, t1: int) -> list[str]:
        """Episodes of (model, version) whose interval meets ``[t0, t1]``."""
        eps = self.intervals.get((model, version))
        if not eps:
            return []
        return sorted(e for e, (s, end) in eps.items() if s <= t1 and (end < 0 or end >= t0))

    def containing(self, model: str, version: str, t: int) -> list[str]:
        """Episodes of (model, version) whose interval holds event time ``t``."""
        return self.overlapping(model, version, t, t)


# ------------------------------------------------------------------------- state

_N_LAG = len(LAG_EDGES_S) + 1
# Scalar slots of a bucket, in their stored order.
_SLOTS = (
    "pred",  # predictions made in the bucket
    "est_n",  # ... of which with a top score
    "est_sum",  # sum of their calibrated top scores (the blind estimate)
    "lab",  # labelled predictions (joined)
    "correct",  # ... predicted right (classification)
    "conf_n",  # labelled predictions with a top score
    "conf_sum",  # ... sum of their calibrated top scores (estimate vs realised)
    "ll_n",  # labelled predictions with a score vector
    "ll_sum",  # ... sum of log losses
    "brier_sum",  # ... sum of multi-class Brier scores
    "abs_sum",  # regression: sum |y - y_hat|
    "sq_sum",  # regression: sum (y - y_hat)^2
)


class Bucket:
    """Aggregates of the predictions made in one event-time bucket of a stream."""

    __slots__ = (*_SLOTS, "lag", "tp", "pc", "ac")

    def __init__(self) -> None:
        self.pred = 0.0
        self.est_n = 0.0
        self.est_sum = 0.0
        self.lab = 0.0
        self.correct = 0.0
        self.conf_n = 0.0
        self.conf_sum = 0.0
        self.ll_n = 0.0
        self.ll_sum = 0.0
        self.brier_sum = 0.0
        self.abs_sum = 0.0
        self.sq_sum = 0.0
        self.lag = [0] * _N_LAG
        self.tp: list[int] = []
        self.pc: list[int] = []
        self.ac: list[int] = []

    def class_slot(self, i: int) -> None:
        """Grow the per-class arrays to hold class ``i``."""
        if i >= len(self.tp):
            extra = i + 1 - len(self.tp)
            self.tp.extend([0] * extra)
            self.pc.extend([0] * extra)
            self.ac.extend([0] * extra)

    def to_list(self) -> list[Any]:
        """Plain-data form."""
        return [[getattr(self, s) for s in _SLOTS], self.lag, self.tp, self.pc, self.ac]

    @classmethod
    def from_list(cls, d: Sequence[Any]) -> Bucket:
        """Inverse of :meth:`to_list`."""
        b = cls()
        for s, v in zip(_SLOTS, d[0], strict=True):
            setattr(b, s, v)
        b.lag, b.tp, b.pc, b.ac = list(d[1]), list(d[2]), list(d[3]), list(d[4])
        return b


@dataclass
class SlowEpisode:
    """Hysteresis of one alert kind of the slow loop: one alert per episode and status."""

    firing: bool = False
    number: int = 0
    clean_windows: int = 0
    cooldown: int = 0
    severity: str = "warning"
    diagnosis: str = "concept_drift"
    #: Error level before the change (concept drift) or the threshold (performance).
    baseline: float = 0.0


@dataclass
class _Window:
    n: int = 0
    correct: int = 0
    err_sum: float = 0.0
    conf_n: int = 0
    conf_sum: float = 0.0
    ll_n: int = 0
    ll_sum: float = 0.0
    brier_sum: float = 0.0
    sq_sum: float = 0.0
    lag_sum: float = 0.0
    start: int = -1
    end: int = -1
    index: int = 0


@dataclass
class PerfState:
    """Performance of one (model, version, segment); segment ``""`` is the whole version."""

    model_id: str
    version: str
    segment: str = ""
    task: str = "classification"
    classes: list[str] = field(default_factory=list)
    reference_id: str = ""
    ref_accuracy: float | None = None
    ref_source: str = ""
    learn_n: int = 0
    learn_correct: int = 0
    learn_err: float = 0.0
    buckets: dict[int, Bucket] = field(default_factory=dict)
    max_pred_ms: int = -1
    predicted: int = 0
    labelled: int = 0
    window: _Window = field(default_factory=_Window)
    est_n: int = 0
    est_sum: float = 0.0
    est_count: int = 0
    adwin: ADWIN = field(default_factory=ADWIN)
    adwin_start: int = -1
    #: Short exponential average of the error: the size of a rise ADWIN detected (its
    #: own window keeps pre-change values after a cut, so its mean understates it).
    ewma: float = -1.0
    #: Error level before a rise ADWIN detected but the average has not confirmed yet,
    #: and the labelled count until which it may still confirm (-1: none pending).
    rise_from: float = -1.0
    rise_until: int = -1
    episodes: dict[str, SlowEpisode] = field(default_factory=dict)
    #: Input-drift episode -> [labelled, correct] for predictions made during it.
    drift_acc: dict[str, list[int]] = field(default_factory=dict)
    drift_diag: dict[str, str] = field(default_factory=dict)
    last: dict[str, Any] = field(default_factory=dict)
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def key(self) -> str:
        """The state field of this stream."""
        return stream_key(self.model_id, self.version, self.segment)

    def class_index(self, name: str) -> int:
        """Index of a class name in the stream's class table (added when new)."""
        if len(self._index) != len(self.classes):
            self._index = {c: i for i, c in enumerate(self.classes)}
        i = self._index.get(name)
        if i is None:
            if len(self.classes) >= MAX_CLASSES:
                return OTHER_CLASS
            i = len(self.classes)
            self.classes.append(name)
            self._index[name] = i
        return i

    def bucket(self, t: int, width_ms: int) -> Bucket:
        """The event-time bucket holding ``t`` (created when new)."""
        start = t - (t % width_ms)
        b = self.buckets.get(start)
        if b is None:
            b = self.buckets[start] = Bucket()
        return b

    def episode(self, kind: str) -> SlowEpisode:
        """The hysteresis state of alert ``kind``."""
        return self.episodes.setdefault(kind, SlowEpisode())

    def reference_accuracy(self) -> float | None:
        """Reference accuracy: the reference's, else learned from the first labels."""
        return self.ref_accuracy

    def current_diagnosis(self) -> str | None:
        """What this loop currently says about the stream (None: nothing to say)."""
        for kind in ("concept_drift", "performance"):
            ep = self.episodes.get(kind)
            if ep is not None and ep.firing:
                return ep.diagnosis
        if self.drift_diag:
            newest = max(self.drift_diag, key=lambda e: (int(e.rsplit("#", 1)[1]), e))
            return self.drift_diag[newest]
        return None

    # ---------------------------------------------------------------- bytes
    def to_bytes(self) -> bytes:
        """Versioned, pickle-free record."""
        return pack(
            "perf_state",
            STATE_FORMAT,
            {
                "model": self.model_id,
                "version": self.version,
                "segment": self.segment,
                "task": self.task,
                "classes": self.classes,
                "reference_id": self.reference_id,
                "ref_accuracy": self.ref_accuracy,
                "ref_source": self.ref_source,
                "learn": [self.learn_n, self.learn_correct, self.learn_err],
                "buckets": {str(k): b.to_list() for k, b in sorted(self.buckets.items())},
                "max_pred_ms": self.max_pred_ms,
                "predicted": self.predicted,
                "labelled": self.labelled,
                "window": self.window.__dict__,
                "est": [self.est_n, self.est_sum, self.est_count],
                "adwin": self.adwin.to_bytes().decode(),
                "adwin_start": self.adwin_start,
                "rise": [self.ewma, self.rise_from, self.rise_until],
                "episodes": {k: e.__dict__ for k, e in self.episodes.items()},
                "drift_acc": self.drift_acc,
                "drift_diag": self.drift_diag,
                "last": self.last,
            },
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> PerfState:
        """Inverse of :meth:`to_bytes`."""
        d = unpack(data, "perf_state", STATE_FORMAT)
        try:
            st = cls(d["model"], d["version"], d["segment"])
            st.task = d["task"]
            st.classes = list(d["classes"])
            st.reference_id = d["reference_id"]
            st.ref_accuracy = d["ref_accuracy"]
            st.ref_source = d["ref_source"]
            st.learn_n, st.learn_correct, st.learn_err = d["learn"]
            st.buckets = {int(k): Bucket.from_list(v) for k, v in d["buckets"].items()}
            st.max_pred_ms = d["max_pred_ms"]
            st.predicted = d["predicted"]
            st.labelled = d["labelled"]
            st.window = _Window(**d["window"])
            st.est_n, st.est_sum, st.est_count = d["est"]
            st.adwin = ADWIN.from_bytes(d["adwin"].encode())
            st.adwin_start = d["adwin_start"]
            st.ewma, st.rise_from, st.rise_until = d["rise"]
            st.episodes = {k: SlowEpisode(**e) for k, e in d["episodes"].items()}
            st.drift_acc = {k: list(v) for k, v in d["drift_acc"].items()}
            st.drift_diag = dict(d["drift_diag"])
            st.last = dict(d["last"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StateCorrupt(f"perf_state: malformed record ({type(exc).__name__})") from None
        return st


@dataclass
class ModelJoin:
    """Join bookkeeping of one model in one partition."""

    model_id: str
    #: Stream table: index -> (version, segment). Pending predictions store the index.
    streams: list[tuple[str, str]] = field(default_factory=list)
    #: Generation -> [hash buckets, predictions stored].
    gens: dict[int, list[int]] = field(default_factory=dict)
    #: Newest prediction event time (future-dated ones excepted).
    watermark: int = -1
    #: Newest label event time (future-dated ones excepted): the clock that retires
    #: generations (predictions may be consumed far ahead of their labels).
    label_watermark: int = -1
    #: Exact outcome counters: labels and predictions.
    labels: dict[str, int] = field(default_factory=dict)
    predictions: dict[str, int] = field(default_factory=dict)
    _index: dict[tuple[str, str], int] = field(default_factory=dict, repr=False)

    @property
    def key(self) -> str:
        """The state field of this model's join bookkeeping."""
        return f"m\x1f{self.model_id}"

    def stream_index(self, version: str, segment: str) -> int:
        """Index of (version, segment) in the stream table (added when new)."""
        if len(self._index) != len(self.streams):
            self._index = {s: i for i, s in enumerate(self.streams)}
        i = self._index.get((version, segment))
        if i is None:
            if len(self.streams) >= 0xFFFF:
                raise StateCorrupt(f"model {self.model_id!r}: over 65535 version/segment streams")
            i = len(self.streams)
            self.streams.append((version, segment))
            self._index[(version, segment)] = i
        return i

    def to_bytes(self) -> bytes:
        """Versioned, pickle-free record."""
        return pack(
            "model_join",
            STATE_FORMAT,
            {
                "model": self.model_id,
                "streams": [list(s) for s in self.streams],
                "gens": {str(g): v for g, v in sorted(self.gens.items())},
                "watermark": self.watermark,
                "label_watermark": self.label_watermark,
                "labels": self.labels,
                "predictions": self.predictions,
            },
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ModelJoin:
        """Inverse of :meth:`to_bytes`."""
        d = unpack(data, "model_join", STATE_FORMAT)
        try:
            return cls(
                model_id=d["model"],
                streams=[(str(v), str(s)) for v, s in d["streams"]],
                gens={int(g): [int(x) for x in v] for g, v in d["gens"].items()},
                watermark=int(d["watermark"]),
                label_watermark=int(d["label_watermark"]),
                labels={k: int(v) for k, v in d["labels"].items()},
                predictions={k: int(v) for k, v in d["predictions"].items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateCorrupt(f"model_join: malformed record ({type(exc).__name__})") from None


@dataclass
class HeldLabel:
    """A label whose prediction was not stored yet."""

    model_id: str
    prediction_id: str
    label: Any
    time_ms: int

    @property
    def digest(self) -> bytes:
        """Its prediction's digest."""
        return prediction_digest(self.model_id, self.prediction_id)


@dataclass
class UnitState:
    """Everything the joiner keeps for one partition index (predictions-p + labels-p)."""

    #: Next Kafka offset to read, per role ("predictions", "labels"); absent: from start.
    offsets: dict[str, int] = field(default_factory=dict)
    held: list[HeldLabel] = field(default_factory=list)
    #: Label events refused before their model was known (decode or contract errors).
    refused: int = 0
    models: dict[str, ModelJoin] = field(default_factory=dict)
    perf: dict[str, PerfState] = field(default_factory=dict)

    # ---------------------------------------------------------------- bytes
    def to_fields(self, dirty: Iterable[str] | None = None) -> dict[str, bytes]:
        """State fields to commit: all, or only those named in ``dirty``."""
        out: dict[str, bytes] = {}
        want = None if dirty is None else set(dirty)

        def take(name: str) -> bool:
            return want is None or name in want

        if take("u"):
            out["u"] = pack(
                "join_unit", STATE_FORMAT, {"offsets": self.offsets, "refused": self.refused}
            )
        if take("h"):
            out["h"] = pack(
                "join_held",
                STATE_FORMAT,
                {"held": [[h.model_id, h.prediction_id, h.label, h.time_ms] for h in self.held]},
            )
        for mj in self.models.values():
            if take(mj.key):
                out[mj.key] = mj.to_bytes()
        for st in self.perf.values():
            if take(st.key):
                out[st.key] = st.to_bytes()
        return out

    @classmethod
    def from_fields(cls, fields: Mapping[str, bytes]) -> UnitState:
        """Rebuild from the verified state fields of a partition."""
        u = cls()
        for name, blob in fields.items():
            if name == "u":
                d = unpack(blob, "join_unit", STATE_FORMAT)
                u.offsets = {str(k): int(v) for k, v in d["offsets"].items()}
                u.refused = int(d["refused"])
            elif name == "h":
                d = unpack(blob, "join_held", STATE_FORMAT)
                u.held = [HeldLabel(str(m), str(p), lab, int(t)) for m, p, lab, t in d["held"]]
            elif name.startswith("m\x1f"):
                mj = ModelJoin.from_bytes(blob)
                u.models[mj.model_id] = mj
            elif name.startswith("s\x1f"):
                st = PerfState.from_bytes(blob)
                u.perf[st.key] = st
            else:
                raise StateCorrupt(f"unknown joiner state field {name!r}")
        return u


# ------------------------------------------------------------------------- config


class _Cfg:
    """Settings in the units the core uses, with per-model values cached."""

    def __init__(self, s: LabelsSettings) -> None:
        self.s = s
        self._hz: dict[str, int] = {}
        self._gen: dict[str, int] = {}

    def horizon_ms(self, model: str) -> int:
        v = self._hz.get(model)
        if v is None:
            v = self._hz[model] = int(
                self.s.model_horizons.get(model, self.s.horizon_seconds) * 1000
            )
        return v

    def gen_ms(self, model: str) -> int:
        v = self._gen.get(model)
        if v is None:
            v = self._gen[model] = max(1, self.horizon_ms(model) // self.s.generations)
        return v

    @property
    def bucket_ms(self) -> int:
        return max(1, int(self.s.bucket_seconds * 1000))

    @property
    def grace_ms(self) -> int:
        return int(self.s.grace_seconds * 1000)


def gen_expiry_ms(settings: LabelsSettings, model: str, gen: int) -> int:
    """Event time after which a generation's pending predictions are useless.

    The generation's end plus the horizon plus one more generation (so labels just past
    the horizon still find their prediction and are counted as expired, not orphans).
    """
    c = _Cfg(settings)
    g = c.gen_ms(model)
    return (gen + 1) * g + c.horizon_ms(model) + g


def retention_ms(settings: LabelsSettings, model: str) -> int:
    """Minimum time to live of a generation bucket in Redis (wall clock, from a write)."""
    c = _Cfg(settings)
    return c.horizon_ms(model) + 2 * c.gen_ms(model)


# ------------------------------------------------------------------------- lookups


@dataclass
class LookupPlan:
    """The pending predictions a batch needs from Redis.

    ``keys`` are record key names (relative to the partition, see :func:`record_key`);
    each probe is ``(digest, key indices)``, probed in order until found.
    """

    keys: list[str] = field(default_factory=list)
    probes: list[tuple[bytes, tuple[int, ...]]] = field(default_factory=list)
    pred_probe: list[int] = field(default_factory=list)
    label_probe: list[int] = field(default_factory=list)
    #: Digest of each prediction / label of the batch (computed once, here).
    pred_digest: list[bytes] = field(default_factory=list)
    label_digest: list[bytes] = field(default_factory=list)
    _kix: dict[str, int] = field(default_factory=dict, repr=False)

    def key_index(self, name: str) -> int:
        """Index of ``name`` in :attr:`keys` (added when new)."""
        i = self._kix.get(name)
        if i is None:
            i = self._kix[name] = len(self.keys)
            self.keys.append(name)
        return i

    def add(self, digest: bytes, names: Sequence[str]) -> int:
        """Add a probe; returns its index, or -1 when there is nothing to probe."""
        if not names:
            return -1
        self.probes.append((digest, tuple(self.key_index(n) for n in names)))
        return len(self.probes) - 1


#: Result of one probe: (index into plan.keys where found, stored value), or None.
Found = tuple[int, bytes] | None


def _time(e: Mapping[str, Any]) -> int:
    ts = e["timestamp"]
    return ts if type(ts) is int else event_time_ms(ts)


def plan_lookups(
    predictions: Sequence[Mapping[str, Any]],
    labels: Sequence[Mapping[str, Any]],
    unit: UnitState,
    settings: LabelsSettings,
) -> LookupPlan:
    """What to read from Redis before :func:`join_batch`. Pure; reads ``unit`` only.

    A prediction is probed in its own generation (to find an earlier copy); a label in
    every stored generation of its model that may hold its prediction.
    """
    c = _Cfg(settings)
    plan = LookupPlan()
    for e in predictions:
        mj = unit.models.get(e["model_id"])
        d = prediction_digest(e["model_id"], e["prediction_id"])
        plan.pred_digest.append(d)
        names: list[str] = []
        if mj is not None:
            gen = _time(e) // c.gen_ms(mj.model_id)
            info = mj.gens.get(gen)
            if info is not None:
                names.append(record_key(mj.model_id, gen, bucket_of(d, info[0])))
        plan.pred_probe.append(plan.add(d, names))
    cands: dict[tuple[str, int, int], list[tuple[int, int]]] = {}
    for lab in labels:
        model = lab["model_id"]
        mj = unit.models.get(model)
        d = prediction_digest(model, lab["prediction_id"])
        plan.label_digest.append(d)
        names = []
        if mj is not None:
            t = _time(lab)
            g = c.gen_ms(model)
            lo = (t - c.horizon_ms(model) - 2 * g) // g
            hi = (t + FUTURE_TOLERANCE_MS) // g
            gens = cands.get((model, lo, hi))
            if gens is None:
                gens = cands[(model, lo, hi)] = [
                    (x, mj.gens[x][0]) for x in sorted(mj.gens, reverse=True) if lo <= x <= hi
                ]
            h = int.from_bytes(d[:4], "little")
            names = [record_key(model, gen, h % nb) for gen, nb in gens]
        plan.label_probe.append(plan.add(d, names))
    return plan


class MemoryRecords:
    """Pending predictions in a dict, with Redis's semantics (tests and replays).

    Examples
    --------
    >>> mem = MemoryRecords()
    >>> plan = LookupPlan(keys=["k"], probes=[(b"d", (0,))])
    >>> mem.lookup(plan)
    [None]
    """

    def __init__(self) -> None:
        self.data: dict[str, dict[bytes, bytes]] = {}

    def lookup(self, plan: LookupPlan) -> list[Found]:
        """Answer a plan like the Redis lookup script."""
        out: list[Found] = []
        for digest, ks in plan.probes:
            hit: Found = None
            for k in ks:
                v = self.data.get(plan.keys[k], {}).get(digest)
                if v is not None:
                    hit = (k, v)
                    break
            out.append(hit)
        return out

    def apply(self, result: JoinResult) -> None:
        """Write a batch's records and tombstones."""
        for k, fields in result.puts.items():
            self.data.setdefault(k, {}).update(fields)
        for k, digests in result.tombs.items():
            if k in self.data:
                self.data[k].update(dict.fromkeys(digests, TOMBSTONE))

    def pending(self) -> int:
        """Stored predictions not joined yet."""
        return sum(1 for h in self.data.values() for v in h.values() if v != TOMBSTONE)


# ------------------------------------------------------------------------- results


@dataclass(frozen=True)
class PerfObservation:
    """A number for the metrics shell (model, version, metric, value)."""

    model_id: str
    model_version: str
    metric: str
    value: float


@dataclass
class JoinResult:
    """What one batch produced. The shell commits ``puts``/``tombs``/``dirty`` state at once."""

    #: key name -> {digest: record}: new pending predictions (the key's TTL is extended).
    puts: dict[str, dict[bytes, bytes]] = field(default_factory=dict)
    #: key name -> digests joined in this batch (set to the tombstone if the key exists).
    tombs: dict[str, list[bytes]] = field(default_factory=dict)
    #: key name -> event time after which it is useless (for its TTL; puts' keys only).
    expire_after: dict[str, int] = field(default_factory=dict)
    #: key name -> model (the shell derives the minimum TTL from the model's horizon).
    key_model: dict[str, str] = field(default_factory=dict)
    alerts: list[DriftAlert] = field(default_factory=list)
    #: (index of the label in the batch or -1, reason, rebuilt event of a held label):
    #: dead letters of the "join" stage.
    rejected: list[tuple[int, str, dict[str, Any] | None]] = field(default_factory=list)
    labels: dict[tuple[str, str], int] = field(default_factory=dict)
    predictions: dict[tuple[str, str], int] = field(default_factory=dict)
    #: (model, label lag in seconds) of each joined label.
    lags: list[tuple[str, float]] = field(default_factory=list)
    observations: list[PerfObservation] = field(default_factory=list)
    #: One performance point per closed window, per model (history.encode_perf fields).
    points: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: (model, version) -> current diagnosis, for those that changed or were evaluated.
    diagnoses: dict[tuple[str, str], str | None] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)

    def count(self, what: str, model: str, outcome: str, n: int = 1) -> None:
        """Add to an outcome counter of labels or predictions."""
        table = self.labels if what == "labels" else self.predictions
        table[(model, outcome)] = table.get((model, outcome), 0) + n


# ------------------------------------------------------------------------- the join


class _Batch:
    """Per-batch working set: records by digest as this batch sees them."""

    def __init__(self) -> None:
        # digest -> (key name, record or None when joined, model)
        self.recs: dict[bytes, tuple[str, PendingPrediction | None]] = {}
        self.new: set[bytes] = set()


def _calibration(ref: ReferenceProfile | None, cache: dict[str, Calibration | None]) -> Any:
    if ref is None:
        return None
    if ref.reference_id not in cache:
        raw = getattr(ref.outputs, "calibration", None)
        cache[ref.reference_id] = Calibration.from_dict(raw) if raw else None
    return cache[ref.reference_id]


class _Joiner:
    def __init__(
        self,
        unit: UnitState,
        refs: RefLookup,
        drift: DriftIndex,
        settings: LabelsSettings,
        result: JoinResult,
    ) -> None:
        self.u = unit
        self.refs = refs
        self.drift = drift
        self.s = settings
        self.c = _Cfg(settings)
        self.r = result
        self.b = _Batch()
        self._cal: dict[str, Calibration | None] = {}
        self._ref_cache: dict[tuple[str, str], ReferenceProfile | None] = {}
        self._models: dict[str, ModelJoin] = {}
        self._pstreams: dict[tuple[str, str, str], tuple[list[PerfState], Calibration | None]] = {}
        self._lstreams: dict[tuple[str, int], tuple[list[PerfState], Calibration | None]] = {}
        self._layouts: dict[tuple[int, tuple[Any, ...]], tuple[int, tuple[int, ...] | None]] = {}

    # ------------------------------------------------------------ helpers
    def ref(self, model: str, version: str) -> ReferenceProfile | None:
        k = (model, version)
        if k not in self._ref_cache:
            self._ref_cache[k] = self.refs(model, version)
        return self._ref_cache[k]

    def model(self, model_id: str) -> ModelJoin:
        mj = self._models.get(model_id)
        if mj is not None:
            return mj
        mj = self.u.models.get(model_id)
        if mj is None:
            mj = self.u.models[model_id] = ModelJoin(model_id)
        self.r.dirty.add(mj.key)
        self._models[model_id] = mj
        return mj

    def pstreams(
        self, model: str, version: str, segment: str, sample: Any
    ) -> tuple[list[PerfState], Calibration | None]:
        """The streams a prediction updates (its segment's, and the whole version's)."""
        k = (model, version, segment)
        hit = self._pstreams.get(k)
        if hit is None:
            streams = [self.perf(model, version, segment, sample)]
            if segment:
                streams.append(self.perf(model, version, "", sample))
            cal = _calibration(self.ref(model, version), self._cal)
            hit = self._pstreams[k] = (streams, cal)
        return hit

    def perf(self, model: str, version: str, segment: str, sample: Any) -> PerfState:
        key = stream_key(model, version, segment)
        st = self.u.perf.get(key)
        ref = self.ref(model, version)
        if st is None:
            st = PerfState(model, version, segment)
            if ref is not None:
                st.task = ref.outputs.task
            else:
                st.task = "regression" if type(sample) is float else "classification"
            st.adwin = ADWIN(delta=self.s.adwin_delta)
            self.u.perf[key] = st
        if ref is not None and ref.reference_id != st.reference_id:
            st.reference_id = ref.reference_id
            if ref.outputs.accuracy is not None:
                st.ref_accuracy = float(ref.outputs.accuracy)
                st.ref_source = "reference"
        self.r.dirty.add(key)
        return st

    def streams_of(
        self, mj: ModelJoin, rec: PendingPrediction
    ) -> tuple[list[PerfState], Calibration | None]:
        k = (mj.model_id, rec.stream)
        hit = self._lstreams.get(k)
        if hit is None:
            version, segment = mj.streams[rec.stream]
            out = [self.u.perf[stream_key(mj.model_id, version, segment)]]
            if segment:
                out.append(self.u.perf[stream_key(mj.model_id, version, "")])
            for st in out:
                self.r.dirty.add(st.key)
                self.ref(mj.model_id, version)
            cal = _calibration(self.ref(mj.model_id, version), self._cal)
            hit = self._lstreams[k] = (out, cal)
        return hit

    # ------------------------------------------------------------ predictions
    def add_prediction(self, e: Mapping[str, Any], d: bytes, found: Found) -> None:
        model = e["model_id"]
        mj = self.model(model)
        t = _time(e)
        if d in self.b.recs or found is not None:
            self._pcount(mj, "duplicate")
            return
        if mj.watermark >= 0 and t < mj.watermark - self.c.horizon_ms(model):
            self._pcount(mj, "too_old")
            return
        version = e["model_version"]
        seg = e.get("segment")
        segment = segment_key(seg) if seg else ""
        pred = e["prediction"]
        streams, cal = self.pstreams(model, version, segment, pred)
        st = streams[0]
        if st.task == "regression":
            if type(pred) is not float and type(pred) is not int:
                self._pcount(mj, "invalid")
                return
            rec = PendingPrediction(mj.stream_index(version, segment), t, True, float(pred))
        else:
            rec = self._classified(e, mj, streams, version, segment, t)
        gen = t // self.c.gen_ms(model)
        info = mj.gens.get(gen)
        if info is None:
            info = mj.gens[gen] = [self._new_gen_buckets(mj, gen), 0]
        info[1] += 1
        key = record_key(model, gen, bucket_of(d, info[0]))
        puts = self.r.puts.get(key)
        if puts is None:
            puts = self.r.puts[key] = {}
            self.r.expire_after[key] = gen_expiry_ms(self.s, model, gen)
            self.r.key_model[key] = model
        puts[d] = rec.encode()
        self.b.recs[d] = (key, rec)
        self.b.new.add(d)
        self._pcount(mj, "stored")
        if mj.watermark < 0 or t <= mj.watermark + FUTURE_TOLERANCE_MS:
            if t > mj.watermark:
                mj.watermark = t
        top = rec.top
        conf = None if top is None else (top if cal is None else cal.apply(top))
        window = self.s.window_labels
        bucket_ms = self.c.bucket_ms
        for s in streams:
            s.predicted += 1
            if t > s.max_pred_ms:
                s.max_pred_ms = t
            b = s.bucket(t, bucket_ms)
            b.pred += 1
            if conf is not None:
                b.est_n += 1
                b.est_sum += conf
                s.est_n += 1
                s.est_sum += conf
                if s.est_n >= window:
                    est = s.est_sum / s.est_n
                    s.last["estimated_accuracy"] = round(est, 6)
                    s.est_count += 1
                    if not s.segment:
                        self.r.observations.append(
                            PerfObservation(model, s.version, "estimated_accuracy", est)
                        )
                    s.est_n, s.est_sum = 0, 0.0

    def _pcount(self, mj: ModelJoin, outcome: str) -> None:
        mj.predictions[outcome] = mj.predictions.get(outcome, 0) + 1
        self.r.count("predictions", mj.model_id, outcome)

    def _classified(
        self,
        e: Mapping[str, Any],
        mj: ModelJoin,
        streams: list[PerfState],
        version: str,
        segment: str,
        t: int,
    ) -> PendingPrediction:
        st = streams[0]
        pred = e["prediction"]
        scores = e.get("scores")
        # Class indices of the prediction and of the score keys, cached per batch: a
        # model sends the same few names over and over.
        names = (pred, *scores) if scores else (pred,)
        ck = (id(st), names)
        layout = self._layouts.get(ck)
        if layout is None:
            idx = []
            for nm in names:
                cname = (category_value(nm) or "") if nm is pred else nm
                idx.append(st.class_index(cname))
                for other in streams[1:]:
                    other.class_index(cname)
            order = idx[1:]
            dense = None
            if order and max(order) < MAX_SCORED_CLASSES:
                # position in the dense vector -> position in the scores dict (or -1)
                where = {c: j for j, c in enumerate(order)}
                dense = tuple(where.get(i, -1) for i in range(max(order) + 1))
            layout = self._layouts[ck] = (idx[0], dense)
        cls, dense = layout
        top_q = scores_q = None
        if scores:
            vals = list(scores.values())
            top_q = min(SCORE_SCALE, max(0, int(round(max(vals) * SCORE_SCALE))))
            if dense is not None:
                scores_q = tuple(
                    min(SCORE_SCALE, max(0, int(round(vals[j] * SCORE_SCALE)))) if j >= 0 else 0
                    for j in dense
                )
        return PendingPrediction(
            mj.stream_index(version, segment), t, cls=cls, top_q=top_q, scores_q=scores_q
        )

    def _new_gen_buckets(self, mj: ModelJoin, gen: int) -> int:
        """Hash buckets of a new generation: sized from the previous one's count."""
        prev = [g for g in mj.gens if g < gen]
        if not prev:
            return int(self.s.initial_buckets)
        n = mj.gens[max(prev)][1]
        want = max(1, math.ceil(1.25 * n / TARGET_PER_BUCKET))
        return int(min(MAX_BUCKETS, 1 << (want - 1).bit_length()))

    # ------------------------------------------------------------ labels
    def resolve(
        self, idx: int, lab: Mapping[str, Any], d: bytes, found: Found, plan: LookupPlan
    ) -> None:
        """Outcome of one label of this batch (joined, duplicate, expired, held...)."""
        model = lab["model_id"]
        mj = self.model(model)
        t = _time(lab)
        if mj.label_watermark < 0 or t <= mj.label_watermark + FUTURE_TOLERANCE_MS:
            if t > mj.label_watermark:
                mj.label_watermark = t
        hit = self.b.recs.get(d)
        if hit is None and found is not None:
            key = plan.keys[found[0]]
            value = found[1]
            rec = None if value == TOMBSTONE else PendingPrediction.decode(value)
            hit = self.b.recs[d] = (key, rec)
        if hit is None:
            self.u.held.append(HeldLabel(model, lab["prediction_id"], lab["label"], _time(lab)))
            self.r.dirty.add("h")
            return
        self._join(idx, model, d, lab["label"], _time(lab), hit)

    def retry_held(self) -> None:
        """Held labels whose prediction arrived in this batch are joined now."""
        if not self.u.held or not self.b.new:
            return
        keep: list[HeldLabel] = []
        for h in self.u.held:
            d = h.digest
            hit = self.b.recs.get(d) if d in self.b.new else None
            if hit is None:
                keep.append(h)
                continue
            self._join(-1, h.model_id, d, h.label, h.time_ms, hit)
        if len(keep) != len(self.u.held):
            self.u.held = keep
            self.r.dirty.add("h")

    def expire_held(self) -> None:
        """Held labels become orphans once their model's predictions passed them."""
        if not self.u.held:
            return
        keep: list[HeldLabel] = []
        for h in self.u.held:
            mj = self.u.models.get(h.model_id)
            if mj is not None and mj.watermark >= h.time_ms + self.c.grace_ms:
                self.model(h.model_id)
                self._outcome(h.model_id, "orphan")
            else:
                keep.append(h)
        over = len(keep) - self.s.max_held_labels
        if over > 0:
            order = sorted(range(len(keep)), key=lambda i: (keep[i].time_ms, i))
            drop = set(order[:over])
            for i in sorted(drop):
                self.model(keep[i].model_id)
                self._outcome(keep[i].model_id, "orphan")
            keep = [h for i, h in enumerate(keep) if i not in drop]
        if len(keep) != len(self.u.held):
            self.u.held = keep
            self.r.dirty.add("h")

    def _held_event(
        self, idx: int, model: str, d: bytes, label: Any, t_label: int
    ) -> dict[str, Any] | None:
        """A held label rebuilt as a label event (its Kafka record is gone), else None."""
        if idx >= 0:
            return None
        pid = next((h.prediction_id for h in self.u.held if h.digest == d), "")
        return {"prediction_id": pid, "model_id": model, "label": label, "timestamp": t_label}

    def _outcome(self, model: str, outcome: str) -> None:
        mj = self.model(model)
        mj.labels[outcome] = mj.labels.get(outcome, 0) + 1
        self.r.count("labels", model, outcome)

    def _join(
        self,
        idx: int,
        model: str,
        d: bytes,
        label: Any,
        t_label: int,
        hit: tuple[str, PendingPrediction | None],
    ) -> None:
        key, rec = hit
        if rec is None:
            self._outcome(model, "duplicate")
            return
        if t_label - rec.time_ms > self.c.horizon_ms(model):
            self._outcome(model, "expired")
            return
        mj = self.u.models[model]
        streams, cal = self.streams_of(mj, rec)
        if rec.regression and type(label) is not float and type(label) is not int:
            reason = f"label {label!r} is not a number; {model} is a regression model"
            self.r.rejected.append((idx, reason, self._held_event(idx, model, d, label, t_label)))
            self._outcome(model, "invalid")
            return
        self._outcome(model, "joined")
        self.b.recs[d] = (key, None)
        if d in self.b.new:
            self.r.puts[key][d] = TOMBSTONE
        else:
            self.r.tombs.setdefault(key, []).append(d)
        lag_s = (t_label - rec.time_ms) / 1000.0
        self.r.lags.append((model, lag_s))
        own = streams[0]
        truth = None if rec.regression else own.class_index(category_value(label) or "")
        top = rec.top
        conf = None if top is None else (top if cal is None else cal.apply(top))
        for st in streams:
            self._score(st, own, rec, label, truth, conf, t_label, lag_s)

    # ------------------------------------------------------------ performance
    def _score(
        self,
        st: PerfState,
        own: PerfState,
        rec: PendingPrediction,
        label: Any,
        truth: int | None,
        conf: float | None,
        t_label: int,
        lag_s: float,
    ) -> None:
        """Score one joined prediction in ``st``.

        ``own`` is the stream the record's class indices refer to (its version and
        segment); ``truth`` the label's index in ``own``'s class table. ``st`` is
        ``own`` or the whole-version stream, whose class table may order classes
        differently: per-class counts are translated by name.
        """
        b = st.bucket(rec.time_ms, self.c.bucket_ms)
        b.lab += 1
        b.lag[bisect.bisect_left(LAG_EDGES_S, lag_s)] += 1
        st.labelled += 1
        w = st.window
        w.n += 1
        w.start = rec.time_ms if w.start < 0 else min(w.start, rec.time_ms)
        w.end = max(w.end, rec.time_ms)
        w.lag_sum += lag_s
        correct = False
        if rec.regression:
            e = float(label) - rec.value
            err = abs(e)
            b.abs_sum += err
            b.sq_sum += e * e
            w.sq_sum += e * e
        else:
            assert truth is not None
            correct = rec.cls == truth and truth != OTHER_CLASS
            err = 0.0 if correct else 1.0
            b.correct += int(correct)
            w.correct += int(correct)
            if st is own:
                pi, yi = rec.cls, truth
            else:
                pi = _translate(own, st, rec.cls)
                yi = _translate(own, st, truth)
            if pi < MAX_CLASS_STATS:
                b.class_slot(pi)
                b.pc[pi] += 1
                if correct:
                    b.tp[pi] += 1
            if yi < MAX_CLASS_STATS:
                b.class_slot(yi)
                b.ac[yi] += 1
            if rec.scores_q is not None:
                ps = [q / SCORE_SCALE for q in rec.scores_q]
                p_true = ps[truth] if truth < len(ps) else 0.0
                ll = -math.log(max(p_true, LOG_LOSS_EPS))
                brier = sum(p * p for p in ps) - 2 * p_true + 1.0
                b.ll_n += 1
                b.ll_sum += ll
                b.brier_sum += brier
                w.ll_n += 1
                w.ll_sum += ll
                w.brier_sum += brier
            if conf is not None:
                b.conf_n += 1
                b.conf_sum += conf
                w.conf_n += 1
                w.conf_sum += conf
        w.err_sum += err
        if st.learn_n < self.s.learn_reference_labels:
            st.learn_n += 1
            st.learn_correct += int(correct)
            st.learn_err += err
            if (
                st.learn_n == self.s.learn_reference_labels
                and st.ref_accuracy is None
                and not rec.regression
            ):
                st.ref_accuracy = st.learn_correct / st.learn_n
                st.ref_source = "learned"
        for ep_id in self.drift.containing(st.model_id, st.version, rec.time_ms):
            acc = st.drift_acc.setdefault(ep_id, [0, 0])
            acc[0] += 1
            acc[1] += int(correct)
        self._adwin(st, rec, err, t_label)
        if w.n >= self.s.window_labels:
            self._close_window(st, t_label)

    def _adwin(self, st: PerfState, rec: PendingPrediction, err: float, t_label: int) -> None:
        """ADWIN decides that the error changed; a short average says by how much.

        On a detection, the error before the change is the mean of what ADWIN dropped
        (the older part of its window). The rise is confirmed when the short average
        of the error exceeds it by ``min_error_increase`` (a fraction of it for
        regression) within one window of labels; then concept drift fires.
        """
        a = st.adwin
        w0, est0 = a.width, a.estimation
        a.update(err)
        st.ewma = err if st.ewma < 0 else st.ewma + EWMA_ALPHA * (err - st.ewma)
        st.adwin_start = rec.time_ms if a.width <= 1 else min(st.adwin_start, rec.time_ms)
        if a.drift_detected:
            w1, est1 = a.width, a.estimation
            dropped = w0 + 1 - w1
            if dropped > 0:
                old = (est0 * w0 + err - est1 * w1) / dropped
                if est1 > old:  # the error went up (a fall is good news)
                    st.rise_from = old
                    st.rise_until = st.labelled + self.s.window_labels
        if st.rise_until < 0:
            return
        if st.labelled > st.rise_until:
            st.rise_from, st.rise_until = -1.0, -1
            return
        old = st.rise_from
        rise = st.ewma - old
        inc = self.s.min_error_increase
        confirmed = st.ewma >= old * (1.0 + inc) if rec.regression else rise >= inc
        if not (rise > 0 and confirmed):
            return
        st.rise_from, st.rise_until = -1.0, -1
        ep = st.episode("concept_drift")
        if ep.firing or ep.cooldown > 0:
            return
        ep.firing, ep.clean_windows = True, 0
        ep.number += 1
        ep.baseline = old
        big = rise >= 0.15 if not rec.regression else st.ewma >= 2 * old
        ep.severity = "critical" if big else "warning"
        start = st.window.start if st.window.start >= 0 else rec.time_ms
        ep.diagnosis = self._diagnosis(st, start, rec.time_ms)
        self.r.alerts.append(
            self._alert(
                st,
                "concept_drift",
                "firing",
                ep,
                "adwin",
                round(st.ewma, 6),
                round(old + inc if not rec.regression else old * (1 + inc), 6),
                None,
                min(st.adwin_start, rec.time_ms) if st.adwin_start >= 0 else rec.time_ms,
                rec.time_ms,
                max(1, a.width),
                t_label,
            )
        )
        self._diag_changed(st)

    def _diagnosis(self, st: PerfState, t0: int, t1: int) -> str:
        if self.drift.overlapping(st.model_id, st.version, t0, t1):
            return "covariate_shift_harmful"
        return "concept_drift"

    def _threshold(self, st: PerfState) -> float | None:
        ref = st.reference_accuracy()
        if ref is None:
            return self.s.accuracy_floor if self.s.accuracy_floor > 0 else None
        return max(self.s.accuracy_floor, ref - self.s.accuracy_margin)

    def _close_window(self, st: PerfState, t_label: int) -> None:
        w = st.window
        regression = st.task == "regression"
        mean_err = w.err_sum / w.n
        summary: dict[str, Any] = {"window": w.index, "n": w.n, "start": w.start, "end": w.end}
        obs: list[tuple[str, float]] = []
        if regression:
            summary["mae"] = round(mean_err, 6)
            summary["rmse"] = round(math.sqrt(w.sq_sum / w.n), 6)
            obs += [("mae", mean_err), ("rmse", math.sqrt(w.sq_sum / w.n))]
        else:
            acc = w.correct / w.n
            summary["accuracy"] = round(acc, 6)
            obs.append(("accuracy", acc))
            if w.conf_n:
                est = w.conf_sum / w.conf_n
                summary["estimated"] = round(est, 6)
                summary["estimation_error"] = round(est - acc, 6)
                obs.append(("estimation_error", est - acc))
            if w.ll_n:
                summary["log_loss"] = round(w.ll_sum / w.ll_n, 6)
                summary["brier"] = round(w.brier_sum / w.ll_n, 6)
                obs += [("log_loss", w.ll_sum / w.ll_n), ("brier", w.brier_sum / w.ll_n)]
        pred = sum(b.pred for b in st.buckets.values())
        lab = sum(b.lab for b in st.buckets.values())
        if pred:
            obs.append(("coverage", lab / pred))
        st.last.update(summary)
        self.r.points.setdefault(st.model_id, []).append(
            {
                "model_version": st.version,
                "segment": st.segment,
                "at": max(0, w.end),
                "accuracy": summary.get("accuracy"),
                "estimated_accuracy": summary.get("estimated"),
                "coverage": (lab / pred) if pred else None,
                "lag_seconds": w.lag_sum / w.n,
                "labels": w.n,
            }
        )
        if not st.segment:
            for name, v in obs:
                self.r.observations.append(PerfObservation(st.model_id, st.version, name, v))
        # -- performance episode (classification with a threshold)
        thr = self._threshold(st)
        if not regression and thr is not None:
            acc = w.correct / w.n
            upper = _wilson_upper(w.correct, w.n, self.s.confidence_z)
            self._step(st, "performance", upper < thr, acc >= thr, acc, thr, w, t_label)
        # -- concept-drift episode: fired by ADWIN, resolved by clean windows
        ep = st.episode("concept_drift")
        inc = self.s.min_error_increase
        if regression:
            clean = mean_err <= ep.baseline * (1 + inc / 2)
        else:
            clean = mean_err <= ep.baseline + inc / 2
        self._step(st, "concept_drift", False, clean, mean_err, ep.baseline + inc, w, t_label)
        # -- diagnoses of input-drift episodes
        if thr is not None and not regression:
            for ep_id, (n, k) in st.drift_acc.items():
                if n < max(20, self.s.window_labels // 2):
                    continue
                harmful = _wilson_upper(k, n, self.s.confidence_z) < thr
                diag = "covariate_shift_harmful" if harmful else "input_drift_benign"
                if st.drift_diag.get(ep_id) != diag:
                    st.drift_diag[ep_id] = diag
            self._diag_changed(st)
        self._prune(st)
        w.index += 1
        st.window = _Window(index=w.index)

    def _step(
        self,
        st: PerfState,
        kind: str,
        degraded: bool,
        clean: bool,
        value: float,
        threshold: float,
        w: _Window,
        t_label: int,
    ) -> None:
        ep = st.episode(kind)
        if not ep.firing:
            if ep.cooldown > 0:
                ep.cooldown -= 1
                return
            if degraded:
                ep.firing, ep.clean_windows = True, 0
                ep.number += 1
                ep.baseline = threshold
                drop = threshold - value
                ep.severity = "critical" if drop >= 2 * self.s.accuracy_margin else "warning"
                ep.diagnosis = self._diagnosis(st, w.start, w.end)
                p = _norm_cdf(
                    (value - threshold) / math.sqrt(max(threshold * (1 - threshold), 1e-9) / w.n)
                )
                self.r.alerts.append(
                    self._alert(
                        st,
                        kind,
                        "firing",
                        ep,
                        "window_accuracy",
                        round(value, 6),
                        round(threshold, 6),
                        round(p, 6),
                        w.start,
                        w.end,
                        w.n,
                        t_label,
                    )
                )
                self._diag_changed(st)
            return
        if not clean:
            ep.clean_windows = 0
            return
        ep.clean_windows += 1
        if ep.clean_windows >= self.s.resolve_after_windows:
            ep.firing = False
            ep.cooldown = self.s.cooldown_windows
            detector = "adwin" if kind == "concept_drift" else "window_accuracy"
            self.r.alerts.append(
                self._alert(
                    st,
                    kind,
                    "resolved",
                    ep,
                    detector,
                    round(value, 6),
                    round(threshold, 6),
                    None,
                    w.start,
                    w.end,
                    w.n,
                    t_label,
                )
            )
            self._diag_changed(st)

    def _alert(
        self,
        st: PerfState,
        kind: str,
        status: str,
        ep: SlowEpisode,
        detector: str,
        statistic: float,
        threshold: float,
        p_value: float | None,
        start: int,
        end: int,
        count: int,
        at: int,
    ) -> DriftAlert:
        return DriftAlert(
            alert_id=make_alert_id(st.model_id, st.version, st.segment, kind, ep.number, status),
            model_id=st.model_id,
            model_version=st.version,
            segment=_segment_dict(st.segment),
            kind=kind,
            status=status,
            severity=ep.severity,
            feature=None,
            detector=detector,
            statistic=statistic,
            threshold=threshold,
            p_value=None if p_value is None else min(1.0, max(0.0, p_value)),
            window=AlertWindow(start=max(0, start), end=max(0, end), count=max(0, count)),
            reference=st.reference_id or f"labels:{st.ref_source or 'none'}",
            detected_at=max(0, at),
            episode=ep.number,
            diagnosis=ep.diagnosis,
        )

    def _diag_changed(self, st: PerfState) -> None:
        if not st.segment:
            self.r.diagnoses[(st.model_id, st.version)] = st.current_diagnosis()

    def _prune(self, st: PerfState) -> None:
        """Drop buckets and input-drift tallies older than the horizon (bounded state)."""
        keep_from = st.max_pred_ms - self.c.horizon_ms(st.model_id) - self.c.bucket_ms
        for k in [k for k in st.buckets if k < keep_from]:
            del st.buckets[k]
        for ep_id in list(st.drift_acc):
            iv = self.drift.intervals.get((st.model_id, st.version), {}).get(ep_id)
            if iv is not None and 0 <= iv[1] < keep_from:
                st.drift_acc.pop(ep_id)

    def prune_gens(self) -> None:
        """Forget generations whose predictions are past any use (Redis expires them).

        A generation is useless once the model's labels are past its horizon. The clock
        is the label watermark: predictions may be read far ahead of their labels (a
        backlog), and a label must still find its prediction then. A model that never
        had a label forgets generations ten horizons behind its predictions.
        """
        for mj in self.u.models.values():
            if mj.label_watermark >= 0:
                clock = mj.label_watermark
            elif mj.watermark >= 0:
                clock = mj.watermark - 10 * self.c.horizon_ms(mj.model_id)
            else:
                continue
            old = [g for g in mj.gens if gen_expiry_ms(self.s, mj.model_id, g) < clock]
            for g in old:
                del mj.gens[g]
            if old:
                self.r.dirty.add(mj.key)


def _translate(src: PerfState, dst: PerfState, i: int) -> int:
    """Index in ``dst``'s class table of class ``i`` of ``src``'s."""
    if i == OTHER_CLASS or i >= len(src.classes):
        return OTHER_CLASS
    return dst.class_index(src.classes[i])


def _wilson_upper(k: int, n: int, z: float) -> float:
    """Upper Wilson confidence bound of a proportion ``k/n``."""
    if n <= 0:
        return 1.0
    p = k / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z2 / n))


def _norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def join_batch(
    predictions: Sequence[Mapping[str, Any]],
    labels: Sequence[Mapping[str, Any]],
    plan: LookupPlan,
    found: Sequence[Found],
    unit: UnitState,
    references: RefLookup,
    drift: DriftIndex,
    settings: LabelsSettings,
) -> JoinResult:
    """Join one batch of one partition. Pure: no I/O; updates ``unit`` in place.

    Parameters
    ----------
    predictions, labels
        Contract-valid events (dicts) of the partition, each in partition order.
    plan, found
        :func:`plan_lookups` of the same batch and state, and what Redis answered.
    unit
        The partition's state (updated).
    references
        ``(model_id, version) -> ReferenceProfile | None`` (task, accuracy, calibration).
    drift
        Input-drift episodes reported by the monitor.
    settings
        The slow loop's settings.

    Returns
    -------
    JoinResult
        Records to write, alerts, dead letters, counters and metric observations.
    """
    result = JoinResult()
    j = _Joiner(unit, references, drift, settings, result)
    for i, e in enumerate(predictions):
        pi = plan.pred_probe[i]
        j.add_prediction(e, plan.pred_digest[i], found[pi] if pi >= 0 else None)
    j.retry_held()
    for i, lab in enumerate(labels):
        li = plan.label_probe[i]
        j.resolve(i, lab, plan.label_digest[i], found[li] if li >= 0 else None, plan)
    j.expire_held()
    j.prune_gens()
    return result


# ------------------------------------------------------------------------- reports


def _lag_quantile(counts: Sequence[int], q: float) -> float | None:
    total = sum(counts)
    if not total:
        return None
    target = q * total
    run = 0
    for i, c in enumerate(counts):
        run += c
        if run >= target:
            return LAG_EDGES_S[i] if i < len(LAG_EDGES_S) else math.inf
    return math.inf


def _summarise(st: PerfState, buckets: Iterable[Bucket]) -> dict[str, Any]:
    tot = Bucket()
    for b in buckets:
        for s in _SLOTS:
            setattr(tot, s, getattr(tot, s) + getattr(b, s))
        tot.lag = [x + y for x, y in zip(tot.lag, b.lag, strict=True)]
        for arr in ("tp", "pc", "ac"):
            mine, theirs = getattr(tot, arr), getattr(b, arr)
            if len(theirs) > len(mine):
                mine.extend([0] * (len(theirs) - len(mine)))
            for i, v in enumerate(theirs):
                mine[i] += v
    out: dict[str, Any] = {
        "predicted": int(tot.pred),
        "labelled": int(tot.lab),
        "coverage": round(tot.lab / tot.pred, 6) if tot.pred else None,
        "estimated_accuracy": round(tot.est_sum / tot.est_n, 6) if tot.est_n else None,
        "lag_p50_s": _lag_quantile(tot.lag, 0.5),
        "lag_p90_s": _lag_quantile(tot.lag, 0.9),
    }
    if st.task == "regression":
        n = tot.lab
        out["mae"] = round(tot.abs_sum / n, 6) if n else None
        out["rmse"] = round(math.sqrt(tot.sq_sum / n), 6) if n else None
        return out
    n = tot.lab
    out["accuracy"] = round(tot.correct / n, 6) if n else None
    out["correct"] = int(tot.correct)
    if tot.conf_n:
        est = tot.conf_sum / tot.conf_n
        out["estimated_on_labelled"] = round(est, 6)
        out["estimation_error"] = round(est - tot.correct / n, 6) if n else None
    if tot.ll_n:
        out["log_loss"] = round(tot.ll_sum / tot.ll_n, 6)
        out["brier"] = round(tot.brier_sum / tot.ll_n, 6)
    per_class = {}
    for i, name in enumerate(st.classes[: len(tot.ac) or len(tot.pc)]):
        tp = tot.tp[i] if i < len(tot.tp) else 0
        pc = tot.pc[i] if i < len(tot.pc) else 0
        ac = tot.ac[i] if i < len(tot.ac) else 0
        if pc or ac:
            per_class[name] = {
                "precision": round(tp / pc, 6) if pc else None,
                "recall": round(tp / ac, 6) if ac else None,
                "support": ac,
            }
    out["per_class"] = per_class
    return out


def _two_proportions(k1: int, n1: int, k2: int, n2: int) -> float | None:
    if n1 == 0 or n2 == 0:
        return None
    p = (k1 + k2) / (n1 + n2)
    se = math.sqrt(max(p * (1 - p) * (1 / n1 + 1 / n2), 1e-12))
    z = (k1 / n1 - k2 / n2) / se
    return round(math.erfc(abs(z) / math.sqrt(2)), 6)


def build_report(
    states: Iterable[PerfState],
    model: str | None = None,
    champion: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> dict[str, Any]:
    """Performance per model and version, and champion vs challengers on the same period.

    The comparison uses only event-time buckets in which every compared version has
    labelled predictions, so both are judged on the same period. The champion is
    ``champion`` or the version with the most predictions.
    """
    by_model: dict[str, dict[str, PerfState]] = {}
    segments: dict[tuple[str, str], list[PerfState]] = {}
    for st in states:
        if model is not None and st.model_id != model:
            continue
        if st.segment:
            segments.setdefault((st.model_id, st.version), []).append(st)
        else:
            by_model.setdefault(st.model_id, {})[st.version] = st

    def sel(st: PerfState) -> dict[int, Bucket]:
        return {
            k: b
            for k, b in st.buckets.items()
            if (since_ms is None or k >= since_ms) and (until_ms is None or k <= until_ms)
        }

    report: dict[str, Any] = {}
    for mid, versions in sorted(by_model.items()):
        entry: dict[str, Any] = {"versions": {}}
        for ver, st in sorted(versions.items()):
            v = _summarise(st, sel(st).values())
            v.update(
                task=st.task,
                reference_accuracy=st.ref_accuracy,
                reference_source=st.ref_source or None,
                diagnosis=st.current_diagnosis(),
                episodes={k: e.firing for k, e in st.episodes.items()},
                last_window=st.last,
                segments={
                    s.segment: _summarise(s, sel(s).values())
                    for s in sorted(segments.get((mid, ver), []), key=lambda x: x.segment)
                },
            )
            entry["versions"][ver] = v
        if len(versions) >= 2:
            champ = champion if champion in versions else None
            if champ is None:
                champ = max(versions, key=lambda x: (versions[x].predicted, x))
            entry["champion"] = champ
            comps = []
            for ver, st in sorted(versions.items()):
                if ver == champ:
                    continue
                cb, xb = sel(versions[champ]), sel(st)
                common = sorted(k for k in cb.keys() & xb.keys() if cb[k].lab and xb[k].lab)
                c = _summarise(versions[champ], (cb[k] for k in common))
                x = _summarise(st, (xb[k] for k in common))
                row: dict[str, Any] = {
                    "challenger": ver,
                    "period": [common[0], common[-1]] if common else None,
                    "buckets": len(common),
                    "champion": {
                        k: c.get(k)
                        for k in ("labelled", "accuracy", "log_loss", "brier", "mae", "rmse")
                    },
                    "challenger_metrics": {
                        k: x.get(k)
                        for k in ("labelled", "accuracy", "log_loss", "brier", "mae", "rmse")
                    },
                }
                if c.get("accuracy") is not None and x.get("accuracy") is not None:
                    row["accuracy_diff"] = round(x["accuracy"] - c["accuracy"], 6)
                    row["p_value"] = _two_proportions(
                        x["correct"], x["labelled"], c["correct"], c["labelled"]
                    )
                comps.append(row)
            entry["comparisons"] = comps
        report[mid] = entry
    return report


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf"
        return f"{v:.2%}" if pct else f"{v:.4g}"
    return str(v)


def format_report(report: Mapping[str, Any]) -> str:
    """The report as readable text (the ``driftline labels --report`` view)."""
    lines: list[str] = []
    for mid, entry in report.items():
        lines.append(f"model {mid}")
        lines.append(
            "  version   labelled/predicted  coverage  accuracy  estimated  est.err  "
            "log_loss  brier   mae     rmse    lag p50/p90 s  diagnosis"
        )
        for ver, v in entry["versions"].items():
            lines.append(
                f"  {ver:<9} {v['labelled']:>8}/{v['predicted']:<9} "
                f"{_fmt(v['coverage'], True):>8}  {_fmt(v.get('accuracy'), True):>8}  "
                f"{_fmt(v.get('estimated_accuracy'), True):>9}  "
                f"{_fmt(v.get('estimation_error')):>7}  {_fmt(v.get('log_loss')):>8}  "
                f"{_fmt(v.get('brier')):>6}  {_fmt(v.get('mae')):>6}  {_fmt(v.get('rmse')):>6}  "
                f"{_fmt(v['lag_p50_s'])}/{_fmt(v['lag_p90_s']):<10} {v['diagnosis'] or '-'}"
            )
            for name, pc in v.get("per_class", {}).items():
                lines.append(
                    f"      class {name:<12} precision {_fmt(pc['precision'], True):>8}  "
                    f"recall {_fmt(pc['recall'], True):>8}  support {pc['support']}"
                )
            for seg, sv in v.get("segments", {}).items():
                lines.append(
                    f"      segment {seg:<20} labelled {sv['labelled']:>7}  accuracy "
                    f"{_fmt(sv.get('accuracy'), True)}  mae {_fmt(sv.get('mae'))}"
                )
        if "comparisons" in entry:
            lines.append(
                f"  champion {entry['champion']} vs challengers (same event-time buckets):"
            )
            for row in entry["comparisons"]:
                c, x = row["champion"], row["challenger_metrics"]
                lines.append(
                    f"    {row['challenger']:<9} over {row['buckets']} buckets: accuracy "
                    f"{_fmt(x.get('accuracy'), True)} vs {_fmt(c.get('accuracy'), True)} "
                    f"(diff {_fmt(row.get('accuracy_diff'))}, p={_fmt(row.get('p_value'))}); "
                    f"log_loss {_fmt(x.get('log_loss'))} vs {_fmt(c.get('log_loss'))}; "
                    f"labelled {x.get('labelled')} vs {c.get('labelled')}"
                )
    return "\n".join(lines)
