"""The cores reproduce their golden fixtures: alert ids, alerts, windows, outcomes, states.

``tests/golden/scenarios.py`` defines the scenarios (fast loop: ``process_batch``;
slow loop: ``plan_lookups`` / ``join_batch``), ``record.py`` recorded what the cores
gave (``tests/golden/*.json``). Every scenario is replayed with the current code: alert
ids must be equal exactly, everything else to a relative 1e-9 (vectorised code may sum
in another order), so refactors of the cores are checked without a frozen second copy
of them.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from golden import scenarios
from support import assert_close

HOW = (
    f"Re-record with `{scenarios.RECORD_COMMAND}` ONLY if this change of behaviour is "
    "intended, and say so (and why) in the commit message; otherwise the change broke "
    "the core."
)


def _fixture(name: str) -> dict[str, Any]:
    path = scenarios.fixture_path(name)
    if not path.exists():
        pytest.fail(f"golden scenario {name!r} has no fixture {path.name}. {HOW}")
    return scenarios.decode(path.read_bytes())


def _same(name: str, got: dict[str, Any], want: dict[str, Any], skip: tuple[str, ...]) -> None:
    got = scenarios.plain(got)
    if got["format"] != want["format"]:
        pytest.fail(f"{name}: fixture format {want['format']}, recorder {got['format']}. {HOW}")
    if got["inputs"] != want["inputs"]:
        pytest.fail(
            f"golden scenario {name!r}: its INPUT changed (event generator, settings or "
            f"recorded references), so its results cannot be compared: "
            f"{got['inputs']} != {want['inputs']}. {HOW}"
        )
    ids, want_ids = got["alert_ids"], want["alert_ids"]
    if ids != want_ids:
        at = next((i for i, (a, b) in enumerate(zip(ids, want_ids, strict=False)) if a != b), None)
        where = f"first difference at [{at}]" if at is not None else "one list is a prefix"
        pytest.fail(
            f"golden scenario {name!r}: alert ids differ ({len(ids)} alerts, fixture "
            f"{len(want_ids)}; {where}): {ids} != {want_ids}. {HOW}"
        )
    fields = [k for k in want if k not in skip]
    assert sorted(got.keys() - set(skip)) == sorted(fields), f"{name}: record fields differ"
    for field in fields:
        try:
            assert_close(got[field], want[field], rel=scenarios.REL, path=field)
        except AssertionError as exc:
            pytest.fail(f"golden scenario {name!r} (current != recorded): {exc}. {HOW}")


@pytest.mark.parametrize("name", list(scenarios.SCENARIOS))
def test_scenario_reproduces_its_fixture(name: str) -> None:
    scn = scenarios.SCENARIOS[name]
    want = _fixture(name)
    scn.covers(want)  # the fixture still shows what the scenario is there for
    _same(name, scenarios.run(scn), want, skip=())


OTHER_FEEDS = [
    pytest.param(scn.name, feed, id=f"{scn.name}-{feed[0]}-{feed[1]}")
    for scn in scenarios.FAST
    for feed in scn.feeds[1:]
]


@pytest.mark.parametrize(("name", "feed"), OTHER_FEEDS)
def test_other_feeds_give_the_recorded_results(name: str, feed: Any) -> None:
    # Columnar batches, mixed items, other batch sizes, states reloaded from bytes:
    # the same alerts, windows, observations and states as the recorded feed.
    scn = scenarios.SCENARIOS[name]
    assert isinstance(scn, scenarios.FastScenario)
    _same(name, scenarios.run_fast(scn, feed), _fixture(name), skip=("feed", "calls"))


def test_references_are_unchanged() -> None:
    # The scenarios run against the recorded references; this says whether building
    # them still gives the same (a change there is not a change of the cores).
    stored = orjson.loads(scenarios.REFERENCES_FILE.read_bytes())
    assert stored.keys() == scenarios.REFERENCE_BUILDERS.keys()
    for name, build in scenarios.REFERENCE_BUILDERS.items():
        try:
            assert_close(scenarios.reference_record(build()), stored[name], path=name)
        except AssertionError as exc:
            pytest.fail(f"reference building changed (current != recorded): {exc}. {HOW}")


def test_every_fixture_belongs_to_a_scenario() -> None:
    files = {p.stem for p in scenarios.HERE.glob("*.json")}
    assert files - {scenarios.REFERENCES_FILE.stem} == set(scenarios.SCENARIOS)
