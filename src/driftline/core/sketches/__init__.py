"""Mergeable per-window sketches of one feature, on the reference profile's bins.

A reference profile fixes, per numeric feature, interior bin edges
``e_1 < ... < e_{B-1}`` and, per categorical feature, its top-K categories. The live
stream keeps one sketch per window and feature on exactly those bins, so every
window-versus-reference test in :mod:`driftline.core.stats` works on two count vectors.

Sketches form a monoid: ``zero`` is the identity of ``merge``, ``merge`` is associative
and commutative, and ``zero().update(a ++ b)`` equals ``zero().update(a).merge(
zero().update(b))`` (exactly for every count; within rounding for the moments).
Partitions and windows therefore combine in any order.

Conventions
-----------
* Numeric bin ``i`` is ``(e_i, e_{i+1}]`` with ``e_0 = -inf`` and ``e_B = +inf``, so the
  bin of ``x`` is ``np.searchsorted(edges, x, side="left")``.
* ``NaN`` (and ``None`` in the input) is *missing*; ``+inf``/``-inf`` are *nonfinite*.
  Neither lands in a bin or in the moments: ``counts`` sums to ``n``, the number of
  finite values, and ``total = n + missing + nonfinite``.
* Categorical values are matched by string equality; ``None`` and float ``NaN`` are
  missing; anything else outside the top K lands in the last, "other" bucket.
* ``update`` changes the sketch in place and returns it; ``merge`` returns a new sketch.
  The arrays a sketch exposes are read-only.

Banks
-----
The monitor keeps the windows of all of a model's features as *banks*
(:class:`NumericSketchBank`, :class:`CategoricalSketchBank`): the sketches of many
columns as the rows of a few arrays, updated by one vectorised pass per batch and
turned back into sketches when the state is stored. A sketch's own ``update`` is a
bank of one column, so there is one implementation of the update and the contract
suite (tests/unit/test_sketches.py) runs it.

Bytes
-----
``to_bytes`` writes a :func:`driftline.contract.codec.pack` record. Storing the bin edges (or the
category list) in every window sketch would be wasteful, so a record carries only a
fingerprint of them (BLAKE2b-128 of the float64 little-endian edge bytes, resp. of the
length-prefixed UTF-8 categories), and ``from_bytes`` needs the caller to pass the edges
(categories) of the reference, refusing a mismatch with
:class:`~driftline.errors.SketchMismatch`. ``to_bytes(embed=True)`` stores them as well,
for self-contained records. A record that is not valid JSON, has another tag or version,
or holds inconsistent fields raises :class:`~driftline.errors.StateCorrupt`.
"""

from __future__ import annotations

from driftline.core.sketches._common import categories_fingerprint, edges_fingerprint
from driftline.core.sketches.binning import GridBinner, Located, NumericBins
from driftline.core.sketches.categorical import (
    CategoricalBins,
    CategoricalSketch,
    CategoricalSketchBank,
)
from driftline.core.sketches.numeric import NumericSketch, NumericSketchBank

__all__ = [
    "CategoricalBins",
    "CategoricalSketch",
    "CategoricalSketchBank",
    "GridBinner",
    "Located",
    "NumericBins",
    "NumericSketch",
    "NumericSketchBank",
    "categories_fingerprint",
    "edges_fingerprint",
]
