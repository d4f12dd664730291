"""Reference profiles: what a model's live data is compared with.

A reference is built once from training (or validation) data and stored, versioned and
signed, in Redis. Per numeric feature it fixes ``B`` quantile bins (the live sketches
use the same bins, so every window test is a comparison of two count vectors), the
reference counts, moments, range and missing rate; per categorical feature the top-K
frequencies plus an "other" bucket. For outputs it keeps the class mix and the
confidence distribution (classification) or the prediction distribution (regression).

It also carries the model's *policy*: window size, the false-alarm budget and the
thresholds calibrated from the reference itself for that budget (see
:func:`calibrate`), so a user sets one number they understand: the expected number
of events between false alarms.
"""

from __future__ import annotations

import csv
import hashlib
import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
from numpy.typing import NDArray

from driftline.contract.columnar import category_value
from driftline.contract.events import ReferenceEnvelope
from driftline.core.calibration import fit_calibration  # the slow loop's CBPE map
from driftline.core.stats import calibrate_psi_threshold
from driftline.errors import ReferenceMissing, ValidationError

__all__ = [
    "CategoricalProfile",
    "NumericProfile",
    "OutputProfile",
    "Policy",
    "ReferenceProfile",
    "TrainingData",
    "build_reference",
    "load_training_data",
]

FeatureType = Literal["numeric", "categorical"]

#: Fine bins per numeric feature: KS on the sketch is exact to within the largest bin mass.
DEFAULT_BINS = 100
#: PSI and JS use about this many groups of fine bins (the usual PSI practice of deciles).
PSI_GROUPS = 10
DEFAULT_TOP_K = 50


@dataclass(frozen=True)
class Policy:
    """How a model is watched. Stored with its reference; every field has a default."""

    window_events: int = 500
    window_seconds: float = 0.0
    min_window_events: int = 50
    false_alarm_events: float = 1_000_000.0
    #: Effect-size floor: a window drifts only if PSI also reaches this (0.1 = moderate).
    psi_floor: float = 0.1
    ph_delta: float = 0.25
    ph_threshold: float = 50.0
    ph_min_instances: int = 30
    #: No fading: with alpha < 1 the faded sums settle into a stationary spread (about
    #: 1/sqrt(2(1-alpha)) = 70 for river's default 0.9999) that crosses any practical
    #: threshold on stationary data, so Page-Hinkley would raise false alarms.
    ph_alpha: float = 1.0
    #: Standardised values are clipped to +-this before Page-Hinkley (robust to outliers).
    ph_clip: float = 3.0
    adwin_delta: float = 1e-5
    #: ADWIN watches the mean confidence of blocks of this many events.
    adwin_block: int = 32
    resolve_after_windows: int = 2
    cooldown_windows: int = 2
    #: Alert on data quality when a rate exceeds the reference rate by this much.
    quality_margin: float = 0.05
    feature_overrides: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    @property
    def alpha_window(self) -> float:
        """Family-wise false-alarm probability per window: events per window / budget."""
        return min(0.5, self.window_events / self.false_alarm_events)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for storage."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["feature_overrides"] = {k: dict(v) for k, v in self.feature_overrides.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Policy:
        """Inverse of :meth:`to_dict`; unknown keys are ignored (forward compatible)."""
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class NumericProfile:
    """Reference distribution of one numeric feature on fixed quantile bins."""

    edges: NDArray[np.float64]
    counts: NDArray[np.int64]
    #: Start index of each PSI group of fine bins (for ``np.add.reduceat``).
    groups: NDArray[np.intp]
    n: int
    missing: int
    mean: float
    std: float
    min: float
    max: float
    psi_threshold: float = 0.0

    kind: Literal["numeric"] = "numeric"

    @property
    def missing_rate(self) -> float:
        """Share of reference rows where the feature was null or absent."""
        total = self.n + self.missing
        return self.missing / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for storage."""
        return {
            "kind": "numeric",
            "edges": self.edges.tolist(),
            "counts": self.counts.tolist(),
            "groups": self.groups.tolist(),
            "n": self.n,
            "missing": self.missing,
            "mean": self.mean,
            "std": self.std,
            "min": self.min,
            "max": self.max,
            "psi_threshold": self.psi_threshold,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NumericProfile:
        """Inverse of :meth:`to_dict`."""
        edges = np.asarray(d["edges"], dtype=np.float64)
        edges.flags.writeable = False  # window sketches share it instead of copying
        return cls(
            edges=edges,
            counts=np.asarray(d["counts"], dtype=np.int64),
            groups=np.asarray(d["groups"], dtype=np.intp),
            n=int(d["n"]),
            missing=int(d["missing"]),
            mean=float(d["mean"]),
            std=float(d["std"]),
            min=float(d["min"]),
            max=float(d["max"]),
            psi_threshold=float(d.get("psi_threshold", 0.0)),
        )


@dataclass(frozen=True)
class CategoricalProfile:
    """Reference frequencies of one categorical feature: top K plus "other"."""

    categories: tuple[str, ...]
    #: ``len(categories) + 1`` counts; the last is every other category.
    counts: NDArray[np.int64]
    n: int
    missing: int
    psi_threshold: float = 0.0

    kind: Literal["categorical"] = "categorical"

    @property
    def missing_rate(self) -> float:
        """Share of reference rows where the feature was null or absent."""
        total = self.n + self.missing
        return self.missing / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for storage."""
        return {
            "kind": "categorical",
            "categories": list(self.categories),
            "counts": self.counts.tolist(),
            "n": self.n,
            "missing": self.missing,
            "psi_threshold": self.psi_threshold,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CategoricalProfile:
        """Inverse of :meth:`to_dict`."""
        return cls(
            categories=tuple(d["categories"]),
            counts=np.asarray(d["counts"], dtype=np.int64),
            n=int(d["n"]),
            missing=int(d["missing"]),
            psi_threshold=float(d.get("psi_threshold", 0.0)),
        )


FeatureProfile = NumericProfile | CategoricalProfile


@dataclass(frozen=True)
class OutputProfile:
    """Reference of the model's outputs."""

    task: Literal["classification", "regression"]
    #: Classification: predicted-class mix (classes + "other" bucket).
    classes: CategoricalProfile | None = None
    #: Classification with scores: distribution of the top score.
    confidence: NumericProfile | None = None
    #: Confidence below this is "low confidence" (the reference's 10th percentile).
    low_confidence_threshold: float = 0.0
    low_confidence_rate: float = 0.0
    #: Share of the most frequent predicted class in the reference.
    top_class_share: float = 0.0
    #: Regression: distribution of the predicted value.
    prediction: NumericProfile | None = None
    #: Accuracy on labelled reference rows (for the slow loop), if labels were given.
    accuracy: float | None = None
    #: Top score -> probability of being right, fitted on labelled reference rows with
    #: scores (``calibration.Calibration.to_dict()``); the slow loop's blind estimate.
    calibration: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for storage."""
        d = {
            "task": self.task,
            "classes": self.classes.to_dict() if self.classes else None,
            "confidence": self.confidence.to_dict() if self.confidence else None,
            "low_confidence_threshold": self.low_confidence_threshold,
            "low_confidence_rate": self.low_confidence_rate,
            "top_class_share": self.top_class_share,
            "prediction": self.prediction.to_dict() if self.prediction else None,
            "accuracy": self.accuracy,
        }
        if self.calibration is not None:  # absent key: references without labels unchanged
            d["calibration"] = dict(self.calibration)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OutputProfile:
        """Inverse of :meth:`to_dict`."""
        return cls(
            task=d["task"],
            classes=CategoricalProfile.from_dict(d["classes"]) if d.get("classes") else None,
            confidence=NumericProfile.from_dict(d["confidence"]) if d.get("confidence") else None,
            low_confidence_threshold=float(d.get("low_confidence_threshold", 0.0)),
            low_confidence_rate=float(d.get("low_confidence_rate", 0.0)),
            top_class_share=float(d.get("top_class_share", 0.0)),
            prediction=NumericProfile.from_dict(d["prediction"]) if d.get("prediction") else None,
            accuracy=d.get("accuracy"),
            calibration=d.get("calibration"),
        )


@dataclass(frozen=True)
class ReferenceProfile:
    """A model's reference: feature profiles, output profile and policy."""

    reference_id: str
    model_id: str
    model_version: str
    features: Mapping[str, FeatureProfile]
    outputs: OutputProfile
    policy: Policy
    row_count: int
    source: str = ""
    created_at: int = 0

    def numeric_features(self) -> list[str]:
        """Names of numeric features, in stored order."""
        return [k for k, v in self.features.items() if isinstance(v, NumericProfile)]

    def categorical_features(self) -> list[str]:
        """Names of categorical features, in stored order."""
        return [k for k, v in self.features.items() if isinstance(v, CategoricalProfile)]

    def to_envelope(self) -> ReferenceEnvelope:
        """The versioned envelope stored in Redis."""
        return ReferenceEnvelope(
            reference_id=self.reference_id,
            model_id=self.model_id,
            model_version=self.model_version,
            created_at=self.created_at,
            source=self.source,
            row_count=self.row_count,
            profile={
                "features": {k: v.to_dict() for k, v in self.features.items()},
                "outputs": self.outputs.to_dict(),
                "policy": self.policy.to_dict(),
            },
        )

    def to_bytes(self) -> bytes:
        """Wire/storage form: the JSON envelope."""
        return orjson.dumps(self.to_envelope().model_dump(mode="json"))

    @classmethod
    def from_bytes(cls, data: bytes) -> ReferenceProfile:
        """Parse a stored envelope (validated against the envelope schema)."""
        env = ReferenceEnvelope.model_validate(orjson.loads(data))
        return cls.from_envelope(env)

    @classmethod
    def from_envelope(cls, env: ReferenceEnvelope) -> ReferenceProfile:
        """Build the profile objects from a validated envelope."""
        p = env.profile
        feats: dict[str, FeatureProfile] = {}
        for name, d in p["features"].items():
            feats[name] = (
                NumericProfile.from_dict(d)
                if d["kind"] == "numeric"
                else CategoricalProfile.from_dict(d)
            )
        return cls(
            reference_id=env.reference_id,
            model_id=env.model_id,
            model_version=env.model_version,
            features=feats,
            outputs=OutputProfile.from_dict(p["outputs"]),
            policy=Policy.from_dict(p.get("policy", {})),
            row_count=env.row_count,
            source=env.source,
            created_at=env.created_at,
        )

    def with_version(self, version: str) -> ReferenceProfile:
        """The same profile stored under another model version (e.g. ``default``)."""
        return ReferenceProfile(
            reference_id=self.reference_id,
            model_id=self.model_id,
            model_version=version,
            features=self.features,
            outputs=self.outputs,
            policy=self.policy,
            row_count=self.row_count,
            source=self.source,
            created_at=self.created_at,
        )


# --------------------------------------------------------------------------- building


@dataclass
class TrainingData:
    """Rows to build a reference from: features, and optionally outputs and labels."""

    features: list[dict[str, Any]]
    predictions: list[Any] | None = None
    scores: list[dict[str, float] | None] | None = None
    labels: list[Any] | None = None


def _is_number(v: object) -> bool:
    return type(v) is int or type(v) is float


def infer_types(rows: Sequence[Mapping[str, Any]]) -> dict[str, FeatureType]:
    """Numeric when every non-null value is a number; otherwise categorical."""
    types: dict[str, FeatureType] = {}
    for row in rows:
        for k, v in row.items():
            if v is None:
                types.setdefault(k, "numeric")
            elif not _is_number(v):
                types[k] = "categorical"
            else:
                types.setdefault(k, "numeric")
    return types


def numeric_profile(values: NDArray[np.float64], bins: int = DEFAULT_BINS) -> NumericProfile:
    """Profile of one numeric column (NaN = missing): quantile edges, counts, moments."""
    finite = values[np.isfinite(values)]
    missing = int(values.size - finite.size)
    if finite.size == 0:
        edges = np.zeros(0, dtype=np.float64)
        return NumericProfile(
            edges, np.zeros(1, np.int64), np.zeros(1, np.intp), 0, missing, 0.0, 0.0, 0.0, 0.0
        )
    qs = np.arange(1, bins) / bins
    # inverted_cdf puts edges on observed values, so tied values share one bin.
    edges = np.unique(np.quantile(finite, qs, method="inverted_cdf")).astype(np.float64)
    edges = edges[edges < finite.max()]  # the last bin must not be empty by construction
    edges.flags.writeable = False  # window sketches share it instead of copying
    counts = np.bincount(
        np.searchsorted(edges, finite, side="left"), minlength=edges.size + 1
    ).astype(np.int64)
    return NumericProfile(
        edges=edges,
        counts=counts,
        groups=psi_groups(counts),
        n=int(finite.size),
        missing=missing,
        mean=float(finite.mean()),
        std=float(finite.std()),
        min=float(finite.min()),
        max=float(finite.max()),
    )


def psi_groups(counts: NDArray[np.int64], groups: int = PSI_GROUPS) -> NDArray[np.intp]:
    """Start indices that cut fine bins into about ``groups`` groups of equal reference mass."""
    total = counts.sum()
    if total == 0 or counts.size <= groups:
        return np.arange(counts.size, dtype=np.intp)
    cum = np.cumsum(counts) / total
    starts = [0]
    for k in range(1, groups):
        i = int(np.searchsorted(cum, k / groups, side="left")) + 1
        if starts[-1] < i < counts.size:
            starts.append(i)
    return np.asarray(starts, dtype=np.intp)


def categorical_profile(values: Sequence[Any], top_k: int = DEFAULT_TOP_K) -> CategoricalProfile:
    """Profile of one categorical column: top-K categories plus the rest as "other"."""
    cats = [category_value(v) for v in values]
    present = [c for c in cats if c is not None]
    freq = Counter(present)
    # Ties broken by name so a rebuild from the same data is byte-identical.
    top = sorted(freq.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
    categories = tuple(k for k, _ in top)
    counts = np.array([c for _, c in top] + [len(present) - sum(c for _, c in top)], np.int64)
    return CategoricalProfile(categories, counts, n=len(present), missing=len(cats) - len(present))


def _column(rows: Sequence[Mapping[str, Any]], name: str) -> NDArray[np.float64]:
    return np.fromiter(
        (v if _is_number(v) else math.nan for v in (r.get(name) for r in rows)),
        dtype=np.float64,
        count=len(rows),
    )


def build_reference(
    data: TrainingData,
    model_id: str,
    model_version: str,
    *,
    policy: Policy | None = None,
    feature_types: Mapping[str, FeatureType] | None = None,
    bins: int = DEFAULT_BINS,
    top_k: int = DEFAULT_TOP_K,
    source: str = "",
    seed: int = 0,
    created_at: int | None = None,
) -> ReferenceProfile:
    """Build a reference profile and calibrate its thresholds.

    Parameters
    ----------
    data
        Training rows; outputs (predictions, scores) and labels are optional.
    model_id, model_version
        Which model the reference belongs to (``default`` is the per-model fallback).
    policy
        Window size, false-alarm budget and detector settings (defaults otherwise).
    feature_types
        Declared types; undeclared features are inferred (:func:`infer_types`).
    seed
        Seed of the calibration resampling, so a rebuild is byte-identical.
    """
    rows = data.features
    if not rows:
        raise ValidationError("no training rows")
    policy = policy or Policy()
    types = {**infer_types(rows), **(feature_types or {})}
    feats: dict[str, FeatureProfile] = {}
    for name in sorted(types):
        if types[name] == "numeric":
            feats[name] = numeric_profile(_column(rows, name), bins)
        else:
            feats[name] = categorical_profile([r.get(name) for r in rows], top_k)
    outputs = _output_profile(data, bins)
    feats, outputs = calibrate(feats, outputs, policy, seed)
    created = int(time.time() * 1000) if created_at is None else created_at
    digest = hashlib.blake2b(
        orjson.dumps(
            [
                model_id,
                model_version,
                {k: v.to_dict() for k, v in feats.items()},
                outputs.to_dict(),
                policy.to_dict(),
            ],
            option=orjson.OPT_SERIALIZE_NUMPY,
        ),
        digest_size=6,
    ).hexdigest()
    return ReferenceProfile(
        reference_id=f"{model_id}:{model_version}:{digest}",
        model_id=model_id,
        model_version=model_version,
        features=feats,
        outputs=outputs,
        policy=policy,
        row_count=len(rows),
        source=source,
        created_at=created,
    )


def _output_profile(data: TrainingData, bins: int) -> OutputProfile:
    preds = data.predictions
    if preds is None:
        return OutputProfile(task="classification")
    if all(_is_number(p) for p in preds) and not data.scores:
        values = np.asarray(preds, dtype=np.float64)
        return OutputProfile(task="regression", prediction=numeric_profile(values, bins))
    classes = categorical_profile(preds, top_k=DEFAULT_TOP_K)
    top_share = float(classes.counts.max() / max(1, classes.n))
    confidence = None
    low_thr = low_rate = 0.0
    if data.scores:
        conf = np.fromiter(
            (max(s.values()) if s else math.nan for s in data.scores),
            np.float64,
            count=len(data.scores),
        )
        confidence = numeric_profile(conf, bins)
        finite = conf[np.isfinite(conf)]
        low_thr = float(np.quantile(finite, 0.1, method="inverted_cdf")) if finite.size else 0.0
        low_rate = float((finite < low_thr).mean()) if finite.size else 0.0
    accuracy = None
    calibration = None
    if data.labels is not None:
        correct = [str(p) == str(y) for p, y in zip(preds, data.labels, strict=True)]
        accuracy = float(np.mean(correct))
        if data.scores:
            tops = [max(s.values()) if s else math.nan for s in data.scores]
            cal = fit_calibration(tops, correct)
            calibration = cal.to_dict() if cal is not None else None
    return OutputProfile(
        task="classification",
        classes=classes,
        confidence=confidence,
        low_confidence_threshold=low_thr,
        low_confidence_rate=low_rate,
        top_class_share=top_share,
        accuracy=accuracy,
        calibration=calibration,
    )


def _grouped(counts: NDArray[np.int64], groups: NDArray[np.intp]) -> NDArray[np.int64]:
    return np.add.reduceat(counts, groups) if counts.size else counts


def calibrate(
    feats: Mapping[str, FeatureProfile], outputs: OutputProfile, policy: Policy, seed: int
) -> tuple[dict[str, FeatureProfile], OutputProfile]:
    """Set each PSI threshold from the reference for the policy's false-alarm budget.

    Each window runs one test per feature (and per output test). The family-wise
    false-alarm probability per window is ``window_events / false_alarm_events``;
    split over the tests (Bonferroni), each threshold is the PSI that a window drawn
    from the reference itself exceeds with that probability, estimated by resampling
    the reference (:func:`driftline.core.stats.calibrate_psi_threshold`). The effective
    threshold is never below ``policy.psi_floor`` (trivial shifts never alert).
    """
    rng = np.random.default_rng(seed)
    n_tests = len(feats) + 2
    alpha = policy.alpha_window / n_tests

    def thr(counts: NDArray[np.int64], name: str) -> float:
        override = policy.feature_overrides.get(name, {}).get("psi_threshold")
        if override is not None:
            return float(override)
        if counts.sum() == 0 or np.count_nonzero(counts) < 2:
            return policy.psi_floor
        t = calibrate_psi_threshold(counts, policy.window_events, alpha, rng)
        return max(policy.psi_floor, float(t))

    out: dict[str, FeatureProfile] = {}
    for name, prof in feats.items():
        if isinstance(prof, NumericProfile):
            t = thr(_grouped(prof.counts, prof.groups), name)
            out[name] = NumericProfile(**{**prof.__dict__, "psi_threshold": t})
        else:
            t = thr(prof.counts, name)
            out[name] = CategoricalProfile(**{**prof.__dict__, "psi_threshold": t})

    def num(p: NumericProfile | None, name: str) -> NumericProfile | None:
        if p is None:
            return None
        return NumericProfile(
            **{**p.__dict__, "psi_threshold": thr(_grouped(p.counts, p.groups), name)}
        )

    classes = outputs.classes
    if classes is not None:
        classes = CategoricalProfile(
            **{**classes.__dict__, "psi_threshold": thr(classes.counts, "__class__")}
        )
    new_out = OutputProfile(
        task=outputs.task,
        classes=classes,
        confidence=num(outputs.confidence, "__confidence__"),
        low_confidence_threshold=outputs.low_confidence_threshold,
        low_confidence_rate=outputs.low_confidence_rate,
        top_class_share=outputs.top_class_share,
        prediction=num(outputs.prediction, "__prediction__"),
        accuracy=outputs.accuracy,
        calibration=outputs.calibration,
    )
    return out, new_out


# --------------------------------------------------------------------------- loading


def load_training_data(
    path: Path,
    *,
    prediction_column: str = "prediction",
    score_prefix: str = "score.",
    label_column: str = "label",
) -> TrainingData:
    """Read training rows from CSV, Parquet or JSONL (prediction events or flat rows).

    CSV and Parquet: every column is a feature except ``prediction_column``,
    ``label_column`` and columns starting with ``score_prefix`` (class scores).
    JSONL of prediction events: ``features``, ``prediction`` and ``scores`` are used.
    """
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _from_events(path)
    if suffix == ".csv":
        with path.open(newline="") as fh:
            raw_rows: list[dict[str, Any]] = [
                {k: _csv_value(v) for k, v in row.items()} for row in csv.DictReader(fh)
            ]
    elif suffix in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:  # pragma: no cover - optional dependency
            raise ReferenceMissing("Parquet needs pyarrow: pip install driftline[parquet]") from exc
        raw_rows = pq.read_table(path).to_pylist()
    else:
        raise ValidationError(f"unsupported training data format: {path.suffix}")
    return _split_columns(raw_rows, prediction_column, score_prefix, label_column)


def _csv_value(v: str | None) -> Any:
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f


def _split_columns(
    rows: Iterable[Mapping[str, Any]], pred_col: str, score_prefix: str, label_col: str
) -> TrainingData:
    feats: list[dict[str, Any]] = []
    preds: list[Any] = []
    scores: list[dict[str, float] | None] = []
    labels: list[Any] = []
    has_pred = has_scores = has_labels = False
    for row in rows:
        f: dict[str, Any] = {}
        s: dict[str, float] = {}
        for k, v in row.items():
            if k == pred_col:
                has_pred = True
                preds.append(v)
            elif k == label_col:
                has_labels = True
                labels.append(v)
            elif k.startswith(score_prefix):
                has_scores = True
                if v is not None:
                    s[k[len(score_prefix) :]] = float(v)
            else:
                f[k] = v
        feats.append(f)
        scores.append(s or None)
    return TrainingData(
        features=feats,
        predictions=preds if has_pred else None,
        scores=scores if has_scores else None,
        labels=labels if has_labels else None,
    )


def _from_events(path: Path) -> TrainingData:
    feats: list[dict[str, Any]] = []
    preds: list[Any] = []
    scores: list[dict[str, float] | None] = []
    labels: list[Any] = []
    with path.open("rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            obj = orjson.loads(line)
            feats.append(dict(obj["features"]))
            preds.append(obj.get("prediction"))
            scores.append(obj.get("scores"))
            labels.append(obj.get("label"))
    has_scores = any(s is not None for s in scores)
    has_labels = any(lbl is not None for lbl in labels)
    return TrainingData(
        feats, preds, scores if has_scores else None, labels if has_labels else None
    )


def features_from_events(events: Sequence[Mapping[str, Any]]) -> TrainingData:
    """Training data from live prediction events (the warm-up reference)."""
    return TrainingData(
        features=[dict(e["features"]) for e in events],
        predictions=[e.get("prediction") for e in events],
        scores=[e.get("scores") for e in events] if any(e.get("scores") for e in events) else None,
    )
