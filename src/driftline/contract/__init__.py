"""The wire and stored formats (internal).

This package owns what crosses a process boundary: the event models and their fast
checks (:mod:`~driftline.contract.events`, :mod:`~driftline.contract.batch`), the
columnar form of events and the decoding of fetched records into columns
(:mod:`~driftline.contract.columnar`, :mod:`~driftline.contract.decode`), stream keys
(:mod:`~driftline.contract.keys`, the one ``segment_key``), versioned JSON records
(:mod:`~driftline.contract.codec`), history entry formats
(:mod:`~driftline.contract.history`) and the JSON Schemas shipped as package data
(``schemas/``). It is pure: no Kafka, Redis or metrics, and it imports nothing else
of Driftline but :mod:`driftline.errors`. Internal: the public API is
:mod:`driftline`; module paths here may change.
"""
