"""aiokafka's repeated warnings and errors pass once per 30 s, with a count of those left
out: during a broker outage it logged about 60 lines a second (1,700 in 30 s in the
live trial), burying the worker's own 'Kafka broker unreachable' line."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import driftline
from driftline.runtime.resilience import QuietRepeats


def _record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_a_repeated_kafka_client_line_passes_once_per_interval_with_a_count() -> None:
    now = [0.0]
    quiet = QuietRepeats(every=30.0, clock=lambda: now[0])
    node = "Unable connect to node with id %s: %s"
    passed = []
    for i in range(120):  # two minutes of outage, one line every second
        now[0] = float(i)
        r = _record("aiokafka", node, 111 + i % 2, "Connect call failed")
        if quiet.filter(r):
            passed.append((i, r.getMessage()))
    assert [i for i, _ in passed] == [0, 30, 60, 90]
    assert passed[0][1] == "Unable connect to node with id 111: Connect call failed"
    assert passed[1][1].endswith("(29 more like it in the last 30 s left out)")
    # Another template, logger or level is not held back by the first one.
    now[0] = 91.0
    assert quiet.filter(_record("aiokafka", "Unable to update metadata from %s", [111]))
    assert quiet.filter(_record("aiokafka.consumer.fetcher", node, 1, "x"))
    assert quiet.filter(_record("aiokafka", node, 1, "x", level=logging.INFO))
    assert quiet.filter(_record("aiokafkax", node, 1, "x"))
    assert quiet.filter(_record("driftline.worker", node, 1, "x"))
    assert quiet.filter(_record("driftline.worker", node, 1, "x"))


def test_the_command_line_installs_it_on_its_log_handlers() -> None:
    code = (
        "import logging, sys\n"
        "from driftline.cli import main\n"
        "sys.argv = ['driftline', 'reference', 'show', '--file', '/nonexistent.ref']\n"
        "main()\n"
        "print([type(f).__name__ for h in logging.getLogger().handlers for f in h.filters])\n"
    )
    src = str(Path(driftline.__file__).parents[1])  # this tree's, not the installed one
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": src},
    )
    assert "['QuietRepeats']" in out.stdout, out.stdout + out.stderr
