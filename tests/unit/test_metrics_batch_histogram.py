"""``BatchHistogram`` (runtime/metrics.py) exposes what prometheus_client's Histogram
exposes for the same values observed one by one (the oracle): every ``_bucket`` and
``_count`` sample equal, ``_sum`` equal up to the order of the additions."""

from __future__ import annotations

import math
import random

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from driftline.runtime.metrics import LABEL_LAG, REGISTRY, BatchHistogram

BOUNDS = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 21600, 43200, 86400, 259200, 604800)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if not s.name.endswith("_created")
    }


def _lags(rng: random.Random, n: int) -> list[float]:
    # Lags as the joiner makes them (ms differences / 1000), with the bounds themselves
    # (le: a value equal to a bound is in that bucket), 0, negatives and past the last.
    edge = [float(b) for b in BOUNDS]
    pool = [0.0, -2.5, 1e7, *edge, *(math.nextafter(b, math.inf) for b in edge)]
    return [
        rng.choice(pool) if rng.random() < 0.2 else rng.randrange(-5_000, 10**9) / 1000.0
        for _ in range(n)
    ]


@pytest.mark.parametrize("seed", range(5))
def test_batches_expose_what_a_histogram_fed_one_by_one_exposes(seed: int) -> None:
    rng = random.Random(seed)
    ours, oracle = CollectorRegistry(), CollectorRegistry()
    batch = BatchHistogram("lag_seconds", "lag", "model", BOUNDS, ours)
    one = Histogram("lag_seconds", "lag", ["model"], buckets=BOUNDS, registry=oracle)
    for _ in range(rng.randrange(1, 8)):
        model = rng.choice(["churn", "fraud", "other"])
        values = _lags(rng, rng.randrange(0, 400))
        batch.observe_many(model, values)
        observe = one.labels(model).observe
        for v in values:
            observe(v)
    got, want = _samples(ours), _samples(oracle)
    assert got.keys() == want.keys()
    for key, value in want.items():
        if key[0].endswith("_sum"):
            assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-9)
        else:
            assert got[key] == value, key


def test_the_label_lag_series_is_in_the_worker_registry() -> None:
    LABEL_LAG.observe_many("test-batch-histogram", [0.5, 5.0, 7.0, 1e9])
    got = _samples(REGISTRY)
    name = "driftline_label_lag_seconds"
    model = ("model", "test-batch-histogram")
    assert got[(f"{name}_count", (model,))] == 4
    assert got[(f"{name}_bucket", (("le", "5.0"), model))] == 2
    assert got[(f"{name}_bucket", (("le", "604800.0"), model))] == 3
    assert got[(f"{name}_bucket", (("le", "+Inf"), model))] == 4
    assert got[(f"{name}_sum", (model,))] == pytest.approx(1e9 + 12.5)
