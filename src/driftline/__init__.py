"""Driftline: streaming drift detection for machine-learning models in production."""

from __future__ import annotations

from driftline._version import __version__
from driftline.config import Settings, load_settings
from driftline.contract.events import DriftAlert, LabelEvent, PredictionEvent
from driftline.errors import DriftlineError

__all__ = [
    "DriftAlert",
    "DriftlineError",
    "LabelEvent",
    "PredictionEvent",
    "Settings",
    "__version__",
    "load_settings",
]
