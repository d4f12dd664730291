"""Files and tables as users have them: roles, types, booleans, bad values (issue 12 item 2).

The data is made here the way users make it: a pandas DataFrame with an id, a
time-zone aware timestamp, features (floats with missing values, integers, strings,
booleans), the target, the prediction and ``proba_*`` columns, exported with
``to_csv`` / ``to_parquet`` / ``to_json(orient="records", lines=True)``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pytest

from driftline.contract.values import prepare_prediction
from driftline.core.reference import ReferenceProfile, build_reference
from driftline.errors import InputError
from driftline.offline.build import build_from_table
from driftline.offline.csv_table import csv_cell
from driftline.offline.roles import ColumnMap, resolve
from driftline.offline.tables import read_table, table_from
from tool_checks import require_module


def training_frame(n: int = 3000, seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "id": np.arange(n),
            "timestamp": pd.date_range("2026-01-01", periods=n, freq="9min", tz="UTC"),
            "age": rng.normal(40, 10, n).round(1),
            "income": rng.lognormal(10, 1, n),
            "plan": rng.choice(["basic", "pro", "team"], n),
            "is_member": rng.random(n) < 0.3,
            "tenure": rng.integers(0, 120, n),
        }
    )
    df.loc[rng.random(n) < 0.05, "age"] = np.nan
    p = 1 / (1 + np.exp(-(df["age"].fillna(40) - 40) / 10))
    df["target"] = rng.random(n) < p
    df["prediction"] = p > 0.5
    df["proba_False"] = 1 - p
    df["proba_True"] = p
    return df


def profile_of(ref: ReferenceProfile) -> tuple[str, Any, int]:
    env = ref.to_envelope()
    return ref.reference_id, env.profile, env.row_count


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("exports")
    df = training_frame()
    paths = {"csv": d / "train.csv", "parquet": d / "train.parquet", "jsonl": d / "train.jsonl"}
    df.to_csv(paths["csv"], index=False)
    df.to_parquet(paths["parquet"])
    # pandas' to_json rounds floats to 10 digits (15 at most): write exact JSON lines.
    rows = df.assign(timestamp=df["timestamp"].map(lambda t: t.isoformat())).to_dict("records")
    paths["jsonl"].write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return paths


def test_a_pandas_csv_export_gets_the_right_roles_and_types(exports: dict[str, Path]) -> None:
    res = resolve(read_table(exports["csv"]))
    assert (res.id, res.timestamp, res.label, res.prediction) == (
        "id",
        "timestamp",
        "target",
        "prediction",
    )
    assert res.scores == {"false": "proba_False", "true": "proba_True"}
    assert res.features == ["age", "income", "plan", "is_member", "tenure"]
    assert res.kinds["is_member"] == "boolean" and res.kinds["plan"] == "categorical"
    assert res.kinds["age"] == "numeric" and res.kinds["timestamp"] == "datetime"
    text = res.describe()
    for line in ("id           id", "target       label", "proba_True   score[true]"):
        assert line in text
    ref = build_reference(res.training_data(), "churn", "1", created_at=0)
    assert sorted(ref.features) == ["age", "income", "is_member", "plan", "tenure"]
    assert ref.outputs.task == "classification"
    assert ref.outputs.classes is not None
    assert set(ref.outputs.classes.categories) == {"true", "false"}
    assert ref.outputs.confidence is not None and ref.outputs.accuracy is not None
    member = ref.features["is_member"]
    assert member.kind == "categorical" and set(member.categories) == {"true", "false"}
    assert ref.features["age"].missing > 0


def test_csv_parquet_jsonl_and_the_data_frame_give_the_identical_reference(
    exports: dict[str, Path],
) -> None:
    refs = {k: build_from_table(p, "churn", "1", created_at=0)[0] for k, p in exports.items()}
    refs["frame"] = build_from_table(training_frame(), "churn", "1", created_at=0)[0]
    refs["arrow"] = build_from_table(
        pa.Table.from_pandas(training_frame()), "churn", "1", created_at=0
    )[0]
    first = profile_of(refs["csv"])
    for kind, ref in refs.items():
        assert profile_of(ref) == first, kind


def test_polars_gives_the_same_reference(exports: dict[str, Path]) -> None:
    pl = require_module("polars")
    frame = pl.from_pandas(training_frame())
    ref, _ = build_from_table(frame, "churn", "1", created_at=0)
    assert profile_of(ref) == profile_of(
        build_from_table(exports["csv"], "churn", "1", created_at=0)[0]
    )


def test_the_sdk_names_a_boolean_models_score_classes_as_its_prediction() -> None:
    """``dict(zip(model.classes_, proba))`` of a boolean target has keys ``np.False_``
    and ``np.True_``: they were sent as classes ``False``/``True`` while the prediction
    is the class ``true``, as a table's ``proba_True`` is, so the label side found no
    probability of the true class. Scores are keyed as the prediction names classes;
    a bare array of probabilities gets one line saying how to name them."""
    classes = np.array([False, True])
    proba = np.array([0.2, 0.8], dtype=np.float32)
    event = prepare_prediction(
        {
            "timestamp": 1,
            "features": {},
            "prediction": classes[1],
            "scores": dict(zip(classes, proba, strict=True)),
        }  # fmt: skip
    )
    assert event["prediction"] == "true"
    assert event["scores"] == {"false": pytest.approx(0.2), "true": pytest.approx(0.8)}
    ints = prepare_prediction(
        {
            "timestamp": 1,
            "features": {},
            "prediction": np.int64(1),
            "scores": dict(zip(np.array([0, 1]), proba, strict=True)),
        }  # fmt: skip
    )
    assert set(ints["scores"]) == {"0", "1"}
    with pytest.raises(ValueError, match=r"dict\(zip\(model.classes_, proba\)\)"):
        prepare_prediction({"timestamp": 1, "features": {}, "prediction": 1, "scores": proba})


@pytest.mark.parametrize("tokens", [("True", "False"), ("true", "false"), ("TRUE", "FALSE")])
def test_booleans_read_the_same_from_csv_parquet_jsonl_and_the_sdk(
    tmp_path: Path, tokens: tuple[str, str]
) -> None:
    flags = [True, False, True, True, False] * 20
    csv = tmp_path / "b.csv"
    csv.write_text(
        "flag,x\n" + "".join(f"{tokens[0] if f else tokens[1]},{i}\n" for i, f in enumerate(flags))
    )
    frame = pd.DataFrame({"flag": flags, "x": range(len(flags))})
    frame.to_parquet(tmp_path / "b.parquet")
    frame.to_json(tmp_path / "b.jsonl", orient="records", lines=True)
    sdk_rows = [
        prepare_prediction({"features": {"flag": np.bool_(f), "x": np.int64(i)}})["features"]
        for i, f in enumerate(flags)
    ]
    profiles = []
    for data in (csv, tmp_path / "b.parquet", tmp_path / "b.jsonl", sdk_rows):
        ref, res = build_from_table(data, "m", "1", created_at=0)
        assert res.kinds["flag"] == "boolean"
        profiles.append(ref.features["flag"].to_dict())
    assert all(p == profiles[0] for p in profiles)
    assert set(profiles[0]["categories"]) == {"true", "false"}


def test_csv_cells() -> None:
    assert [csv_cell(t) for t in ("", "NA", "NaN", "null", "<NA>")] == [None] * 5
    assert [csv_cell(t) for t in ("True", "false", "3", "-2", "3.5", "1e3", "abc")] == [
        True,
        False,
        3,
        -2,
        3.5,
        1000.0,
        "abc",
    ]


def test_a_bad_value_in_a_numeric_column_names_the_line_and_the_column(tmp_path: Path) -> None:
    df = training_frame(200)
    df["income"] = df["income"].astype(object)
    df.loc[57, "income"] = "abc"
    path = tmp_path / "bad.csv"
    df.to_csv(path, index=False)
    with pytest.raises(InputError) as err:
        resolve(read_table(path))
    msg = str(err.value)
    assert "line 59" in msg and "column 'income'" in msg and "'abc' is not a number" in msg
    assert "--types income=categorical" in msg and "--on-bad-value dlq" in msg
    # Declared: the column is categorical, as asked; nothing silent.
    res = resolve(read_table(path), ColumnMap(types={"income": "categorical"}))
    assert res.kinds["income"] == "categorical" and res.notes["income"] == "declared"
    # Set aside: the row is left out, listed with where and why.
    res = resolve(read_table(path), ColumnMap(on_bad_value="dlq"))
    assert list(res.refused) == [57]
    assert res.refused[57].where == "line 59" and res.refused[57].column == "income"
    data = res.training_data()
    assert data.row_count == 199
    assert build_reference(data, "m", "1").row_count == 199


def test_a_few_numbers_among_strings_is_categorical_and_noted(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_text("zone\n" + "".join(f"{v}\n" for v in ["north", "south", "7", "east"] * 10))
    res = resolve(read_table(path))
    assert res.kinds["zone"] == "categorical"
    assert "numbers among" in res.notes["zone"]


def test_two_candidates_for_one_role_is_an_error_naming_both(tmp_path: Path) -> None:
    path = tmp_path / "two.csv"
    path.write_text("x,label,target\n1,a,a\n2,b,b\n")
    with pytest.raises(InputError, match="'target' and 'label'|'label' and 'target'"):
        resolve(read_table(path))
    res = resolve(read_table(path), ColumnMap(label="target", exclude=["label"]))
    assert res.label == "target" and res.excluded["label"] == "excluded"


def test_unknown_columns_in_the_mapping_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("x,y\n1,2\n")
    with pytest.raises(InputError, match="no column 'z'"):
        resolve(read_table(path), ColumnMap(label="z"))


def test_a_lone_probability_column_is_the_positive_class(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    p = rng.random(500)
    df = pd.DataFrame(
        {
            "x": rng.normal(size=500),
            "pred": (p > 0.5).astype(int),
            "probability": p,
            "y": (rng.random(500) < p).astype(int),
        }
    )
    res = resolve(table_from(df))
    assert res.scores == {"1": "probability"} and res.complement == ("0", "probability")
    data = res.training_data()
    assert data.score_columns is not None
    np.testing.assert_allclose(data.top_scores(), np.maximum(p, 1 - p))
    ref = build_reference(data, "m", "1")
    assert ref.outputs.task == "classification"


def test_scikit_learn_names_of_the_probability_are_found() -> None:
    """``y_pred``/``y_proba`` as a scikit-learn notebook names them: ``y_proba`` (or
    ``y_score``) is the positive class's probability, not a feature that drifts with the
    model, and the negative class gets 1 - it."""
    rng = np.random.default_rng(5)
    p = rng.random(400)
    for name in ("y_proba", "y_score", "pred_proba"):
        df = pd.DataFrame(
            {"x": rng.normal(size=400), "y": rng.random(400) < p, "y_pred": p > 0.5, name: p}
        )
        res = resolve(table_from(df))
        assert res.features == ["x"], name
        assert res.scores == {"true": name} and res.complement == ("false", name)
        assert not [r for r in res.remarks if "named like a model output" in r], res.remarks


def test_other_id_columns_are_excluded_and_codes_are_noted() -> None:
    rows = [
        {"customer_id": i, "order_id": i * 7, "tier": i % 3, "amount": i * 1.5} for i in range(100)
    ]
    res = resolve(table_from(rows))
    assert res.id is None
    assert "identifier" in res.excluded["customer_id"] and "order_id" in res.excluded
    assert "codes?" in res.notes["tier"]
    assert res.features == ["tier", "amount"]


def test_a_mapping_file_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text('{"label": "outcome", "exclude": ["noise"], "types": {"zip": "categorical"}}')
    cm = ColumnMap.from_file(path).merged(ColumnMap(prediction="guess"))
    df = pd.DataFrame(
        {
            "outcome": [1, 0] * 50,
            "guess": [1, 1] * 50,
            "noise": range(100),
            "zip": [2134, 10001] * 50,
        }
    )
    res = resolve(table_from(df), cm)
    assert (res.label, res.prediction, res.features) == ("outcome", "guess", ["zip"])
    assert res.kinds["zip"] == "categorical"
    # Flags left at their defaults do not undo the file (an empty --exclude included).
    kept = ColumnMap.from_file(path).merged(ColumnMap(exclude=[], on_bad_value="error"))
    assert kept.exclude == ["noise"] and kept.label == "outcome"
    (tmp_path / "bad.json").write_text('{"lable": "x"}')
    with pytest.raises(InputError, match="unknown keys"):
        ColumnMap.from_file(tmp_path / "bad.json")


def test_numpy_and_pandas_scalars_in_records() -> None:
    rows = [
        {
            "a": np.float64(i),
            "b": np.int64(i % 2),
            "c": np.bool_(i % 3 == 0),
            "d": pd.NA if i % 5 == 0 else "x",
        }
        for i in range(60)
    ]
    res = resolve(table_from(rows))
    assert res.kinds == {"a": "numeric", "b": "numeric", "c": "boolean", "d": "categorical"}
    ref = build_reference(res.training_data(), "m", "1")
    assert ref.features["d"].missing == 12


def test_a_table_becomes_contract_valid_events_and_labels(exports: dict[str, Path]) -> None:
    res = resolve(read_table(exports["csv"]))
    labels: list[dict[str, Any]] = []
    rows = list(res.event_rows("churn", "1", labels))
    assert len(rows) == 3000 and all(e is not None for _, e, _ in rows)
    where, first, _ = rows[0]
    assert where == "line 2"
    assert first is not None
    assert first["timestamp"] == 1767225600000 and first["prediction_id"] == "0"
    assert first["prediction"] in ("true", "false") and set(first["scores"]) == {"true", "false"}
    assert first["features"]["is_member"] in (True, False)
    assert len(labels) == 3000 and labels[0]["label"] in ("true", "false")


def test_rows_without_a_time_or_an_id_are_refused_naming_the_column(tmp_path: Path) -> None:
    path = tmp_path / "cur.csv"
    path.write_text(
        "id,timestamp,x,prediction\n"
        "a,2026-01-01T00:00:00Z,1.5,yes\n"
        "b,,2.5,no\n"
        ",2026-01-01T00:02:00Z,3.5,no\n"
        "d,2026-01-01T00:03:00Z,4.5,yes\n"
    )
    res = resolve(read_table(path))
    rows = list(res.event_rows("m", "1"))
    assert [e is not None for _, e, _ in rows] == [True, False, False, True]
    assert rows[1][0] == "line 3" and "column 'timestamp'" in (rows[1][2] or "")
    assert rows[2][0] == "line 4" and "column 'id': the id is missing" in (rows[2][2] or "")


def test_outputs_named_otherwise_are_pointed_out_and_true_names_the_class_true() -> None:
    """A warehouse export: outputs called churn_pred/churn_proba and the truth churned.
    Read as features, they are named in a note (with the flags that place them); once
    placed, ``--scores True=churn_proba`` (pandas' spelling) names the class "true"."""
    df = training_frame(600)[["id", "timestamp", "age", "plan", "is_member"]].copy()
    rng = np.random.default_rng(3)
    df["churn_proba"] = rng.random(len(df))
    df["churn_pred"] = df["churn_proba"] > 0.5
    df["churned"] = rng.random(len(df)) < df["churn_proba"]
    plain = resolve(table_from(df))
    assert plain.prediction is None and "churn_pred" in plain.features
    text = plain.describe()
    assert "note: no prediction column" in text and "(--prediction COLUMN)" in text
    assert "note: churn_proba, churn_pred read as features but named like a model output" in text
    placed = resolve(
        table_from(df),
        ColumnMap(prediction="churn_pred", label="churned", scores={"True": "churn_proba"}),
    )
    assert placed.scores == {"true": "churn_proba"}
    assert placed.complement == ("false", "churn_proba")
    assert "no prediction column" not in placed.describe()
    assert "read as features" not in placed.describe()
    labels_map = ColumnMap(label="churned", features=[])
    as_labels = resolve(table_from(df[["id", "churned"]]), labels_map, labels=True)
    assert "no prediction column" not in as_labels.describe()


def test_the_row_index_pandas_writes_is_left_out(tmp_path: Path) -> None:
    """``to_csv`` with its default ``index=True`` (an unnamed first column), the same file
    read back and written again (``Unnamed: 0``), ``to_parquet`` of a filtered frame
    (``__index_level_0__``) and ``reset_index`` (``index``) all give the reference of the
    frame itself: row numbers grow with the data, so read as a feature they would drift
    by construction. ``--features`` keeps one on purpose."""
    df = training_frame(1200)
    kept = df[df.index % 7 != 3]  # the index is no longer a range
    paths = {
        "to_csv": tmp_path / "default.csv",
        "read_csv": tmp_path / "again.csv",
        "parquet": tmp_path / "filtered.parquet",
    }
    df.to_csv(paths["to_csv"])
    assert paths["to_csv"].read_text().startswith(",id,timestamp,")
    pd.read_csv(paths["to_csv"]).to_csv(paths["read_csv"], index=False)
    kept.to_parquet(paths["parquet"])
    import pyarrow.parquet as pq

    assert "__index_level_0__" in pq.read_schema(paths["parquet"]).names
    expected = {
        kept is frame: profile_of(build_from_table(frame, "churn", "1", created_at=0)[0])
        for frame in (df, kept)
    }
    sources: dict[str, Any] = {**paths, "reset_index": df.reset_index()}
    for kind, src in sources.items():
        want = expected[kind == "parquet"]
        table = read_table(src) if isinstance(src, Path) else table_from(src)
        res = resolve(table)
        (index_name,) = [n for n in res.excluded if n not in ("id",)]
        assert index_name in ("Unnamed: 0", "__index_level_0__", "index"), kind
        assert index_name not in res.features, kind
        assert "the row index pandas wrote (--features to keep it)" in res.describe(), kind
        assert profile_of(build_from_table(src, "churn", "1", created_at=0)[0]) == want, kind
    features = ["age", "Unnamed: 0"]
    chosen = resolve(read_table(paths["to_csv"]), ColumnMap(features=features))
    assert sorted(chosen.features) == sorted(features)


def test_actual_and_ground_truth_are_the_label() -> None:
    df = training_frame(300)
    for name in ("actual", "ground_truth"):
        res = resolve(table_from(df.rename(columns={"target": name})))
        assert res.label == name and name not in res.features


def test_integer_classes_of_the_outputs_are_not_called_codes() -> None:
    """A multi-class export (prediction and label 0/1/2, proba_0..proba_2): the outputs'
    integers are the classes; only a feature of a few integers asks "codes?"."""
    rng = np.random.default_rng(8)
    n = 400
    p = rng.dirichlet([1, 1, 1], n)
    df = pd.DataFrame({"f0": rng.normal(size=n), "tier": rng.integers(0, 3, n)})
    for k in range(3):
        df[f"proba_{k}"] = p[:, k]
    df["prediction"] = p.argmax(axis=1)
    df["label"] = rng.integers(0, 3, n)
    res = resolve(table_from(df))
    assert res.task == "classification"
    assert "prediction" not in res.notes and "label" not in res.notes
    assert "codes?" in res.notes["tier"]
    no_scores = resolve(table_from(df.drop(columns=[f"proba_{k}" for k in range(3)])))
    assert no_scores.task == "regression"
    assert "--task classification if they are classes" in no_scores.notes["prediction"]


def test_one_found_probability_of_a_binary_model_gets_its_complement() -> None:
    """proba_True alone (predict_proba[:, 1] saved by name): the other class gets 1 - it,
    as when it is named with --scores, so the confidence is the predicted class's."""
    df = training_frame(300).drop(columns=["proba_False"])
    found = resolve(table_from(df))
    named = resolve(table_from(df), ColumnMap(scores={"True": "proba_True"}))
    assert found.scores == named.scores == {"true": "proba_True"}
    assert found.complement == named.complement == ("false", "proba_True")
    assert "binary: the other class" in found.describe()


def test_compressed_and_tab_separated_exports_read_as_the_csv(
    exports: dict[str, Path], tmp_path: Path
) -> None:
    """What pandas writes for these names (compression inferred from the name, or
    ``sep="\t"``) reads as the CSV, value for value, and gives the CSV's reference."""
    df = pd.read_csv(exports["csv"])
    csv = read_table(exports["csv"])
    cols = csv.names
    for name in ("train.csv.gz", "train.csv.bz2", "train.csv.xz", "train.tsv", "train.tsv.gz"):
        df.to_csv(tmp_path / name, index=False, sep="\t" if ".tsv" in name else ",")
        table = read_table(tmp_path / name)
        assert table.names == cols and table.n_rows == csv.n_rows, name
        for c in cols:
            np.testing.assert_array_equal(table.floats(c), csv.floats(c), err_msg=name)
        assert table.values(cols) == csv.values(cols), name
    got = build_from_table(tmp_path / "train.csv.gz", "churn", "1", created_at=0)[0]
    want = build_from_table(exports["csv"], "churn", "1", created_at=0)[0]
    assert profile_of(got) == profile_of(want)


def shifted_event_lines(seed: int) -> tuple[ReferenceProfile, bytes]:
    """A simulated model's reference, and 3 000 of its events as JSON lines (shifted
    half way, so a replay raises alerts)."""
    from driftline.demo.simulate import Shift, SimulatedModel

    sim = SimulatedModel(n_numeric=4, seed=seed, model_id="m")
    ref = build_reference(sim.training_data(3000), "m", "1", created_at=0)
    lines = b"".join(
        orjson.dumps(e) + b"\n" for e in sim.events(3000, shift=Shift(start=1500, sigmas=1.0))
    )
    return ref, lines


def test_compressed_jsonl_events_replay_as_the_plain_file(tmp_path: Path) -> None:
    import gzip

    from driftline.offline.replay import replay_file

    ref, lines = shifted_event_lines(2)
    (tmp_path / "ev.jsonl").write_bytes(lines)
    (tmp_path / "ev.jsonl.gz").write_bytes(gzip.compress(lines))
    refs = {("m", "1"): ref}
    plain, packed = (replay_file(tmp_path / n, refs) for n in ("ev.jsonl", "ev.jsonl.gz"))
    assert plain.events == packed.events == 3000
    assert plain.alerts and [a.alert_id for a in packed.alerts] == [
        a.alert_id for a in plain.alerts
    ]


def test_files_that_are_not_what_their_names_say_are_one_line_errors(tmp_path: Path) -> None:
    import gzip

    latin = tmp_path / "latin.csv"
    latin.write_bytes("city,x\nZürich,1\n".encode("latin-1"))
    cut = tmp_path / "cut.csv.gz"
    rows = "".join(f"{i},{i * 7919 % 10007}\n" for i in range(20000)).encode()
    packed = gzip.compress(b"a,b\n" + rows)
    cut.write_bytes(packed[: len(packed) // 2])
    cases = {
        latin: "line 2: not UTF-8 text (byte 0xfc, 'ü' in Windows-1252); give the file's "
        "encoding (--encoding cp1252",
        cut: "not a gz file (EOFError",
        tmp_path / "x.parquet.gz": "Parquet compresses inside",
        tmp_path / "book.xlsx": "an Excel workbook: save the sheet as CSV",
        tmp_path / "frame.pkl": "a pickle, which Driftline never loads",
        tmp_path / "model.bin": "unknown file type .bin; expected .csv, .tsv, .parquet, .feather",
        tmp_path / "x.feather.gz": "Feather compresses inside",
        tmp_path / "missing.csv.gz": "missing.csv.gz: no such file",
    }
    for path, says in cases.items():
        with pytest.raises(InputError, match=re.escape(says)):
            read_table(path)


def test_an_excel_csv_in_windows_1252_reads_with_its_encoding(tmp_path: Path) -> None:
    """Excel on Windows saves "CSV" in Windows-1252. Without the encoding the file is
    one line naming the first line that is not UTF-8 and the option; with it, the file
    gives the reference its UTF-8 copy gives (the oracle), in the notebook too."""
    import driftline

    df = training_frame(800)
    df["plan"] = df["plan"].map({"basic": "Café", "pro": "€ pro", "team": "team"})
    df.to_csv(tmp_path / "utf8.csv", index=False)
    df.to_csv(tmp_path / "excel.csv", index=False, encoding="cp1252")
    text = (tmp_path / "utf8.csv").read_text(encoding="utf-8").splitlines()
    first = next(i for i, line in enumerate(text, 1) if not line.isascii())
    with pytest.raises(InputError) as err:
        read_table(tmp_path / "excel.csv")
    said = str(err.value)
    assert said.startswith(f"{tmp_path / 'excel.csv'}, line {first}: not UTF-8 text")
    assert "--encoding cp1252" in said and "\n" not in said
    want = build_from_table(tmp_path / "utf8.csv", "churn", "1", created_at=0)[0]
    got = build_from_table(
        tmp_path / "excel.csv", "churn", "1", columns=ColumnMap(encoding="cp1252"), created_at=0
    )[0]
    assert profile_of(got) == profile_of(want)
    assert {"Café", "€ pro"} <= set(got.features["plan"].categories)  # type: ignore[union-attr]
    nb = driftline.build_reference(tmp_path / "excel.csv", "churn", "1", encoding="cp1252",
                                   show=False)  # fmt: skip
    assert nb.profile.reference_id == want.reference_id
    # an encoding only a text table has a choice of; a name Python does not know
    df.to_parquet(tmp_path / "t.parquet")
    with pytest.raises(InputError, match="--encoding cp1252 is for CSV and TSV files"):
        read_table(tmp_path / "t.parquet", "cp1252")
    with pytest.raises(InputError, match="encoding='cp-nope': unknown encoding"):
        driftline.build_reference(tmp_path / "excel.csv", encoding="cp-nope", show=False)


def test_semicolon_separated_exports_with_decimal_commas_read_as_the_csv(
    exports: dict[str, Path], tmp_path: Path
) -> None:
    """Where the comma is the decimal mark, spreadsheets and pandas
    (``to_csv(sep=";", decimal=",")``) write semicolons: the separator is taken from
    the header line, and such a file's numbers read with their decimal commas, value
    for value as the comma-separated export (a ``|`` file too)."""
    df = pd.read_csv(exports["csv"])
    csv = read_table(exports["csv"])
    cols = csv.names
    for name, sep, dec in (("semi.csv", ";", ","), ("pipe.csv.gz", "|", ".")):
        df.to_csv(tmp_path / name, index=False, sep=sep, decimal=dec)
        table = read_table(tmp_path / name)
        assert table.names == cols and table.n_rows == csv.n_rows, name
        for c in cols:
            np.testing.assert_array_equal(table.floats(c), csv.floats(c), err_msg=name)
        assert table.values(cols) == csv.values(cols), name
    first_row = (tmp_path / "semi.csv").read_text().splitlines()[1]
    assert re.search(r";\d+,\d+;", first_row), first_row  # the numbers have decimal commas
    got = build_from_table(tmp_path / "semi.csv", "churn", "1", created_at=0)[0]
    want = build_from_table(exports["csv"], "churn", "1", created_at=0)[0]
    assert profile_of(got) == profile_of(want)


def test_decimal_commas_are_numbers_only_in_semicolon_files() -> None:
    assert csv_cell("-1,5e-3", decimal_comma=True) == -0.0015
    assert csv_cell("3,0", decimal_comma=True) == 3.0
    assert csv_cell("12", decimal_comma=True) == 12
    assert csv_cell("2.5", decimal_comma=True) == 2.5
    # thousands marks, lists and text are not numbers
    for text in ("1.234,5", "1,234,567", "a,b", ",5,"):
        assert csv_cell(text, decimal_comma=True) == text
    assert csv_cell("1,5") == "1,5"


def test_every_to_json_layout_reads_as_the_frame(tmp_path: Path) -> None:
    """``df.to_json`` in each layout that names its columns (pandas' default
    ``columns``, ``records``, ``index``, ``split``, ``table``) and with ``lines=True``
    gives the reference of the frame itself; a list of lists (``values``) has no column
    names and is one line saying which layouts do."""
    df = training_frame(1500)
    # exact through to_json's 15 decimals
    df = df.round({"income": 2, "proba_False": 6, "proba_True": 6})
    want = profile_of(build_from_table(df, "churn", "1", created_at=0)[0])
    layouts: dict[str, dict[str, Any]] = {
        "columns": {},
        "records": {"orient": "records"},
        "index": {"orient": "index"},
        "split": {"orient": "split"},
        "table": {"orient": "table"},
        "lines": {"orient": "records", "lines": True},
    }
    for name, kw in layouts.items():
        path = tmp_path / f"{name}.json"
        df.to_json(path, date_format="iso", double_precision=15, **kw)
        res = resolve(read_table(path))
        assert res.features == ["age", "income", "plan", "is_member", "tenure"], name
        assert (res.id, res.timestamp, res.label) == ("id", "timestamp", "target"), name
        got = profile_of(build_from_table(path, "churn", "1", created_at=0)[0])
        assert got == want, name
    # pandas' default dates before pandas 4: epoch milliseconds, read as such
    ms = df["timestamp"].map(lambda t: int(t.timestamp() * 1000))
    df.assign(timestamp=ms).to_json(tmp_path / "epoch.json", orient="records")
    res = resolve(read_table(tmp_path / "epoch.json"))
    assert res.timestamp == "timestamp" and res.notes["timestamp"] == "epoch milliseconds"
    df.to_json(tmp_path / "values.json", orient="values", date_format="iso")
    with pytest.raises(InputError, match=re.escape("expected rows with column names")):
        read_table(tmp_path / "values.json")
    (tmp_path / "broken.json").write_text('[{"a": 1},')
    with pytest.raises(InputError, match=re.escape("broken.json: not JSON")):
        read_table(tmp_path / "broken.json")


def test_a_feather_export_reads_as_the_parquet(exports: dict[str, Path], tmp_path: Path) -> None:
    df = training_frame()
    df.to_feather(tmp_path / "train.feather")
    got = build_from_table(tmp_path / "train.feather", "churn", "1", created_at=0)[0]
    want = build_from_table(exports["parquet"], "churn", "1", created_at=0)[0]
    assert profile_of(got) == profile_of(want)


def test_events_as_json_lines_in_a_json_file_replay_as_the_jsonl(tmp_path: Path) -> None:
    from driftline.offline.inputs import is_event_file
    from driftline.offline.replay import replay_file

    ref, lines = shifted_event_lines(3)
    (tmp_path / "ev.jsonl").write_bytes(lines)
    (tmp_path / "ev.json").write_bytes(lines)
    assert is_event_file(tmp_path / "ev.json")
    refs = {("m", "1"): ref}
    plain, named = (replay_file(tmp_path / n, refs) for n in ("ev.jsonl", "ev.json"))
    assert plain.events == named.events == 3000
    assert plain.alerts and [a.alert_id for a in named.alerts] == [a.alert_id for a in plain.alerts]
    # the lines in two files, read one after the other
    from driftline.offline.notebook import monitor

    rows = lines.splitlines(keepends=True)
    (tmp_path / "a.jsonl").write_bytes(b"".join(rows[:1000]))
    (tmp_path / "b.json").write_bytes(b"".join(rows[1000:]))
    split = monitor([tmp_path / "a.jsonl", tmp_path / "b.json"], ref, show=False).run
    assert split.events == 3000
    assert [a.alert_id for a in split.alerts] == [a.alert_id for a in plain.alerts]


def test_predictions_of_only_0_and_1_without_scores_are_two_classes() -> None:
    """scikit-learn's ``predict()`` of a binary model saved without ``predict_proba``:
    0 and 1 are classes (a regression that never says 0.5 is not one); more integers
    stay a regression with a note, and ``--task`` decides either way."""
    rng = np.random.default_rng(4)
    n = 600
    df = pd.DataFrame({"x": rng.normal(size=n), "prediction": rng.integers(0, 2, n)})
    df["label"] = rng.integers(0, 2, n)
    res = resolve(table_from(df))
    assert res.task == "classification"
    assert "--task regression if they are values" in res.notes["prediction"]
    ref = build_reference(res.training_data(), "m", "1", created_at=0)
    assert ref.outputs.classes is not None
    assert set(ref.outputs.classes.categories) == {"0", "1"}
    assert resolve(table_from(df), ColumnMap(task="regression")).task == "regression"
    with_nan = df.astype({"prediction": float})
    with_nan.loc[3, "prediction"] = np.nan
    assert resolve(table_from(with_nan)).task == "classification"
    three = df.assign(prediction=rng.integers(0, 3, n))
    assert resolve(table_from(three)).task == "regression"


def test_ids_of_63_bits_stay_exact_from_frames_parquet_and_csv(tmp_path: Path) -> None:
    """Hashed and snowflake-like ids pass 2**53, where a float64 stops holding every
    integer: read through floats they became their neighbours (a DataFrame) or stopped
    the read (Arrow refuses the cast). Each id stays itself, and every label joins."""
    from driftline.offline.notebook import build_reference, monitor

    df = training_frame(2000)
    df["id"] = 2**62 + 3 * np.arange(len(df), dtype=np.int64)
    df["tenure"] = df["tenure"].astype("Int64")
    df.loc[5, "tenure"] = pd.NA
    df.to_parquet(tmp_path / "t.parquet")
    df.to_csv(tmp_path / "t.csv", index=False)
    want = [str(2**62 + 3 * i) for i in range(len(df))]
    ref = build_reference(df, "churn", "1", show=False)
    for src in (df, tmp_path / "t.parquet", tmp_path / "t.csv"):
        table = table_from(src)
        assert [str(v) for v in table.values(["id"])["id"]] == want
        tenure = table.values(["tenure"])["tenure"]
        assert tenure[5] is None and tenure[:5] == df["tenure"][:5].tolist()
        res = resolve(table)
        ids = [ev["prediction_id"] for _, ev, _, _ in res.events("churn", "1") if ev]
        assert ids == want
        run = monitor(src, ref, show=False).run
        assert run.label_outcomes == {"joined": len(df)}


def test_the_files_of_one_export_read_as_the_whole_file(
    exports: dict[str, Path], tmp_path: Path
) -> None:
    """A file a day (CSV and Parquet mixed, columns in another order in one): read as
    one table, value for value the export in one file; the same reference. A row's
    place names its file; files whose columns differ are one line."""
    df = pd.read_csv(exports["csv"])
    whole = read_table(exports["csv"])
    parts = []
    for i, chunk in enumerate(np.array_split(np.arange(len(df)), 4)):
        part = df.iloc[chunk]
        if i == 2:
            path = tmp_path / f"day{i}.parquet"
            part.to_parquet(path, index=False)
        else:
            path = tmp_path / f"day{i}.csv"
            (part[part.columns[::-1]] if i == 1 else part).to_csv(path, index=False)
        parts.append(path)
    table = table_from(parts)
    assert table.names == whole.names and table.n_rows == whole.n_rows
    for c in whole.names:
        np.testing.assert_array_equal(table.floats(c), whole.floats(c), err_msg=c)
        np.testing.assert_array_equal(table.non_numbers(c), whole.non_numbers(c), err_msg=c)
        got, want = table.stats(c), whole.stats(c)
        assert (got.rows, got.missing, got.numbers, got.strings, got.bools) == (
            want.rows, want.missing, want.numbers, want.strings, want.bools
        ), c  # fmt: skip
    assert table.values(whole.names) == whole.values(whole.names)
    last_day = len(np.array_split(np.arange(len(df)), 4)[-1])
    assert table.where(len(df) - 1) == f"day3.csv line {last_day + 1}"  # after the header
    got_ref = build_from_table(parts, "churn", "1", created_at=0)[0]
    want_ref = build_from_table(exports["csv"], "churn", "1", created_at=0)[0]
    assert profile_of(got_ref) == profile_of(want_ref)
    df.drop(columns=["plan"]).head(10).to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(InputError, match=re.escape("other.csv: its columns are not")):
        table_from([parts[0], tmp_path / "other.csv"])


def test_decimals_from_a_database_read_as_their_numbers(tmp_path: Path) -> None:
    """``pandas.read_sql`` through many drivers gives SQL NUMERIC columns as
    ``Decimal`` objects: each row was refused ("value is Decimal"). A whole Decimal
    is an int (ids past 2**53 stay exact, classes stay classes), else a float: the
    frame gives the reference of its float/int twin, and every label joins.
    Parquet's decimal128(38, 0) ids are read as exact integers."""
    from decimal import Decimal

    import pyarrow.parquet as pq

    from driftline.offline.notebook import build_reference, monitor

    rng = np.random.default_rng(9)
    n = 2000
    plain_frame = pd.DataFrame(
        {
            "id": 4 * 10**18 + np.arange(n, dtype=np.int64),
            "amount": rng.normal(100, 10, n).round(2),
            "age": rng.normal(40, 10, n).round(1),
            "prediction": rng.integers(0, 2, n),
            "target": rng.integers(0, 2, n),
        }
    )
    as_sql = plain_frame.assign(
        id=[Decimal(int(v)) for v in plain_frame["id"]],
        amount=[Decimal(f"{v:.2f}") for v in plain_frame["amount"]],
        target=[Decimal(int(v)) for v in plain_frame["target"]],
    )
    assert resolve(table_from(as_sql)).kinds["amount"] == "numeric"
    want = build_reference(plain_frame, "m", "1", show=False)
    got = build_reference(as_sql, "m", "1", show=False)
    assert got.reference_id == want.reference_id
    run = monitor(as_sql.assign(id=[Decimal(5 * 10**18 + i) for i in range(n)]), got, show=False)
    assert not run.run.refused and run.run.label_outcomes == {"joined": n}
    ids = pa.array([Decimal(7 * 10**18 + i) for i in range(3)], pa.decimal128(38, 0))
    pq.write_table(pa.table({"id": ids, "x": [1.0, 2.0, 3.0]}), tmp_path / "n.parquet")
    assert table_from(tmp_path / "n.parquet").values(["id"])["id"] == [
        7 * 10**18, 7 * 10**18 + 1, 7 * 10**18 + 2
    ]  # fmt: skip


def test_ids_and_times_in_the_index_are_read_as_their_columns() -> None:
    """``set_index("id")`` (or ``read_csv(index_col=...)``) leaves the ids or times in
    the index. They were not read: predictions had no ids and every label was refused
    ("no such prediction"). A named index level is its column, an unnamed index of
    date-times is the timestamp, and row numbers (what filtering leaves) stay out: each
    frame gives the flat frame's reference and outcomes."""
    from driftline.offline.notebook import build_reference, monitor

    flat = training_frame(2000)
    want = build_reference(flat, "m", "1", show=False)
    by_id = flat.set_index("id")
    by_time = flat.set_index("timestamp").rename_axis(None)
    by_both = flat.set_index(["id", "timestamp"])
    for frame in (by_id, by_time, by_both):
        assert build_reference(frame, "m", "1", show=False).reference_id == want.reference_id
    filtered = flat[flat["age"].notna()]
    assert "index" not in table_from(filtered).names
    current = training_frame(1500, seed=1)
    labels = current[["id", "target"]]
    run = monitor(current.drop(columns="target"), want, labels=labels, show=False)
    indexed = monitor(
        current.drop(columns="target").set_index("id"),
        want,
        labels=labels.set_index("id"),
        show=False,
    )
    assert run.run.label_outcomes == indexed.run.label_outcomes == {"joined": 1500}
    assert run.alerts.equals(indexed.alerts)


def test_a_logged_predictions_table_with_its_own_names_gets_its_roles() -> None:
    """A prediction log as a service writes it: ``created_at``, ``predicted_label`` of
    named classes, ``predicted_proba`` of one of them. It was read as date-times left
    out, no prediction and the outputs as features. The one column of date-times is the
    time (noted), the names are the prediction and the score, and the class whose
    probability it is shows where the prediction is that class exactly when the
    probability is above one half; a model with another cut-off is asked about."""
    rng = np.random.default_rng(8)
    n = 600
    p = rng.random(n)
    df = pd.DataFrame(
        {
            "request_id": np.arange(n),
            "created_at": pd.date_range("2026-01-01", periods=n, freq="min"),
            "age": rng.normal(40, 10, n),
            "predicted_proba": p,
            "predicted_label": np.where(p > 0.5, "churn", "stay"),
            "true_label": np.where(rng.random(n) < p, "churn", "stay"),
        }
    )
    res = resolve(table_from(df))
    assert (res.id, res.timestamp, res.prediction, res.label) == (
        "request_id", "created_at", "predicted_label", "true_label"
    )  # fmt: skip
    assert res.features == ["age"]
    assert res.scores == {"churn": "predicted_proba"}
    assert res.complement == ("stay", "predicted_proba")
    assert any(r.startswith("created_at read as the event time") for r in res.remarks)
    data = res.training_data()
    np.testing.assert_allclose(data.top_scores(), np.maximum(p, 1 - p))
    # two columns of date-times: neither is guessed, both are left out with the keyword
    two = df.assign(updated_at=df["created_at"] + pd.Timedelta("1h"))
    res2 = resolve(table_from(two))
    assert res2.timestamp is None and set(res2.excluded) >= {"created_at", "updated_at"}
    # a cut-off of 0.3: the probability does not say whose it is
    cut = df.assign(predicted_label=np.where(p > 0.3, "churn", "stay"))
    with pytest.raises(InputError, match="holds one probability but the classes"):
        resolve(table_from(cut))


def test_a_labels_table_with_one_other_column_reads_it_as_the_label() -> None:
    """Labels exported as ``request_id, labelled_at, outcome``: the label column has no
    label's name, and the run stopped ("a labels table needs an id and a label
    column"). With the id and the one column of date-times found, the one column left
    is the label, noted; with two left, nothing is guessed."""
    from driftline.offline.notebook import build_reference, monitor

    train = training_frame(2000)
    ref = build_reference(train, "m", "1", show=False)
    current = training_frame(1200, seed=2)
    labels = pd.DataFrame(
        {
            "id": current["id"],
            "labelled_at": current["timestamp"] + pd.Timedelta("2D"),
            "outcome": current["target"],
        }
    ).sample(frac=1.0, random_state=0)
    res = resolve(table_from(labels), ColumnMap(features=[]), labels=True)
    assert (res.id, res.timestamp, res.label) == ("id", "labelled_at", "outcome")
    assert any(r.startswith("outcome read as the label") for r in res.remarks)
    assert any(r.startswith("labelled_at read as the labels' time") for r in res.remarks)
    run = monitor(current.drop(columns="target"), ref, labels=labels, show=False)
    assert run.run.label_outcomes == {"joined": 1200}
    two = labels.assign(note="checked")
    assert resolve(table_from(two), ColumnMap(features=[]), labels=True).label is None


def test_epoch_times_under_a_time_name_are_times_not_features() -> None:
    """``created_at`` written as epoch seconds (or milliseconds) was a numeric feature
    that grows with the data, so it drifted by construction, and the table had no time.
    A column named like a time whose every number is an epoch time of this century is
    the time when it is the only one, else left out; durations stay features."""
    rng = np.random.default_rng(12)
    n = 500
    t0 = 1_767_225_600
    df = pd.DataFrame(
        {
            "id": np.arange(n),
            "created_at": t0 + 60 * np.arange(n),
            "wait_time": rng.exponential(30, n),
            "x": rng.normal(size=n),
            "prediction": rng.integers(0, 2, n),
        }
    )
    res = resolve(table_from(df))
    assert res.timestamp == "created_at" and res.notes["created_at"] == "epoch seconds"
    assert res.features == ["wait_time", "x"]
    with_ts = df.assign(ts=df["created_at"], signup_date=(t0 - 86_400 * 30) * 1000)
    res2 = resolve(table_from(with_ts))
    assert res2.timestamp == "ts"
    assert res2.excluded["created_at"].startswith("epoch times are not a feature")
    assert res2.excluded["signup_date"].startswith("epoch times are not a feature")
    assert res2.features == ["wait_time", "x"]
    kept = resolve(table_from(with_ts), ColumnMap(types={"signup_date": "numeric"}))
    assert "signup_date" in kept.features


def test_predict_proba_saved_as_one_list_column_reads_as_its_class_columns(
    tmp_path: Path,
) -> None:
    """``df["proba"] = list(model.predict_proba(X))`` saves each row's probabilities as
    one list. It was read as one probability ("holds one probability but the classes
    are [...]"). A column of lists of k numbers, with k classes, holds the classes'
    probabilities in their sorted order (scikit-learn's ``classes_``): the frame, its
    Parquet file (read by pyarrow) and its JSON lines give the reference of the same
    data with one ``proba_CLASS`` column per class."""
    from driftline.offline.notebook import build_reference

    rng = np.random.default_rng(3)
    n = 2000
    x = rng.normal(size=(n, 3))
    logits = x @ rng.normal(size=(3, 3))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    classes = np.array(["setosa", "versicolor", "virginica"])
    base = pd.DataFrame(
        {
            "id": np.arange(n),
            "a": x[:, 0],
            "b": x[:, 1],
            "prediction": classes[p.argmax(1)],
            "target": classes[[rng.choice(3, p=row) for row in p]],
        }
    )
    wide = base.assign(**{f"proba_{c}": p[:, i] for i, c in enumerate(classes)})
    listed = base.assign(proba=list(p))
    want = build_reference(wide, "iris", "1", show=False)
    res = resolve(table_from(listed))
    assert res.score_vector == ("proba", list(classes)) and res.features == ["a", "b"]
    scores = res.training_data().score_columns
    assert scores is not None
    for i, c in enumerate(classes):  # each class its own probability, not a permutation
        np.testing.assert_array_equal(scores[c], p[:, i])
    _, event, _, _ = next(iter(res.events("iris", "1")))
    assert event is not None and event["scores"] == dict(zip(classes, p[0].tolist(), strict=True))
    listed.to_parquet(tmp_path / "p.parquet")
    rows = listed.assign(proba=[r.tolist() for r in p]).to_dict("records")
    (tmp_path / "p.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    for data in (listed, tmp_path / "p.parquet", tmp_path / "p.jsonl"):
        got = build_reference(data, "iris", "1", show=False)
        assert got.reference_id == want.reference_id, data
    # the lists as a CSV writes them (text): one line saying what keeps them
    listed.to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(InputError, match="holds lists written as text"):
        resolve(table_from(tmp_path / "p.csv"))
    # two classes seen but three probabilities a row: asked, not guessed
    two = listed[listed["prediction"] != "virginica"].assign(target=lambda d: d["prediction"])
    with pytest.raises(InputError, match="holds 3 probabilities a row"):
        resolve(table_from(two))


def test_probability_columns_named_class_then_proba_are_the_classes_scores() -> None:
    """``df[f"{c}_proba"] = model.predict_proba(X)[:, i]``: the class before the suffix.
    ``churn_proba`` was read as a feature (one that drifts with the model's output)
    and, in a table of predictions without labels, as an unknown feature. Read as the
    class's score only when the rest of the name is one of the model's classes (in the
    prediction or label column, or the reference's): the same reference as
    ``proba_churn``; ``credit_score`` and ``risk_prob`` stay features."""
    from driftline.offline.notebook import build_reference, monitor

    rng = np.random.default_rng(8)
    n = 3000
    x = rng.normal(size=n)
    p = 1 / (1 + np.exp(-2 * x))
    frame = pd.DataFrame(
        {
            "id": np.arange(n),
            "ts": pd.date_range("2026-03-01", periods=n, freq="7min"),
            "x": x,
            "credit_score": rng.integers(300, 850, n),
            "risk_prob": rng.uniform(size=n),
            "predicted": np.where(p > 0.5, "churn", "stay"),
            "actual": np.where(rng.random(n) < p, "churn", "stay"),
        }
    )
    prefixed = frame.assign(proba_churn=p, proba_stay=1 - p)
    for suffix in ("_proba", "_prob", "_probability"):
        named = frame.assign(**{f"churn{suffix}": p, f"Stay{suffix}": 1 - p})
        res = resolve(table_from(named))
        assert res.scores == {"churn": f"churn{suffix}", "stay": f"Stay{suffix}"}, suffix
        assert res.features == ["x", "credit_score", "risk_prob"]
    want = build_reference(prefixed, "churn", "1", show=False)
    ref = build_reference(frame.assign(churn_proba=p), "churn", "1", show=False)
    assert ref.reference_id == want.reference_id
    # A day of predictions, all "stay" and without labels: the reference knows the class.
    quiet = frame.assign(churn_proba=p).query("predicted == 'stay'").drop(columns="actual")
    assert resolve(table_from(quiet)).scores == {}
    run = monitor(quiet, ref, show=False)
    assert "__unknown_features__" not in set(run.alerts.get("feature", []))
    assert len(run.windows) and "churn_proba" not in set(run.windows["feature"])


def test_probability_columns_named_exactly_as_the_classes_are_their_scores(
    tmp_path: Path,
) -> None:
    """``df[model.classes_] = model.predict_proba(X)``, or ``pd.concat`` with
    ``pd.DataFrame(model.predict_proba(X))`` (columns 0 and 1): the columns were read as
    features. Two or more columns named exactly as classes, each holding numbers within
    0..1, are the classes' scores: the reference of the same data with ``proba_CLASS``
    columns, from the frame and from its CSV. Columns named as classes that are not
    probabilities stay features."""
    from driftline.offline.notebook import build_reference

    rng = np.random.default_rng(4)
    n = 2000
    x = rng.normal(size=(n, 3))
    logits = x @ rng.normal(size=(3, 3))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    classes = ["setosa", "versicolor", "virginica"]
    frame = pd.DataFrame({"id": np.arange(n), "a": x[:, 0], "b": x[:, 1]})
    frame["prediction"] = np.array(classes)[p.argmax(1)]
    frame["target"] = np.array(classes)[[rng.choice(3, p=row) for row in p]]
    bare = frame.copy()
    bare[classes] = p
    prefixed = frame.assign(**{f"proba_{c}": p[:, i] for i, c in enumerate(classes)})
    res = resolve(table_from(bare))
    assert res.scores == {c: c for c in classes} and res.features == ["a", "b"]
    want = build_reference(prefixed, "iris", "1", show=False).reference_id
    assert build_reference(bare, "iris", "1", show=False).reference_id == want
    # binary, integer classes: pd.DataFrame(predict_proba) concatenated (columns 0, 1)
    q = 1 / (1 + np.exp(-2 * x[:, 0]))
    binary = pd.DataFrame({"id": np.arange(n), "a": x[:, 0], "b": x[:, 1]})
    binary["prediction"] = (q > 0.5).astype(int)
    binary["label"] = (rng.random(n) < q).astype(int)
    concat = pd.concat([binary, pd.DataFrame(np.c_[1 - q, q])], axis=1)
    named = binary.assign(proba_0=1 - q, proba_1=q)
    want = build_reference(named, "bin", "1", show=False).reference_id
    concat.to_csv(tmp_path / "b.csv", index=False)
    for data in (concat, tmp_path / "b.csv"):
        assert build_reference(data, "bin", "1", show=False).reference_id == want, data
    # exported rounded to 2 decimals (to_csv(float_format="%.2f")): a row's three
    # probabilities then sum to 0.99-1.01, and are still the scores
    bare.to_csv(tmp_path / "rounded.csv", index=False, float_format="%.2f")
    assert resolve(table_from(tmp_path / "rounded.csv")).scores == {c: c for c in classes}
    # counts in columns named as the classes are not probabilities: features
    counts = frame.assign(**{c: rng.integers(0, 9, n) for c in classes})
    assert resolve(table_from(counts)).scores == {}
    assert resolve(table_from(counts)).features == ["a", "b", *classes]


def test_scaled_features_of_a_frame_of_x_named_0_1_stay_features() -> None:
    """``pd.DataFrame(X)`` of features scaled to 0..1 names them 0, 1, 2, ...: beside a
    binary model's 0/1 prediction, columns 0 and 1 were read as the classes'
    probabilities, two features lost and the confidence made of them. Probabilities of
    every class sum to 1 on each row; such features do not. The oracle is the same frame
    with its columns named x0, x1, ...: the same features, profile for profile."""
    from driftline.offline.notebook import build_reference

    rng = np.random.default_rng(8)
    x = rng.random((2000, 4))  # MinMaxScaler's output
    frame = pd.DataFrame(x)
    frame["prediction"] = (x[:, 0] + x[:, 1] > 1).astype(int)
    frame["target"] = (rng.random(2000) < 0.5).astype(int)
    res = resolve(table_from(frame))
    assert res.scores == {} and res.features == ["0", "1", "2", "3"]
    named = frame.rename(columns={i: f"x{i}" for i in range(4)})
    got = build_reference(frame, "m", "1", show=False).profile
    want = build_reference(named, "m", "1", show=False).profile
    for i in range(4):
        a, b = got.features[str(i)], want.features[f"x{i}"]
        assert isinstance(a, type(b)) and a.n == b.n and a.mean == b.mean  # type: ignore[union-attr]
        np.testing.assert_array_equal(a.counts, b.counts)
    assert got.outputs.confidence is None and want.outputs.confidence is None


def test_a_model_that_logs_only_its_probabilities_predicts_the_most_probable_class() -> None:
    """A scoring model (fraud, risk) logs a probability and no class. The training
    table's build noted "no prediction column" and left output drift and accuracy out;
    its table of predictions was refused ("the classes are unknown"). The prediction is
    now the class of the highest probability (ties: the first class, as the argmax of
    ``predict_proba``): the same reference as with the prediction column, and a replay
    without it gives the same alerts and accuracy, from the reference's classes."""
    from driftline.offline.notebook import build_reference, monitor

    rng = np.random.default_rng(12)
    n = 6000
    x = rng.normal(size=n)
    p = np.round(1 / (1 + np.exp(-2 * x)), 3)
    p[:5] = 0.5  # ties: class 0, as np.argmax(predict_proba) gives
    y = (rng.random(n) < p).astype(int)
    drift = np.r_[np.zeros(4500), np.full(1500, 1.5)]
    table = pd.DataFrame(
        {
            "id": np.arange(n),
            "ts": pd.date_range("2026-05-01", periods=n, freq="2min"),
            "x": x + drift,
            "z": rng.normal(size=n),
            "probability": p,
            "label": y,
        }
    )
    explicit = table.assign(prediction=(p > 0.5).astype(int))
    res = resolve(table_from(table.iloc[:3000]))
    assert res.argmax and res.prediction is None
    assert "(highest score)    prediction" in res.describe()
    assert res.training_data().predictions == explicit["prediction"].iloc[:3000].tolist()
    want = build_reference(explicit.iloc[:3000], "risk", "1", show=False)
    ref = build_reference(table.iloc[:3000], "risk", "1", show=False)
    assert ref.reference_id == want.reference_id
    current = table.iloc[3000:].drop(columns="label")
    labels = table.iloc[3000:][["id", "label"]]
    got = monitor(current, ref, labels=labels, show=False)
    expected = monitor(explicit.iloc[3000:].drop(columns="label"), want, labels=labels, show=False)
    assert len(expected.alerts) > 0
    assert list(got.alerts["alert_id"]) == list(expected.alerts["alert_id"])
    assert list(got.performance["accuracy"]) == list(expected.performance["accuracy"])
    # several classes, one probability column each and no prediction
    q = rng.dirichlet([1, 1, 1], 500)
    multi = pd.DataFrame({"a": rng.normal(size=500)}).assign(
        **{f"proba_{c}": q[:, i] for i, c in enumerate(["cat", "dog", "fox"])}
    )
    found = resolve(table_from(multi)).training_data().predictions
    assert found == [["cat", "dog", "fox"][i] for i in q.argmax(1)]


def test_ids_mixing_numbers_and_text_are_ids_not_bad_numbers() -> None:
    """An id column of numbers with a few text ids (another system's, a test row) stopped
    the run: "'A-17' is not a number ... declare the column (--types id=categorical)".
    An id is text whatever it looks like: every row keeps its own, none is refused."""
    ids: list[Any] = list(range(1000, 1300))
    ids[17], ids[250] = "A-17", "test-row"
    frame = pd.DataFrame({"id": ids, "x": np.linspace(0, 1, 300), "prediction": ["a", "b"] * 150})
    res = resolve(table_from(frame))
    assert res.id == "id" and not res.refused
    events = [e for _, e, _, _ in res.events("m", "1")]
    assert [e["prediction_id"] for e in events if e] == [str(i) for i in ids]
    labels = resolve(table_from(frame.rename(columns={"prediction": "label"})), labels=True)
    assert [ev["prediction_id"] for _, ev, _ in labels.label_rows("m") if ev] == [
        str(i) for i in ids
    ]
    assert not labels.refused


def test_labels_that_are_none_of_the_models_classes_are_told_not_scored_0_percent() -> None:
    """A target of text (``no``/``yes``) beside a model's 0/1 predictions, or labels
    that differ from the classes in case, would count every label wrong (accuracy 0%,
    a performance alert): one line that says how to map them, in the training table, the
    current table and a labels table alike. Mapped as it says, the reference's accuracy
    is the share of predictions equal to their label (the oracle, pandas)."""
    import driftline

    df = training_frame(1500)
    df["prediction"] = df["prediction"].astype(int)
    df = df.rename(columns={"proba_False": "proba_0", "proba_True": "proba_1"})
    texts = df.assign(target=df["target"].map({False: "no", True: "yes"}))
    with pytest.raises(InputError) as err:
        build_from_table(texts, "churn", "1")
    said = str(err.value)
    assert "column 'target' (no, yes) are none of the model's classes (0, 1)" in said
    assert ".map({'no': ..., 'yes': ...})" in said and "\n" not in said
    mapped = texts.assign(target=texts["target"].map({"no": 0, "yes": 1}))
    ref = build_from_table(mapped, "churn", "1", created_at=0)[0]
    want = float((mapped["prediction"] == mapped["target"]).mean())
    assert ref.outputs.accuracy == pytest.approx(want) and want > 0.5
    # the current table's labels, and a labels table checked against the reference
    nb = driftline.build_reference(mapped, "churn", "1", show=False)
    with pytest.raises(InputError, match="column 'target' \\(no, yes\\)"):
        driftline.monitor(texts, nb, show=False)
    with pytest.raises(InputError, match="column 'target' \\(no, yes\\)"):
        driftline.monitor(mapped.drop(columns="target"), nb,
                          labels=texts[["id", "target"]], show=False)  # fmt: skip
    # classes of text that differ only in case
    words = df.assign(prediction=df["prediction"].map({0: "stay", 1: "churn"}),
                      target=df["target"].map({False: "Stay", True: "Churn"}))  # fmt: skip
    words = words.drop(columns=["proba_0", "proba_1"])
    with pytest.raises(InputError, match="\\(Churn, Stay\\) are none of the model's classes"):
        resolve(table_from(words))
    # labels of a class the model never predicted are possible: a note, not an error
    rare = words.assign(prediction="stay", target="churn")
    res = resolve(table_from(rare))
    assert any("(churn) are none of the model's classes (stay)" in r for r in res.remarks)


def test_outputs_named_as_scikit_learn_examples_name_them_are_found() -> None:
    """``pd.DataFrame({"y_test": y_test, "predictions": model.predict(X_test)})``: both
    were read as features (a model's own output drifting with it, and no accuracy),
    with only a note that no prediction column was found. The plurals and ``y_test``
    are now the roles; the oracle is the same frame under the usual names (the same
    reference), and ``churn_predictions`` is noted as named like an output."""
    df = training_frame(1500).drop(columns=["proba_False", "proba_True"])
    want = build_from_table(df, "churn", "1", created_at=0)[0].reference_id
    for pred, label in (("predictions", "y_test"), ("preds", "labels"), ("prediction", "targets")):
        renamed = df.rename(columns={"prediction": pred, "target": label})
        res = resolve(table_from(renamed))
        assert (res.prediction, res.label) == (pred, label)
        assert build_from_table(renamed, "churn", "1", created_at=0)[0].reference_id == want
    odd = df.assign(churn_predictions=df["prediction"])
    assert any("churn_predictions read as features" in r for r in resolve(table_from(odd)).remarks)


def test_a_column_named_as_anothers_prediction_is_the_prediction_and_that_one_the_label() -> None:
    """A regression export names its output after its target (``predicted_price`` beside
    ``price``; ``churn_pred`` beside ``churn``): the pair is the prediction and the label,
    said in a note, and the reference is the one built with both named (the oracle).
    Two such pairs, a pair of times, a label found by its own name, or a named label
    leave every column where the names put it."""
    rng = np.random.default_rng(4)
    n = 2000
    size = rng.normal(100, 20, n)
    pred = 3 * size + rng.normal(0, 5, n)
    df = pd.DataFrame(
        {
            "ts": pd.date_range("2026-01-01", periods=n, freq="7min"),
            "size": size,
            "rooms": rng.integers(1, 5, n),
            "predicted_price": pred,
            "price": pred + rng.normal(0, 20, n),
        }
    )
    res = resolve(table_from(df))
    assert (res.prediction, res.label, res.task) == ("predicted_price", "price", "regression")
    assert res.features == ["size", "rooms"]
    assert any("predicted_price read as the prediction and price as the label" in r
               for r in res.remarks)  # fmt: skip
    told = ColumnMap(prediction="predicted_price", label="price")
    inferred, _ = build_from_table(df, "houses", "1", created_at=0)
    named, _ = build_from_table(df, "houses", "1", columns=told, created_at=0)
    assert inferred.to_bytes() == named.to_bytes()

    churn = pd.DataFrame({"x": rng.normal(size=n), "churn": rng.random(n) < 0.3})
    churn["churn_pred"] = rng.random(n) < 0.3
    res = resolve(table_from(churn))
    assert (res.prediction, res.label, res.task) == ("churn_pred", "churn", "classification")

    def untouched(frame: Any, cm: ColumnMap | None = None) -> None:
        res = resolve(table_from(frame), cm)
        assert "predicted_price" in res.features or res.prediction is None
        assert not any("named as another's prediction" in r for r in res.remarks)

    untouched(df.assign(pred_rooms=df["rooms"] + 0.5, rooms=df["rooms"] * 1.0))  # two pairs
    untouched(df.assign(target=df["price"]))  # the label by its name is another column
    assert resolve(table_from(df), ColumnMap(label="size")).prediction is None
    times = df.assign(prediction_date=df["ts"], date=df["ts"]).drop(
        columns=["predicted_price", "price"]
    )
    res = resolve(table_from(times), ColumnMap(timestamp="ts"))
    assert res.prediction is None and res.label is None


def test_numbers_with_thousands_separators_read_as_numbers(
    exports: dict[str, Path], tmp_path: Path
) -> None:
    """An export whose figures are written as a spreadsheet shows them (``"82,614"``,
    quoted in the CSV) was read as a categorical feature of thousands of values, with
    no note. Now they are the numbers pandas' ``read_csv(thousands=",")`` reads, the
    roles table says so, and the reference is the one of the plain export."""
    df = pd.read_csv(exports["csv"])
    shown = df.assign(
        income=[f"{x:,.4f}" for x in df["income"]],
        tenure=[f"{x * 1000:,}" for x in df["tenure"]],
    )
    shown.loc[5, "income"] = None
    shown.to_csv(tmp_path / "shown.csv", index=False)
    assert '"1,' in (tmp_path / "shown.csv").read_text()  # quoted, with separators
    oracle = pd.read_csv(tmp_path / "shown.csv", thousands=",")
    table = read_table(tmp_path / "shown.csv")
    for c in ("income", "tenure"):
        np.testing.assert_array_equal(table.floats(c), oracle[c].to_numpy(np.float64))
    res = resolve(table)
    assert res.kinds["income"] == "numeric" and res.kinds["tenure"] == "numeric"
    assert "numbers with thousands separators (" in res.describe()
    plain = tmp_path / "plain.csv"
    shown.assign(income=oracle["income"], tenure=oracle["tenure"]).to_csv(plain, index=False)
    got = build_from_table(tmp_path / "shown.csv", "churn", "1", created_at=0)[0]
    assert profile_of(got) == profile_of(build_from_table(plain, "churn", "1", created_at=0)[0])
    # Commas that do not group digits in threes stay text, as in a semicolon file.
    for text in ("1,5", "12,34", "1,2345", "a,123", "1,234.5.6"):
        assert csv_cell(text) == text
    assert csv_cell("-1,234,567.25") == -1234567.25 and csv_cell("1,234") == 1234


def test_a_feature_constant_in_training_is_noted_as_constant_not_as_codes() -> None:
    """A feature with one value in every training row (a flag not yet switched on, a
    region the model was trained for) was noted '1 distinct integers (0.0): codes?
    --types promo=categorical', advice that does not apply. Now the roles table says it
    is constant, for the features pandas counts one value in."""
    df = training_frame(500).assign(promo=0.0, region="EU", switched=1, spare=np.nan)
    df.loc[3, "switched"] = np.nan
    res = resolve(table_from(df))
    constant = {c for c in res.features if df[c].nunique() == 1}
    assert constant == {"promo", "region", "switched"}
    for c in constant:
        assert res.notes[c].startswith("constant: "), (c, res.notes.get(c))
    assert res.notes["promo"] == "constant: 0.0 in every row"
    assert res.notes["region"] == "constant: EU in every row"
    assert res.notes["switched"] == "constant: 1.0 in every row with a value"
    assert res.notes["spare"] == "every value is missing"
    assert "codes?" not in res.describe()


def test_columns_typed_as_categories_are_categorical_features() -> None:
    """A pandas category, an Arrow dictionary and a polars Enum are categorical features
    whatever their categories; the same numbers without that type are numeric."""
    codes = [1, 2, 5, 2, 1, 5] * 50
    frame = pd.DataFrame({"x": np.linspace(0, 1, 300), "code": pd.Categorical(codes)})
    arrow = pa.table({"x": frame["x"], "code": pa.array(codes).dictionary_encode()})
    assert pa.types.is_dictionary(arrow.schema.field("code").type)
    assert resolve(table_from(frame)).kinds["code"] == "categorical"
    assert resolve(table_from(arrow)).kinds["code"] == "categorical"
    assert resolve(table_from(frame.assign(code=codes))).kinds["code"] == "numeric"
    pl = require_module("polars")
    enum = pl.Enum(["1", "2", "5"])
    polars_frame = pl.DataFrame(
        {"x": frame["x"], "code": pl.Series([str(c) for c in codes], dtype=enum)}
    )
    assert table_from(polars_frame).categories == {"code"}
    assert resolve(table_from(polars_frame)).kinds["code"] == "categorical"


def test_probabilities_as_percentages_or_raw_scores_are_one_line() -> None:
    """A probability column saved as percentages (``73.2``) built a reference whose other
    class had the probability ``1 - 73.2``, and the replay then refused every row
    ('probability 73.2 outside 0..1'), each value a reason of its own. Now the roles
    say so before any work, with the fix; a raw score (a logit) named as a class's
    probability too."""
    df = training_frame()
    pct = df.drop(columns="proba_False").assign(proba_True=df["proba_True"] * 100)
    with pytest.raises(InputError) as err:
        resolve(table_from(pct))
    assert "column 'proba_True' is read as the probability of class 'true'" in str(err.value)
    assert "percentages? divide them by 100 (pandas: df['proba_True'] = " in str(err.value)
    logits = df.drop(columns=["proba_False", "proba_True"]).assign(
        score_true=np.log(df["proba_True"] / df["proba_False"])
    )
    with pytest.raises(InputError, match="a raw score .* is no probability: leave it out"):
        resolve(table_from(logits))
    fixed = pct.assign(proba_True=pct["proba_True"] / 100)
    np.testing.assert_allclose(fixed["proba_True"], df["proba_True"], rtol=1e-15)
    assert resolve(table_from(fixed)).scores == {"true": "proba_True"}
    # a stray value is left to the row's own check
    stray = df.drop(columns="proba_False")
    stray.loc[7, "proba_True"] = 1.2
    assert resolve(table_from(stray)).scores == {"true": "proba_True"}


def test_label_columns_named_otherwise_are_the_label_where_they_fit_the_output() -> None:
    """A label named ``is_fraud``, ``fraud_label``, ``segment_true``, ``true_segment``,
    ``actual_segment`` ... was read as a feature (the model's truth, drifting with it)
    unless ``--label`` named it. Now it is the label, with a note naming it and how to
    keep it a feature, where its values are the model's classes; a feature named so
    whose values are not (``true_range``), a boolean feature (``is_member``), a column
    the reference holds as a feature, and two such columns stay features."""
    rng = np.random.default_rng(21)
    n = 600
    base = pd.DataFrame(
        {
            "id": np.arange(n),
            "x": rng.normal(size=n),
            "is_member": rng.random(n) < 0.3,
            "prediction": rng.integers(0, 3, n),
        }
    )
    classes = rng.integers(0, 3, n)
    for name in (
        "is_fraud",
        "fraud_label",
        "segment_true",
        "true_segment",
        "y_true_segment",
        "actual_segment",
        "segment_actual",
        "segment_target",
    ):
        res = resolve(table_from(base.assign(**{name: classes})))
        assert res.label == name and name not in res.features, name
        assert "is_member" in res.features and res.kinds["is_member"] == "boolean"
        text = res.describe()
        assert f"note: {name} read as the label: named like one" in text, text
        assert "(--label COLUMN names another; --label '' keeps it a feature)" in text, text
        kept = resolve(table_from(base.assign(**{name: classes})), ColumnMap(label=""))
        assert kept.label is None and name in kept.features
        known = resolve(table_from(base.assign(**{name: classes})), known_features=[name])
        assert known.label is None and name in known.features
    # text classes, booleans
    words = np.array(["basic", "pro", "team"])
    named = base.assign(prediction=words[classes], plan_true=words[rng.integers(0, 3, n)])
    assert resolve(table_from(named)).label == "plan_true"
    flags = base.assign(prediction=rng.random(n) < 0.2, is_churn=rng.random(n) < 0.2)
    assert resolve(table_from(flags)).label == "is_churn"
    for name, values in (
        ("true_range", rng.normal(size=n)),  # numbers that are no class
        ("count_true", rng.integers(0, 40, n)),
        ("y_pred_label", classes),  # an output's name
        ("is_weekend", rng.integers(0, 2, n)),  # not a label's name
    ):
        res = resolve(table_from(base.assign(**{name: values})))
        assert res.label is None and name in res.features, name
    # without a model output, nothing says what the label's values should be
    res = resolve(table_from(base.drop(columns="prediction").assign(is_fraud=classes % 2)))
    assert res.label is None and "is_fraud" in res.features
    two = resolve(table_from(base.assign(fraud_label=classes, segment_true=classes)))
    assert two.label is None
    assert "fraud_label, segment_true read as features but each named like the label" in (
        two.describe()
    )
    # a regression: a value on the predictions' scale
    price = rng.lognormal(5, 0.3, n)
    reg = base.assign(prediction=price * 1.05, actual_price=price, true_range=price / 1000)
    res = resolve(table_from(reg))
    assert res.task == "regression" and res.label == "actual_price"
    assert "true_range" in res.features
    # a labels table with an id, its label and another column
    labels = pd.DataFrame({"id": np.arange(n), "is_fraud": classes % 2, "source": "batch"})
    res = resolve(table_from(labels), labels=True)
    assert res.label == "is_fraud"


def test_a_prediction_named_after_its_truth_column_pairs_with_it() -> None:
    """``segment_pred`` beside ``segment_true`` (or ``true_segment``, ``segment_actual``,
    ``segment_label``): the prediction was not found (the pair rule wanted a column named
    ``segment``), so the table had no prediction and its classes were unknown. Now the
    two are the prediction and the label, with the note of the pair rule."""
    rng = np.random.default_rng(4)
    n = 400
    classes = np.array(["bronze", "gold", "silver"])
    base = pd.DataFrame({"id": np.arange(n), "x": rng.normal(size=n)})
    for truth in ("segment_true", "true_segment", "segment_actual", "segment_label", "segment"):
        df = base.assign(
            segment_pred=classes[rng.integers(0, 3, n)], **{truth: classes[rng.integers(0, 3, n)]}
        )
        res = resolve(table_from(df))
        assert (res.prediction, res.label) == ("segment_pred", truth), truth
        assert f"segment_pred read as the prediction and {truth} as the label" in res.describe()


def test_a_feature_named_score_that_is_no_probability_stays_a_feature() -> None:
    """A feature called ``score`` (a credit score, another system's risk score) was read
    as the lone probability of a binary model: a table without a prediction stopped
    ('holds one probability but the classes are unknown'), and one with it read the
    score as the probability of class 1. Now a ``score``/``y_score`` column whose values
    are not within 0..1 is a feature, with a note; one within 0..1 is the probability,
    as before, and a ``probability`` column of percentages still stops with its fix."""
    rng = np.random.default_rng(6)
    n = 500
    p = rng.random(n)
    base = pd.DataFrame({"id": np.arange(n), "x": rng.normal(size=n), "prediction": p > 0.5})
    for name, values in (("score", rng.normal(650, 80, n)), ("y_score", rng.normal(0, 2, n))):
        res = resolve(table_from(base.assign(**{name: values})))
        assert name in res.features and not res.scores, name
        assert (
            f"note: {name} read as a feature: named like a probability, but its values are "
            "not within 0..1" in res.describe()
        )
        res = resolve(table_from(base.drop(columns="prediction").assign(**{name: values})))
        assert name in res.features
    res = resolve(table_from(base.assign(score=p)))
    assert res.scores == {"true": "score"} and "score" not in res.features
    with pytest.raises(InputError, match="percentages\\? divide them by 100"):
        resolve(table_from(base.assign(probability=p * 100)))


def test_a_feature_of_a_different_integer_in_every_row_is_pointed_out_as_an_id() -> None:
    """A listing number, an order number (no ``id`` in its name) was read as a feature
    with no word: new ids are new values, so it drifts by construction. Now the roles
    table says it looks like the id and names the options; a feature of repeated
    integers, a table with an id, and a short table have no such note."""
    rng = np.random.default_rng(8)
    n = 500
    df = pd.DataFrame(
        {
            "listing": rng.permutation(n) + 10_000,
            "rooms": rng.integers(1, 6, n),
            "sqft": rng.normal(1500, 300, n),
            "prediction": rng.random(n) < 0.5,
        }
    )
    said = "listing read as a feature but every row has a different integer, as an id has: "
    text = resolve(table_from(df)).describe()
    assert said + "--id listing reads it as the id (--exclude listing leaves it out)" in text
    assert "rooms read as a feature but" not in text and "sqft read as" not in text
    assert said not in resolve(table_from(df.assign(id=np.arange(n)))).describe()
    assert said not in resolve(table_from(df.head(50))).describe()
    assert resolve(table_from(df), ColumnMap(id="listing")).id == "listing"


def test_a_regression_label_named_unlike_its_prediction_is_paired_on_the_evidence() -> None:
    """``predicted_price`` beside ``sale_price`` (and ``prediction`` beside ``sale_price``):
    the label was read as a feature, the task as classification and accuracy left out.
    Now the one column named like what the prediction predicts, or the one column on the
    prediction's scale, is the label, with a note; the oracle is the reference built with
    both named. Two columns on the scale, or one off it, move nothing."""
    rng = np.random.default_rng(7)
    n = 2000
    sqft = rng.normal(1500, 300, n)
    price = 200 * sqft + rng.normal(0, 20000, n)
    df = pd.DataFrame(
        {
            "ts": pd.date_range("2026-01-01", periods=n, freq="7min"),
            "sqft": sqft,
            "rooms": rng.integers(1, 6, n),
            "predicted_price": price + rng.normal(0, 15000, n),
            "sale_price": price,
        }
    )
    res = resolve(table_from(df))
    assert (res.prediction, res.label, res.task) == ("predicted_price", "sale_price", "regression")
    assert res.features == ["sqft", "rooms"]
    assert any("sale_price is the one column named like what predicted_price predicts" in r
               for r in res.remarks)  # fmt: skip
    told = ColumnMap(prediction="predicted_price", label="sale_price")
    inferred, _ = build_from_table(df, "houses", "1", created_at=0)
    named, _ = build_from_table(df, "houses", "1", columns=told, created_at=0)
    assert inferred.to_bytes() == named.to_bytes()

    generic = df.rename(columns={"predicted_price": "prediction"})
    res = resolve(table_from(generic))
    assert (res.prediction, res.label) == ("prediction", "sale_price")
    assert any("sale_price read as the label: the one column on the scale of prediction" in r
               for r in res.remarks)  # fmt: skip
    assert resolve(table_from(generic), ColumnMap(label="")).label is None
    # a feature on the prediction's scale too: both pointed out, neither moved
    two = generic.assign(list_price=df["sale_price"] * 1.02)
    res = resolve(table_from(two))
    assert res.label is None and {"sale_price", "list_price"} <= set(res.features)
    assert any("sale_price, list_price read as features but each on the scale" in r
               for r in res.remarks)  # fmt: skip
    # named like the stem but off the scale (a price in thousands): a note, not moved
    off = df.assign(sale_price=df["sale_price"] / 1000)
    res = resolve(table_from(off))
    assert res.label is None and "sale_price" in res.features
    assert any("sale_price read as a feature: named like what predicted_price" in r
               for r in res.remarks)  # fmt: skip
    # a feature the reference knows is never taken
    res = resolve(table_from(generic), known_features=["sqft", "rooms", "sale_price"])
    assert res.label is None
