"""The I/O shell (internal): Kafka, Redis and Prometheus around the pure core.

This package owns the workers that run the core on live streams (the monitor,
:mod:`~driftline.runtime.monitor`; the label joiner, :mod:`~driftline.runtime.labels`;
the retraining trigger, a faust app in :mod:`~driftline.runtime.retrain_app` around the
policy in :mod:`~driftline.runtime.retrain`), the state store in Redis
with its commit protocol (:mod:`~driftline.runtime.store`, its Lua scripts in ``lua/``,
key layout in :mod:`~driftline.runtime.keyspace`, signed envelopes in
:mod:`~driftline.runtime.sealer`), the history store (:mod:`~driftline.runtime.history`),
the metrics (:mod:`~driftline.runtime.metrics`) and the local dev stack
(:mod:`~driftline.runtime.devstack`, for people and tests only). It may import the
contract and the core, never the views, the CLI or the demo. Internal: module paths may
change; the public API is :mod:`driftline`.
"""
