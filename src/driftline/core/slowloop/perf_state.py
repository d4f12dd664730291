"""The joiner's state: per-stream performance, per-model join bookkeeping, the partition.

Everything here is plain data with versioned, pickle-free records
(:func:`driftline.contract.codec.pack`): :class:`PerfState` per (model, version,
segment) with its event-time :class:`Bucket` s, its window and its alert episodes;
:class:`ModelJoin` per model (stream table, generations, watermarks, exact outcome
counters); :class:`UnitState` for a partition index (offsets, held labels, the rest).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from driftline.contract.codec import pack, unpack
from driftline.contract.columnar import label_class
from driftline.core.detectors import ADWIN
from driftline.core.detectors.river_detectors import RiverDetector
from driftline.core.slowloop.pending import prediction_digest
from driftline.errors import StateCorrupt

__all__ = [
    "LAG_EDGES_S",
    "MAX_CLASSES",
    "MAX_CLASS_STATS",
    "OTHER_CLASS",
    "SLOTS",
    "CELL_FIELDS",
    "CELL_LABELS",
    "MAX_CELLS",
    "STATE_FORMAT",
    "Bucket",
    "ConceptDetector",
    "HeldLabel",
    "ModelJoin",
    "PerfState",
    "PerfWindow",
    "SlowEpisode",
    "UnitState",
    "detector_name",
    "bucket_start",
    "stream_key",
]

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
#: Format of the perf_state record (1: before the evidence-based diagnosis; still read).
STATE_FORMAT = 2
#: Labelled predictions per evidence cell, and closed cells kept per stream: the recent
#: evidence (in join order) that the diagnosis judges a change on.
CELL_LABELS = 25
MAX_CELLS = 20
#: Fields of an evidence cell: labelled, right, with a top score, sum of their
#: calibrated top scores, right among those with a top score.
CELL_FIELDS = ("n", "correct", "conf_n", "conf_sum", "conf_ok")

#: The detector on a stream's error (:mod:`driftline.core.slowloop.concept`).
ConceptDetector = ADWIN | RiverDetector


def detector_name(det: ConceptDetector) -> str:
    """The name a detector is configured by (and alerts carry as ``detector``)."""
    return "adwin" if isinstance(det, ADWIN) else det.kind


def stream_key(model_id: str, version: str, segment: str) -> str:
    """State field of one (model, version, segment) performance state."""
    return f"s\x1f{model_id}\x1f{version}\x1f{segment}"


_N_LAG = len(LAG_EDGES_S) + 1
#: Scalar slots of a bucket, in their stored order.
SLOTS = (
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
    "conf_ok",  # labelled predictions with a top score that were right
)


def bucket_start(t: int, width_ms: int) -> int:
    """Start of the event-time bucket of width ``width_ms`` holding ``t``."""
    return t - (t % width_ms)


class Bucket:
    """Aggregates of the predictions made in one event-time bucket of a stream."""

    __slots__ = (*SLOTS, "lag", "tp", "pc", "ac")

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
        self.conf_ok = 0.0
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
        return [[getattr(self, s) for s in SLOTS], self.lag, self.tp, self.pc, self.ac]

    @classmethod
    def from_list(cls, d: Sequence[Any]) -> Bucket:
        """Inverse of :meth:`to_list`."""
        b = cls()
        values = list(d[0])
        if len(values) == len(SLOTS) - 1:
            # A format-1 bucket has no conf_ok: exact when every labelled prediction had
            # a score (the usual case), else the right ones in proportion.
            lab, correct, conf_n = values[3], values[4], values[5]
            values.append(correct if conf_n == lab else round(correct * conf_n / max(lab, 1)))
        for s, v in zip(SLOTS, values, strict=True):
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
    #: While firing: labelled predictions of the current run of clean windows, and of
    #: them the right ones (performance) or the errors (concept drift, classification).
    run_n: int = 0
    run_k: int = 0


@dataclass
class PerfWindow:
    """The open tumbling window of ``window_labels`` labelled predictions of a stream."""

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
    #: The labelled rows ``ref_accuracy`` was measured on (its sampling error); 0: unknown.
    ref_rows: int = 0
    #: Regression: the reference's mean absolute error (its labelled rows), if known.
    ref_mae: float | None = None
    ref_source: str = ""
    learn_n: int = 0
    learn_correct: int = 0
    learn_err: float = 0.0
    #: Over the same first labels, those with a top score: count, sum of calibrated top
    #: scores, right ones (the label-free estimate's bias on this stream).
    learn_conf: list[float] = field(default_factory=lambda: [0, 0.0, 0])
    buckets: dict[int, Bucket] = field(default_factory=dict)
    max_pred_ms: int = -1
    predicted: int = 0
    labelled: int = 0
    window: PerfWindow = field(default_factory=PerfWindow)
    est_n: int = 0
    est_sum: float = 0.0
    est_count: int = 0
    #: The change detector on the error stream (ADWIN unless configured otherwise).
    detector: ConceptDetector = field(default_factory=ADWIN)
    #: Earliest prediction time in the detector's evidence (since its last reset).
    adwin_start: int = -1
    #: Short exponential average of the error: the size of a rise ADWIN detected (its
    #: own window keeps pre-change values after a cut, so its mean understates it).
    ewma: float = -1.0
    #: Error level before a rise ADWIN detected but the average has not confirmed yet,
    #: and the labelled count until which it may still confirm (-1: none pending).
    rise_from: float = -1.0
    rise_until: int = -1
    #: River detectors: errors seen since the detection and their sum (the confirmation;
    #: stored with the river detector's snapshot).
    confirm_n: int = 0
    confirm_sum: float = 0.0
    episodes: dict[str, SlowEpisode] = field(default_factory=dict)
    #: Recent evidence in join order: closed cells of CELL_LABELS labels, and the open one.
    cells: list[list[float]] = field(default_factory=list)
    cell: list[float] = field(default_factory=lambda: [0, 0, 0, 0.0, 0])
    #: Verdict on each input-drift episode the monitor reported (from the buckets of
    #: the predictions made during it).
    drift_diag: dict[str, str] = field(default_factory=dict)
    last: dict[str, Any] = field(default_factory=dict)
    #: ``prediction_id`` of the first prediction of this stream in this partition: part
    #: of its alert ids, so the states of a stream in two partitions (its model moved,
    #: issue 16) never publish an episode under the same id. "" for older states.
    origin: str = ""
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

    def label_index(self, name: str) -> int:
        """Index of a label's class: :meth:`class_index`, except that a label naming a
        binary class the other way than the predictions do is that class (``true`` for
        a model predicting ``1``, ``0`` for one predicting ``false``, ``1.0`` for
        ``1``), where the predictions' name is known. A label pipeline writing booleans
        for a model of 0/1 scored every label wrong."""
        if len(self._index) != len(self.classes):
            self._index = {c: i for i, c in enumerate(self.classes)}
        i = self._index.get(name)  # the usual case, on the hot path: one lookup
        return i if i is not None else self.class_index(label_class(name, self._index))

    def bucket(self, t: int, width_ms: int) -> Bucket:
        """The event-time bucket holding ``t`` (created when new)."""
        start = bucket_start(t, width_ms)
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
    def _detector_fields(self) -> dict[str, Any]:
        # ADWIN keeps its own record under "adwin" (the layout before river's detectors);
        # a river detector's snapshot goes under "concept".
        if isinstance(self.detector, ADWIN):
            return {"adwin": self.detector.to_bytes().decode()}
        return {
            "concept": {
                "detector": self.detector.to_dict(),
                "confirm": [self.confirm_n, self.confirm_sum],
            }
        }

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
                "learn_conf": self.learn_conf,
                "buckets": {str(k): b.to_list() for k, b in sorted(self.buckets.items())},
                "max_pred_ms": self.max_pred_ms,
                "predicted": self.predicted,
                "labelled": self.labelled,
                "window": self.window.__dict__,
                "est": [self.est_n, self.est_sum, self.est_count],
                **self._detector_fields(),
                "adwin_start": self.adwin_start,
                "rise": [self.ewma, self.rise_from, self.rise_until],
                "episodes": {k: e.__dict__ for k, e in self.episodes.items()},
                "evidence": {"cells": self.cells, "open": self.cell},
                "drift_diag": self.drift_diag,
                "last": self.last,
                "origin": self.origin,
                # absent unless known: the states of other streams keep their bytes
                **({"ref_mae": self.ref_mae} if self.ref_mae is not None else {}),
                **({"ref_rows": self.ref_rows} if self.ref_rows else {}),
            },
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> PerfState:
        """Inverse of :meth:`to_bytes`."""
        try:
            d = unpack(data, "perf_state", STATE_FORMAT)
        except StateCorrupt as exc:
            # Format 1 (before the evidence-based diagnosis) is read: the new fields
            # start empty and the input-drift tallies it kept are no longer used.
            try:
                d = unpack(data, "perf_state", 1)
            except StateCorrupt:
                raise exc from None
        try:
            st = cls(d["model"], d["version"], d["segment"])
            st.task = d["task"]
            st.classes = list(d["classes"])
            st.reference_id = d["reference_id"]
            st.ref_accuracy = d["ref_accuracy"]
            st.ref_mae = d.get("ref_mae")
            st.ref_rows = int(d.get("ref_rows", 0))
            st.ref_source = d["ref_source"]
            st.learn_n, st.learn_correct, st.learn_err = d["learn"]
            st.buckets = {int(k): Bucket.from_list(v) for k, v in d["buckets"].items()}
            st.max_pred_ms = d["max_pred_ms"]
            st.predicted = d["predicted"]
            st.labelled = d["labelled"]
            st.window = PerfWindow(**d["window"])
            st.est_n, st.est_sum, st.est_count = d["est"]
            if "concept" in d:
                st.detector = RiverDetector.from_dict(d["concept"]["detector"])
                st.confirm_n, st.confirm_sum = d["concept"]["confirm"]
            else:
                st.detector = ADWIN.from_bytes(d["adwin"].encode())
            st.adwin_start = d["adwin_start"]
            st.ewma, st.rise_from, st.rise_until = d["rise"]
            st.episodes = {k: SlowEpisode(**e) for k, e in d["episodes"].items()}
            if "learn_conf" in d:
                st.learn_conf = list(d["learn_conf"])
            if "evidence" in d:
                ev = d["evidence"]
                st.cells = [list(c) for c in ev["cells"]]
                st.cell = list(ev["open"])
            st.drift_diag = dict(d["drift_diag"])
            st.last = dict(d["last"])
            st.origin = str(d.get("origin", ""))
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
    #: Its prediction's digest (computed once: held labels are retried every batch);
    #: the join gives the one it has computed for the label, else it is computed here.
    digest: bytes = field(default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.digest:
            self.digest = prediction_digest(self.model_id, self.prediction_id)


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
