"""Producer SDK behaviour that needs no broker: drops, accounting, bounded shutdown.

The broker address points at a port where nothing listens, which is also how the
serving app must survive booting while Kafka is down.
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import orjson
import pandas as pd
import pytest

from driftline.config import Settings
from driftline.contract.binary_batch import is_binary_batch
from driftline.contract.checks import (
    check_prediction,
)
from driftline.contract.columnar import ColumnarBatch
from driftline.contract.decode import decode_record
from driftline.contract.events import (
    LIMITS,
    PredictionEvent,
)
from driftline.contract.label_batch import decode_label_records
from driftline.contract.records import pack_records
from driftline.errors import ConfigError
from driftline.producer import AsyncPredictionProducer, PredictionProducer
from driftline.runtime.devstack import free_port
from driftline.runtime.metrics import REGISTRY


def _settings(unique: str) -> Settings:
    return Settings(
        kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}"},
        topics={"predictions": f"p-{unique}", "labels": f"l-{unique}"},
    )


def _dropped(topic: str, reason: str) -> float:
    v = REGISTRY.get_sample_value(
        "driftline_producer_dropped_total", {"topic": topic, "reason": reason}
    )
    return v or 0.0


def _batch(value: bytes) -> ColumnarBatch:
    """A batch record as the monitor reads it (v2 binary by default, or v1 JSON)."""
    batch = decode_record(value)
    assert isinstance(batch, ColumnarBatch)
    return batch


def _wire(value: bytes) -> dict[str, object]:
    """A record as JSON would carry it: a single event, or a batch as its v1 envelope."""
    if is_binary_batch(value):
        return _batch(value).to_envelope()
    loaded: dict[str, object] = orjson.loads(value)
    return loaded


def _event(i: int = 0, **extra: object) -> dict[str, object]:
    return {
        "prediction_id": f"p{i}",
        "model_id": "m",
        "model_version": "1",
        "timestamp": 1_767_225_600_000 + i,
        "features": {"x": i},
        "prediction": 1,
        **extra,
    }


async def test_oversize_event_is_dropped_with_reason(unique: str) -> None:
    s = _settings(unique)
    p = AsyncPredictionProducer(s)
    # Valid by the contract (strings up to 256 characters), but over 64 KiB encoded.
    n = LIMITS.max_event_bytes // 250 + 10
    big = _event(features={f"f{i}": "x" * 250 for i in range(n)})
    assert p.send(big) is False
    assert p.dropped == 1 and p.buffered == 0
    assert _dropped(s.topics.predictions, "oversize") == 1
    assert p.last_refusal is not None and "over the limit of 65,536" in p.last_refusal.reason
    await p.stop(timeout=0.1)


async def test_invalid_events_are_dropped_not_raised(unique: str) -> None:
    s = _settings(unique)
    p = AsyncPredictionProducer(s)
    missing = _event()
    del missing["model_id"]
    assert p.send(missing) is False
    assert p.send({**_event(), "model_id": 7}) is False  # the key must be a string
    assert p.send({**_event(), "features": {"x": object()}}) is False  # not JSON-encodable
    assert p.send("not an event") is False  # type: ignore[arg-type]
    assert p.send_label({"prediction_id": "p", "model_id": "m"}) is False
    assert p.dropped == 5
    assert _dropped(s.topics.predictions, "invalid") == 4
    assert _dropped(s.topics.labels, "invalid") == 1
    await p.stop(timeout=0.1)


async def test_buffer_bound_before_start_and_shutdown_accounting(unique: str) -> None:
    s = _settings(unique)
    p = AsyncPredictionProducer(s, max_buffer=10)
    results = [p.send(_event(i)) for i in range(15)]
    assert results == [True] * 10 + [False] * 5
    assert (p.buffered, p.dropped) == (10, 5)
    assert _dropped(s.topics.predictions, "buffer_full") == 5
    await p.stop(timeout=0.1)  # never started: everything left is a shutdown drop
    assert (p.sent, p.dropped, p.buffered) == (0, 15, 0)
    assert _dropped(s.topics.predictions, "shutdown") == 10


async def test_start_with_broker_down_does_not_fail_and_stop_is_bounded(
    unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="driftline.producer")
    s = _settings(unique)
    p = AsyncPredictionProducer(s, request_timeout_ms=500)
    t0 = time.monotonic()
    await p.start()  # nothing listens: must not raise
    assert p.send(_event()) is True
    assert (
        p.send_label({"prediction_id": "p0", "model_id": "m", "label": 1, "timestamp": 1}) is True
    )
    assert await p.flush(timeout=0.3) is False
    assert not p.connected
    await p.stop(timeout=0.5)
    assert time.monotonic() - t0 < 3.0
    assert (p.sent, p.dropped, p.buffered) == (0, 2, 0)
    assert _dropped(s.topics.predictions, "shutdown") == 1
    assert _dropped(s.topics.labels, "shutdown") == 1
    # The one outage line names the servers it cannot reach (it named only the error).
    said = [r.getMessage() for r in caplog.records if "Kafka unavailable" in r.getMessage()]
    assert said and said[0].startswith(
        f"driftline producer: Kafka unavailable at {s.kafka.bootstrap_servers} ("
    )


async def test_send_after_stop_returns_false_and_counts(unique: str) -> None:
    s = _settings(unique)
    async with AsyncPredictionProducer(s, request_timeout_ms=500) as p:
        pass
    assert p.send(_event()) is False
    label = {"prediction_id": "p", "model_id": "m", "label": 0, "timestamp": 1}
    assert p.send_label(label) is False
    assert p.dropped == 2
    assert _dropped(s.topics.predictions, "closed") == 1
    assert _dropped(s.topics.labels, "closed") == 1
    with pytest.raises(RuntimeError):
        await p.start()


async def test_pydantic_event_encodes_without_nulls(unique: str) -> None:
    s = _settings(unique)
    p = AsyncPredictionProducer(s, batch_events=False)
    ev = PredictionEvent.model_validate(_event())
    assert p.send(ev) is True
    value = p._buf[0][3]
    assert b"null" not in value and b'"model_id":"m"' in value
    await p.stop(timeout=0.1)


def test_sync_facade_with_broker_down_closes_in_bounded_time(unique: str) -> None:
    s = _settings(unique)
    t0 = time.monotonic()
    with PredictionProducer(s, request_timeout_ms=500, flush_at_exit=None) as p:
        assert p.send(_event()) is True
        assert p.flush(timeout=0.2) is False
        p.close(timeout=0.5)  # the context manager's close() is then a no-op
    assert time.monotonic() - t0 < 3.0
    assert p.send(_event(1)) is False
    assert (p.sent, p.dropped, p.buffered) == (0, 2, 0)
    assert _dropped(s.topics.predictions, "closed") == 1


def test_bad_configuration_is_refused_at_construction(unique: str) -> None:
    s = _settings(unique)
    with pytest.raises(ConfigError):
        AsyncPredictionProducer(s, max_buffer=0)
    with pytest.raises(ConfigError):
        AsyncPredictionProducer(s, compression="brotli")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- issue 12 item 5


class FakeModel:
    """What scikit-learn-like models return: numpy arrays of numpy scalars."""

    classes_ = np.array(["leave", "stay"])

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = 1 / (1 + np.exp(-x[:, 0] / 10))
        return np.stack([1 - p, p], axis=1).astype(np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(x).argmax(axis=1)]


def model_event(i: int, row: np.ndarray, model: FakeModel, **over: object) -> dict[str, object]:
    proba = model.predict_proba(row[None, :])[0]
    return {
        "prediction_id": f"p{i}",
        "model_id": "churn",
        "model_version": "3",
        "timestamp": pd.Timestamp("2026-01-01T10:00:00Z") + pd.Timedelta(seconds=i),
        "features": {
            "age": row[0],
            "tenure": np.int64(row[1]),
            "member": np.bool_(i % 2),
            "plan": np.str_("pro"),
            "score": np.array(row[0] / 100),
        },
        "prediction": model.predict(row[None, :])[0],
        "scores": dict(zip(model.classes_, proba, strict=True)),
        **over,
    }


async def test_numpy_and_pandas_values_from_a_model_server_are_sent(unique: str) -> None:
    p = AsyncPredictionProducer(_settings(unique))
    model = FakeModel()
    x = np.random.default_rng(0).normal(40, 10, (5, 2))
    for i, row in enumerate(x):
        assert p.send(model_event(i, row, model)) is True, p.last_refusal
    when = datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert p.send({**model_event(9, x[0], model), "timestamp": when}) is True
    assert p.send({**model_event(10, x[0], model), "prediction": np.bool_(True)}) is True
    events = [entry[4] for entry in p._buf]
    assert all(e is not None and check_prediction(e) is None for e in events)
    first = events[0]
    assert first is not None
    assert first["timestamp"] == 1_767_261_600_000
    assert type(first["features"]["tenure"]) is int and type(first["features"]["age"]) is float
    assert first["features"]["member"] is False and first["prediction"] in ("leave", "stay")
    assert all(type(v) is float for v in first["scores"].values())
    assert events[-1]["prediction"] == "true"  # type: ignore[index]
    assert p.dropped == 0 and p.last_refusal is None
    await p.stop(timeout=0.1)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"timestamp": datetime(2026, 1, 1, 10)}, "naive datetime (no time zone)"),
        ({"timestamp": pd.Timestamp("2026-01-01 10:00")}, "naive datetime (no time zone)"),
        ({"timestamp": np.datetime64("2026-01-01T10:00")}, "numpy datetime64 has no time zone"),
        ({"scores": {"stay": 1.5}}, "scores.'stay'"),
        ({"features": {"x": [1, 2]}}, "features.'x': value is a list"),
        ({"model_id": 7}, "model_id: expected a string"),
        ({"prediction": None}, "prediction: expected a number or a string"),
    ],
)
async def test_invalid_events_are_refused_at_send_with_the_reason(
    unique: str, change: dict[str, object], reason: str
) -> None:
    s = _settings(unique)
    p = AsyncPredictionProducer(s)
    assert p.send({**_event(), **change}) is False
    refusal = p.last_refusal
    assert refusal is not None and refusal.drop == "invalid" and reason in refusal.reason
    assert refusal.prediction_id == "p0" and refusal.at > 0
    assert p.dropped_by_reason == {"invalid": 1} and p.refusals == [refusal]
    assert _dropped(s.topics.predictions, "invalid") == 1
    await p.stop(timeout=0.1)


async def test_epoch_seconds_are_refused_naming_the_instant_meant(unique: str) -> None:
    """int(time.time()) as the timestamp was sent as epoch ms, i.e. a time in January
    1970: windows, the label horizon and the status page then read 1970 for a live
    stream. It is refused, naming the instant meant. Oracle: that instant sent as an
    aware datetime, or as int(time.time() * 1000), is sent as itself."""
    p = AsyncPredictionProducer(_settings(unique))
    now = datetime.now(UTC).replace(microsecond=0)
    seconds = int(now.timestamp())
    meant = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert p.send({**_event(0), "timestamp": seconds}) is False
    assert p.send({**_event(1), "timestamp": np.int64(seconds)}) is False
    assert p.send({**_event(2), "timestamp": seconds + 0.25}) is False  # time.time()
    label = {"prediction_id": "p0", "model_id": "m", "label": 1, "timestamp": seconds}
    assert p.send_label(label) is False
    rows = {"model_id": "m", "model_version": "1", "prediction_ids": ["a", "b"],
            "timestamps": np.array([seconds, seconds + 60]), "features": {"x": [1.0, 2.0]},
            "predictions": [1, 0]}  # fmt: skip
    assert p.send_batch(rows) is False
    assert [r.drop for r in p.refusals] == ["invalid"] * 5
    assert all("epoch seconds" in r.reason and meant in r.reason for r in p.refusals)
    assert p.send({**_event(3), "timestamp": now}) is True
    assert p.send({**_event(4), "timestamp": seconds * 1000}) is True
    assert p.send_batch({**rows, "timestamps": np.array([seconds, seconds + 60]) * 1000})
    sent = [entry[4] for entry in p._buf]
    assert [e["timestamp"] for e in sent if e is not None] == [int(now.timestamp() * 1000)] * 2
    await p.stop(timeout=0.1)


def test_the_sync_facade_tells_why_too(unique: str) -> None:
    with PredictionProducer(_settings(unique), request_timeout_ms=300, flush_at_exit=None) as p:
        assert p.send({**_event(), "timestamp": datetime(2026, 1, 1)}) is False
        assert p.last_refusal is not None and "naive" in p.last_refusal.reason
        assert p.dropped_by_reason == {"invalid": 1} and len(p.refusals) == 1


async def test_predictions_are_packed_per_stream_in_send_order(unique: str) -> None:
    p = AsyncPredictionProducer(_settings(unique))
    sent = []
    for i in range(30):
        e = _event(i, model_id=f"m{i % 2}", model_version="1" if i % 3 else "2")
        assert p.send(e) is True
        sent.append(e)
    label = {"prediction_id": "p0", "model_id": "m0", "label": 1, "timestamp": 5}
    assert p.send_label(label) is True
    batch = list(p._buf)
    records = p._records(batch)
    assert sum(len(m) for *_, m in records) == 31
    rows: list[dict[str, object]] = []
    for topic, key, value, members in records:
        if topic.startswith("l-"):  # a label batch (label_batch.v1) of model m0
            assert decode_label_records([value]).labels == [label] and key == b"m0"
            continue
        decoded = decode_record(value)  # the monitor's decoding step
        assert isinstance(decoded, ColumnarBatch) and key == decoded["model_id"].encode()
        assert [batch[i][4] for i in members] == list(decoded.rows())
        rows.extend(decoded.rows())
    for stream in {(e["model_id"], e["model_version"]) for e in sent}:
        mine = [e for e in sent if (e["model_id"], e["model_version"]) == stream]
        got = [r for r in rows if (r["model_id"], r["model_version"]) == stream]
        assert got == mine  # every event, in send order
    await p.stop(timeout=0.1)


def test_a_batch_over_the_size_limit_is_cut() -> None:
    # distinct texts: a repeated one would be coded, and small
    events = [_event(i, features={"s": "x" * 190 + str(i)}) for i in range(50)]
    records = pack_records(events, 3000)
    assert sum(rows for _, rows in records) == 50 and len(records) > 2
    assert all(len(v) <= 3000 for v, _ in records)
    rows = [r for v, _ in records for r in _batch(v).rows()]
    assert rows == events


@pytest.mark.parametrize("batch_events", [True, False], ids=["batches", "single-events"])
async def test_labels_are_packed_per_model_in_send_order(unique: str, batch_events: bool) -> None:
    p = AsyncPredictionProducer(_settings(unique), batch_events=batch_events)
    sent = []
    for i in range(25):
        label = {"prediction_id": f"p{i}", "model_id": f"m{i % 2}", "label": i % 3, "timestamp": i}
        assert p.send_label(label) is True
        sent.append(label)
    assert p.send(_event()) is True
    batch = list(p._buf)
    records = [r for r in p._records(batch) if r[0].startswith("l-")]
    assert len(records) == (2 if batch_events else 25)
    got = []
    for _topic, key, value, members in records:
        dec = decode_label_records([value])  # the joiner's decoding step
        assert not dec.refused and bool(dec.batches) is batch_events
        assert {key} == {e["model_id"].encode() for e in dec.labels}
        assert dec.labels == [sent[i] for i in members]  # buffered first: same index
        got.extend(dec.labels)
    for model in ("m0", "m1"):  # every label, in send order per model
        assert [e for e in got if e["model_id"] == model] == [
            e for e in sent if e["model_id"] == model
        ]
    await p.stop(timeout=0.1)


def test_a_label_batch_over_the_size_limit_is_cut() -> None:
    events = [
        {"prediction_id": f"p{i}-" + "x" * 200, "model_id": "m", "label": "y", "timestamp": i}
        for i in range(50)
    ]
    records = pack_records(events, 3000)
    assert sum(rows for _, rows in records) == 50 and len(records) > 2
    assert all(len(v) <= 3000 for v, _ in records)
    assert decode_label_records([v for v, _ in records]).labels == events


# --------------------------------------------------------------- numpy and pandas values


async def test_an_infinite_feature_is_sent_as_missing_and_said_once_per_feature(
    unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """JSON has no infinity: an inf (a division by zero in feature engineering) went out
    as null without a word. It is still sent as missing (the wire contract), but counted
    per model and feature and logged once per model and feature, naming them; single
    events, pydantic events and batch columns alike."""
    p = AsyncPredictionProducer(_settings(unique), batch_events=False)
    caplog.set_level("WARNING", logger="driftline.producer")
    for i in range(50):
        ratio = np.inf if i % 2 else -np.float64("inf")
        assert p.send(_event(i, features={"ratio": ratio, "x": 1.0, "z": float("inf")}))
    assert p.send(PredictionEvent(**_event(50, features={"ratio": float("inf")})))  # type: ignore[arg-type]
    assert p.send(_event(51, model_id="other", features={"ratio": np.float32("inf")}))
    assert p.send_batch(
        {
            "model_id": "m",
            "model_version": "1",
            "prediction_ids": ["b1", "b2", "b3"],
            "timestamps": [1_767_225_600_000] * 3,
            "features": {"ratio": np.array([1.0, np.inf, 2.0]), "y": [0.5, -math.inf, None]},
            "predictions": [1, 0, 1],
        }
    )
    assert p.infinite_values == {
        ("m", "ratio"): 52,
        ("m", "z"): 50,
        ("other", "ratio"): 1,
        ("m", "y"): 1,
    }
    said = [r.getMessage() for r in caplog.records if "infinite" in r.getMessage()]
    assert len(said) == 4, said
    assert "feature 'ratio' of model 'm' is infinite; sent as missing" in said[0]
    wire = [_wire(entry[3]) for entry in p._buf]
    assert all(w["features"]["ratio"] is None for w in wire[:52])
    assert wire[-1]["features"] == {"ratio": [1.0, None, 2.0], "y": [0.5, None, None]}
    assert p.dropped == 0
    await p.stop(timeout=0.1)


async def test_float32_values_are_sent_at_their_own_shortest_decimal(unique: str) -> None:
    """np.float32(0.1) arrived as 0.10000000149011612 (its widening to float64): reports
    and stored values showed that. It is sent as str(np.float32(x)) reads, the decimal
    numpy prints and send_batch already wrote for float32 arrays. Oracle: numpy's own
    shortest repr of each float32, on values of every magnitude."""
    p = AsyncPredictionProducer(_settings(unique), batch_events=False)
    rng = np.random.default_rng(7)
    values = np.concatenate(
        [rng.normal(0, 1, 200), 10.0 ** rng.uniform(-30, 30, 200), [0.1, 1 / 3, 16_777_217]]
    ).astype(np.float32)
    for i, v in enumerate(values):
        scores = {"a": np.float32(0.25), "b": np.float32(0.75)}
        assert p.send(_event(i, features={"v": v, "w": np.array(v)}, scores=scores))
    for entry, v in zip(p._buf, values, strict=True):
        text = entry[3].decode()
        wire = orjson.loads(entry[3])
        assert wire["features"]["v"] == wire["features"]["w"] == float(str(v))
        assert np.float32(wire["features"]["v"]) == v  # the same float32 when read back
        written = re.search(r'"v":([^,}]+)', text)
        assert written is not None and Decimal(written[1]) == Decimal(str(v)), (text, v)
    first = orjson.loads(p._buf[0][3])
    assert first["scores"] == {"a": 0.25, "b": 0.75}
    assert b'"v":0.1,' in p._buf[-3][3] and b'"v":16777216.0' in p._buf[-1][3]
    # A float32 array in a batch: orjson's own float32 writer, the same decimals.
    assert p.send_batch(
        {
            "model_id": "m",
            "model_version": "1",
            "prediction_ids": [f"b{i}" for i in range(len(values))],
            "timestamps": [1_767_225_600_000] * len(values),
            "features": {"v": values},
            "predictions": [1] * len(values),
        }
    )
    column = _wire(p._buf[-1][3])["features"]["v"]
    assert column == [float(str(v)) for v in values]
    await p.stop(timeout=0.1)


@pytest.mark.parametrize(
    ("features", "timestamp", "sent"),
    [
        # pandas' nullable integers, floats and booleans: values and NA (missing).
        (
            {
                "n": pd.Series([3, None], dtype="Int64")[0],
                "na": pd.Series([3, None], dtype="Int64")[1],
                "f": pd.Series([0.5], dtype="Float64")[0],
                "b": pd.Series([True, None], dtype="boolean")[1],
                "s": pd.Series(["gold"], dtype="string")[0],
                "c": pd.NA,
            },
            pd.Timestamp("2026-01-01 10:00", tz="Europe/Paris"),
            {"n": 3, "na": None, "f": 0.5, "b": None, "s": "gold", "c": None},
        ),
    ],
)
async def test_pandas_nullable_values_and_timestamps_go_through(
    unique: str, features: dict[str, object], timestamp: object, sent: dict[str, object]
) -> None:
    p = AsyncPredictionProducer(_settings(unique), batch_events=False)
    assert p.send(_event(features=features, timestamp=timestamp)), p.last_refusal
    wire = orjson.loads(p._buf[0][3])
    assert wire["features"] == sent
    assert wire["timestamp"] == int(pd.Timestamp("2026-01-01 09:00", tz="UTC").value // 10**6)
    await p.stop(timeout=0.1)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"timestamp": pd.NaT}, "timestamp is missing"),
        ({"features": {"age": pd.Series([1.0])}}, "features.'age': value is Series"),
        # model.predict(x) of one row is array([0]): said so, with what to pass. It read
        # 'got ndarray', naming neither the shape nor the way out.
        (
            {"prediction": np.array([0])},
            "prediction: expected a number or a string, got a numpy array of shape (1,): "
            "pass its value, x.item()",
        ),
        (
            {"features": {"age": np.array([31.0, 40.0])}},
            "features.'age': value is a numpy array of shape (2,)",
        ),
    ],
)
async def test_pandas_values_that_cannot_go_are_refused_in_one_line(
    unique: str, change: dict[str, object], reason: str
) -> None:
    p = AsyncPredictionProducer(_settings(unique))
    assert p.send({**_event(), **change}) is False
    assert p.last_refusal is not None and p.last_refusal.reason == reason
    await p.stop(timeout=0.1)


@pytest.mark.parametrize(
    ("column", "reason"),
    [
        ("features", "features.'age': a pandas Series: pass a list or numpy array (numbers:"),
        ("timestamps", "timestamps: a pandas Series: pass a list or numpy array of epoch"),
        (
            "categorical",
            "features.'age': a pandas Categorical: pass a list or numpy array "
            "(text, categories, booleans: .to_numpy(); None and NaN are missing)",
        ),
        (
            "text",
            "features.'age': a pandas Series: pass a list or numpy array "
            "(text, categories, booleans: .to_numpy(); None and NaN are missing)",
        ),
    ],
)
async def test_a_pandas_series_as_a_batch_column_is_refused_naming_it(
    unique: str, column: str, reason: str
) -> None:
    """It was refused as 'not encodable as JSON: TypeError: Type is not JSON
    serializable: Series', naming neither the column nor what to pass. A text or
    categorical column (``df['plan'].values`` of a Categorical) was told to convert to
    floats, which fails on its first string."""
    p = AsyncPredictionProducer(_settings(unique))
    batch: dict[str, object] = {
        "model_id": "m",
        "model_version": "1",
        "prediction_ids": ["a", "b"],
        "timestamps": [1_767_225_600_000] * 2,
        "features": {"age": [31, None]},
        "predictions": [1, 0],
    }
    if column == "features":
        batch["features"] = {"age": pd.Series([31, None], dtype="Int64")}
    elif column == "categorical":
        batch["features"] = {"age": pd.Series(["young", None], dtype="category").values}
    elif column == "text":
        batch["features"] = {"age": pd.Series(["young", None], dtype=object)}
    else:
        batch["timestamps"] = pd.Series(pd.to_datetime(["2026-01-01"] * 2, utc=True))
    assert p.send_batch(batch) is False
    assert p.last_refusal is not None and p.last_refusal.reason.startswith(reason)
    await p.stop(timeout=0.1)


async def test_a_batch_job_sends_its_dataframe_columns_as_single_events_would(
    unique: str,
) -> None:
    """A batch job's columns straight from pandas and the model were refused whole:
    ``df['merchant'].to_numpy()`` and ``df['id'].to_numpy()`` (object arrays),
    ``model.classes_[proba.argmax(1)]`` (a numpy text array), ``proba[:, j]`` (a strided
    view) and score keys from ``classes_`` (numpy integers) all failed as 'not encodable
    as JSON', naming no column. Oracle: the batch's wire columns are the single events'
    wire values, the same rows sent one by one with ``send()``."""
    rng = np.random.default_rng(5)
    n = 40
    df = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "amount": rng.lognormal(3, 1, n).astype(np.float32),
            "merchant": rng.choice(["grocery", "travel", "fuel"], n).astype(object),
            "foreign": rng.random(n) < 0.2,
        }
    )
    df.loc[3, "merchant"] = np.nan
    df.loc[5, "merchant"] = None
    for classes in (np.array([0, 1]), np.array(["ok", "fraud"]), np.array([False, True])):
        p = AsyncPredictionProducer(_settings(unique), batch_events=False)
        proba = rng.dirichlet([1.0, 1.0], n)
        times = 1_767_225_600_000 + np.arange(n) * 1000
        features = {c: df[c].to_numpy() for c in ("amount", "merchant", "foreign")}
        assert p.send_batch(
            {
                "model_id": "m",
                "model_version": "1",
                "prediction_ids": df["id"].to_numpy(),
                "timestamps": times,
                "features": features,
                "predictions": classes[proba.argmax(1)],
                "scores": {c: proba[:, j] for j, c in enumerate(classes)},
            }
        ), p.last_refusal
        for i in range(n):
            assert p.send(
                {
                    "prediction_id": df["id"].iloc[i],
                    "model_id": "m",
                    "model_version": "1",
                    "timestamp": times[i],
                    "features": {c: df[c].iloc[i] for c in features},
                    "prediction": classes[proba[i].argmax()],
                    "scores": dict(zip(classes, proba[i], strict=True)),
                }
            ), p.last_refusal
        batch = _wire(p._buf[0][3])
        singles = [orjson.loads(entry[3]) for entry in list(p._buf)[1:]]
        assert batch["prediction_ids"] == [e["prediction_id"] for e in singles]
        assert batch["timestamps"] == [e["timestamp"] for e in singles]
        assert batch["predictions"] == [e["prediction"] for e in singles]
        for c in features:
            assert batch["features"][c] == [e["features"][c] for e in singles], c
        assert batch["features"]["merchant"][3] is None and batch["features"]["merchant"][5] is None
        for k in batch["scores"]:
            assert batch["scores"][k] == [e["scores"][k] for e in singles]
        assert p.dropped == 0
        await p.stop(timeout=0.1)


@pytest.mark.parametrize("batch_format", ["binary", "json"])
async def test_send_batch_takes_pandas_missing_values_in_list_columns_as_send_does(
    unique: str, batch_format: str
) -> None:
    """``df[c].tolist()`` of a nullable column (Int64, boolean, string) holds ``pd.NA``:
    send_batch() refused such a batch whole, 'not encodable as JSON: TypeError: Type is
    not JSON serializable: NAType', though send() takes ``pd.NA`` as missing. Oracle:
    the batch's wire columns are the single events' wire values."""
    df = pd.DataFrame(
        {
            "visits": pd.array([3, None, 7, 3, None, 1], dtype="Int64"),
            "active": pd.array([True, None, False, True, True, None], dtype="boolean"),
            "region": pd.array(["eu", None, "us", "eu", "eu", "us"], dtype="string"),
        }
    )
    n = len(df)
    p = AsyncPredictionProducer(_settings(unique), batch_events=False, batch_format=batch_format)
    times = [1_767_225_600_000 + i for i in range(n)]
    features = {c: df[c].tolist() for c in df.columns}
    assert any(v is pd.NA for v in features["visits"])
    assert p.send_batch(
        {
            "model_id": "m",
            "model_version": "1",
            "prediction_ids": [f"p{i}" for i in range(n)],
            "timestamps": times,
            "features": features,
            "predictions": [1] * n,
        }
    ), p.last_refusal
    for i in range(n):
        assert p.send(
            _event(i, features={c: df[c].iloc[i] for c in df.columns}, timestamp=times[i])
        ), p.last_refusal
    batch = _wire(p._buf[0][3])
    singles = [orjson.loads(entry[3]) for entry in list(p._buf)[1:]]
    for c in df.columns:
        assert batch["features"][c] == [e["features"][c] for e in singles], c  # type: ignore[index]
    assert batch["features"]["visits"] == [3, None, 7, 3, None, 1]  # type: ignore[index]
    assert p.dropped == 0
    await p.stop(timeout=0.1)


@pytest.mark.parametrize("batch_format", ["binary", "json"])
async def test_send_batch_reads_a_dataframes_time_column_as_send_does(
    unique: str, batch_format: str
) -> None:
    """A DataFrame's time column passed as it is: ``df['t'].to_numpy()`` of an aware
    column (pandas Timestamps) was refused whole, 'not encodable as JSON: TypeError:
    Type is not JSON serializable: Timestamp', though send() takes each as epoch ms;
    ``df['t'].values`` (datetime64, no time zone) was refused as 'timestamps: not an
    RFC 3339 date-time'. Oracle: the single events' wire times, and send()'s reason."""
    times = pd.Series(
        pd.to_datetime(
            ["2026-01-01 09:00:00.250", "2026-01-03 18:30:00.000", "2026-01-02 07:15:00.000"]
        )
    ).dt.tz_localize("Europe/Paris")
    p = AsyncPredictionProducer(_settings(unique), batch_events=False, batch_format=batch_format)
    batch = {
        "model_id": "m",
        "model_version": "1",
        "prediction_ids": ["p0", "p1", "p2"],
        "features": {"x": [1.0, 2.0, 3.0]},
        "predictions": [1, 0, 1],
    }
    for column in (times.to_numpy(), list(times)):
        assert p.send_batch({**batch, "timestamps": column}), p.last_refusal
    for i in range(3):
        assert p.send(_event(i, timestamp=times[i])), p.last_refusal
    sent = [orjson.loads(entry[3])["timestamp"] for entry in list(p._buf)[2:]]
    assert sent[0] == 1_767_254_400_250
    for entry in list(p._buf)[:2]:
        assert _wire(entry[3])["timestamps"] == sent
    utc64 = times.dt.tz_convert(None).to_numpy()  # what .values gave: datetime64
    assert p.send_batch({**batch, "timestamps": utc64}) is False
    assert p.last_refusal is not None
    assert p.last_refusal.reason == (
        "timestamps: numpy datetime64 has no time zone: pass epoch ms or an aware datetime"
    )
    naive = list(times.dt.tz_localize(None))
    assert p.send_batch({**batch, "timestamps": naive}) is False
    assert p.last_refusal.reason.startswith("timestamps: naive datetime (no time zone)")
    assert p.send(_event(0, timestamp=naive[0])) is False
    assert p.last_refusal.reason.startswith("timestamp: naive datetime (no time zone)")
    await p.stop(timeout=0.1)


async def test_a_batch_the_monitor_would_dead_letter_is_refused_at_send_batch(
    unique: str,
) -> None:
    """send_batch() returned True for a batch the monitor then dead-lettered whole (a
    column one row short, a probability of 1.5): the job saw it as sent. It is refused
    at once with the monitor's own reason, as send() refuses a single event."""
    p = AsyncPredictionProducer(_settings(unique))
    good = {
        "model_id": "m",
        "model_version": "1",
        "prediction_ids": ["a", "b"],
        "timestamps": [1_767_225_600_000] * 2,
        "features": {"x": [1.0, 2.0]},
        "predictions": [1, 0],
        "scores": {"1": [0.7, 0.2]},
    }
    assert p.send_batch(good) is True
    assert p.send_batch({**good, "features": {"x": [1.0]}}) is False
    assert p.last_refusal is not None
    assert p.last_refusal.reason == "features.'x': 1 entries, count is 2"
    assert p.send_batch({**good, "scores": {"1": [1.5, 0.2]}}) is False
    assert p.last_refusal.reason == "scores.'1': probability outside 0..1"
    assert p.dropped_by_reason == {"invalid": 2} and p.buffered == 1
    await p.stop(timeout=0.1)


@pytest.mark.parametrize("batch_format", ["binary", "json"])
async def test_send_batch_keys_true_false_scores_of_boolean_predictions_as_send_does(
    unique: str, batch_format: str
) -> None:
    """send_batch with a boolean prediction column and scores keyed "True"/"False" (as
    a user writes them): the predictions' classes are true/false, so before, no label's
    class found its score (log loss and Brier wrong in labels --report). Now the keys
    are the classes', as send() makes them; a text prediction keeps its keys."""
    p = AsyncPredictionProducer(_settings(unique), batch_format=batch_format)  # type: ignore[arg-type]
    proba = np.array([0.9, 0.2, 0.6])
    body = {
        "model_id": "m",
        "model_version": "1",
        "prediction_ids": ["a", "b", "c"],
        "timestamps": [1_767_225_600_000] * 3,
        "features": {"x": [1.0, 2.0, 3.0]},
        "predictions": proba > 0.5,
        "scores": {"True": proba, "False": 1 - proba},
    }
    assert p.send_batch(body), p.last_refusal
    rows = _batch(p._buf[-1][3]).rows()
    assert [r["prediction"] for r in rows] == ["true", "false", "true"]
    assert rows[0]["scores"] == {"true": 0.9, "false": 1 - 0.9}
    assert p.send_batch({**body, "predictions": ["True", "False", "True"]})
    assert set(_batch(p._buf[-1][3]).rows()[0]["scores"]) == {"True", "False"}
    await p.stop(timeout=0.1)
