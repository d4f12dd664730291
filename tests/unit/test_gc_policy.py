"""A worker process's collector is sized to its batches (runtime/gc_policy.py)."""

from __future__ import annotations

import subprocess
import sys

import driftline
from driftline.runtime.gc_policy import YOUNG_THRESHOLD

_PROBE = """
import gc
from driftline.runtime.gc_policy import batch_sized_gc
before = gc.get_threshold()
start_up = [object() for _ in range(10)]
batch_sized_gc()
after = gc.get_threshold()
print(before[1:] == after[1:], after[0], gc.get_freeze_count() > 0)
"""


def _probe(code: str) -> list[str]:
    """What the probe prints, run in a child process: the policy is the worker
    process's, never the test runner's."""
    src = str(driftline.__file__).rsplit("/driftline/", 1)[0]
    return subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": src},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()


def test_a_started_worker_freezes_start_up_and_collects_young_objects_less_often() -> None:
    out = _probe(_PROBE)
    assert out == ["True", str(YOUNG_THRESHOLD), "True"]


def test_the_label_joiner_collects_young_objects_less_often_still() -> None:
    """The joiner's batches are larger: its threshold is larger, the rest the same."""
    from driftline.runtime.gc_policy import JOINER_YOUNG_THRESHOLD

    out = _probe(_PROBE.replace("batch_sized_gc()", f"batch_sized_gc({JOINER_YOUNG_THRESHOLD})"))
    assert JOINER_YOUNG_THRESHOLD > YOUNG_THRESHOLD
    assert out == ["True", str(JOINER_YOUNG_THRESHOLD), "True"]
