"""The slow loop's pure core (internal): joining delayed labels to pending predictions,
performance, concept drift and the diagnosis, with no I/O.

Split by concept:

* :mod:`.pending` -- the pending-prediction record and its Redis layout (digests, key
  names, generations, expiries);
* :mod:`.perf_state` -- the state: event-time buckets, :class:`PerfState`,
  :class:`ModelJoin`, held labels, :class:`UnitState`;
* :mod:`.lookups` -- what a batch reads from Redis first (:func:`plan_lookups`);
* :mod:`.join` -- the pure join of a batch (:func:`join_batch`), its predictions' side;
* :mod:`.columns` -- a columnar prediction batch as the join reads it (times, quantised
  scores, records), without a dict per row;
* :mod:`.scoring` -- its labels' side: each label's outcome, a joined label's scores;
* :mod:`.episodes` -- performance windows, alert episodes and alerts;
* :mod:`.concept` -- the concept-drift detector on the error stream (ADWIN or river's);
* :mod:`.diagnosis` -- input-drift intervals and the verdicts;
* :mod:`.results` -- what a batch produces (:class:`JoinResult`);
* :mod:`.report` -- performance reports, champion vs challengers.
"""

from driftline.core.slowloop.concept import CONCEPT_DETECTORS, check_concept_settings
from driftline.core.slowloop.diagnosis import DIAGNOSES, DriftIndex
from driftline.core.slowloop.join import (
    RefLookup,
    join_batch,
    join_labels,
    join_predictions,
    label_probes_to_ask,
    labels_backpressure,
)
from driftline.core.slowloop.lookups import (
    Found,
    LookupPlan,
    MemoryRecords,
    plan_label_lookups,
    plan_lookups,
    plan_prediction_lookups,
)
from driftline.core.slowloop.pending import (
    TOMBSTONE,
    PendingPrediction,
    prediction_digest,
    record_key,
    retention_ms,
)
from driftline.core.slowloop.perf_state import ModelJoin, PerfState, UnitState, stream_key
from driftline.core.slowloop.report import build_report, format_report
from driftline.core.slowloop.results import JoinResult, PerfObservation

__all__ = [
    "CONCEPT_DETECTORS",
    "DIAGNOSES",
    "TOMBSTONE",
    "DriftIndex",
    "Found",
    "JoinResult",
    "LookupPlan",
    "MemoryRecords",
    "ModelJoin",
    "PendingPrediction",
    "PerfObservation",
    "PerfState",
    "RefLookup",
    "UnitState",
    "build_report",
    "check_concept_settings",
    "format_report",
    "join_batch",
    "join_labels",
    "join_predictions",
    "label_probes_to_ask",
    "labels_backpressure",
    "plan_label_lookups",
    "plan_lookups",
    "plan_prediction_lookups",
    "prediction_digest",
    "record_key",
    "retention_ms",
    "stream_key",
]
