"""The join core's shortcuts equal the plain forms they replace (random and edge inputs)."""

from __future__ import annotations

import random

import numpy as np

from driftline.core.detectors import ADWIN
from driftline.core.slowloop.columns import _SCALE_MUL
from driftline.core.slowloop.pending import (
    SCORE_SCALE,
    bucket_of,
    prediction_digest,
    prediction_digests,
)
from driftline.core.slowloop.scoring import _SCALE_DIV


def test_prediction_digests_equal_one_by_one() -> None:
    rng = random.Random(3)
    ids = ["", "p", "p\x1fq", "é", *(f"p{rng.randrange(10**9)}" for _ in range(200))]
    events = [{"model_id": rng.choice(["m", "m\x1f", "churn"]), "prediction_id": p} for p in ids]
    known: dict[str, bytes] = {}
    first = prediction_digests(events, known)
    assert first == [prediction_digest(e["model_id"], e["prediction_id"]) for e in events]
    # a second batch (the labels) reuses them, and a new one is hashed
    more = [*reversed(events), {"model_id": "m", "prediction_id": "new"}]
    assert prediction_digests(more, known) == [
        prediction_digest(e["model_id"], e["prediction_id"]) for e in more
    ]
    assert prediction_digests([], {}) == []


def test_bucket_of_is_the_first_four_bytes_little_endian() -> None:
    rng = random.Random(9)
    digests = [bytes(12), b"\xff" * 12, *(rng.randbytes(12) for _ in range(2000))]
    for d in digests:
        for n in (1, 2, 7, 64, 65_536):
            assert bucket_of(d, n) == int.from_bytes(d[:4], "little") % n


def test_score_scaling_equals_the_arithmetic() -> None:
    rng = np.random.default_rng(5)
    values = [0, 1, 0.0, 1.0, 0.5 / SCORE_SCALE, 1.5 / SCORE_SCALE, 5e-324, 1 - 2**-53]
    values += rng.random(20_000).tolist()
    for v in values:
        assert round(_SCALE_MUL(v)) == round(v * SCORE_SCALE)
    for q in range(SCORE_SCALE + 1):
        assert _SCALE_DIV(q) == q / SCORE_SCALE


def test_adwin_update_equals_update_many() -> None:
    # ADWIN.update (one value, the joiner's) against the vectorised loop, whole state.
    rng = np.random.default_rng(11)
    xs = np.r_[rng.random(3000) < 0.1, rng.random(3000) < 0.5, rng.random(500)].astype(float)
    for params in ({}, {"clock": 1}, {"clock": 7, "grace_period": 0, "max_buckets": 2}):
        one, many = ADWIN(**params), ADWIN(**params)
        hits = [i for i, x in enumerate(xs.tolist()) if one.update(x).drift_detected]
        assert hits == many.update_many(xs).tolist() and hits
        assert one.to_bytes() == many.to_bytes()
