"""The fast loop's pure core (internal): prediction events in, drift verdicts and alerts
out, with no labels and no I/O.

:func:`process_batch` is a function of (events, states, references). The same code runs
under the Kafka worker (:mod:`driftline.runtime.monitor`), in a replay from a file
(:mod:`driftline.offline.replay`) and in unit tests, which is what makes "a stream run
equals a clean single-pass replay" checkable. One module per concept:

============================  ==========================================================
:mod:`.process`               the entry point and the window loop of a stream
:mod:`.state`                 ``ModelState`` (per model, version, segment), its episodes,
                              and their versioned bytes
:mod:`.plan`                  a reference's columns laid out for the vectorised window;
                              a batch read into arrays on them
:mod:`.windows`               the open window's sketch banks
:mod:`.clock`                 event time: where events fall, when windows close, late
                              and future-dated events (the processing clock)
:mod:`.sequential`            where the sequential detectors run (Page-Hinkley, ADWIN)
:mod:`.window_tests`          the window's tests and the decision (Holm AND effect size)
:mod:`.outputs`               output monitoring (class mix, confidence, predicted value)
:mod:`.quality`               data-quality tests
:mod:`.episodes`              where episodes step, and the alerts they publish
:mod:`.summary`               the window summaries behind history and reports
:mod:`.result`                ``BatchResult`` and the observations for metrics
============================  ==========================================================

The core works on columns (:mod:`driftline.contract.columnar`), not on event dicts:
per batch and stream it reads every feature of every event into a float64 matrix
(numeric) and a code matrix (categorical), bins them once, then per window chunk
updates all sketches with one ``bincount`` each, and at the window's close computes
KS, PSI and JS for all numeric features in a handful of array operations.
docs/performance.md has the figures; the golden fixtures (tests/unit/test_golden.py)
hold the core to its recorded behaviour.
"""

from driftline.core.fastloop.process import WARMUP_EVENTS, RefLookup, process_batch
from driftline.core.fastloop.result import BatchResult, Observation
from driftline.core.fastloop.state import DriftEpisode, ModelState

__all__ = [
    "WARMUP_EVENTS",
    "BatchResult",
    "DriftEpisode",
    "ModelState",
    "Observation",
    "RefLookup",
    "process_batch",
]
