"""The fast loop's pure core (internal): windows, tests, detectors, episodes and alerts
over a batch of predictions, with no labels and no I/O (:mod:`.monitor`)."""
