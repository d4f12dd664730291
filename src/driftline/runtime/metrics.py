"""Prometheus metrics: the one place every Driftline metric is declared.

Names follow Prometheus conventions: the ``driftline_`` prefix, base units, ``_total``
for counters. Label values are bounded: model ids and versions come from the models a
deployment serves (operators choose them), and feature names are capped per model by
:class:`FeatureLabels` (the rest share the value ``"other"``). No label ever carries an
entity id (prediction id), a secret or free text.

docs/metrics.md is the catalogue with the meaning of each metric.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["REGISTRY", "FeatureLabels", "serve_metrics"]

#: Driftline's own registry (the process collector is not duplicated in tests).
REGISTRY = CollectorRegistry(auto_describe=True)

# --- producer SDK ------------------------------------------------------------------
PRODUCER_SENT = Counter(
    "driftline_producer_sent_total",
    "Events handed to Kafka by the producer SDK.",
    ["topic"],
    registry=REGISTRY,
)
PRODUCER_DROPPED = Counter(
    "driftline_producer_dropped_total",
    "Events the producer SDK dropped instead of blocking the serving path.",
    ["topic", "reason"],
    registry=REGISTRY,
)

# --- ingest ------------------------------------------------------------------------
EVENTS = Counter(
    "driftline_events_total",
    "Events consumed, by outcome (processed, dead_letter, duplicate).",
    ["worker", "outcome"],
    registry=REGISTRY,
)
MODEL_EVENTS = Counter(
    "driftline_model_events_total",
    "Valid prediction events processed per model.",
    ["model", "version"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "driftline_dead_letters_total",
    "Records sent to a dead-letter topic, by stage.",
    ["topic", "stage"],
    registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "driftline_batch_duration_seconds",
    "Time to process and commit one micro-batch.",
    ["worker"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
PROCESSING_LAG = Gauge(
    "driftline_processing_lag_seconds",
    "Wall-clock now minus the event time of the newest processed event.",
    ["worker", "model"],
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "driftline_consumer_lag_events",
    "Log-end offset minus next offset, per partition.",
    ["worker", "topic", "partition"],
    registry=REGISTRY,
)
STATE_COMMITS = Counter(
    "driftline_state_commits_total",
    "State commits to Redis, by result (ok, duplicate, fenced).",
    ["worker", "result"],
    registry=REGISTRY,
)
STATE_REWINDS = Counter(
    "driftline_state_rewind_total",
    "Partitions whose stored state was lost or went back (Redis data loss) and is being "
    "rebuilt by replaying Kafka.",
    ["worker", "topic"],
    registry=REGISTRY,
)
QUARANTINED = Gauge(
    "driftline_partitions_quarantined",
    "Partitions this worker holds but will not process: stored state unreadable "
    "(StateCorrupt) or incomplete (StateMissing); an operator must act.",
    ["worker", "topic"],
    registry=REGISTRY,
)
READY = Gauge(
    "driftline_ready",
    "1 when the worker has caught up with its partitions.",
    ["worker"],
    registry=REGISTRY,
)

# --- fast loop -------------------------------------------------------------------
WINDOWS_CLOSED = Counter(
    "driftline_windows_closed_total",
    "Windows tested against the reference.",
    ["model", "version"],
    registry=REGISTRY,
)
DRIFT_SCORE = Gauge(
    "driftline_drift_score",
    "Latest drift statistic per model, feature and test.",
    ["model", "version", "feature", "test"],
    registry=REGISTRY,
)
DRIFT_ACTIVE = Gauge(
    "driftline_drift_active",
    "1 while a drift episode of this kind is firing.",
    ["model", "version", "kind"],
    registry=REGISTRY,
)
ALERTS = Counter(
    "driftline_alerts_total",
    "Alert events published, by kind, status and severity.",
    ["model", "kind", "status", "severity"],
    registry=REGISTRY,
)

# --- slow loop -------------------------------------------------------------------
LABELS = Counter(
    "driftline_labels_total",
    "Label events, by outcome (joined, duplicate, orphan, expired...).",
    ["model", "outcome"],
    registry=REGISTRY,
)
ACCURACY = Gauge(
    "driftline_accuracy_ratio",
    "Windowed accuracy from joined labels.",
    ["model", "version"],
    registry=REGISTRY,
)
ESTIMATED_ACCURACY = Gauge(
    "driftline_estimated_accuracy_ratio",
    "Accuracy estimated from scores before labels arrive.",
    ["model", "version"],
    registry=REGISTRY,
)
LABEL_COVERAGE = Gauge(
    "driftline_label_coverage_ratio",
    "Labelled predictions / predictions in the horizon.",
    ["model", "version"],
    registry=REGISTRY,
)
ESTIMATION_ERROR = Gauge(
    "driftline_estimation_error_ratio",
    "Estimated (from calibrated scores) minus realised accuracy, last labelled window.",
    ["model", "version"],
    registry=REGISTRY,
)
PERFORMANCE = Gauge(
    "driftline_performance_score",
    "Last labelled window's log_loss, brier (classification) or mae, rmse (regression).",
    ["model", "version", "metric"],
    registry=REGISTRY,
)
DIAGNOSIS = Gauge(
    "driftline_diagnosis",
    "1 for the slow loop's current diagnosis of a model version, 0 for the others.",
    ["model", "version", "diagnosis"],
    registry=REGISTRY,
)
LABEL_LAG = Histogram(
    "driftline_label_lag_seconds",
    "Event time of a joined label minus event time of its prediction.",
    ["model"],
    registry=REGISTRY,
    buckets=(1, 5, 10, 30, 60, 300, 600, 1800, 3600, 21600, 43200, 86400, 259200, 604800),
)
JOIN_PREDICTIONS = Counter(
    "driftline_join_predictions_total",
    "Predictions seen by the label joiner, by outcome (stored, duplicate, too_old, invalid).",
    ["model", "outcome"],
    registry=REGISTRY,
)
HELD_LABELS = Gauge(
    "driftline_labels_held",
    "Labels waiting for their prediction (arrived first), per joiner worker.",
    ["worker"],
    registry=REGISTRY,
)
LABELS_PAUSED = Gauge(
    "driftline_labels_paused",
    "Label partitions the joiner stopped reading because labels.max_held_labels are held "
    "(backpressure: the labels wait in Kafka), per joiner worker.",
    ["worker"],
    registry=REGISTRY,
)


# --- retraining trigger ------------------------------------------------------------
RETRAIN_ALERTS = Counter(
    "driftline_retrain_alerts_total",
    "Alerts consumed by the retraining trigger, by decision outcome.",
    ["outcome"],
    registry=REGISTRY,
)
RETRAIN_REQUESTS = Counter(
    "driftline_retrain_requests_total",
    "Retraining requests published, by status (requested, pending_approval).",
    ["model", "status"],
    registry=REGISTRY,
)


class FeatureLabels:
    """Caps the feature names used as label values: the first ``limit`` seen per model
    keep their name, the rest are exported as ``"other"``.

    Examples
    --------
    >>> fl = FeatureLabels(limit=2)
    >>> [fl.label("m", f) for f in ("a", "b", "c", "a")]
    ['a', 'b', 'other', 'a']
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._known: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def label(self, model: str, feature: str) -> str:
        """The label value to export for ``feature`` of ``model``."""
        with self._lock:
            seen = self._known.setdefault(model, set())
            if feature in seen:
                return feature
            if len(seen) < self.limit:
                seen.add(feature)
                return feature
            return "other"


def serve_metrics(port: int, certfile: str | None = None, keyfile: str | None = None) -> int:
    """Serve ``/metrics`` for :data:`REGISTRY` (TLS when a certificate is given).

    Returns the bound port (useful with ``port=0``).
    """
    server, _thread = start_http_server(
        port, addr="0.0.0.0", registry=REGISTRY, certfile=certfile, keyfile=keyfile
    )
    bound: int = server.server_port
    return bound
