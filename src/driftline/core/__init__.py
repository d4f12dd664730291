"""The pure core (internal): every decision Driftline makes, with no I/O.

This package owns the algorithms: sketches (:mod:`~driftline.core.sketches`), the
statistics on them (:mod:`~driftline.core.stats`), the sequential change detectors
(:mod:`~driftline.core.detectors`), reference profiles and their calibration
(:mod:`~driftline.core.reference`, :mod:`~driftline.core.calibration`), the fast loop
(:mod:`~driftline.core.fastloop`: a batch of predictions and the states in, alerts and
new states out) and the slow loop (:mod:`~driftline.core.slowloop`: the join of labels
to predictions, performance and concept drift). Processing a batch is a function of
(events, state); the core imports only :mod:`driftline.contract`, :mod:`driftline.config`
and :mod:`driftline.errors`, never Kafka, Redis or metrics clients. Internal: module
paths may change; the public API is :mod:`driftline`.
"""
