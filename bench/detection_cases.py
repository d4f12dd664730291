"""The streams of the detection benchmark (``bench_detection.py``): cases and generators.

Seeded, our own (no external data): 20,000 predictions with 5 numeric features of
different shapes (x0 normal, x1 log-normal, x2 Student t5, x3 Poisson, x4 uniform) and
2 categorical ones (c0 4 categories, c1 6), a binary prediction from a fixed model, a
noisy label, and a change at event 10,000 (``CASES``).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

N_EVENTS = 20_000
CHANGE = 10_000
WITHIN = 2_500
LABEL_LAG = 200
T0 = 1_767_225_600_000
STEP_MS = 10
BATCH = 500

NUMERIC = ("x0", "x1", "x2", "x3", "x4")
CATEGORICAL = ("c0", "c1")
C0 = (("basic", 0.5), ("pro", 0.3), ("team", 0.15), ("enterprise", 0.05))
C1 = (("eu", 0.3), ("us", 0.25), ("apac", 0.2), ("latam", 0.1), ("mea", 0.1), ("oc", 0.05))
X0_MEAN, X0_SD = 50.0, 10.0


@dataclass(frozen=True)
class Case:
    """One benchmark case: what changes at event 10,000 and what the issue asks."""

    title: str
    feature: str | None
    bar: str = ""


CASES: dict[str, Case] = {
    "mean05": Case("0.5 sd mean shift (x0)", "x0", "median <= 150"),
    "mean025": Case("0.25 sd mean shift (x0)", "x0", ">= 95% within 2,500"),
    "mean0125": Case("0.125 sd mean shift (x0; below the smallest bank shift)", "x0", ""),
    "category": Case("category mix: 12% of c0 -> 'enterprise' (5% -> 16%)", "c0", "median <= 250"),
    "scale15": Case("variance: sd x1.5 (x0)", "x0", "median <= 450"),
    "var15": Case("variance x1.5 (sd x1.22, x0)", "x0", ""),
    "ramp": Case("ramp: x0 mean +1 sd per 2,500 events", "x0", "median <= 950"),
    "stationary": Case("stationary: false alarms per run per feature", None, "<= 0.05"),
    "back": Case("0.5 sd shift 10,000-13,000, then back", "x0", ""),
    "concept": Case("concept switch, labels 200 late (error rate)", "error", ""),
}
#: Fraction of c0's events switched to its rarest category in the "category" case.
CATEGORY_SWITCH = 0.12
#: x0's mean rises this many sd per event in the "ramp" case.
RAMP_PER_EVENT = 1 / 2_500


# ------------------------------------------------------------------------ generators


@dataclass
class Stream:
    """Columns of one stream (or of training rows): values, codes, prediction, label."""

    x: np.ndarray  # (5, n) float
    c: np.ndarray  # (2, n) int codes into C0 / C1
    score: np.ndarray  # the model's score; prediction = score > 0
    label: np.ndarray  # bool

    @property
    def n(self) -> int:
        return int(self.x.shape[1])


def generate(rng: np.random.Generator, n: int, case: str | None) -> Stream:
    """``n`` events; from event ``CHANGE`` on, the change of ``case`` (None: none)."""
    idx = np.arange(n)
    after = idx >= CHANGE if case else np.zeros(n, dtype=bool)
    z0 = rng.normal(0.0, 1.0, n)
    if case == "mean05":
        z0 = z0 + 0.5 * after
    elif case == "mean025":
        z0 = z0 + 0.25 * after
    elif case == "mean0125":
        z0 = z0 + 0.125 * after
    elif case == "scale15":
        z0 = np.where(after, z0 * 1.5, z0)
    elif case == "var15":
        z0 = np.where(after, z0 * math.sqrt(1.5), z0)
    elif case == "ramp":
        z0 = z0 + np.where(after, (idx - CHANGE) * RAMP_PER_EVENT, 0.0)
    elif case == "back":
        z0 = z0 + 0.5 * (after & (idx < CHANGE + 3_000))
    x = np.empty((5, n))
    x[0] = X0_MEAN + X0_SD * z0
    x[1] = 20.0 * rng.lognormal(0.0, 0.6, n)
    x[2] = 100.0 + 3.0 * rng.standard_t(5, n)
    x[3] = rng.poisson(4.0, n).astype(np.float64)
    x[4] = rng.random(n)
    c = np.empty((2, n), dtype=np.int64)
    c[0] = rng.choice(len(C0), n, p=[p for _, p in C0])
    c[1] = rng.choice(len(C1), n, p=[p for _, p in C1])
    if case == "category":
        c[0] = np.where(after & (rng.random(n) < CATEGORY_SWITCH), len(C0) - 1, c[0])
    # A fixed model: score on x0 and x2 (standardised); the label follows the same rule
    # with noise, until the concept switches (x2's sign flips in the labelling rule).
    s0 = z0
    s2 = (x[2] - 100.0) / (3.0 * math.sqrt(5 / 3))
    score = s0 + 0.6 * s2
    noise = 0.45 * rng.normal(0.0, 1.0, n)
    truth = np.where(after & (case == "concept"), s0 - 0.6 * s2, score) + noise
    return Stream(x=x, c=c, score=score, label=truth > 0)


def stream_rng(seed: int, run: int, what: str) -> np.random.Generator:
    return np.random.default_rng([seed, run, zlib.crc32(what.encode())])


def events_of(s: Stream) -> list[dict[str, Any]]:
    """Prediction events (dicts, as the monitor's core takes them)."""
    xs = s.x.T.tolist()
    c0 = [C0[i][0] for i in s.c[0].tolist()]
    c1 = [C1[i][0] for i in s.c[1].tolist()]
    pred = ["yes" if v > 0 else "no" for v in s.score.tolist()]
    out = []
    for i in range(s.n):
        row = xs[i]
        out.append(
            {
                "prediction_id": f"p{i}",
                "model_id": "bench",
                "model_version": "1",
                "timestamp": T0 + i * STEP_MS,
                "features": {
                    "x0": row[0],
                    "x1": row[1],
                    "x2": row[2],
                    "x3": row[3],
                    "x4": row[4],
                    "c0": c0[i],
                    "c1": c1[i],
                },
                "prediction": pred[i],
            }
        )
    return out
