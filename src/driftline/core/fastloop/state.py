"""What the fast loop remembers per stream, and its versioned bytes.

A stream is one (model, version, segment). Its :class:`ModelState` holds the open
window's sketches (one per feature and output, on the reference's bins), the stream's
stacked detector banks (:class:`~driftline.core.detectors.bank.CusumBank`: integer
state, the rows live in the reference), the multivariate detector (when the reference
has a multivariate model), one :class:`DriftEpisode` per alert kind, the
event clock and the counters. The worker stores it in Redis after every batch; a
replay keeps it in memory.

Format 2 (issue 13) replaced the Page-Hinkley and ADWIN detectors with the bank; a
format-1 state is read with its detectors restarted (as when the reference changes):
its windows start afresh and an episode left firing resolves at the next batch
(:func:`driftline.core.fastloop.episodes.reconcile`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from driftline.contract.codec import pack
from driftline.contract.keys import StateKey
from driftline.core.detectors.bank import BankLayout, CusumBank
from driftline.core.episode import Episode
from driftline.core.multivariate import MultivariateDetector
from driftline.core.reference import CategoricalProfile, NumericProfile, ReferenceProfile
from driftline.core.sketches import CategoricalSketch, NumericSketch
from driftline.errors import StateCorrupt

__all__ = ["STATE_FORMAT", "UNKNOWN_NAMES_KEPT", "DriftEpisode", "ModelState", "WindowState"]

STATE_FORMAT = 2
#: How many names of unknown features a state keeps (a stream that sends a new name
#: with every event must not grow its state).
UNKNOWN_NAMES_KEPT = 100


@dataclass
class DriftEpisode(Episode):
    """An episode of the fast loop: the feature its alert named and, for the kinds the
    detector banks drive (``input_drift``, ``output_drift``), what the episode saw.
    """

    feature: str | None = None
    #: Event time and stream event count where the episode's evidence starts (the open
    #: window's start when it fired).
    start_ms: int = -1
    start_event: int = 0
    #: ``updated`` alerts published in this episode (the next one's id takes this).
    updates: int = 0
    #: Every unit that drifted in the episode: ``[peak |effect|, statistic, smallest
    #: watched shift]`` (effect in reference sd of its channel).
    features: dict[str, list[Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form."""
        d = dict(self.__dict__)
        d["features"] = {k: list(v) for k, v in self.features.items()}
        return d


@dataclass
class WindowState:
    """The open window: its number, events, event-time span and (time windows) slot."""

    index: int = 0
    count: int = 0
    start_ms: int = -1
    end_ms: int = -1
    #: Time windows: the aligned start of the open window.
    open_ms: int = -1
    #: Events of the window that are neither late nor future-dated.
    on_time: int = 0
    #: The newest time before the one that is ``end_ms`` now, and the newest after it:
    #: at the close they tell whether ``end_ms`` was one stray event far ahead.
    top_before: int = -1
    after_top: int = -1


@dataclass
class ModelState:
    """Everything the monitor remembers about one (model, version, segment)."""

    key: StateKey
    reference_id: str = ""
    window: WindowState = field(default_factory=WindowState)
    num: dict[str, NumericSketch] = field(default_factory=dict)
    cat: dict[str, CategoricalSketch] = field(default_factory=dict)
    type_mismatch: dict[str, int] = field(default_factory=dict)
    #: Events of the open window that carried a feature the reference has not.
    unknown_features: int = 0
    #: Names of the features events carried that the reference has not, first seen
    #: first, at most :data:`UNKNOWN_NAMES_KEPT` (since the reference was attached):
    #: what the data-quality signal on unknown features is about.
    unknown_names: list[str] = field(default_factory=list)
    #: Whether more names than those were seen.
    unknown_names_more: bool = False
    classes: CategoricalSketch | None = None
    confidence: NumericSketch | None = None
    low_confidence: int = 0
    prediction: NumericSketch | None = None
    #: Every feature's and output's detector bank, stacked (None: the reference has none).
    bank: CusumBank | None = None
    episodes: dict[str, DriftEpisode] = field(default_factory=dict)
    #: The event clock: the newest time of an event that is not future-dated.
    max_event_ms: int = -1
    late_events: int = 0
    future_events: int = 0
    #: Late events held since the open window's only on-time event (their verdict
    #: waits: see :mod:`driftline.core.fastloop.clock`, rule 5), and their time span.
    late_run: int = 0
    late_run_min: int = -1
    late_run_max: int = -1
    events: int = 0
    warmup: list[dict[str, Any]] = field(default_factory=list)
    #: The multivariate detector, when the reference has a multivariate model.
    mv: MultivariateDetector | None = None
    #: ``prediction_id`` of the first event this state saw: part of its alert ids, so
    #: two states of one stream (its events moved to another partition, issue 16) never
    #: publish an episode under the same id. "" for states older than the field, whose
    #: ids keep the earlier form.
    origin: str = ""

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def fresh(cls, key: StateKey, ref: ReferenceProfile | None) -> ModelState:
        """A new state for ``key`` watched against ``ref`` (None: warming up)."""
        st = cls(key=key)
        if ref is not None:
            st.attach(ref)
        return st

    def episode(self, kind: str) -> DriftEpisode:
        """The episode of alert kind ``kind`` (created on first use)."""
        return self.episodes.setdefault(kind, DriftEpisode())

    def attach(self, ref: ReferenceProfile) -> None:
        """Start watching against ``ref``: empty window sketches, new detector banks."""
        self.reference_id = ref.reference_id
        self.num = {}
        self.cat = {}
        for name, prof in ref.features.items():
            if isinstance(prof, NumericProfile):
                self.num[name] = NumericSketch.zero(prof.edges, prof.min, prof.max)
            else:
                self.cat[name] = CategoricalSketch.zero(prof.categories)
        out = ref.outputs
        self.classes = CategoricalSketch.zero(out.classes.categories) if out.classes else None
        self.confidence = (
            NumericSketch.zero(out.confidence.edges, out.confidence.min, out.confidence.max)
            if out.confidence
            else None
        )
        self.prediction = (
            NumericSketch.zero(out.prediction.edges, out.prediction.min, out.prediction.max)
            if out.prediction
            else None
        )
        self.bank = new_bank(ref)
        self.mv = MultivariateDetector(ref.multivariate) if ref.multivariate else None
        self.type_mismatch = {name: 0 for name in ref.features}
        self.unknown_features = 0
        self.unknown_names = []
        self.unknown_names_more = False
        self.low_confidence = 0

    # ------------------------------------------------------------------ bytes
    def to_bytes(self) -> bytes:
        """Versioned, pickle-free record (sketches and detectors as nested records)."""

        def s(b: bytes) -> str:
            return b.decode()

        # The multivariate detector's record only when there is one: a state without it
        # is the same bytes as before it existed.
        mv: dict[str, Any] = {"mv": s(self.mv.to_bytes())} if self.mv is not None else {}
        # Likewise the unknown features' names, only when some were seen.
        if self.unknown_names:
            mv["unknown_names"] = self.unknown_names
            if self.unknown_names_more:
                mv["unknown_names_more"] = True
        return pack(
            "model_state",
            STATE_FORMAT,
            {
                **mv,
                "key": self.key.encode(),
                "reference_id": self.reference_id,
                "window": self.window.__dict__,
                "num": {k: s(v.to_bytes()) for k, v in self.num.items()},
                "cat": {k: s(v.to_bytes()) for k, v in self.cat.items()},
                "type_mismatch": self.type_mismatch,
                "unknown_features": self.unknown_features,
                "classes": s(self.classes.to_bytes()) if self.classes else None,
                "confidence": s(self.confidence.to_bytes()) if self.confidence else None,
                "low_confidence": self.low_confidence,
                "prediction": s(self.prediction.to_bytes()) if self.prediction else None,
                "bank": self.bank.state_fields() if self.bank is not None else None,
                "episodes": {k: e.to_dict() for k, e in self.episodes.items()},
                "max_event_ms": self.max_event_ms,
                "late_events": self.late_events,
                "future_events": self.future_events,
                "late_run": [self.late_run, self.late_run_min, self.late_run_max],
                "events": self.events,
                "warmup": self.warmup,
                "origin": self.origin,
            },
        )

    @classmethod
    def from_bytes(cls, data: bytes, ref: ReferenceProfile | None) -> ModelState:
        """Inverse of :meth:`to_bytes`; sketches are rebuilt on ``ref``'s bins.

        A format-1 record (Page-Hinkley and ADWIN, before the detector banks) is read
        with its detectors restarted, as when the reference changes.

        Raises
        ------
        StateCorrupt
            Not a ``model_state`` record of format 1 or 2, or a malformed field.
        """
        d, version = _unpack(data)
        st = cls(key=StateKey.decode(d["key"]))
        st.reference_id = d["reference_id"]
        st.window = WindowState(**d["window"])
        if ref is not None and ref.reference_id == st.reference_id and version == STATE_FORMAT:
            for k, b in d["num"].items():
                prof = ref.features[k]
                assert isinstance(prof, NumericProfile)
                st.num[k] = NumericSketch.from_bytes(b.encode(), edges=prof.edges)
            for k, b in d["cat"].items():
                cprof = ref.features[k]
                assert isinstance(cprof, CategoricalProfile)
                st.cat[k] = CategoricalSketch.from_bytes(b.encode(), categories=cprof.categories)
            out = ref.outputs
            if d["classes"] and out.classes:
                st.classes = CategoricalSketch.from_bytes(
                    d["classes"].encode(), categories=out.classes.categories
                )
            if d["confidence"] and out.confidence:
                st.confidence = NumericSketch.from_bytes(
                    d["confidence"].encode(), edges=out.confidence.edges
                )
            if d["prediction"] and out.prediction:
                st.prediction = NumericSketch.from_bytes(
                    d["prediction"].encode(), edges=out.prediction.edges
                )
            st.bank = new_bank(ref)
            if st.bank is not None and d["bank"] is not None:
                st.bank.load_state(d["bank"])
            if ref.multivariate is not None:
                mv = d.get("mv")
                st.mv = (
                    MultivariateDetector.from_bytes(mv.encode(), ref.multivariate)
                    if mv is not None
                    else MultivariateDetector(ref.multivariate)
                )
        elif ref is not None:
            # The reference changed (rebuilt or replaced), or the record predates the
            # banks: keep episodes and counters, restart windows and detectors.
            st.attach(ref)
            if version != STATE_FORMAT:
                st.window = WindowState(index=st.window.index)
        same = st.reference_id == d["reference_id"] and version == STATE_FORMAT
        st.type_mismatch = d["type_mismatch"] if same else {}
        st.unknown_features = d["unknown_features"]
        names = d.get("unknown_names", []) if same else []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise StateCorrupt("model_state: unknown_names is not a list of names")
        st.unknown_names = names[:UNKNOWN_NAMES_KEPT]
        st.unknown_names_more = bool(d.get("unknown_names_more", False)) and bool(names)
        st.low_confidence = d["low_confidence"]
        st.episodes = {k: DriftEpisode(**e) for k, e in d["episodes"].items()}
        st.max_event_ms = d["max_event_ms"]
        st.late_events = d["late_events"]
        st.future_events = d["future_events"]
        # Absent from states written before the run was kept: no run then.
        st.late_run, st.late_run_min, st.late_run_max = d.get("late_run", (0, -1, -1))
        st.events = d["events"]
        st.warmup = d["warmup"]
        st.origin = d.get("origin", "")
        return st


def new_bank(ref: ReferenceProfile) -> CusumBank | None:
    """A fresh stacked bank of ``ref``'s detector banks (None: it has none)."""
    plans = [plan for _, _, plan in ref.banks()]
    return CusumBank(BankLayout.of(plans)) if plans else None


def _unpack(data: bytes) -> tuple[dict[str, Any], int]:
    """A ``model_state`` record of format 1 or 2 and its format."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise StateCorrupt("model_state: record is not valid JSON") from None
    if not isinstance(obj, dict) or obj.get("t") != "model_state":
        raise StateCorrupt("expected a 'model_state' record")
    version = obj.get("v")
    if version not in (1, STATE_FORMAT) or isinstance(version, bool):
        raise StateCorrupt(f"model_state: format version {version!r} is not 1 or {STATE_FORMAT}")
    del obj["t"], obj["v"]
    return obj, int(version)
