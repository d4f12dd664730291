"""Driftline: streaming drift detection for machine-learning models in production.

The public API is what this module exports (``__all__``): the configuration object,
the error tree, the wire-contract event models, the producer SDK that model servers
embed, the offline replay, and the notebook API (:func:`build_reference` and
:func:`monitor` on DataFrames, tables or files, no servers: docs/notebook.md).
Everything in the subpackages (``contract``, ``core``, ``runtime``, ``offline``,
``views``, ``cli``, ``demo``) is internal and may change; docs/architecture.md
describes them.

The producer, the replay and the notebook API are loaded on first use, so ``import
driftline`` stays light (no Kafka client, numpy, pandas or Redis client until needed).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from driftline._version import __version__
from driftline.config import Settings, load_settings
from driftline.contract.events import (
    DriftAlert,
    LabelEvent,
    PredictionEvent,
)
from driftline.errors import (
    ConfigError,
    ContractError,
    DecodeError,
    DriftlineError,
    InputError,
    ReferenceMissing,
    StateError,
    UnsupportedVersion,
    ValidationError,
)

if TYPE_CHECKING:
    from driftline.offline.notebook import (
        MonitorResult,
        Reference,
        Report,
        build_reference,
        monitor,
    )
    from driftline.offline.replay import Replayer, replay_file
    from driftline.offline.roles import ColumnMap
    from driftline.producer import AsyncPredictionProducer, PredictionProducer

__all__ = [
    "AsyncPredictionProducer",
    "ColumnMap",
    "ConfigError",
    "ContractError",
    "DecodeError",
    "DriftAlert",
    "DriftlineError",
    "InputError",
    "LabelEvent",
    "MonitorResult",
    "PredictionEvent",
    "PredictionProducer",
    "Reference",
    "ReferenceMissing",
    "Replayer",
    "Report",
    "Settings",
    "StateError",
    "UnsupportedVersion",
    "ValidationError",
    "__version__",
    "build_reference",
    "load_settings",
    "monitor",
    "replay_file",
]

#: Public names loaded on first access, by the module that defines them.
_LAZY = {
    "AsyncPredictionProducer": "driftline.producer",
    "PredictionProducer": "driftline.producer",
    "Replayer": "driftline.offline.replay",
    "replay_file": "driftline.offline.replay",
    "ColumnMap": "driftline.offline.roles",
    "MonitorResult": "driftline.offline.notebook",
    "Reference": "driftline.offline.notebook",
    "Report": "driftline.offline.notebook",
    "build_reference": "driftline.offline.notebook",
    "monitor": "driftline.offline.notebook",
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
