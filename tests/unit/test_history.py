"""History entries: encoding, validation, deduplication, caps, best-effort writing."""

from __future__ import annotations

import math

import orjson
import pytest

from driftline.contract.history import (
    History,
    decode_alert,
    decode_perf,
    decode_window,
    encode_perf,
    encode_window,
    encode_windows,
    latest_entry,
)
from driftline.core.fastloop import BatchResult
from driftline.offline.replay import Replayer
from driftline.runtime.history import (
    MAX_WINDOWS,
    MIN_WINDOWS,
    history_batches,
    record_alerts,
    record_history,
    window_maxlen,
)
from report_scenarios import churn_events, churn_reference


@pytest.fixture(scope="module")
def batches():
    rp = Replayer({("churn", "1"): churn_reference()})
    events = churn_events(9000)
    return [rp.feed(events[i : i + 1000]) for i in range(0, len(events), 1000)]


def test_window_entry_round_trips_in_row_form_and_is_smaller(batches):
    summary = batches[0].windows[0]
    blob = encode_window(summary)
    assert len(blob) < 0.6 * len(orjson.dumps(summary))
    back = decode_window(blob)
    for k in ("model_id", "model_version", "segment", "reference", "window", "start", "end"):
        assert back[k] == summary[k]
    assert back["hist"] == summary["hist"]
    assert back["episodes"] == summary["episodes"]
    assert len(back["tests"]) == len(summary["tests"])
    for a, b in zip(back["tests"], summary["tests"], strict=True):
        assert (a["feature"], a["statistic"], a["drifted"]) == (
            b["feature"],
            b["statistic"],
            b["drifted"],
        )
        assert math.isclose(a["value"], b["value"], rel_tol=1e-4, abs_tol=1e-9)
        if b["p_value"] is None:
            assert a["p_value"] is None
        else:
            assert math.isclose(a["p_value"], b["p_value"], rel_tol=1e-3, abs_tol=1e-300)
        if "ks" in b:
            assert math.isclose(a["ks"], b["ks"], rel_tol=1e-4)


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        b'{"f": 99}',
        orjson.dumps({"f": 1, "model_id": "m"}),
        # columns of different lengths
        orjson.dumps(
            {
                "f": 1,
                "model_id": "m",
                "model_version": "1",
                "segment": "",
                "reference": "r",
                "window": 0,
                "start": 0,
                "end": 1,
                "count": 1,
                "episodes": {},
                "hist": {},
                "tests": {"feature": ["a", "b"], "statistic": ["psi"]},
            }
        ),
        # a string where an integer belongs
        orjson.dumps(
            {
                "f": 1,
                "model_id": "m",
                "model_version": "1",
                "segment": "",
                "reference": "r",
                "window": "0",
                "start": 0,
                "end": 1,
                "count": 1,
                "episodes": {},
                "hist": {},
                "tests": {},
            }
        ),
    ],
)
def test_malformed_window_entries_are_refused(payload):
    with pytest.raises(ValueError):
        decode_window(payload)


def test_hostile_histogram_values_are_dropped_not_trusted(batches):
    obj = orjson.loads(encode_window(batches[0].windows[0]))
    obj["hist"]["f00"] = ["<script>", 1]
    obj["episodes"] = {"input_drift": "yes"}
    back = decode_window(orjson.dumps(obj))
    assert "f00" not in back["hist"]
    assert back["episodes"] == {"input_drift": True}


def test_alert_entries_are_checked_against_the_contract(batches):
    alerts = [a for b in batches for a in b.alerts]
    assert alerts
    assert decode_alert(alerts[0].to_json())["alert_id"] == alerts[0].alert_id
    bad = orjson.loads(alerts[0].to_json())
    bad["kind"] = "<img src=x>"
    with pytest.raises(ValueError):
        decode_alert(orjson.dumps(bad))


def test_perf_points_round_trip_and_drop_non_numbers():
    p = {"model_version": "1", "at": 5, "accuracy": 0.912345678, "coverage": 0.5}
    back = decode_perf(encode_perf(p))
    assert back["accuracy"] == pytest.approx(0.912345678, rel=1e-4)
    assert back["coverage"] == 0.5 and back["lag_seconds"] is None and back["segment"] == ""
    raw = orjson.loads(encode_perf(p))
    raw["accuracy"] = "high"
    assert decode_perf(orjson.dumps(raw))["accuracy"] is None
    with pytest.raises(ValueError):
        decode_perf(orjson.dumps({"f": 1, "at": "x", "model_version": "1"}))


def test_perf_points_carry_a_regression_models_mae_and_read_older_entries_without_it():
    back = decode_perf(encode_perf({"model_version": "1", "at": 5, "mae": 2.718281828}))
    assert back["mae"] == pytest.approx(2.718281828, rel=1e-4) and back["accuracy"] is None
    older = orjson.loads(encode_perf({"model_version": "1", "at": 5, "accuracy": 0.9}))
    del older["mae"]  # an entry written before the field existed
    assert decode_perf(orjson.dumps(older)) == {**back, "mae": None, "accuracy": 0.9}


def test_history_build_deduplicates_and_sorts(batches):
    wins = [decode_window(encode_window(w)) for b in batches for w in b.windows]
    alerts = [decode_alert(a.to_json()) for b in batches for a in b.alerts]
    # At-least-once writing: every entry twice, and out of order.
    h = History.build([*reversed(wins), *wins], [*alerts, *alerts])
    assert [w["window"] for w in h.windows] == [w["window"] for w in wins]
    assert [a["alert_id"] for a in h.alerts] == [a["alert_id"] for a in alerts]


def test_window_cap_follows_the_byte_budget():
    assert window_maxlen(4_000) == 4194
    assert window_maxlen(10) == MAX_WINDOWS
    assert window_maxlen(10_000_000) == MIN_WINDOWS


def test_batches_are_grouped_per_model_with_latest(batches):
    res = batches[3]
    out = history_batches(res.windows, res.alerts)
    assert [b.model_id for b in out] == ["churn"]
    b = out[0]
    assert len(b.windows) == len(res.windows) and len(b.alerts) == len(res.alerts)
    latest = orjson.loads(b.latest["1\x1f"])
    assert latest["window"] == res.windows[-1]["window"]
    assert b.maxlen["windows"] >= MIN_WINDOWS


class _Failing:
    async def append_history(self, batches):
        raise ConnectionError("redis went away")


async def test_record_history_is_best_effort(batches, caplog):
    assert await record_history(None, batches[0]) is False
    assert await record_history(_Failing(), BatchResult()) is False  # nothing to write
    assert await record_history(_Failing(), batches[0]) is False  # logged, not raised


class _Recording:
    def __init__(self):
        self.batches = []

    async def append_history(self, batches):
        self.batches.extend(batches)
        return 0


async def test_alerts_from_elsewhere_are_recorded_per_model(batches):
    alerts = [a for b in batches for a in b.alerts]
    store = _Recording()
    assert await record_alerts(store, alerts)
    assert [b.model_id for b in store.batches] == ["churn"]
    assert store.batches[0].alerts == [a.to_json() for a in alerts]
    assert store.batches[0].windows == [] and not store.batches[0].latest
    assert await record_alerts(store, []) is False
    assert await record_alerts(_Failing(), alerts) is False


def test_late_and_future_counts_ride_along_in_a_window_and_its_latest_record(batches):
    summary = {**batches[0].windows[0], "late_events": 120, "future_events": 3}
    back = decode_window(encode_window(summary))
    assert (back["late_events"], back["future_events"]) == (120, 3)
    latest = orjson.loads(latest_entry(summary))
    assert (latest["late_events"], latest["future_events"]) == (120, 3)
    # A window without them (a stream in time order) has none, before and after.
    plain = batches[0].windows[0]
    assert "late_events" not in plain
    assert "late_events" not in decode_window(encode_window(plain))
    assert "late_events" not in orjson.loads(latest_entry(plain))


@pytest.mark.parametrize("bad", [-1, "12", 1.5, True, None, [3]])
def test_hostile_late_and_future_counts_are_dropped(batches, bad):
    obj = orjson.loads(encode_window({**batches[0].windows[0], "late_events": 5}))
    obj["late_events"] = bad
    back = decode_window(orjson.dumps(obj))
    assert "late_events" not in back and "future_events" not in back


def test_the_vectorised_rounding_is_the_per_value_rounding() -> None:
    """``_sig_all`` (numpy, with a per-value fallback) gives ``_sig``'s values and types
    for every value, at 4, 5 and 6 digits: random magnitudes and bit patterns, values a
    hair from a rounding tie, powers of ten, zeros of both signs, non-finite values,
    subnormals and missing values."""
    import random
    import struct

    from driftline.contract.history import _sig, _sig_all

    rng = random.Random(3)
    specials = [0.0, -0.0, math.inf, -math.inf, math.nan, None, 5e-324, 1e-320, 1e308]
    specials += [9.99995, 99999.5, 0.000999995, 1.0, 10.0, 1e22, 1e23, 1e-22, 1e-23, -123456.5]
    for trial in range(3000):
        values: list[float | None] = []
        for _ in range(rng.randint(8, 60)):
            kind = rng.randrange(5)
            if kind == 0:
                values.append(rng.uniform(-1, 1) * 10 ** rng.uniform(-30, 30))
            elif kind == 1:
                values.append(struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0])
            elif kind == 2:  # a tie of the fifth digit, exactly or nearly
                tie = rng.randint(10_000, 99_999) + 0.5 + rng.choice([0, 1e-12, -1e-9])
                values.append(tie * 10.0 ** rng.randint(-25, 20))
            elif kind == 3:
                values.append(rng.choice(specials))
            else:
                values.append(float(rng.randint(-(10**7), 10**7)) / 10 ** rng.randint(0, 12))
        for digits in (4, 5, 6):
            got, want = _sig_all(values, digits), [_sig(x, digits) for x in values]
            assert [type(x) for x in got] == [type(x) for x in want], trial
            assert [repr(x) for x in got] == [repr(x) for x in want], trial  # -0.0, nan


def test_windows_encoded_together_are_the_windows_encoded_one_by_one(batches) -> None:
    windows = [w for b in batches for w in b.windows]
    assert len(windows) >= 5
    assert encode_windows(windows) == [encode_window(w) for w in windows]
    assert encode_windows([]) == []
