"""river's concept-drift detectors behind versioned JSON snapshots (never pickle).

The oracle is river itself: a detector stored and restored every few updates must give
exactly the detections (and warnings) of one uninterrupted river detector on the same
sequence, for several seeds and streams.
"""

from __future__ import annotations

import importlib
import random
from typing import Any, get_args

import orjson
import pytest

from driftline.config import ConceptDetectorName, LabelsSettings
from driftline.core.detectors import ADWIN
from driftline.core.detectors.river_detectors import (
    _CODECS,
    RIVER_DETECTORS,
    RiverDetector,
    river_version,
)
from driftline.core.slowloop import CONCEPT_DETECTORS, check_concept_settings
from driftline.core.slowloop.concept import new_detector
from driftline.errors import ConfigError, StateCorrupt

SEEDS = (0, 1, 2, 3)


def _errors(seed: int) -> list[float]:
    """A 0/1 error stream: 10 % errors, a rise to 30 %, back to 10 %, then 20 %."""
    rng = random.Random(seed)
    out: list[float] = []
    for rate, n in ((0.1, 2500), (0.3, 1500), (0.1, 2500), (0.2, 2000)):
        out += [float(rng.random() < rate) for _ in range(n)]
    return out


def _abs_errors(seed: int) -> list[float]:
    """Absolute errors of a regression (KSWIN's stream): the error grows at 600."""
    rng = random.Random(seed)
    return [abs(rng.gauss(0.0 if i < 600 else 1.5, 1.0)) for i in range(1200)]


def _stream(kind: str, seed: int) -> list[float]:
    # KSWIN tests every update with scipy's KS test (slow), and a KS test on 0/1
    # values is weak: it gets a shorter, continuous stream.
    return _abs_errors(seed) if kind == "kswin" else _errors(seed)


def _oracle(kind: str, params: dict[str, Any]) -> Any:
    codec = _CODECS[kind]
    return getattr(importlib.import_module(codec.module), codec.cls)(**params)


def _run_river(det: Any, xs: list[float]) -> tuple[list[int], list[int]]:
    drifts, warnings = [], []
    for i, x in enumerate(xs):
        det.update(x)
        if det.drift_detected:
            drifts.append(i)
        if getattr(det, "warning_detected", False):
            warnings.append(i)
    return drifts, warnings


@pytest.mark.parametrize("kind", RIVER_DETECTORS)
@pytest.mark.parametrize("seed", SEEDS)
def test_snapshot_restore_continue_equals_an_uninterrupted_river_detector(kind, seed):
    xs = _stream(kind, seed)
    params = {"seed": seed} if kind == "kswin" else {}
    want = _run_river(_oracle(kind, {**_CODECS[kind].params, **params}), xs)
    rng = random.Random(100 + seed)
    det = RiverDetector(kind, params)
    drifts, warnings = [], []
    next_restart = rng.randint(1, 60)
    for i, x in enumerate(xs):
        if i == next_restart:
            # Through bytes, as the joiner stores it (JSON; floats exact).
            det = RiverDetector.from_bytes(det.to_bytes())
            next_restart += rng.randint(1, 60)
        det.update(x)
        if det.drift_detected:
            drifts.append(i)
        if det.warning_detected:
            warnings.append(i)
    assert (drifts, warnings) == want
    assert drifts, f"{kind} detected nothing on seed {seed}: the comparison proves little"


@pytest.mark.parametrize("kind", RIVER_DETECTORS)
def test_a_restored_detector_has_the_same_state_and_is_plain_json(kind):
    det = RiverDetector(kind)
    for x in _stream(kind, 9)[:3100]:
        det.update(x)
    blob = det.to_bytes()
    assert b"pickle" not in blob and orjson.loads(blob)["t"] == "river_detector"
    again = RiverDetector.from_bytes(blob)
    assert again.to_dict() == det.to_dict()
    assert again.to_bytes() == blob
    assert det.to_dict()["river"] == river_version()


def test_kswin_is_seeded_and_its_generator_state_is_in_the_snapshot():
    det = RiverDetector("kswin", {"seed": 5})
    for x in _errors(1)[:500]:
        det.update(x)
    snap = det.to_dict()
    version, words, _ = snap["state"]["rng"]
    assert version == 3 and len(words) == 625
    # Two restores of one snapshot draw the same random windows from there on.
    a, b = RiverDetector.from_dict(snap), RiverDetector.from_dict(snap)
    assert a._det._rng.random() == b._det._rng.random()
    assert RiverDetector("kswin").params["seed"] == 0  # never unseeded


def test_hddm_w_ewma_restores_bit_for_bit():
    # river's EWMean is Rust without a setter: the snapshot restores it by one update.
    det = RiverDetector("hddm_w", {"lambda_val": 0.1})
    rng = random.Random(3)
    for _ in range(777):
        det.update(float(rng.random() < 0.37))
    again = RiverDetector.from_dict(det.to_dict())
    for name in ("_total", "_s1_incr", "_s2_incr", "_s1_decr", "_s2_decr"):
        mine, theirs = getattr(det._det, name), getattr(again._det, name)
        assert (mine.ewma, mine.ibc, mine.is_init) == (theirs.ewma, theirs.ibc, theirs.is_init)


def test_a_snapshot_of_another_river_version_is_refused_clearly():
    snap = RiverDetector("ddm").to_dict()
    snap["river"] = "0.19.0"
    with pytest.raises(StateCorrupt, match=r"river '0\.19\.0'.*this build runs river"):
        RiverDetector.from_dict(snap)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda s: s.update(kind="pickle"), "unknown or missing kind"),
        (lambda s: s["state"].update(p=["x", 1]), "expected a number"),
        (lambda s: s["state"].pop("p_min"), "malformed"),
        (lambda s: s.update(drift=1), "flags"),
        (lambda s: s["params"].update(evil=1), "unknown parameter"),
        (lambda s: s.update(width="3"), "integer"),
    ],
)
def test_malformed_snapshots_are_refused(change, match):
    snap = RiverDetector("ddm").update(1.0).to_dict()
    change(snap)
    with pytest.raises(StateCorrupt, match=match):
        RiverDetector.from_dict(snap)


def test_a_tampered_kswin_generator_is_refused():
    snap = RiverDetector("kswin").to_dict()
    snap["state"]["rng"][1] = snap["state"]["rng"][1][:10]
    with pytest.raises(StateCorrupt, match="625 integers"):
        RiverDetector.from_dict(snap)


def test_parameters_are_checked():
    assert RiverDetector("ddm", {"drift_threshold": 4}).params["drift_threshold"] == 4.0
    with pytest.raises(ConfigError, match="unknown parameter"):
        RiverDetector("ddm", {"delta": 0.1})
    with pytest.raises(ConfigError, match="whole number"):
        RiverDetector("kswin", {"window_size": 10.5})
    with pytest.raises(ConfigError, match="alpha"):
        RiverDetector("eddm", {"alpha": 0.5, "beta": 0.9})
    with pytest.raises(ConfigError, match="unknown river detector"):
        RiverDetector("fhddm")


def test_the_settings_name_every_detector_the_slow_loop_runs():
    assert set(get_args(ConceptDetectorName)) == set(CONCEPT_DETECTORS)
    for name in CONCEPT_DETECTORS:
        check_concept_settings(LabelsSettings(concept_detector=name))
    with pytest.raises(ConfigError, match="unknown parameter"):
        check_concept_settings(LabelsSettings(concept_detector_params={"ddm": {"x": 1.0}}))
    with pytest.raises(ConfigError, match="adwin: unknown parameter"):
        check_concept_settings(LabelsSettings(concept_detector_params={"adwin": {"x": 1.0}}))


def test_binary_detectors_leave_regression_streams_to_adwin_and_kswin_is_seeded_per_stream():
    s = LabelsSettings(concept_detector="hddm_a")
    assert isinstance(new_detector(s, "hddm_a", "regression", "k"), ADWIN)
    assert isinstance(new_detector(s, "hddm_a", "classification", "k"), RiverDetector)
    a = new_detector(s, "kswin", "classification", "s\x1fm\x1f1\x1f")
    b = new_detector(s, "kswin", "classification", "s\x1fm\x1f2\x1f")
    assert isinstance(a, RiverDetector) and isinstance(b, RiverDetector)
    assert a.params["seed"] != b.params["seed"]
    assert a.params == new_detector(s, "kswin", "classification", "s\x1fm\x1f1\x1f").params
