"""Reference profiles: building, calibrating and the stored form (internal).

:mod:`~driftline.core.reference.profile` holds the profile objects and their signed
stored form; :mod:`~driftline.core.reference.build` builds and calibrates them from
training rows or columns; :mod:`~driftline.core.reference.banks` compiles and calibrates
every feature's and output's detector bank (at build, or on load of an older layout).
Files and tables are read by :mod:`driftline.offline`.
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
    LAYOUT_VERSION,
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
    "LAYOUT_VERSION",
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
