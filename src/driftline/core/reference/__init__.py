"""Reference profiles: building, calibrating and the stored form (internal).

:mod:`~driftline.core.reference.profile` holds the profile objects and their signed
stored form; :mod:`~driftline.core.reference.build` builds and calibrates them from
training rows or columns. Files and tables are read by :mod:`driftline.offline`.
"""

from driftline.core.reference.build import (
    TrainingData,
    build_reference,
    calibrate,
    categorical_profile,
    features_from_events,
    infer_types,
    numeric_profile,
    psi_groups,
)
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

__all__ = [
    "DEFAULT_BINS",
    "DEFAULT_TOP_K",
    "PSI_GROUPS",
    "CategoricalProfile",
    "FeatureProfile",
    "FeatureType",
    "NumericProfile",
    "OutputProfile",
    "Policy",
    "ReferenceProfile",
    "TrainingData",
    "build_reference",
    "calibrate",
    "categorical_profile",
    "features_from_events",
    "infer_types",
    "numeric_profile",
    "psi_groups",
]
