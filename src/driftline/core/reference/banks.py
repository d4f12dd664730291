"""A reference's detector banks: compiled and calibrated at build, or on load of an older
reference (internal).

Every feature and output of a reference gets a bank of calibrated CUSUMs
(:mod:`driftline.core.detectors.plans`). The false-alarm budget is the policy's one
number, ``false_alarm_events``, per stream (model, version, segment) and alert kind:
each of the kind's units (the features for ``input_drift``; the class mix, confidence,
low-confidence rate or predicted value for ``output_drift``) gets an equal share of it,
so a unit's target ARL is ``false_alarm_events x units``; the unit's detection rows
share that equally (:mod:`~driftline.core.detectors.plans`).

A numeric unit is calibrated on quantile points of its reference column
(:func:`~driftline.core.detectors.plans.quantile_points`) at build. A reference stored
by an older Driftline (layout 1) has no banks and no column, only its profile's 100
quantile bins: :func:`bank_points_from_bins` spreads each bin's count evenly over the
bin (over its whole numbers when the data are whole numbers), which is close to the
column for calibration (``tests/unit/test_reference_banks.py`` measures how close);
rebuilding the reference calibrates on the column itself. Calibrating on load is
deterministic (seeded by the reference id) and cached per reference.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.core.detectors.plans import (
    BankSettings,
    FeaturePlan,
    compile_categorical,
    compile_numeric,
    compile_rate,
    quantile_points,
)

__all__ = [
    "OUTPUT_UNITS",
    "Points",
    "attach_banks",
    "bank_points_from_bins",
    "cached",
    "compile_input",
    "compile_output",
    "column_points",
    "policy_key",
    "seed_of",
]

F64 = NDArray[np.float64]

#: Points standing for a numeric column: values and their weights (None: equal).
Points = tuple[F64, F64 | None]

#: The output units, by the name their bank and alerts use.
OUTPUT_UNITS = ("__class__", "__confidence__", "__low_confidence__", "__prediction__")

#: Quantile points of a reference column kept for calibration.
CALIBRATION_POINTS = BankSettings().calibration_points


def column_points(values: F64) -> Points:
    """Quantile points of a reference column (NaN and infinities ignored)."""
    return quantile_points(np.asarray(values, dtype=np.float64), CALIBRATION_POINTS), None


def bank_points_from_bins(
    edges: NDArray[np.float64], counts: NDArray[np.int64], lo: float, hi: float
) -> Points:
    """Points standing for a column known only by its quantile bins.

    Bin ``k`` holds the values in ``(edges[k-1], edges[k]]`` (the first from ``lo``, the
    last to ``hi``); its count is spread evenly over the bin, or over the whole numbers
    in it when every edge and both ends are whole numbers.
    """
    bounds = np.r_[lo, np.asarray(edges, dtype=np.float64), hi]
    whole = bool(np.all(bounds == np.round(bounds)))
    total = float(np.sum(counts))
    values: list[F64] = []
    weights: list[F64] = []
    for k, c in enumerate(np.asarray(counts).tolist()):
        if c <= 0:
            continue
        a, b = float(bounds[k]), float(bounds[k + 1])
        if k == 0 or a >= b:
            a = min(a, b)
        if whole:
            start = a if k == 0 else a + 1
            pts = np.arange(start, b + 1, dtype=np.float64)
        else:
            m = max(1, min(64, int(round(c / total * CALIBRATION_POINTS))))
            u = (np.arange(m) + 0.5) / m
            if k == len(counts) - 1:  # the top tail thins out towards the maximum
                u = 1 - np.sqrt(1 - u)
            elif k == 0:  # and the bottom one towards the minimum
                u = np.sqrt(u)
            pts = a + u * (b - a) if b > a else np.full(1, b)
        if pts.size == 0:
            pts = np.full(1, b)
        values.append(pts)
        weights.append(np.full(pts.size, c / total / pts.size))
    if not values:
        return np.zeros(0), None
    return np.concatenate(values), np.concatenate(weights)


def compile_input(
    name: str,
    profile: Any,
    points: Points | None,
    *,
    units: int,
    policy: Any,
    seed: int,
) -> FeaturePlan | None:
    """The bank of input feature ``name`` (its profile; a numeric one's column points, or
    None to spread its bins); None when the feature cannot drift or is switched off."""
    if policy.feature_overrides.get(name, {}).get("bank", 1) == 0:
        return None
    target = policy.false_alarm_events * max(1, units)
    return _compile(name, profile, points, target, policy.bank_settings(), seed)


def compile_output(
    name: str,
    profile: Any,
    points: Points | None,
    *,
    units: int,
    policy: Any,
    seed: int,
    cut: float = 0.0,
    rate: float = 0.0,
) -> FeaturePlan | None:
    """The bank of output unit ``name`` (one of :data:`OUTPUT_UNITS`); for
    ``__low_confidence__`` the share of confidences below ``cut`` (``rate``)."""
    if policy.feature_overrides.get(name, {}).get("bank", 1) == 0:
        return None
    target = policy.false_alarm_events * max(1, units)
    settings = policy.bank_settings()
    if name == "__low_confidence__":
        return compile_rate(
            name, rate, cut, n_ref=int(profile.n), target_arl=target, seed=seed, settings=settings
        )
    return _compile(name, profile, points, target, settings, seed)


def _compile(
    name: str,
    profile: Any,
    points: Points | None,
    target: float,
    settings: BankSettings,
    seed: int,
) -> FeaturePlan | None:
    if profile.kind == "categorical":
        return compile_categorical(
            name,
            profile.categories,
            np.asarray(profile.counts).tolist(),
            target_arl=target,
            seed=seed,
            settings=settings,
        )
    if profile.n <= 0 or not profile.std > 0:
        return None
    if points is None:
        points = bank_points_from_bins(profile.edges, profile.counts, profile.min, profile.max)
    values, weights = points
    return compile_numeric(
        name,
        values,
        n_ref=int(profile.n),
        target_arl=target,
        seed=seed,
        mean=float(profile.mean),
        std=float(profile.std),
        weights=weights,
        settings=settings,
    )


def attach_banks(
    features: Mapping[str, Any],
    outputs: Any,
    policy: Any,
    seed: int,
    points: Mapping[str, Points] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, Any], Any]:
    """The feature and output profiles with their banks compiled and calibrated.

    ``points`` hold each numeric column's quantile points (:func:`column_points`; keys
    are feature names and ``__confidence__`` / ``__prediction__``); a numeric profile
    without points is calibrated on its bins (:func:`bank_points_from_bins`).
    ``progress(done, total)`` is called after each feature's calibration (the longest
    step of a wide model's build).
    """
    pts = points or {}
    n_in = len(features)
    feats: dict[str, Any] = {}
    for i, (name, prof) in enumerate(features.items(), 1):
        plan = compile_input(name, prof, pts.get(name), units=n_in, policy=policy, seed=seed)
        feats[name] = replace(prof, bank=plan)
        if progress is not None:
            progress(i, n_in)
    conf = outputs.confidence
    present = {
        "__class__": outputs.classes,
        "__confidence__": conf,
        "__low_confidence__": conf if conf is not None and conf.n > 0 else None,
        "__prediction__": outputs.prediction,
    }
    n_out = sum(1 for p in present.values() if p is not None)

    def bank(name: str) -> FeaturePlan | None:
        prof = present[name]
        if prof is None:
            return None
        return compile_output(
            name,
            prof,
            pts.get(name),
            units=n_out,
            policy=policy,
            seed=seed,
            cut=outputs.low_confidence_threshold,
            rate=outputs.low_confidence_rate,
        )

    out = replace(
        outputs,
        classes=replace(outputs.classes, bank=bank("__class__")) if outputs.classes else None,
        confidence=replace(conf, bank=bank("__confidence__")) if conf is not None else None,
        low_confidence_bank=bank("__low_confidence__"),
        prediction=(
            replace(outputs.prediction, bank=bank("__prediction__"))
            if outputs.prediction is not None
            else None
        ),
    )
    return feats, out


def seed_of(reference_id: str) -> int:
    """The calibration seed of a reference calibrated on load (from its id)."""
    return zlib.crc32(reference_id.encode())


_CACHE: dict[tuple[str, str], Any] = {}


def cached(key: tuple[str, str], make: Callable[[], Any]) -> Any:
    """``make()`` once per key (a reference id and its policy), kept for later loads: a
    worker re-reads its references every few seconds, and calibrating takes a while."""
    hit = _CACHE.get(key)
    if hit is None:
        if len(_CACHE) >= 256:
            _CACHE.clear()
        hit = _CACHE[key] = make()
    return hit


def policy_key(policy: Mapping[str, Any]) -> str:
    """A stable text of a policy's stored form (part of the cache key)."""
    return repr(sorted((k, repr(v)) for k, v in policy.items()))
