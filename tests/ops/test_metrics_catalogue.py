"""docs/metrics.md lists every metric of driftline.runtime.metrics.REGISTRY with its labels."""

from __future__ import annotations

from opsutil import catalogue_rows, planned_metrics, registry_metrics


def _catalogue() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Rows of the catalogue table: name -> (type, labels)."""
    return {name: (info.type, info.labels) for name, (info, _) in catalogue_rows().items()}


def test_catalogue_parses():
    assert len(_catalogue()) >= 19


def test_every_registry_metric_is_in_the_catalogue():
    documented = _catalogue()
    missing = sorted(set(registry_metrics()) - set(documented))
    assert not missing, f"add these metrics to docs/metrics.md: {missing}"


def test_catalogue_types_and_labels_match_the_code():
    documented = _catalogue()
    for name, info in registry_metrics().items():
        mtype, labels = documented[name]
        assert mtype == info.type, f"{name}: documented as {mtype}, declared as {info.type}"
        assert set(labels) == set(info.labels), f"{name}: labels {labels} != {info.labels}"


def test_catalogue_lists_no_metric_the_code_lacks():
    stale = sorted(set(_catalogue()) - set(registry_metrics()) - set(planned_metrics()))
    assert not stale, f"docs/metrics.md lists metrics metrics.py does not declare: {stale}"


def test_planned_metrics_are_not_declared_yet():
    """A **Planned** row names a metric a rule already uses; once the code declares it
    the marker must go (and the row describe what the code does)."""
    landed = sorted(set(planned_metrics()) & set(registry_metrics()))
    assert not landed, f"remove the **Planned** marker of {landed} in docs/metrics.md"


def test_metric_names_follow_the_conventions():
    for name, info in registry_metrics().items():
        assert name.startswith("driftline_")
        assert (info.type == "counter") == name.endswith("_total"), name
        assert not {"prediction_id", "id", "user"} & set(info.labels), name
