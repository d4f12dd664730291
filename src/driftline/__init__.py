"""Driftline: streaming drift detection for machine-learning models in production.

The public API is what this module exports (``__all__``): the configuration object,
the error tree, the wire-contract event models, the producer SDK that model servers
embed, and the offline replay. Everything in the subpackages (``contract``, ``core``,
``runtime``, ``offline``, ``views``, ``cli``, ``demo``) is internal and may change;
docs/architecture.md describes them.

The producer and the replay are loaded on first use, so ``import driftline`` stays
light (no Kafka client, numpy or Redis client until they are needed).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from driftline._version import __version__
from driftline.config import Settings, load_settings
from driftline.contract.events import DriftAlert, LabelEvent, PredictionEvent
from driftline.errors import (
    ConfigError,
    ContractError,
    DecodeError,
    DriftlineError,
    ReferenceMissing,
    StateError,
    UnsupportedVersion,
    ValidationError,
)

if TYPE_CHECKING:
    from driftline.offline.replay import Replayer, replay_file
    from driftline.producer import AsyncPredictionProducer, PredictionProducer

__all__ = [
    "AsyncPredictionProducer",
    "ConfigError",
    "ContractError",
    "DecodeError",
    "DriftAlert",
    "DriftlineError",
    "LabelEvent",
    "PredictionEvent",
    "PredictionProducer",
    "ReferenceMissing",
    "Replayer",
    "Settings",
    "StateError",
    "UnsupportedVersion",
    "ValidationError",
    "__version__",
    "load_settings",
    "replay_file",
]

#: Public names loaded on first access, by the module that defines them.
_LAZY = {
    "AsyncPredictionProducer": "driftline.producer",
    "PredictionProducer": "driftline.producer",
    "Replayer": "driftline.offline.replay",
    "replay_file": "driftline.offline.replay",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'driftline' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
