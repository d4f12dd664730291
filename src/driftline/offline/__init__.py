"""Offline entry points (internal modules; the public names are in :mod:`driftline`).

This package owns what runs the core over files instead of live streams: the replay
of a JSONL file of prediction events through the same pure core as the worker, its
history and drift report (:mod:`~driftline.offline.replay`). It may import the
contract, the core and the views, never the Kafka parts of the runtime.
"""
