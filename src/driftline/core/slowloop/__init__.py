"""The slow loop's pure core (internal): joining delayed labels to pending predictions,
performance, concept drift and the diagnosis of input drift, with no I/O (:mod:`.join`)."""
