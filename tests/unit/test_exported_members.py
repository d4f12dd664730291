"""The public API is exactly this list (docs/architecture.md: a small, deliberate API)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import driftline

EXPORTED = [
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


def test_the_public_api_is_the_documented_list() -> None:
    assert sorted(driftline.__all__) == EXPORTED


def test_every_exported_name_resolves() -> None:
    for name in driftline.__all__:
        assert getattr(driftline, name) is not None, name
    assert driftline.PredictionProducer.__module__ == "driftline.producer"
    assert driftline.Replayer.__module__ == "driftline.offline.replay"
    assert driftline.monitor.__module__ == "driftline.offline.notebook"


def test_the_errors_are_one_tree() -> None:
    errors = [
        getattr(driftline, n)
        for n in driftline.__all__
        if isinstance(getattr(driftline, n), type) and n.endswith(("Error", "Missing", "Version"))
    ]
    assert len(errors) == 9
    assert all(issubclass(e, driftline.DriftlineError) for e in errors)


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        driftline.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("driftline.NoSuchThing resolved")


def test_import_driftline_loads_neither_kafka_nor_redis_nor_numpy() -> None:
    # The producer and the replay load on first use: a model server that only reads
    # settings or validates events does not pay for the Kafka client or numpy.
    code = (
        "import sys, driftline; "
        "print(sorted(m for m in ('aiokafka', 'redis', 'numpy') if m in sys.modules))"
    )
    src = str(Path(driftline.__file__).resolve().parents[1])  # the tree under test
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    assert out.strip() == "[]"
