"""Multivariate drift: changes in how features move together that no marginal shows.

Every other test of the fast loop looks at one feature at a time. Two features that
moved together in training can stop doing so (a sensor swapped, a join key changed
upstream, a fraud pattern recombining normal values) while each marginal stays put.
This package watches the features *jointly*, per stream, online:

* :mod:`.design`: each event as a vector of scores (numeric features as normal scores
  on the reference's quantile bins, frequent categories as standardised indicators);
* :mod:`.fit`: at reference build, principal components of the scores (all of them up
  to ``max_components`` columns, the top ones beyond, by randomized SVD), two per-event
  channels (Hotelling's T^2 and the weighted reconstruction error), and CUSUM rows on
  them calibrated on held-out reference rows for the false-alarm budget (:mod:`.arl`);
* :mod:`.detector`: the sequential detector per stream (fire, update, return,
  resolve; exact fixed-point state, the same whatever the batch boundaries);
* :mod:`.sketch`: the sufficient statistics of a window or an episode in component
  space (a monoid with versioned bytes) and the attribution they give: the features
  and pairs whose joint behaviour moved most.

``bench/bench_multivariate.py`` measures it; ``docs/multivariate.md`` has the design
and the figures.

Examples
--------
>>> import numpy as np
>>> from driftline.core.reference import numeric_profile
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(2, 4000)); x[1] = 0.8 * x[0] + 0.6 * x[1]
>>> cols = []
>>> for i in range(2):
...     p = numeric_profile(x[i])
...     cols.append(NumericInput(f"x{i}", x[i], p.edges, p.counts))
>>> model = fit_multivariate(cols, [], target_arl=1e5, seed=0)
>>> model.k, model.channel_names
(2, ('t2',))
>>> det = MultivariateDetector(model)
>>> live = rng.normal(size=(2, 2000))  # the same marginals, the correlation gone
>>> fired = det.update_many(model.design.scores({"x0": live[0], "x1": live[1]}, {}, 2000))
>>> bool(fired.size), [f for f, _, _ in attribute(model, det.recent()).features]
(True, ['x0', 'x1'])
"""

from driftline.core.multivariate.design import CategoricalInput, Design, NumericInput
from driftline.core.multivariate.detector import MultivariateDetector, Transition
from driftline.core.multivariate.fit import (
    FORMAT_VERSION,
    MultivariateProfile,
    MultivariateSettings,
    fit_multivariate,
)
from driftline.core.multivariate.sketch import Attribution, ComponentSketch, attribute

__all__ = [
    "FORMAT_VERSION",
    "Attribution",
    "CategoricalInput",
    "ComponentSketch",
    "Design",
    "MultivariateDetector",
    "MultivariateProfile",
    "MultivariateSettings",
    "NumericInput",
    "Transition",
    "attribute",
    "fit_multivariate",
]
