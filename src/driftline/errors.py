"""The one error tree of Driftline.

Every exception Driftline raises on purpose derives from :class:`DriftlineError`,
so a caller can catch the whole family with one clause::

    DriftlineError
    ├── ConfigError              bad or inconsistent settings; fix the environment
    ├── ContractError            an event breaks the wire contract (schemas/)
    │   ├── DecodeError          not JSON / not an object (stage "decode")
    │   ├── ValidationError      wrong fields, types or limits (stage "validate")
    │   └── UnsupportedVersion   schema_version this build does not know
    ├── StateError               stored state cannot be used
    │   ├── StateCorrupt         bad signature, unknown format version, truncated bytes
    │   ├── FencedError          another worker owns the partition now (stale epoch)
    │   └── StateMissing         state expected but absent (e.g. Redis lost its data)
    ├── ReferenceMissing         no usable reference profile for a model
    ├── InputError               a file, table or argument cannot be used as given
    ├── ModelLimit               a model refused by a worker's cap or allow-list
    └── SketchMismatch           merging or testing sketches built on different bins

Contract errors carry a ``stage`` that becomes the ``dl.error.stage`` header
of the dead-letter record, so an operator sees where an event was refused.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ContractError",
    "DecodeError",
    "DriftlineError",
    "FencedError",
    "InputError",
    "ModelLimit",
    "ReferenceMissing",
    "SketchMismatch",
    "StateCorrupt",
    "StateError",
    "StateMissing",
    "UnsupportedVersion",
    "ValidationError",
]


class DriftlineError(Exception):
    """Root of every error Driftline raises on purpose."""


class ConfigError(DriftlineError):
    """Settings are missing or inconsistent. Fix the ``DRIFTLINE_*`` environment."""


class ContractError(DriftlineError):
    """An event does not satisfy the wire contract; it goes to the dead-letter topic."""

    stage = "validate"


class DecodeError(ContractError):
    """The bytes are not a JSON object."""

    stage = "decode"


class ValidationError(ContractError):
    """A field is missing, of the wrong type, or over a size limit."""

    stage = "validate"


class UnsupportedVersion(ContractError):
    """The event's ``schema_version`` is newer than this build understands."""

    stage = "version"


class StateError(DriftlineError):
    """Stored state cannot be used as it is."""


class StateCorrupt(StateError):
    """A stored record failed its signature or format-version check. Never trusted."""


class FencedError(StateError):
    """A newer worker took the partition: this worker's epoch is stale; it must stop writing."""


class StateMissing(StateError):
    """State that should exist is absent (for example after a Redis data loss)."""


class ReferenceMissing(DriftlineError):
    """No reference profile is stored for the model and version (nor a default)."""


class InputError(DriftlineError, ValueError):
    """A file, table or argument given by a person cannot be used as given.

    The message names where (file, line or row, column) and what to do; the CLI
    prints it as one line and exits 2. It is also a ``ValueError`` (a bad value).
    """


class ModelLimit(DriftlineError):
    """A worker refuses a model: outside its allow-list, or past its cap of streams.

    The model's events go to the dead-letter topic (stage ``model_limit``).
    """


class SketchMismatch(DriftlineError):
    """Two sketches cannot be merged or compared: their bin edges or kinds differ."""
