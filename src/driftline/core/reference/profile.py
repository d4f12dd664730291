"""Reference profiles: what a model's live data is compared with (the stored form).

Per numeric feature a profile fixes ``B`` quantile bins (the live sketches use the
same bins, so every window test is a comparison of two count vectors), the reference
counts, moments, range and missing rate; per categorical feature the top-K
frequencies plus an "other" bucket. For outputs it keeps the class mix and the
confidence distribution (classification) or the prediction distribution (regression).
It also carries the model's *policy* (:class:`Policy`).

A profile is stored as a versioned JSON envelope (:class:`ReferenceEnvelope`), signed
with the state signing key in Redis and in reference files alike
(:meth:`ReferenceProfile.to_sealed`, :meth:`ReferenceProfile.from_sealed`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson
from numpy.typing import NDArray
from pydantic import SecretStr
from pydantic import ValidationError as PydanticValidationError

from driftline.contract.events import (
    ReferenceEnvelope,
)
from driftline.contract.sealed import MAGIC, Sealer
from driftline.core.detectors.plans import BankSettings, FeaturePlan
from driftline.core.multivariate import MultivariateProfile
from driftline.core.reference import banks
from driftline.errors import StateCorrupt

__all__ = [
    "DEFAULT_BINS",
    "DEFAULT_TOP_K",
    "LAYOUT_VERSION",
    "PSI_GROUPS",
    "REFERENCE_FILE_PLACE",
    "CategoricalProfile",
    "FeatureProfile",
    "FeatureType",
    "NumericProfile",
    "OutputProfile",
    "Policy",
    "ReferenceProfile",
]

FeatureType = Literal["numeric", "categorical"]

#: The place name a reference *file* is signed under (a Redis key in the store). A file
#: can be renamed or copied, so the name is fixed; the model and version it belongs to
#: are inside the signed payload.
REFERENCE_FILE_PLACE = "driftline.reference-file"

#: Layout of the stored profile (the envelope's ``format_version``): 2 adds the
#: calibrated detector banks of every feature and output.
LAYOUT_VERSION = 2


#: Fine bins per numeric feature: KS on the sketch is exact to within the largest bin mass.
DEFAULT_BINS = 100
#: PSI and JS use about this many groups of fine bins (the usual PSI practice of deciles).
PSI_GROUPS = 10
DEFAULT_TOP_K = 50


_BANK = BankSettings()


@dataclass(frozen=True)
class Policy:
    """How a model is watched. Stored with its reference; every field has a default.

    The one number to set is ``false_alarm_events``: the expected events between false
    alarms of one stream (model, version, segment) and alert kind. The detector banks'
    thresholds are not policy: they are calibrated to that budget at reference build
    and stored with the reference (docs/architecture.md, "Decisions in the fast loop").
    """

    #: Window of history, reports, window tests and data-quality checks (events).
    window_events: int = 500
    window_seconds: float = 0.0
    min_window_events: int = 50
    false_alarm_events: float = 1_000_000.0
    #: Effect-size floor of the window tests: a window drifts only if PSI also reaches
    #: this (0.1 = moderate). Window tests feed history and reports, not alerts.
    psi_floor: float = 0.1
    #: Mean shifts (reference sd) every numeric feature's bank watches, both ways.
    shifts: tuple[float, ...] = _BANK.shifts
    #: Shifts of the spread channel (sd of ``z**2``; 0.5 is sd x1.3 or /1.2 for Gaussian
    #: data), both ways. Empty: spread is not watched.
    scale_shifts: tuple[float, ...] = _BANK.scale_shifts
    #: Shifts of a category's share (sd of its indicator), both ways; rates: rises.
    category_shifts: tuple[float, ...] = _BANK.category_shifts
    #: Categories below this reference share are watched pooled.
    min_category_share: float = _BANK.min_category_share
    #: A drifting channel has returned once back within this fraction of the smallest
    #: shift (the return test's boundary: the hysteresis against flapping).
    resolve_at: float = _BANK.resolve_at
    #: Standardised values are clipped to +-this (one outlier cannot open an episode).
    clip: float = _BANK.clip
    #: An episode is critical once a feature's effect is, at 99% confidence, at least
    #: this multiple of the smallest shift its bank watches (3 x 0.25 = 0.75 sd: about
    #: what Cohen calls a large effect, 0.8) ...
    critical_multiple: float = 3.0
    #: ... or once it has been firing for this many events.
    critical_after_events: int = 20_000
    #: Data quality (window checks): clean windows in a row before its episode resolves,
    #: and windows after a resolution before it may fire again.
    resolve_after_windows: int = 2
    cooldown_windows: int = 2
    #: Alert on data quality when a rate exceeds the reference rate by this much.
    quality_margin: float = 0.05
    #: Fit the multivariate model at reference build and watch the features jointly
    #: (docs/multivariate.md); it takes one feature's share of the budget.
    multivariate: bool = True
    #: Per feature (or output: ``__class__``, ``__confidence__``, ``__low_confidence__``,
    #: ``__prediction__``): ``psi_threshold`` (the window test's), ``bank: 0`` (no
    #: detector bank: the feature never opens an episode).
    feature_overrides: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    @property
    def alpha_window(self) -> float:
        """Family-wise false-alarm probability per window: events per window / budget."""
        return min(0.5, self.window_events / self.false_alarm_events)

    def bank_settings(self) -> BankSettings:
        """What the detector banks watch, as :mod:`~driftline.core.detectors.plans` takes it."""
        return BankSettings(
            shifts=self.shifts,
            scale_shifts=self.scale_shifts,
            category_shifts=self.category_shifts,
            min_category_share=self.min_category_share,
            resolve_at=self.resolve_at,
            clip=self.clip,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for storage."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["feature_overrides"] = {k: dict(v) for k, v in self.feature_overrides.items()}
        for k in _TUPLES:
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Policy:
        """Inverse of :meth:`to_dict`; unknown keys are ignored (forward compatible, and
        the retired ``ph_*``, ``adwin_*`` fields of older references)."""
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for k in _TUPLES:
            if k in known:
                known[k] = tuple(float(x) for x in known[k])
        return cls(**known)


_TUPLES = ("shifts", "scale_shifts", "category_shifts")


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
    #: The calibrated detector bank (None: the feature cannot drift, or is switched off).
    bank: FeaturePlan | None = None

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
            **_bank_dict(self.bank),
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
            bank=_bank_of(d),
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
    #: The calibrated detector bank (None: a single category, or switched off).
    bank: FeaturePlan | None = None

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
            **_bank_dict(self.bank),
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
            bank=_bank_of(d),
        )


FeatureProfile = NumericProfile | CategoricalProfile


def _bank_dict(bank: FeaturePlan | None) -> dict[str, Any]:
    return {"bank": bank.to_dict()} if bank is not None else {}


def _bank_of(d: Mapping[str, Any], key: str = "bank") -> FeaturePlan | None:
    raw = d.get(key)
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise StateCorrupt(f"reference: {key} is not an object")
    return FeaturePlan.from_dict(raw)


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
    #: The rate bank of low-confidence answers (rises of ``low_confidence_rate``).
    low_confidence_bank: FeaturePlan | None = None
    #: Share of the most frequent predicted class in the reference.
    top_class_share: float = 0.0
    #: Regression: distribution of the predicted value.
    prediction: NumericProfile | None = None
    #: Accuracy on labelled reference rows (for the slow loop), if labels were given.
    accuracy: float | None = None
    #: Regression: mean absolute error on labelled reference rows, if labels were given
    #: (the slow loop's performance rule for a regression model).
    mae: float | None = None
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
        if self.mae is not None:  # likewise
            d["mae"] = self.mae
        if self.low_confidence_bank is not None:
            d["low_confidence_bank"] = self.low_confidence_bank.to_dict()
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
            mae=d.get("mae"),
            calibration=d.get("calibration"),
            low_confidence_bank=_bank_of(d, "low_confidence_bank"),
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
    #: The multivariate model (``driftline.core.multivariate``), if one was fitted.
    multivariate: MultivariateProfile | None = None
    #: The profile layout it was stored in: an older one (1, no detector banks) is
    #: calibrated on load from its bins (:mod:`~driftline.core.reference.banks`).
    stored_layout: int = LAYOUT_VERSION
    #: The columns of the table it was built from, by role (``id``, ``timestamp``,
    #: ``prediction``, ``label``: a name; ``scores``: class -> column), so that a replay
    #: of a table laid out the same way reads them without being told again. Provenance,
    #: like :attr:`source`: not part of the id. None: built from events.
    columns: Mapping[str, Any] | None = None

    def banks(self) -> list[tuple[str, str, FeaturePlan]]:
        """Every detector bank: (unit, alert kind, plan), features in stored order, then
        the outputs (``__class__``, ``__confidence__``, ``__low_confidence__``,
        ``__prediction__``)."""
        out: list[tuple[str, str, FeaturePlan]] = [
            (name, "input_drift", p.bank) for name, p in self.features.items() if p.bank
        ]
        o = self.outputs
        for name, plan in (
            ("__class__", o.classes.bank if o.classes else None),
            ("__confidence__", o.confidence.bank if o.confidence else None),
            ("__low_confidence__", o.low_confidence_bank),
            ("__prediction__", o.prediction.bank if o.prediction else None),
        ):
            if plan is not None:
                out.append((name, "output_drift", plan))
        return out

    def numeric_features(self) -> list[str]:
        """Names of numeric features, in stored order."""
        return [k for k, v in self.features.items() if isinstance(v, NumericProfile)]

    def categorical_features(self) -> list[str]:
        """Names of categorical features, in stored order."""
        return [k for k, v in self.features.items() if isinstance(v, CategoricalProfile)]

    def to_envelope(self) -> ReferenceEnvelope:
        """The versioned envelope stored in Redis."""
        profile: dict[str, Any] = {
            "features": {k: v.to_dict() for k, v in self.features.items()},
            "outputs": self.outputs.to_dict(),
            "policy": self.policy.to_dict(),
        }
        if self.multivariate is not None:  # absent key: references without one unchanged
            profile["multivariate"] = self.multivariate.to_dict()
        if self.columns:  # absent key, as above
            profile["columns"] = dict(self.columns)
        return ReferenceEnvelope(
            format_version=LAYOUT_VERSION,
            reference_id=self.reference_id,
            model_id=self.model_id,
            model_version=self.model_version,
            created_at=self.created_at,
            source=self.source,
            row_count=self.row_count,
            profile=profile,
        )

    def to_bytes(self) -> bytes:
        """Wire/storage form: the JSON envelope."""
        return orjson.dumps(self.to_envelope().model_dump(mode="json"))

    @classmethod
    def from_bytes(cls, data: bytes) -> ReferenceProfile:
        """Parse a stored envelope (validated against the envelope schema)."""
        env = ReferenceEnvelope.model_validate(orjson.loads(data))
        return cls.from_envelope(env)

    def to_sealed(self, signing_key: bytes | str | SecretStr) -> bytes:
        """The reference file form: the JSON envelope, signed and versioned.

        The same envelope (``DL`` | format version | HMAC-SHA256 | payload) as every
        record in Redis (:class:`~driftline.contract.sealed.Sealer`), keyed with the
        state signing key, under the fixed place name :data:`REFERENCE_FILE_PLACE`.
        """
        return Sealer(signing_key).seal(REFERENCE_FILE_PLACE, self.to_bytes())

    @classmethod
    def from_sealed(
        cls, blob: bytes, signing_key: bytes | str | SecretStr, where: str = "reference file"
    ) -> ReferenceProfile:
        """Check the signature of a reference file and read it.

        Raises
        ------
        StateCorrupt
            Not a signed reference (an unsigned JSON file included), signed with
            another key, altered, or an envelope this build cannot read.
        """
        if not blob.startswith(MAGIC):
            unsigned = blob.lstrip()[:1] == b"{"
            hint = " (unsigned JSON: rebuild it with reference build --out)" if unsigned else ""
            raise StateCorrupt(f"{where} is not a signed Driftline reference{hint}")
        try:
            payload = Sealer(signing_key).open_sealed(REFERENCE_FILE_PLACE, blob)
        except StateCorrupt as exc:
            raise StateCorrupt(f"{where}: {exc}") from None
        try:
            return cls.from_bytes(payload)
        except (orjson.JSONDecodeError, PydanticValidationError, KeyError, TypeError) as exc:
            why = type(exc).__name__
            raise StateCorrupt(f"{where}: not a reference envelope ({why})") from None

    @classmethod
    def from_envelope(cls, env: ReferenceEnvelope) -> ReferenceProfile:
        """Build the profile objects from a validated envelope.

        A layout-1 envelope (an older Driftline's, without detector banks) gets its banks
        compiled and calibrated here, from its bins, deterministically (seeded by its id)
        and once per process (:func:`~driftline.core.reference.banks.cached`).
        """
        p = env.profile
        feats: dict[str, FeatureProfile] = {}
        for name, d in p["features"].items():
            feats[name] = (
                NumericProfile.from_dict(d)
                if d["kind"] == "numeric"
                else CategoricalProfile.from_dict(d)
            )
        outputs = OutputProfile.from_dict(p["outputs"])
        policy = Policy.from_dict(p.get("policy", {}))
        if env.format_version < LAYOUT_VERSION:
            feats, outputs = banks.cached(
                (env.reference_id, banks.policy_key(p.get("policy", {}))),
                lambda: banks.attach_banks(feats, outputs, policy, banks.seed_of(env.reference_id)),
            )
        mv = p.get("multivariate")
        return cls(
            reference_id=env.reference_id,
            model_id=env.model_id,
            model_version=env.model_version,
            features=feats,
            outputs=outputs,
            policy=policy,
            row_count=env.row_count,
            source=env.source,
            created_at=env.created_at,
            multivariate=None
            if mv is None
            else MultivariateProfile.from_dict(
                mv, {k: f.edges for k, f in feats.items() if isinstance(f, NumericProfile)}
            ),
            stored_layout=env.format_version,
            columns=_columns_of(p.get("columns")),
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
            multivariate=self.multivariate,
            stored_layout=self.stored_layout,
            columns=self.columns,
        )


def _columns_of(d: Any) -> dict[str, Any] | None:
    """A stored ``columns`` member as :attr:`ReferenceProfile.columns` keeps it: names
    of the four roles and the scores' class -> column; anything else (a later layout's
    member, a hand-edited file) is left out rather than trusted."""
    if not isinstance(d, dict):
        return None
    out: dict[str, Any] = {
        k: v
        for k, v in d.items()
        if k in ("id", "timestamp", "prediction", "label") and isinstance(v, str)
    }
    scores = d.get("scores")
    if isinstance(scores, dict) and all(isinstance(v, str) for v in scores.values()):
        out["scores"] = {str(k): v for k, v in scores.items()}
    return out or None
