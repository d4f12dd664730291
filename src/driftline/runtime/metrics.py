"""Prometheus metrics: the one place every Driftline metric is declared.

Names follow Prometheus conventions: the ``driftline_`` prefix, base units, ``_total``
for counters. Label values are bounded: model ids are capped per worker by :class:`ModelLabels`
(counters of the models past the cap share the value ``"other"``, their gauges are not
exported), and feature names are capped per model by :class:`FeatureLabels` (the rest
share the value ``"other"``). No label ever carries an
entity id (prediction id), a secret or free text.

docs/metrics.md is the catalogue with the meaning of each metric. The HTTP server of a
worker (:func:`serve_metrics`) also answers the health checks ``/livez`` (from
:mod:`driftline.runtime.health`) and ``/readyz`` (from ``driftline_ready``).
"""

from __future__ import annotations

import bisect
import errno
import itertools
import ssl
import threading
from collections.abc import Callable, Iterable, Sequence
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    make_wsgi_app,
)
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from driftline.core.fastloop.result import Observation, Observations
from driftline.errors import ConfigError
from driftline.runtime.health import HEALTH

__all__ = [
    "REGISTRY",
    "FeatureLabels",
    "ModelLabels",
    "init_worker_series",
    "observe_statistic",
    "observe_statistics",
    "readiness",
    "serve_metrics",
]

#: Driftline's own registry: every metric below, plus the standard process (CPU,
#: memory, file descriptors), platform (``python_info``) and garbage-collector
#: collectors that dashboards for Python workers expect.
REGISTRY = CollectorRegistry(auto_describe=True)
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

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
#: Why the producer SDK drops an event (docs/producer.md); its series start at zero.
PRODUCER_DROP_REASONS = ("buffer_full", "oversize", "invalid", "closed", "shutdown", "rejected")

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
MODEL_PARTITION_MOVES = Counter(
    "driftline_model_partition_moves_total",
    "Models seen on a partition other than the one that had them before (a partition "
    "count change, another partitioner): the new partition keeps a state of its own "
    "(docs/reliability.md). The log names the model.",
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
MODELS_QUARANTINED = Gauge(
    "driftline_models_quarantined",
    "Models (model, version for the monitor; model for the label joiner) whose events "
    "this worker dead-letters instead of processing, by reason (state_corrupt, "
    "reference_corrupt, reference_missing); the rest of their partition keeps flowing.",
    ["worker", "reason"],
    registry=REGISTRY,
)
READY = Gauge(
    "driftline_ready",
    "1 when the worker has caught up with its partitions (and reaches its broker).",
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
LATE_FUTURE_EVENTS = Counter(
    "driftline_late_or_future_events_total",
    "Events stamped before the open time window (late) or ahead of the worker's clock "
    "(future), by timing; counted in the open window, neither moves the event clock.",
    ["model", "version", "timing"],
    registry=REGISTRY,
)
#: The ``timing`` label values of ``driftline_late_or_future_events_total``.
TIMINGS = ("late", "future")
# One family per statistic and unit, so one panel or threshold fits each.
DRIFT_PSI = Gauge(
    "driftline_drift_psi",
    "Population stability index of the latest window per feature (dimensionless, >= 0).",
    ["model", "version", "feature"],
    registry=REGISTRY,
)
DRIFT_KS = Gauge(
    "driftline_drift_ks_statistic",
    "Two-sample Kolmogorov-Smirnov statistic D of the latest window per numeric feature (0..1).",
    ["model", "version", "feature"],
    registry=REGISTRY,
)
DRIFT_JS = Gauge(
    "driftline_drift_js_distance",
    "Jensen-Shannon distance (base 2) of the latest window per feature (0..1).",
    ["model", "version", "feature"],
    registry=REGISTRY,
)
DRIFT_CHI2 = Gauge(
    "driftline_drift_chi2_statistic",
    "Pearson chi-square statistic of the latest window per categorical feature (>= 0; "
    "grows with the window's size).",
    ["model", "version", "feature"],
    registry=REGISTRY,
)
DRIFT_RATE = Gauge(
    "driftline_drift_rate_ratio",
    "Latest window's data-quality and output rates (0..1) or their excess over the "
    "reference's (-1..1), by statistic.",
    ["model", "version", "feature", "statistic"],
    registry=REGISTRY,
)
_DRIFT_FAMILIES = {"psi": DRIFT_PSI, "ks": DRIFT_KS, "js": DRIFT_JS, "chi2": DRIFT_CHI2}
DRIFT_MULTIVARIATE = Gauge(
    "driftline_drift_multivariate_level",
    "Highest CUSUM level of the multivariate detector in the latest window, over its "
    "threshold (>= 0; 1 is the threshold).",
    ["model", "version"],
    registry=REGISTRY,
)
#: The multivariate detector's window statistic (core/fastloop/multivariate.py).
_MULTIVARIATE_TEST = "cusum_level"
DRIFT_ACTIVE = Gauge(
    "driftline_drift_active",
    "1 while a drift episode of this kind is firing, labelled with its severity.",
    ["model", "version", "kind", "severity"],
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


class BatchHistogram(Collector):
    """A histogram with one label, fed a batch of values at a time.

    prometheus_client's :class:`~prometheus_client.Histogram` takes one value a call, at
    about 1-2 us each (a lock and two counters); the label joiner observes one lag per
    joined label, thousands a batch. This collector adds a batch's bucket counts and sum
    under one lock and exposes the series a ``Histogram`` would (``_bucket`` by ``le``,
    ``_sum``, ``_count``; no ``_created``).
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        label: str,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self._name, self._doc, self._label = name, documentation, label
        # Named as on prometheus_client's metrics (the metrics catalogue test reads them).
        self._type, self._labelnames = "histogram", (label,)
        self._bounds = tuple(float(b) for b in buckets)
        # ``le`` as prometheus_client writes these bounds (repr of the float: "1.0")
        self._le = [repr(b) for b in self._bounds] + ["+Inf"]
        self._series: dict[str, tuple[list[int], list[float]]] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, label_value: str, values: Sequence[float]) -> None:
        """Add ``values`` to the series of ``label_value``."""
        bounds = self._bounds
        counts = [0] * (len(bounds) + 1)
        for v in values:
            counts[bisect.bisect_left(bounds, v)] += 1  # le: v <= bound
        total = sum(values)
        with self._lock:
            have, acc = self._series.setdefault(label_value, ([0] * len(counts), [0.0]))
            for i, c in enumerate(counts):
                have[i] += c
            acc[0] += total

    def collect(self) -> Iterable[Metric]:
        """The series as one histogram family (cumulative buckets)."""
        family = HistogramMetricFamily(self._name, self._doc, labels=[self._label])
        with self._lock:
            series = [(k, list(c), s[0]) for k, (c, s) in self._series.items()]
        for value, counts, total in series:
            cumulative = list(itertools.accumulate(counts))
            family.add_metric([value], list(zip(self._le, cumulative, strict=True)), total)
        yield family


LABEL_LAG = BatchHistogram(
    "driftline_label_lag_seconds",
    "Event time of a joined label minus event time of its prediction.",
    "model",
    buckets=(1, 5, 10, 30, 60, 300, 600, 1800, 3600, 21600, 43200, 86400, 259200, 604800),
    registry=REGISTRY,
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
HELD_LABELS_FILL = Gauge(
    "driftline_labels_held_fill_ratio",
    "Held labels of the fullest partition / labels.max_held_labels (at 1 that partition's "
    "labels wait in Kafka: backpressure).",
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


class ModelLabels:
    """Caps the model ids used as label values: the first ``limit`` models seen keep
    their id; counters of the others use ``"other"`` and their gauges are not exported
    (a gauge shared by unrelated models would mean nothing).

    Examples
    --------
    >>> ml = ModelLabels(limit=1)
    >>> [ml.label(x) for x in ("a", "b", "a")], ml.exported("b")
    (['a', 'other', 'a'], False)
    """

    OTHER = "other"

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def exported(self, model: str) -> bool:
        """Whether ``model`` has its own label values (it is within the cap)."""
        with self._lock:
            if model in self._known:
                return True
            if len(self._known) < self.limit:
                self._known.add(model)
                return True
            return False

    def label(self, model: str) -> str:
        """The label value to export for ``model`` in counters."""
        return model if self.exported(model) else self.OTHER


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


def observe_statistic(model: str, version: str, feature: str, test: str, value: float) -> None:
    """Export one window statistic of the fast loop in the family of its unit.

    ``psi``, ``ks``, ``js`` and ``chi2`` have a gauge each; every other statistic (the
    data-quality rates, the output shares and their excesses) is a ratio, exported as
    ``driftline_drift_rate_ratio`` with the statistic's name as the ``statistic`` label;
    the multivariate detector's level has its own gauge (one per stream, no feature).
    """
    key = (model, version, feature, test)
    child = _STATISTIC_SERIES.get(key)
    if child is None:
        # ``labels()`` checks and locks on every call: about 120 statistics per window
        # made it a tenth of the monitor's time. The series are never removed, so the
        # child can be kept (bounded: models and features are capped upstream).
        family = _DRIFT_FAMILIES.get(test)
        if test == _MULTIVARIATE_TEST:
            child = DRIFT_MULTIVARIATE.labels(model, version)
        elif family is not None:
            child = family.labels(model, version, feature)
        else:
            child = DRIFT_RATE.labels(model, version, feature, test)
        if len(_STATISTIC_SERIES) >= _MAX_CACHED_SERIES:
            _STATISTIC_SERIES.clear()
        _STATISTIC_SERIES[key] = child
    child.set(value)


def observe_statistics(
    observations: Iterable[Observation],
    exported: Callable[[str], bool],
    feature_label: Callable[[str, str], str],
) -> None:
    """:func:`observe_statistic` for a batch's statistics of exported models, each
    feature under its capped label (``feature_label``).

    Whether a model is exported and a feature's label are asked once per batch (each
    question takes a lock and can register the model or feature: asked in the order of
    first appearance, as per statistic), and a known series is set directly: about 120
    statistics per window, read from the core's columns
    (:class:`~driftline.core.fastloop.result.Observations`).

    A gauge shows its last value, and a batch closes about ten windows per stream with
    the same statistics in the same order: of the windows of one shape (model, version,
    features and statistics, in order) only the first (which asks the caps and makes
    the series) and the last (whose values stay) are set; the ones between would only
    set values that the last one sets again.
    """
    if not isinstance(observations, Observations):
        observations = Observations(observations)
    blocks = observations.blocks
    shapes = [(b.model_id, b.model_version, tuple(b.features), tuple(b.tests)) for b in blocks]
    first: dict[tuple[str, str, tuple[str, ...], tuple[str, ...]], int] = {}
    last = first.copy()
    for i, shape in enumerate(shapes):
        first.setdefault(shape, i)
        last[shape] = i
    allowed: dict[str, bool] = {}
    names: dict[tuple[str, str], str] = {}
    series = _STATISTIC_SERIES
    for i, (block, shape) in enumerate(zip(blocks, shapes, strict=True)):
        if first[shape] != i and last[shape] != i:
            continue
        model, version, features, tests, values = block
        ok = allowed.get(model)
        if ok is None:
            ok = allowed[model] = exported(model)
        if not ok:
            continue
        for feat, test, value in zip(features, tests, values, strict=True):
            feature = names.get((model, feat))
            if feature is None:
                feature = names[(model, feat)] = feature_label(model, feat)
            child = series.get((model, version, feature, test))
            if child is None:
                observe_statistic(model, version, feature, test, value)
            else:
                child.set(value)


#: The gauge child of each (model, version, feature, statistic) set so far.
_STATISTIC_SERIES: dict[tuple[str, str, str, str], Gauge] = {}
_MAX_CACHED_SERIES = 200_000


#: Outcomes and results a worker exports from its start, at zero: a series that exists
#: before its first event lets rate() and the alerting rules see the first increase.
_WORKER_OUTCOMES = ("processed", "dead_letter", "duplicate")
_COMMIT_RESULTS = ("ok", "duplicate", "fenced", "rewound")  # store.CommitResult
_DEAD_LETTER_STAGES = ("decode", "validate", "version")


def init_worker_series(worker: str, topics: Iterable[str], lease_topic: str) -> None:
    """Create the fixed-label series of a consuming worker at zero (once, at its start).

    Parameters
    ----------
    worker
        The worker's name (``--name``).
    topics
        The topics it consumes (dead letters by topic and stage).
    lease_topic
        The topic its units are leased on (rewinds and quarantines).
    """
    for outcome in _WORKER_OUTCOMES:
        EVENTS.labels(worker, outcome)
    for result in _COMMIT_RESULTS:
        STATE_COMMITS.labels(worker, result)
    for topic in topics:
        for stage in _DEAD_LETTER_STAGES:
            DEAD_LETTERS.labels(topic, stage)
    STATE_REWINDS.labels(worker, lease_topic)
    QUARANTINED.labels(worker, lease_topic)


def readiness() -> tuple[bool, str]:
    """``/readyz``: live, started, and every ``driftline_ready`` series of this process
    at 1. A worker that exports no readiness gauge is ready once its loop runs.
    """
    live = HEALTH.status()
    if not live.startswith("ok"):
        return False, f"not ready: not live: {live}"
    if not HEALTH.started:
        return False, f"not ready: {HEALTH.describe()}"
    samples = [s for family in READY.collect() for s in family.samples]
    down = sorted(s.labels["worker"] for s in samples if s.value != 1)
    if down:
        return False, "not ready: driftline_ready is 0 for worker " + ", ".join(down)
    return True, "ready"


def _liveness() -> tuple[bool, str]:
    status = HEALTH.status()
    return status.startswith("ok"), status


_CHECKS: dict[str, Callable[[], tuple[bool, str]]] = {"/livez": _liveness, "/readyz": readiness}


class _Server(ThreadingMixIn, WSGIServer):
    """One thread per request: a slow scrape never holds up a probe."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Probes every few seconds would flood the log: log nothing."""


def _app() -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app(REGISTRY)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        check = _CHECKS.get(environ.get("PATH_INFO", ""))
        if check is None:
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        if environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b""]
        ok, text = check()
        start_response(
            "200 OK" if ok else "503 Service Unavailable",
            [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")],
        )
        return [text.encode() + b"\n"]

    return app


def serve_metrics(port: int, certfile: str | None = None, keyfile: str | None = None) -> int:
    """Serve :data:`REGISTRY` on ``/metrics`` and the health checks ``/livez`` and
    ``/readyz``, from daemon threads (TLS when a certificate is given).

    The checks are answered here, off the worker's event loop, so they answer (503, with
    the reason) when the worker is wedged. Returns the bound port (useful with
    ``port=0``).

    Raises
    ------
    ConfigError
        The port is taken: a second worker on one machine (``driftline monitor`` and
        ``driftline labels`` side by side) needs its own ``DRIFTLINE_METRICS_PORT``.
    """
    try:
        httpd = make_server("0.0.0.0", port, _app(), _Server, handler_class=_QuietHandler)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise ConfigError(
            f"metrics port {port} is already in use (another driftline worker on this "
            "machine?): give each worker its own, e.g. DRIFTLINE_METRICS_PORT=9110 "
            "(0: any free port, printed at start)"
        ) from None
    if certfile and keyfile:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certfile, keyfile)
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True).start()
    bound: int = httpd.server_port
    return bound
