"""The slow loop's concept-drift detectors side by side: cost per label, and detection.

Plain script (no pytest). The label error streams come from river's synthetic SEA
stream (``river.datasets.synth.SEA`` through :class:`driftline.demo.sea.SeaScenario`:
a model with 5 % label noise; a concept switch from variant 0 to 3 at prediction
5,000 of 10,000, and stationary controls), so every detector sees the same errors.

    python bench/bench_concept_detectors.py              # 5 seeds
    python bench/bench_concept_detectors.py --seeds 10 --repeat 5

Printed, per detector, beside our ADWIN (the default):

* ``update``: CPU time of one ``update`` on a 0/1 error stream (best of ``--repeat``),
  and ``snapshot``: one store + load of its state (``to_bytes`` + ``from_bytes``; the
  joiner does that once per batch per stream, not per label);
* ``share``: the update's share of a label's budget at the joiner's measured end-to-end
  rate (docs/slow-loop.md: ~10,000 labels/s per worker; a label updates 1-2 streams);
* ``core``: CPU time of the whole core (``join_batch``) per label, its prediction
  included, with that detector;
* through the slow-loop core (``join_batch``, labels 300-400 events late): runs whose
  concept switch raised ``concept_drift``, the median delay in labelled predictions
  after the switch, and concept-drift alerts on the stationary runs (false alarms).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from driftline.config import LabelsSettings
from driftline.core.detectors import ADWIN
from driftline.core.detectors.river_detectors import RiverDetector
from driftline.core.reference import ReferenceProfile, build_reference
from driftline.core.slowloop import DriftIndex, MemoryRecords, UnitState, join_batch, plan_lookups
from driftline.demo.sea import SeaScenario, interleave

N = 10_000
SWITCH = 5_000
#: Labels per second one joiner worker handles end to end (docs/slow-loop.md).
LABEL_RATE = 10_000

#: (row name, detector name, parameters)
DETECTORS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("adwin (ours, default)", "adwin", {}),
    ("ddm", "ddm", {}),
    ("eddm", "eddm", {}),
    ("hddm_a", "hddm_a", {}),
    ("hddm_w", "hddm_w", {}),
    ("hddm_w lambda .01 conf .01", "hddm_w", {"lambda_val": 0.01, "drift_confidence": 0.01}),
    ("kswin", "kswin", {}),
)


def make(name: str, params: dict[str, Any]) -> Any:
    return ADWIN(delta=0.002) if name == "adwin" else RiverDetector(name, params)


def error_stream(seed: int, n: int) -> list[float]:
    """0/1 errors of the SEA model, in prediction order."""
    preds, labels = SeaScenario(seed=seed).events(n, concept_at=n // 2)
    truth = {e["prediction_id"]: e["label"] for e in labels}
    return [float(p["prediction"] != truth[p["prediction_id"]]) for p in preds]


def best(run: Callable[[], Any], repeat: int) -> float:
    out = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        run()
        out = min(out, time.process_time() - t0)
    return out


def cost(
    name: str, params: dict[str, Any], errors: Sequence[float], repeat: int
) -> tuple[float, float]:
    """(ns per update, µs per snapshot store + load)."""

    def feed() -> None:
        det = make(name, params)
        for x in errors:
            det.update(x)

    ns = best(feed, repeat) / len(errors) * 1e9
    det = make(name, params)
    for x in errors:
        det.update(x)
    cls = type(det)
    k = 200
    us = best(lambda: [cls.from_bytes(det.to_bytes()) for _ in range(k)], repeat) / k * 1e6
    return ns, us


def run_core(
    name: str, params: dict[str, Any], ref: ReferenceProfile, seed: int, switch: bool
) -> tuple[list[int], float]:
    """Prediction indices (after the switch) of concept-drift firings, and core seconds."""
    s = LabelsSettings(concept_detector=name, concept_detector_params={name: params})
    preds, labels = SeaScenario(seed=seed).events(N, concept_at=SWITCH if switch else None)
    stream = interleave(preds, labels)
    unit, mem, drift = UnitState(), MemoryRecords(), DriftIndex()
    fired: list[int] = []
    t0 = time.process_time()
    for i in range(0, len(stream), 1000):
        chunk = stream[i : i + 1000]
        p = [e for k, e in chunk if k == "p"]
        lab = [e for k, e in chunk if k == "l"]
        plan = plan_lookups(p, lab, unit, s)
        res = join_batch(p, lab, plan, mem.lookup(plan), unit, lambda m, v: ref, drift, s)
        mem.apply(res)
        for a in res.alerts:
            if a.kind == "concept_drift" and a.status == "firing":
                fired.append((a.window.end - SeaScenario().t0_ms) // SeaScenario().step_ms)
    return fired, time.process_time() - t0


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cost-values", type=int, default=20_000)
    args = ap.parse_args(argv)
    errors = error_stream(1, args.cost_values)
    for _, name, params in DETECTORS:  # import river's modules before timing anything
        make(name, params)
    ref = build_reference(SeaScenario().training_data(5000), "sea", "1", seed=0, created_at=0)
    print(
        f"SEA (river.datasets.synth.SEA), {N} predictions, switch at {SWITCH}, "
        f"{args.seeds} seeds; cost on {len(errors)} errors, best of {args.repeat}\n"
    )
    head = (
        f"{'detector':28s} {'update ns':>10s} {'snapshot µs':>12s} {'share':>7s} "
        f"{'detected':>9s} {'median delay':>13s} {'false alarms':>13s} {'core µs/label':>14s}"
    )
    print(head)
    print("-" * len(head))
    for row, name, params in DETECTORS:
        ns, us = cost(name, params, errors, args.repeat)
        delays, false_alarms, secs = [], 0, 0.0
        for seed in range(args.seeds):
            fired, t = run_core(name, params, ref, 100 + seed, switch=True)
            secs += t
            after = [f - SWITCH for f in fired if f >= SWITCH]
            if after:
                delays.append(min(after))
            false_alarms += len([f for f in fired if f < SWITCH])
            fired, t = run_core(name, params, ref, 200 + seed, switch=False)
            secs += t
            false_alarms += len(fired)
        share = ns * 1e-9 * 2 * LABEL_RATE
        med = f"{statistics.median(delays):.0f}" if delays else "-"
        per_label = secs / (2 * args.seeds * N) * 1e6
        print(
            f"{row:28s} {ns:10.0f} {us:12.1f} {share:7.1%} "
            f"{len(delays):>4d}/{args.seeds:<4d} {med:>13s} "
            f"{false_alarms:>6d} /{2 * args.seeds:<3d} run {per_label:11.1f}"
        )
    print(
        "\nshare: update time of the 1-2 streams a label feeds, at "
        f"{LABEL_RATE} labels/s (one worker's measured end-to-end rate).\n"
        "delay: predictions after the switch until the first concept_drift alert's window "
        "end (labels arrive 300-400 predictions later). false alarms: concept_drift "
        "firings before the switch or on stationary runs."
    )


if __name__ == "__main__":
    main()
