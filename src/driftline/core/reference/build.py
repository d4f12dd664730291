"""Building a reference profile from training rows (or columns) and calibrating it.

A user sets one number they understand, the expected number of events between false
alarms; :func:`calibrate` turns it into per-feature thresholds estimated from the
reference itself.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson
from numpy.typing import NDArray

from driftline.contract.columnar import category_value, label_class
from driftline.core.calibration import fit_calibration  # the slow loop's CBPE map
from driftline.core.multivariate import (
    CategoricalInput,
    MultivariateProfile,
    MultivariateSettings,
    NumericInput,
    fit_multivariate,
)
from driftline.core.reference import banks
from driftline.core.reference.profile import (
    DEFAULT_BINS,
    DEFAULT_TOP_K,
    PSI_GROUPS,
    CategoricalProfile,
    FeatureProfile,
    FeatureType,
    NumericProfile,
    OutputProfile,
    Policy,
    ReferenceProfile,
)
from driftline.core.stats import calibrate_psi_threshold
from driftline.errors import ValidationError

__all__ = [
    "TrainingData",
    "build_reference",
    "calibrate",
    "categorical_profile",
    "features_from_events",
    "infer_types",
    "numeric_profile",
    "psi_groups",
]


@dataclass
class TrainingData:
    """Rows to build a reference from: features, and optionally outputs and labels.

    Features come as rows (``features``: one mapping per row, types inferred by
    :func:`infer_types`) or, from files and tables, as typed columns (``columns`` with
    ``column_types``: a float64 array per numeric feature, NaN = missing, and a
    sequence of values per categorical one); scores likewise as one mapping per row
    (``scores``) or a float64 array per class (``score_columns``, NaN = no score).
    """

    features: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[Any] | None = None
    scores: list[dict[str, float] | None] | None = None
    labels: list[Any] | None = None
    columns: Mapping[str, Any] | None = None
    column_types: Mapping[str, FeatureType] | None = None
    score_columns: Mapping[str, NDArray[np.float64]] | None = None
    #: ``classification`` or ``regression``; ``None``: inferred from the outputs.
    task: Literal["classification", "regression"] | None = None

    @property
    def row_count(self) -> int:
        """Rows of training data."""
        if self.columns is None:
            return len(self.features)
        for col in self.columns.values():
            return len(col)
        return len(self.predictions) if self.predictions is not None else 0

    def has_scores(self) -> bool:
        """Whether any row has class scores."""
        return bool(self.score_columns) or bool(self.scores)

    def top_scores(self) -> NDArray[np.float64]:
        """The top class score of each row (NaN where a row has none)."""
        if self.score_columns:
            stacked = np.vstack([np.asarray(c, np.float64) for c in self.score_columns.values()])
            top = np.full(stacked.shape[1], math.nan)
            present = ~np.isnan(stacked).all(axis=0)
            top[present] = np.nanmax(stacked[:, present], axis=0)
            return top
        scores = self.scores or []
        return np.fromiter(
            (max(s.values()) if s else math.nan for s in scores), np.float64, count=len(scores)
        )


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


def _column_of(values: Sequence[Any]) -> NDArray[np.float64]:
    return np.fromiter(
        (v if _is_number(v) else math.nan for v in values), dtype=np.float64, count=len(values)
    )


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
    multivariate: bool | MultivariateSettings | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ReferenceProfile:
    """Build a reference profile and calibrate its thresholds and detector banks.

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
        Seed of the calibrations' resampling and simulation, so a rebuild is
        byte-identical.
    multivariate
        Fit the multivariate model (:mod:`driftline.core.multivariate`): settings, True
        for the defaults, False for none; None (default) follows ``policy.multivariate``.
        It counts as one more feature in the split of the false-alarm budget: its
        target is ``false_alarm_events * (features + 1)``.
    progress
        ``progress(done, total)`` after each feature's detectors are calibrated (most of
        a wide model's build): ``driftline reference build`` shows it on a terminal.
    """
    n_rows = data.row_count
    if not n_rows:
        raise ValidationError("no training rows")
    policy = policy or Policy()
    feats: dict[str, FeatureProfile] = {}
    columns: dict[str, Any] = {}  # the columns as profiled (the multivariate fit reuses them)
    # Quantile points of each numeric column, for the detector banks' calibration.
    points: dict[str, banks.Points] = {}

    def numeric(name: str, values: NDArray[np.float64]) -> NumericProfile:
        columns[name] = values
        points[name] = banks.column_points(values)
        return numeric_profile(values, bins)

    if data.columns is not None:
        declared = {**(data.column_types or {}), **(feature_types or {})}
        for name in sorted(data.columns):
            col = data.columns[name]
            kind = declared.get(name) or infer_types([{name: v} for v in col]).get(name)
            if kind == "categorical":
                columns[name] = col
                feats[name] = categorical_profile(col, top_k)
            else:
                values = col if isinstance(col, np.ndarray) else _column_of(col)
                feats[name] = numeric(name, np.asarray(values, np.float64))
    else:
        rows = data.features
        types = {**infer_types(rows), **(feature_types or {})}
        for name in sorted(types):
            if types[name] == "numeric":
                feats[name] = numeric(name, _column(rows, name))
            else:
                columns[name] = [r.get(name) for r in rows]
                feats[name] = categorical_profile(columns[name], top_k)
    outputs = _output_profile(data, bins, points)
    feats, outputs = calibrate(feats, outputs, policy, seed)
    feats, outputs = banks.attach_banks(feats, outputs, policy, seed, points, progress)
    mv = None
    if multivariate is None:
        multivariate = policy.multivariate
    if multivariate:
        settings = multivariate if isinstance(multivariate, MultivariateSettings) else None
        mv = _fit_multivariate(feats, columns, policy, seed, settings)
    created = int(time.time() * 1000) if created_at is None else created_at
    hashed: list[Any] = [
        model_id,
        model_version,
        {k: v.to_dict() for k, v in feats.items()},
        outputs.to_dict(),
        policy.to_dict(),
    ]
    if mv is not None:  # references without a multivariate model keep their ids
        hashed.append(mv.to_dict())
    digest = hashlib.blake2b(
        orjson.dumps(hashed, option=orjson.OPT_SERIALIZE_NUMPY), digest_size=6
    ).hexdigest()
    return ReferenceProfile(
        reference_id=f"{model_id}:{model_version}:{digest}",
        model_id=model_id,
        model_version=model_version,
        features=feats,
        outputs=outputs,
        policy=policy,
        row_count=n_rows,
        source=source,
        created_at=created,
        multivariate=mv,
    )


def _fit_multivariate(
    feats: Mapping[str, FeatureProfile],
    columns: Mapping[str, Any],
    policy: Policy,
    seed: int,
    settings: MultivariateSettings | None,
) -> MultivariateProfile | None:
    """The multivariate model on the same rows and bins as the feature profiles."""
    nums: list[NumericInput] = []
    cats: list[CategoricalInput] = []
    for name, prof in feats.items():
        if isinstance(prof, NumericProfile):
            nums.append(NumericInput(name, columns[name], prof.edges, prof.counts))
        else:
            cats.append(CategoricalInput(name, list(columns[name]), prof.categories, prof.counts))
    return fit_multivariate(
        nums,
        cats,
        target_arl=policy.false_alarm_events * (len(feats) + 1),
        seed=seed,
        settings=settings,
    )


def _output_profile(
    data: TrainingData, bins: int, points: dict[str, banks.Points]
) -> OutputProfile:
    """The outputs' profiles; the confidence's or predicted value's quantile points go
    into ``points`` (``__confidence__``, ``__prediction__``)."""
    preds = data.predictions
    if preds is None:
        return OutputProfile(task="classification")
    regression = (
        data.task == "regression"
        if data.task is not None
        else all(_is_number(p) for p in preds) and not data.has_scores()
    )
    if regression:
        values = _column_of(preds)
        points["__prediction__"] = banks.column_points(values)
        mae = None
        if data.labels is not None:
            err = np.abs(values - _column_of(data.labels))
            err = err[np.isfinite(err)]
            mae = float(err.mean()) if err.size else None
        return OutputProfile(task="regression", prediction=numeric_profile(values, bins), mae=mae)
    classes = categorical_profile(preds, top_k=DEFAULT_TOP_K)
    top_share = float(classes.counts.max() / max(1, classes.n))
    confidence = None
    low_thr = low_rate = 0.0
    if data.has_scores():
        conf = data.top_scores()
        points["__confidence__"] = banks.column_points(conf)
        confidence = numeric_profile(conf, bins)
        finite = conf[np.isfinite(conf)]
        low_thr = float(np.quantile(finite, 0.1, method="inverted_cdf")) if finite.size else 0.0
        low_rate = float((finite < low_thr).mean()) if finite.size else 0.0
    accuracy = None
    calibration = None
    if data.labels is not None:
        # by name, as the label joiner compares them (a boolean label for a 0/1 model)
        named = [category_value(p) or "" for p in preds]
        seen = set(named)
        correct = [
            p == label_class(category_value(y) or "", seen)
            for p, y in zip(named, data.labels, strict=True)
        ]
        accuracy = float(np.mean(correct))
        if data.has_scores():
            cal = fit_calibration(data.top_scores().tolist(), correct)
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
        mae=outputs.mae,
        calibration=outputs.calibration,
    )
    return out, new_out


def features_from_events(events: Sequence[Mapping[str, Any]]) -> TrainingData:
    """Training data from live prediction events (the warm-up reference)."""
    return TrainingData(
        features=[dict(e["features"]) for e in events],
        predictions=[e.get("prediction") for e in events],
        scores=[e.get("scores") for e in events] if any(e.get("scores") for e in events) else None,
    )
