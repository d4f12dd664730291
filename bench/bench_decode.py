"""Decode cost per prediction event: orjson alone, orjson + fast check, pydantic.

Run: ``python bench/bench_decode.py [--number N] [--repeat R]``

The event is a typical ~600-byte prediction: 20 numeric and 3 categorical features and
scores for 3 classes. Each figure is the best of ``--repeat`` runs of ``--number``
decodes, timed in CPU time of this process (``time.process_time``), so other work on a
shared machine disturbs it less; the minimum is the least disturbed run.
"""

from __future__ import annotations

import argparse
import random
import time
import timeit
from collections.abc import Callable

import orjson

from driftline.contract.checks import (
    check_prediction,
    decode_prediction_fast,
)
from driftline.contract.events import (
    PredictionEvent,
    decode_prediction,
)


def make_event() -> bytes:
    rng = random.Random(42)
    features: dict[str, object] = {f"num_{i:02d}": round(rng.gauss(50, 20), 3) for i in range(20)}
    features |= {"plan": "premium", "region": "eu-west-1", "device": "android"}
    event = {
        "schema_version": 1,
        "prediction_id": "p-000001234567",
        "model_id": "churn-classifier",
        "model_version": "2026.01.3",
        "timestamp": 1767225600123,
        "features": features,
        "prediction": "stay",
        "scores": {"stay": 0.71, "leave": 0.22, "unsure": 0.07},
        "segment": {"country": "DE"},
    }
    return orjson.dumps(event)


def orjson_and_check(data: bytes) -> object:
    obj = orjson.loads(data)
    if check_prediction(obj) is not None:
        raise AssertionError("the benchmark event must be valid")
    return obj


def best_us(fn: Callable[[bytes], object], data: bytes, number: int, repeat: int) -> float:
    runs = timeit.repeat(lambda: fn(data), number=number, repeat=repeat, timer=time.process_time)
    return min(runs) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    data = make_event()
    obj = orjson.loads(data)
    assert check_prediction(obj) is None
    assert decode_prediction(data).model_dump() == obj
    n_features = len(obj["features"])
    print(f"event: {len(data)} bytes, {n_features} features, {len(obj['scores'])} classes")
    print(f"best of {args.repeat} x {args.number} decodes\n")

    cases: list[tuple[str, Callable[[bytes], object]]] = [
        ("orjson.loads", orjson.loads),
        ("orjson.loads + check_prediction", orjson_and_check),
        ("decode_prediction_fast", decode_prediction_fast),
        ("decode_prediction (pydantic)", decode_prediction),
        ("  of which model_validate", lambda _: PredictionEvent.model_validate(obj)),
        ("  check_prediction alone", lambda _: check_prediction(obj)),
    ]
    results = {name: best_us(fn, data, args.number, args.repeat) for name, fn in cases}
    base = results["decode_prediction (pydantic)"]
    print(f"{'path':34} {'us/event':>9} {'vs pydantic':>12}")
    for name, us in results.items():
        print(f"{name:34} {us:9.2f} {base / us:11.1f}x")
    ratio = results["  of which model_validate"] / results["  check_prediction alone"]
    print(f"\nvalidation alone: check_prediction is {ratio:.1f}x faster than model_validate")


if __name__ == "__main__":
    main()
