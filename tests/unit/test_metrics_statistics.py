"""The monitor's window statistics reach their gauges (runtime/metrics.py).

``observe_statistics`` sets a batch's statistics in one pass, asking the caps once per
model and feature; the gauges must read what one ``observe_statistic`` per statistic,
with the caps asked every time (the monitor's previous loop), gives.
"""

from __future__ import annotations

from typing import Any

from driftline.core.fastloop.result import Observation, Observations, observation
from driftline.runtime import metrics as m


def _statistics(prefix: str) -> list[Observation]:
    a, b, c = f"{prefix}-a", f"{prefix}-b", f"{prefix}-c"
    return [
        observation(a, "1", "f1", "psi", 0.25),
        observation(a, "1", "f1", "ks", 0.5),
        observation(a, "1", "f2", "js", 0.125),
        observation(b, "2", "f1", "chi2", 3.0),
        observation(a, "1", "f3", "missing_rate", 0.75),  # past the feature cap: "other"
        observation(a, "1", "__multivariate__", "cusum_level", 1.5),
        observation(c, "1", "f1", "psi", 9.0),  # past the model cap: not exported
        observation(a, "1", "f1", "psi", 0.375),  # the later value wins
        observation(b, "2", "f9", "psi", 0.0625),
    ]


def _samples(prefix: str) -> dict[tuple[Any, ...], float]:
    """Every drift gauge sample of the models named ``prefix-*``, model renamed ``*``."""
    out = {}
    for family in m.REGISTRY.collect():
        if not family.name.startswith("driftline_drift_"):
            continue
        for s in family.samples:
            model = s.labels.get("model", "")
            if model.startswith(prefix + "-"):
                labels = {**s.labels, "model": model[len(prefix) + 1 :]}
                out[(s.name, *sorted(labels.items()))] = s.value
    return out


def test_observe_statistics_equals_one_observe_statistic_per_statistic() -> None:
    # Caps: two models, two features per model.
    models, features = m.ModelLabels(2), m.FeatureLabels(2)
    for o in _statistics("one"):
        if models.exported(o.model_id):
            feat = features.label(o.model_id, o.feature)
            m.observe_statistic(o.model_id, o.model_version, feat, o.test, o.value)
    models, features = m.ModelLabels(2), m.FeatureLabels(2)
    m.observe_statistics(_statistics("all"), models.exported, features.label)
    expected = _samples("one")
    assert len(expected) == 7  # every family took part; model c was not exported
    assert _samples("all") == expected
    psi_a1 = ("driftline_drift_psi", ("feature", "f1"), ("model", "a"), ("version", "1"))
    assert expected[psi_a1] == 0.375
    assert not models.exported("all-c")
    # A second batch sets the known series in place.
    again = [observation("all-a", "1", "f1", "psi", 2.0)]
    m.observe_statistics(again, models.exported, features.label)
    assert _samples("all")[psi_a1] == 2.0


def _windows(prefix: str, k: int) -> Observations:
    """``k`` closed windows of three streams, in turn, one block each (as the core gives
    them), each with its own values; one window of another shape among them."""
    a, b = f"{prefix}-a", f"{prefix}-b"
    out = Observations()
    for w in range(k):
        feats, tests = ["f1", "f2", "f3", "f4"], ["psi", "ks", "missing_rate", "missing_rate"]
        # f4 is past the feature cap (3 a model): "other"; f5 too, in another family.
        out.add(a, "1", feats, tests, [0.5 + w, 0.25 * w, 0.125 + w, 0.0625 * w])
        out.add(a, "2", ["f1"], ["psi"], [3.0 + w])
        out.add(b, "1", ["f1"], ["chi2"], [7.0 * w])
        if w == 1:
            out.add(a, "1", ["f1", "f5"], ["psi", "js"], [9.0, 1.5])
    return out


def test_windows_between_the_first_and_last_of_their_shape_leave_what_each_one_would() -> None:
    for batch in (0, 1):  # the first batch makes the series; the second sets them
        models, features = m.ModelLabels(2), m.FeatureLabels(3)
        for o in _windows(f"each{batch}", 5):
            if models.exported(o.model_id):
                feat = features.label(o.model_id, o.feature)
                m.observe_statistic(o.model_id, o.model_version, feat, o.test, o.value)
        models, features = m.ModelLabels(2), m.FeatureLabels(3)
        m.observe_statistics(_windows(f"batch{batch}", 5), models.exported, features.label)
        expected = _samples(f"each{batch}")
        assert _samples(f"batch{batch}") == expected
        other = ("driftline_drift_rate_ratio", ("feature", "other"), ("model", "a"))
        assert [v for k, v in expected.items() if k[:3] == other] == [0.0625 * 4]
        psi_a1 = ("driftline_drift_psi", ("feature", "f1"), ("model", "a"), ("version", "1"))
        assert expected[psi_a1] == 4.5  # the last window, not the other shape's 9.0
