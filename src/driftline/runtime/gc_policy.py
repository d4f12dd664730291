"""The garbage collector of a worker process, sized to its batches.

A worker decodes a fetch of up to 5 000 events into containers (tuples, lists, column
arrays' inputs) that live until the batch is processed. CPython starts a young-generation
collection every 700 net allocations, and each one walks every young container again:
about 0.25 ms per collection with a fetch in flight. A full collection walks every
object the process holds, including what start-up made and never frees (modules,
settings, references): about 40 ms every 65 000 events here. Reference counting frees
almost all of a batch's objects anyway; the collector is only for cycles.

So a worker, once started, moves what start-up made out of the collector's sight
(``gc.freeze``) and collects the young generation every 50 000 allocations: a handful of
times per fetch instead of hundreds. Measured on the benchmark's single JSON events
(decode + core in process, CPU per event, alternated runs): 13.7-13.8 us with the
defaults, 11.5-12.2 us with this (docs/performance.md). Cycles still get collected;
they wait a little longer.

The label joiner's batches are larger: a fetch of both topics joins tens of thousands of
predictions and labels at once (40 000 labels keep about 9 containers each alive until
the batch ends), so it collects every 200 000 net allocations: a batch's containers are
mostly freed by reference counting before a collection walks them (the count goes down
as they are freed; a batch leaves no reference cycle, tests/unit/test_join_frees_batches.py).
In process, 40 000 labels in fetches of 80 records: 9.00 -> 8.80 us a label (labels of
stored predictions), 5.66 -> 5.07 a prediction (docs/performance.md, round nine).
"""

from __future__ import annotations

import gc

__all__ = ["JOINER_YOUNG_THRESHOLD", "YOUNG_THRESHOLD", "batch_sized_gc"]

#: Net allocations between young-generation collections in a worker (CPython: 700).
YOUNG_THRESHOLD = 50_000
#: The same in the label joiner (``driftline labels``), whose batches are larger.
JOINER_YOUNG_THRESHOLD = 200_000


def batch_sized_gc(young: int = YOUNG_THRESHOLD) -> None:
    """Freeze what exists now and collect the young generation every ``young`` net
    allocations (the older generations' ratios are kept)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young, older, oldest)
