"""What the fast loop remembers per stream, and its versioned bytes.

A stream is one (model, version, segment). Its :class:`ModelState` holds the open
window's sketches (one per feature and output, on the reference's bins), a
Page-Hinkley detector per numeric feature, ADWIN on the mean confidence of blocks of
events, the multivariate detector (when the reference has a multivariate model), one
:class:`Episode` per alert kind, the event clock and the counters. The
worker stores it in Redis after every batch; a replay keeps it in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from driftline.contract.codec import pack, unpack
from driftline.contract.keys import StateKey
from driftline.core.detectors import ADWIN, PageHinkley
from driftline.core.episode import Episode
from driftline.core.multivariate import MultivariateDetector
from driftline.core.reference import CategoricalProfile, NumericProfile, ReferenceProfile
from driftline.core.sketches import CategoricalSketch, NumericSketch

__all__ = ["STATE_FORMAT", "DriftEpisode", "ModelState", "WindowState"]

STATE_FORMAT = 1


@dataclass
class DriftEpisode(Episode):
    """An episode of the fast loop: also the feature its first alert named."""

    feature: str | None = None


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
    unknown_features: int = 0
    classes: CategoricalSketch | None = None
    confidence: NumericSketch | None = None
    low_confidence: int = 0
    prediction: NumericSketch | None = None
    ph: dict[str, PageHinkley] = field(default_factory=dict)
    adwin: ADWIN | None = None
    #: Confidences of the unfinished ADWIN block (fewer than ``adwin_block``).
    block: list[float] = field(default_factory=list)
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
    #: Early detections (Page-Hinkley per feature, ADWIN) inside the open window.
    early: dict[str, float] = field(default_factory=dict)
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
        """Start watching against ``ref``: empty window sketches, new detectors."""
        pol = ref.policy
        self.reference_id = ref.reference_id
        self.num = {}
        self.cat = {}
        self.ph = {}
        for name, prof in ref.features.items():
            if isinstance(prof, NumericProfile):
                self.num[name] = NumericSketch.zero(prof.edges, prof.min, prof.max)
                self.ph[name] = PageHinkley(
                    min_instances=pol.ph_min_instances,
                    delta=pol.ph_delta,
                    threshold=pol.ph_threshold,
                    alpha=pol.ph_alpha,
                )
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
        self.adwin = ADWIN(delta=pol.adwin_delta) if out.confidence else None
        self.mv = MultivariateDetector(ref.multivariate) if ref.multivariate else None
        self.type_mismatch = {name: 0 for name in ref.features}
        self.unknown_features = 0
        self.low_confidence = 0
        self.early = {}

    # ------------------------------------------------------------------ bytes
    def to_bytes(self) -> bytes:
        """Versioned, pickle-free record (sketches and detectors as nested records)."""

        def s(b: bytes) -> str:
            return b.decode()

        # The multivariate detector's record only when there is one: a state without it
        # is the same bytes as before it existed.
        mv = {"mv": s(self.mv.to_bytes())} if self.mv is not None else {}
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
                "ph": {k: s(v.to_bytes()) for k, v in self.ph.items()},
                "adwin": s(self.adwin.to_bytes()) if self.adwin else None,
                "block": self.block,
                "episodes": {k: e.to_dict() for k, e in self.episodes.items()},
                "max_event_ms": self.max_event_ms,
                "late_events": self.late_events,
                "future_events": self.future_events,
                "late_run": [self.late_run, self.late_run_min, self.late_run_max],
                "events": self.events,
                "warmup": self.warmup,
                "early": self.early,
                "origin": self.origin,
            },
        )

    @classmethod
    def from_bytes(cls, data: bytes, ref: ReferenceProfile | None) -> ModelState:
        """Inverse of :meth:`to_bytes`; sketches are rebuilt on ``ref``'s bins."""
        d = unpack(data, "model_state", STATE_FORMAT)
        st = cls(key=StateKey.decode(d["key"]))
        st.reference_id = d["reference_id"]
        st.window = WindowState(**d["window"])
        if ref is not None and ref.reference_id == st.reference_id:
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
            st.ph = {k: PageHinkley.from_bytes(b.encode()) for k, b in d["ph"].items()}
            st.adwin = ADWIN.from_bytes(d["adwin"].encode()) if d["adwin"] else None
            if ref.multivariate is not None:
                mv = d.get("mv")
                st.mv = (
                    MultivariateDetector.from_bytes(mv.encode(), ref.multivariate)
                    if mv is not None
                    else MultivariateDetector(ref.multivariate)
                )
        elif ref is not None:
            # The reference changed (rebuilt or replaced): keep episodes, restart windows.
            st.attach(ref)
        st.type_mismatch = d["type_mismatch"] if st.reference_id == d["reference_id"] else {}
        st.unknown_features = d["unknown_features"]
        st.low_confidence = d["low_confidence"]
        st.block = d["block"]
        st.episodes = {k: DriftEpisode(**e) for k, e in d["episodes"].items()}
        st.max_event_ms = d["max_event_ms"]
        st.late_events = d["late_events"]
        st.future_events = d["future_events"]
        # Absent from states written before the run was kept: no run then.
        st.late_run, st.late_run_min, st.late_run_max = d.get("late_run", (0, -1, -1))
        st.events = d["events"]
        st.warmup = d["warmup"]
        st.early = d["early"]
        st.origin = d.get("origin", "")
        return st
