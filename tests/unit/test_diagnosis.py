"""The diagnosis, from evidence: right, and the same whichever worker runs first.

The cases of ``bench/bench_diagnosis.py`` (:mod:`driftline.demo.diagnosis`: pure concept,
benign covariate, harmful covariate, concept plus an irrelevant covariate shift) on
fewer and shorter runs; the benchmark prints the confusion table on 240.
"""

from __future__ import annotations

import pytest

from driftline.config import LabelsSettings
from driftline.core.slowloop import PerfState
from driftline.core.slowloop.diagnosis import add_evidence, since_change, verdict
from driftline.demo.diagnosis import CASES, ORDERS, run_case

SEEDS = (2000, 2001)


@pytest.fixture(scope="module")
def runs() -> list:
    return [r for case in CASES for seed in SEEDS for r in run_case(case, seed, 8000, 4000)]


def test_the_diagnosis_is_right_in_at_least_95_percent_of_runs(runs):
    wrong = [r for r in runs if not r.right]
    assert len(runs) == len(CASES) * len(SEEDS) * len(ORDERS)
    assert len(wrong) <= 0.05 * len(runs), wrong


def test_the_verdict_does_not_depend_on_which_worker_runs_first(runs):
    for case in CASES:
        for seed in SEEDS:
            said = {(r.first_alert, r.final) for r in runs if r.case == case and r.seed == seed}
            assert len(said) == 1, (case, seed, said)


def test_a_persistent_change_is_one_episode_that_does_not_resolve(runs):
    assert sum(r.resolved for r in runs) == 0
    assert all(r.first_alert is not None for r in runs if r.case != "benign")


def _stream_of(errors_before: int, errors_after: int, conf: float) -> PerfState:
    st = PerfState("m", "1")
    for i in range(300):
        add_evidence(st, i % 100 >= errors_before, conf)
    for i in range(200):
        add_evidence(st, i % 100 >= errors_after, conf)
    return st


def test_the_evidence_starts_at_the_change_and_the_estimate_decides():
    s = LabelsSettings()
    # 5 % errors, then 20 %, scores saying 95 % throughout: unexplained -> concept.
    st = _stream_of(5, 20, 0.95)
    ev = since_change(st)
    assert ev[0] == 200 and ev[1] == 160  # only the 200 predictions after the change
    assert verdict(ev, 0.0, 0.9, s) == "concept_drift"
    # The same drop with scores that fell to 80 %: explained -> harmful covariate shift.
    st = _stream_of(5, 20, 0.8)
    assert verdict(since_change(st), 0.0, 0.9, s) == "covariate_shift_harmful"
    # No drop and a faithful estimate: benign; no scores: no verdict from evidence.
    assert verdict(since_change(_stream_of(5, 5, 0.95)), 0.0, 0.9, s) == "input_drift_benign"
    assert verdict([200, 160, 0, 0.0, 0], 0.0, 0.9, s) is None


def test_the_benchmark_baseline_reproduces_the_old_overlap_rule(runs):
    # The bench prints the rule before issue 13 beside this one (OverlapRule): it blamed
    # the irrelevant covariate shift for a concept change when it had read the
    # monitor's alert first, and said something else when it had not.
    mixed = [r for r in runs if r.case == "concept+x2"]
    for seed in SEEDS:
        first = {r.order: r.old_first for r in mixed if r.seed == seed}
        assert first["monitor-first"] == "covariate_shift_harmful"
        assert first["joiner-first"] == "concept_drift"
    assert all(r.right for r in mixed)
