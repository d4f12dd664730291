"""The ``driftline`` command as a person uses it (issue 12 items 3 and 6).

Every command runs in a subprocess, as from a shell, with no Redis and no Kafka
reachable (their addresses point at a closed port): files in, files out, one line per
error and the documented exit status (0 ok, 1 failure, 2 usage or input error).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from driftline.cli.parser import USAGE, build_parser

SRC = str(Path(__import__("driftline").__file__).parents[1])
KEY = "test-signing-key-0123456789"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed when the block ends: nothing listens


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    port = closed_port()
    return {
        **os.environ,
        "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "DRIFTLINE_REDIS__URL": f"redis://127.0.0.1:{port}/0",
        "DRIFTLINE_REDIS__SOCKET_CONNECT_TIMEOUT": "2",
        "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        "DRIFTLINE_REDIS__STATE_SIGNING_KEY": KEY,
    }


def dl(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftline", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def at_terminal(env: dict[str, str], args: list[str], cwd: Path) -> str:
    """What ``driftline ARGS`` prints on stdout when stdout is a terminal (stderr
    dropped)."""
    import pty

    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "driftline", *args],
        env=env,
        cwd=cwd,
        stdout=secondary,
        stderr=subprocess.DEVNULL,
    )
    os.close(secondary)
    shown = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the command ended and closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(primary)
    assert proc.wait(timeout=300) == 0
    return shown.decode()


def frame(n: int, seed: int, shift: float = 0.0, flip: bool = False) -> Any:
    rng = np.random.default_rng(seed)
    start = "2026-01-01" if not shift else "2026-03-01"
    df = pd.DataFrame(
        {
            "id": np.arange(n) + (10**6 if shift else 0),
            "timestamp": pd.date_range(start, periods=n, freq="9min", tz="UTC"),
            "age": rng.normal(40 + shift, 10, n).round(1),
            "plan": rng.choice(["basic", "pro", "team"], n),
            "is_member": rng.random(n) < 0.3,
        }
    )
    p = 1 / (1 + np.exp(-(df["age"] - 40) / 8))
    truth = rng.random(n) < p
    df["target"] = ~truth if flip else truth
    df["prediction"] = p > 0.5
    df["proba_False"] = 1 - p
    df["proba_True"] = p
    return df


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    frame(4000, 0).to_csv(d / "train.csv", index=False)
    frame(4000, 0).to_parquet(d / "train.parquet")
    cur = frame(3000, 1, shift=8.0, flip=True)
    cur.drop(columns=["target"]).to_csv(d / "current.csv", index=False)
    cur[["id", "timestamp", "target"]].to_csv(d / "labels.csv", index=False)
    return d


def test_a_small_reference_says_which_detectors_it_cannot_run(
    env: dict[str, str], tmp_path: Path
) -> None:
    """400 training rows cannot bound the false alarms of the smallest drifts' detectors,
    which calibration turns off. Before, nothing said so: a user took the quiet for
    "no drift". Now the build says it in one note and ``reference show`` counts them;
    4,000 rows of the same model run every detector and get no note."""
    frame(400, 0).to_csv(tmp_path / "small.csv", index=False)
    frame(4000, 0).to_csv(tmp_path / "large.csv", index=False)
    said = {}
    for name in ("small", "large"):
        b = dl(env, "reference", "build", "--model", "churn", "--version", "1",
               "--data", f"{name}.csv", "--out", f"{name}.ref", cwd=tmp_path)  # fmt: skip
        assert b.returncode == 0, b.stderr
        show = dl(env, "reference", "show", f"{name}.ref", cwd=tmp_path)
        counts = re.search(r"detectors: (\d+)/(\d+) calibrated", show.stdout)
        assert counts is not None, show.stdout
        said[name] = (b.stderr, show.stdout, int(counts[1]), int(counts[2]))
    stderr, shown, on, total = said["small"]
    assert "note: 400 rows are few for drift detection" in stderr
    off = re.search(r"(\d+) of (\d+) detectors are off \((\d+) for drifts of 0.25 sd", stderr)
    assert off is not None, stderr
    assert (int(off[1]), int(off[2])) == (total - on, total) and on < total
    assert "off, the reference being too small for them:" in shown
    stderr, shown, on, total = said["large"]
    assert on == total and "few for drift detection" not in stderr and "off," not in shown


def test_offline_from_a_clean_clone_no_redis(env: dict[str, str], files: Path) -> None:
    """reference build to a file, replay with labels, a report with accuracy: no servers."""
    b = dl(
        env,
        "reference",
        "build",
        "--model",
        "churn",
        "--version",
        "1",
        "--data",
        "train.csv",
        "--out",
        "churn.ref",
        cwd=files,
    )
    assert b.returncode == 0, b.stderr
    assert "target       label" in b.stderr and "wrote churn.ref" in b.stderr
    assert (files / "churn.ref").read_bytes()[:2] == b"DL"  # the signed envelope
    # The same data as Parquet: the identical reference (same id).
    p = dl(
        env,
        "reference",
        "build",
        "--model",
        "churn",
        "--version",
        "1",
        "--data",
        "train.parquet",
        "--out",
        "churn-pq.ref",
        cwd=files,
    )
    ref_id = next(w for w in b.stderr.split() if w.startswith("churn:1:"))
    assert ref_id in p.stderr
    r = dl(
        env,
        "replay",
        "--events",
        "current.csv",
        "--reference",
        "churn.ref",
        "--labels",
        "labels.csv",
        "--out",
        "alerts.jsonl",
        "--performance",
        cwd=files,
    )
    assert r.returncode == 0, r.stderr
    alerts = [orjson.loads(x) for x in (files / "alerts.jsonl").read_bytes().splitlines()]
    kinds = {a["kind"] for a in alerts}
    assert "input_drift" in kinds and "performance" in kinds, kinds
    assert all(a["detected_at"] > 1_700_000_000_000 for a in alerts)
    assert "labels: 3,000 of 3,000 joined" in r.stderr and "accuracy" in r.stderr
    # The summary counts alert events, and the episodes that fired by kind (an episode's
    # updates and resolution are events of the same alert).
    fired = [a["kind"] for a in alerts if a["status"] == "firing"]
    said = re.search(r"replayed 3,000 events: (\d+) alert events \((\d+) fired: ([^;)]*)", r.stderr)
    assert said is not None, r.stderr
    assert int(said[1]) == len(alerts) and int(said[2]) == len(fired), said[0]
    assert said[3] == ", ".join(f"{fired.count(k)} {k}" for k in sorted(set(fired)))
    show = dl(env, "reference", "show", "--file", "churn.ref", cwd=files)
    assert show.returncode == 0 and "is_member" in show.stdout and "accuracy=" in show.stdout
    # The multivariate model is fitted by default (docs/multivariate.md), not when asked not.
    assert "multivariate: " in show.stdout and "CUSUM rows calibrated" in show.stdout
    args = ("--model", "churn", "--version", "1", "--data", "train.csv", "--out", "plain.ref")
    plain = dl(env, "reference", "build", *args, "--no-multivariate", cwd=files)
    assert plain.returncode == 0, plain.stderr
    show = dl(env, "reference", "show", "--file", "plain.ref", cwd=files)
    assert show.returncode == 0 and "is_member" in show.stdout
    assert "multivariate: " not in show.stdout and "'multivariate': False" in show.stdout
    rep = dl(
        env,
        "report",
        "--events",
        "current.csv",
        "--reference",
        "churn.ref",
        "--labels",
        "labels.csv",
        "--out",
        "report.html",
        cwd=files,
    )
    assert rep.returncode == 0, rep.stderr
    html = (files / "report.html").read_text()
    assert "accuracy (labelled) vs estimated accuracy" in html
    assert "state degraded" in rep.stderr


def test_a_labels_table_with_its_own_column_names(env: dict[str, str], files: Path) -> None:
    """A labels export named as its warehouse names it: one clear line without a mapping,
    and with ``--labels-columns`` the same join as the conventionally named file."""
    built = dl(env, "reference", "build", "--model", "churn", "--version", "1",
               "--data", "train.csv", "--out", "own.ref", cwd=files)  # fmt: skip
    assert built.returncode == 0, built.stderr
    own = pd.read_csv(files / "labels.csv").rename(
        columns={"id": "customer_ref", "target": "churned", "timestamp": "label_time"}
    )
    own.to_csv(files / "labels-own.csv", index=False)
    base = ("replay", "--events", "current.csv", "--reference", "own.ref", "--performance")
    plain = dl(env, *base, "--labels", "labels.csv", "--out", "a.jsonl", cwd=files)
    assert plain.returncode == 0, plain.stderr
    bare = dl(env, *base, "--labels", "labels-own.csv", "--out", "b.jsonl", cwd=files)
    assert bare.returncode == 2
    last = bare.stderr.splitlines()[-1]  # after the events table's column roles
    assert "Traceback" not in bare.stderr and "--labels-columns id=COL,label=COL" in last
    roles = "id=customer_ref,label=churned,timestamp=label_time"
    mapped = dl(env, *base, "--labels", "labels-own.csv", "--labels-columns", roles,
                "--out", "c.jsonl", cwd=files)  # fmt: skip
    assert mapped.returncode == 0, mapped.stderr
    assert "labels-own.csv: 3,000 labels" in mapped.stderr  # not "0 features, task ..."
    assert re.search(r"label_time +timestamp", mapped.stderr), mapped.stderr
    assert "no time column" not in mapped.stderr
    assert "labels: 3,000 of 3,000 joined" in mapped.stderr
    assert (files / "c.jsonl").read_bytes() == (files / "a.jsonl").read_bytes()
    typo = dl(env, *base, "--labels", "labels-own.csv", "--labels-columns", "target=churned",
              "--out", "d.jsonl", cwd=files)  # fmt: skip
    assert typo.returncode == 2 and "Traceback" not in typo.stderr
    assert "the roles of a labels table are id, label and timestamp" in typo.stderr


def test_a_table_without_a_prediction_column_is_one_line_not_every_row_refused(
    env: dict[str, str], files: Path
) -> None:
    """A reference may be built without the model's output (input drift only), but every
    event carries a prediction: replaying a table with neither a prediction nor the
    probabilities it comes from says so in one line (exit 2) instead of refusing each
    row as "prediction: got null"."""
    current = pd.read_csv(files / "current.csv")
    outputs = [c for c in current.columns if c == "prediction" or c.startswith("proba")]
    current.drop(columns=outputs).to_csv(files / "no-pred.csv", index=False)
    built = dl(env, "reference", "build", "--model", "churn", "--version", "1",
               "--data", "train.csv", "--out", "np.ref", cwd=files)  # fmt: skip
    assert built.returncode == 0, built.stderr
    run = dl(env, "replay", "--events", "no-pred.csv", "--reference", "np.ref",
             "--out", "np.jsonl", cwd=files)  # fmt: skip
    assert run.returncode == 2 and "Traceback" not in run.stderr
    last = run.stderr.splitlines()[-1]  # after the table of column roles
    assert "no-pred.csv: no prediction column" in last and "--prediction COLUMN" in last
    assert not (files / "np.jsonl").exists()


def test_labels_without_their_prediction_are_counted_and_refused_not_lost(
    env: dict[str, str], files: Path
) -> None:
    """A labels export holding labels of predictions not in the file (another period,
    another model's ids) and some twice: the summary said "2,800 of 3,400 joined" and the
    other 600 were nowhere. The labels still waiting for their prediction when the
    replay ends are refused as "no such prediction" (exit 2; ``--dlq`` lists them and
    exits 0), and the summary counts every outcome."""
    built = dl(env, "reference", "build", "--model", "churn", "--version", "1",
               "--data", "train.csv", "--out", "lost.ref", cwd=files)  # fmt: skip
    assert built.returncode == 0, built.stderr
    labels = pd.read_csv(files / "labels.csv")
    strangers = labels.head(400).assign(id=[f"other-{i}" for i in range(400)])
    pd.concat([labels, strangers, labels.tail(200)]).to_csv(files / "messy.csv", index=False)
    base = ("replay", "--events", "current.csv", "--reference", "lost.ref",
            "--labels", "messy.csv")  # fmt: skip
    run = dl(env, *base, "--out", "m.jsonl", cwd=files)
    assert run.returncode == 2, run.stderr
    assert (
        "labels: 3,000 of 3,600 joined (200 duplicates, 400 without their prediction)" in run.stderr
    ), run.stderr
    assert "400 input rows refused: 400 x no such prediction" in run.stderr
    kept = dl(env, *base, "--out", "k.jsonl", "--dlq", "lost.jsonl", cwd=files)
    assert kept.returncode == 0, kept.stderr
    listed = [orjson.loads(line) for line in (files / "lost.jsonl").read_bytes().splitlines()]
    assert sorted(r["where"] for r in listed) == sorted(f"label of other-{i}" for i in range(400))
    assert (files / "k.jsonl").read_bytes() == (files / "m.jsonl").read_bytes()


def test_model_alone_picks_its_reference_among_several(env: dict[str, str], files: Path) -> None:
    """``--model`` with a reference for each of two models: the model's version is its
    only reference's (it asked for ``--version`` too), for a table of that model's rows
    and for a log of both models' rows (the other's left out)."""
    for model in ("churn", "upsell"):
        built = dl(env, "reference", "build", "--model", model, "--version", "4",
                   "--data", "train.csv", "--out", f"{model}4.ref", cwd=files)  # fmt: skip
        assert built.returncode == 0, built.stderr
    current = pd.read_csv(files / "current.csv")
    log = pd.concat([current.assign(model_id="churn"), current.assign(model_id="upsell")])
    log.to_csv(files / "log.csv", index=False)
    refs = ("--reference", "churn4.ref", "--reference", "upsell4.ref")
    one = dl(env, "replay", "--events", "current.csv", *refs, "--model", "upsell",
             "--out", "one.jsonl", cwd=files)  # fmt: skip
    assert one.returncode == 0, one.stderr
    both = dl(env, "replay", "--events", "log.csv", *refs, "--model", "upsell",
              "--out", "both.jsonl", cwd=files)  # fmt: skip
    assert both.returncode == 0, both.stderr
    assert "3,000 rows of other models left out (churn: 3,000)" in both.stderr
    assert (files / "both.jsonl").read_bytes() == (files / "one.jsonl").read_bytes()
    assert b'"model_id":"upsell"' in (files / "one.jsonl").read_bytes()


def test_refused_input_exits_2_with_a_summary(env: dict[str, str], files: Path) -> None:
    ev = files / "events.jsonl"
    good = {
        "prediction_id": "p1",
        "model_id": "churn",
        "model_version": "1",
        "timestamp": 1767225600000,
        "features": {"age": 40.0},
        "prediction": "true",
    }
    ev.write_bytes(
        orjson.dumps(good)
        + b"\n"
        + orjson.dumps({**good, "timestamp": -1})
        + b"\n"
        + orjson.dumps({**good, "prediction": True})
        + b"\n"
    )
    dl(
        env,
        "reference",
        "build",
        "--model",
        "churn",
        "--version",
        "1",
        "--data",
        "train.csv",
        "--out",
        "churn.ref",
        cwd=files,
    )
    r = dl(env, "replay", "--events", "events.jsonl", "--reference", "churn.ref", cwd=files)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert "2 input rows refused" in last and "negative epoch" in last and "line 2" in last
    kept = dl(
        env,
        "replay",
        "--events",
        "events.jsonl",
        "--reference",
        "churn.ref",
        "--dlq",
        "refused.jsonl",
        cwd=files,
    )
    assert kept.returncode == 0
    assert len((files / "refused.jsonl").read_bytes().splitlines()) == 2


def error_cases(d: Path) -> list[tuple[str, list[str], int, str]]:
    (d / "bad.jsonl").write_text('{"prediction_id": "p1", \n')
    (d / "badvalue.csv").write_text("age,plan\n41,a\nabc,b\n40,c\n39,a\n")
    (d / "notref.json").write_text('{"format": "driftline.reference"}')
    (d / "header-only.csv").write_text("id,age,plan,prediction\n")
    pd.read_csv(d / "current.csv").drop(columns=["id"]).to_csv(d / "no-ids.csv", index=False)
    return [
        (
            "separate labels for predictions without ids",
            [
                "replay",
                "--events",
                "no-ids.csv",
                "--reference",
                "churn.ref",
                "--labels",
                "labels.csv",
            ],  # fmt: skip
            2,
            "no-ids.csv has no id column (none is named prediction_id, id or *_id), and "
            "separate labels join their predictions by id",
        ),
        (
            "a training file of its header alone",
            [
                "reference",
                "build",
                "--model",
                "m",
                "--version",
                "1",
                "--data",
                "header-only.csv",
                "-o",
                "x.ref",
            ],  # fmt: skip
            2,
            "header-only.csv: no rows to build a reference from (it has no rows)",
        ),
        (
            "a command that does not exist (the line named driftline twice before)",
            ["replai", "--events", "current.csv"],
            2,
            "driftline: error: argument COMMAND: invalid choice: 'replai'",
        ),
        (
            "a file without its option",
            ["reference", "build", "train.csv", "--model", "m", "--version", "1"],
            2,
            "train.csv: a file is given with --data",
        ),
        (
            "a second file without an option",
            ["replay", "--events", "current.csv", "--reference", "churn.ref", "labels.csv"],
            2,
            "unrecognized arguments: labels.csv; labels.csv: a file is given with --events or",
        ),
        (
            "missing file",
            [
                "reference",
                "build",
                "--model",
                "m",
                "--version",
                "1",
                "--data",
                "nope.csv",
                "--out",
                "x.ref",
            ],
            2,
            "nope.csv: no such file",
        ),
        (
            "bad JSON",
            [
                "reference",
                "build",
                "--model",
                "m",
                "--version",
                "1",
                "--data",
                "bad.jsonl",
                "--out",
                "x.ref",
            ],
            2,
            "line 1: not JSON",
        ),
        (
            "bad CSV value",
            [
                "reference",
                "build",
                "--model",
                "m",
                "--version",
                "1",
                "--data",
                "badvalue.csv",
                "--out",
                "x.ref",
            ],
            2,
            "badvalue.csv, line 3, column 'age': 'abc' is not a number",
        ),
        (
            "unknown model",
            ["replay", "--events", "current.csv", "--reference", "churn.ref", "--model", "fraud"],
            2,
            "no reference for model 'fraud'",
        ),
        (
            "bad flag value",
            ["replay", "--events", "current.csv", "--batch", "0"],
            2,
            "argument --batch: 0 must be at least 1",
        ),
        (
            "unknown flag",
            ["replay", "--events", "x", "--frobnicate"],
            2,
            "unrecognized arguments: --frobnicate",
        ),
        (
            "unsigned reference",
            ["replay", "--events", "current.csv", "--reference", "notref.json"],
            2,
            "is not a signed Driftline reference",
        ),
        (
            "missing reference file",
            ["replay", "--events", "current.csv", "--reference", "gone.ref"],
            2,
            "gone.ref: no such reference file",
        ),
        (
            "bad --types",
            [
                "reference",
                "build",
                "--model",
                "m",
                "--version",
                "1",
                "--data",
                "train.csv",
                "--types",
                "age=float",
            ],
            2,
            "a type is numeric or",
        ),
        ("no Redis", ["reference", "show", "--model", "m"], 1, "cannot reach Redis"),
        (
            "labels without servers",
            ["labels", "--report"],
            1,
            "on files, without servers: driftline replay --events FILE --labels FILE --performance",
        ),
        (
            "a reference to Redis without one",
            ["reference", "build", "--model", "m", "--version", "1", "--data", "train.csv"],
            1,
            "without Redis: --out FILE writes the reference to a file",
        ),
        (
            "bad --since",
            [
                "report",
                "--events",
                "current.csv",
                "--reference",
                "churn.ref",
                "--out",
                "r.html",
                "--since",
                "yesterday",
            ],
            2,
            "--since 'yesterday'",
        ),
    ]


def test_every_error_path_is_one_line_and_the_documented_exit_code(
    env: dict[str, str], files: Path
) -> None:
    dl(
        env,
        "reference",
        "build",
        "--model",
        "churn",
        "--version",
        "1",
        "--data",
        "train.csv",
        "--out",
        "churn.ref",
        cwd=files,
    )
    for name, args, code, text in error_cases(files):
        r = dl(env, *args, cwd=files)
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("driftline: error:")]
        assert r.returncode == code, (name, r.returncode, r.stderr)
        assert len(lines) == 1 and text in lines[0], (name, r.stderr)
        assert "Traceback" not in r.stderr, name
    debug = dl(env, "--debug", "reference", "show", "--model", "m", cwd=files)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_a_broker_that_cannot_be_reached_is_one_line_naming_its_servers(
    env: dict[str, str],
) -> None:
    """`driftline alerts` (or `dead-letters`) with the broker down said 'Unable to bootstrap
    from [('127.0.0.1', 1, <AddressFamily.AF_INET: 2>)]', then asyncio logged 'Unclosed
    AIOKafkaConsumer' with the consumer's repr, which read as a second failure."""
    servers = env["DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS"]
    for args in (["alerts", "--no-follow"], ["dead-letters"]):
        r = dl(env, *args)
        assert r.returncode == 1, (args, r.stderr)
        said = "driftline: error: cannot reach Kafka: KafkaConnectionError: Unable to bootstrap"
        assert f"{said} from [{servers}] (DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS)" in r.stderr
        for noise in ("Unclosed", "AddressFamily", "Traceback"):
            assert noise not in r.stderr, (args, r.stderr)


def test_version(env: dict[str, str]) -> None:
    from driftline import __version__

    r = dl(env, "--version")
    assert r.returncode == 0 and r.stdout.strip() == f"driftline {__version__}"


def walk(parser: argparse.ArgumentParser, path: str = "driftline") -> list[tuple[str, Any]]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += walk(sub, f"{path} {name}")
        else:
            out.append((path, action))
    return out


def test_every_option_has_help_and_the_help_has_no_rest_markup() -> None:
    missing = [
        f"{path} {'/'.join(a.option_strings)}"
        for path, a in walk(build_parser())
        if a.option_strings and not a.help and a.dest != "help"
    ]
    assert not missing, missing
    assert len(walk(build_parser())) > 80  # the walk reached the subcommands
    text = build_parser().format_help()
    for rest in ("``", "::", ":mod:", ":func:"):
        assert rest not in text and rest not in USAGE, rest
    assert "exit status" in text


def test_every_out_option_also_answers_to_dash_o() -> None:
    # `-o FILE` is what people type first; every command that writes a file takes it.
    outs = [(path, a) for path, a in walk(build_parser()) if "--out" in a.option_strings]
    assert {p for p, _ in outs} == {
        "driftline reference build",
        "driftline reference show",
        "driftline replay",
        "driftline report",
    }
    assert all("-o" in a.option_strings for _, a in outs)
    ns = build_parser().parse_args(
        ["reference", "build", "--model", "m", "--version", "1", "--data", "d.csv", "-o", "m.ref"]
    )
    assert ns.out == "m.ref"


def test_reference_show_takes_the_file_as_its_argument(env: dict[str, str], files: Path) -> None:
    b = dl(env, "reference", "build", "--model", "churn", "--version", "1", "--data",
           "train.csv", "-o", "show.ref", cwd=files)  # fmt: skip
    assert b.returncode == 0, b.stderr
    by_flag = dl(env, "reference", "show", "--file", "show.ref", cwd=files)
    by_arg = dl(env, "reference", "show", "show.ref", cwd=files)
    assert by_flag.returncode == by_arg.returncode == 0, by_arg.stderr
    assert by_arg.stdout == by_flag.stdout and by_arg.stdout.startswith("reference churn:1:")
    both = dl(env, "reference", "show", "--file", "show.ref", "show.ref", cwd=files)
    assert both.returncode == 2 and "give the file once" in both.stderr


def test_a_reader_that_stops_early_ends_the_command_quietly(
    env: dict[str, str], files: Path
) -> None:
    """``driftline reference show ref | head -1``: the closed pipe is not an error (it
    was reported as "cannot reach BrokenPipeError", status 1)."""
    b = dl(env, "reference", "build", "--model", "churn", "--version", "1", "--data",
           "train.csv", "-o", "pipe.ref", cwd=files)  # fmt: skip
    assert b.returncode == 0, b.stderr
    script = (
        "import sys\n"
        "from driftline.cli import main\n"
        "class Closed:\n"
        "    def write(self, s):\n"
        "        raise BrokenPipeError(32, 'Broken pipe')\n"
        "    def flush(self):\n"
        "        pass\n"
        "    def fileno(self):\n"
        "        return 1\n"
        "sys.stdout = Closed()\n"
        "sys.exit(main(['reference', 'show', 'pipe.ref']))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=files, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_a_file_a_day_replays_as_the_one_file(env: dict[str, str], files: Path) -> None:
    """``--events days/*.csv`` (the shell's list) and ``--events 'days/*.csv'`` (a
    pattern the shell left alone) replay as the one current file; JSONL events in
    several files as their lines in one; labels in several files too."""
    b = dl(env, "reference", "build", "--model", "churn", "--version", "1", "--data",
           "train.csv", "-o", "days.ref", cwd=files)  # fmt: skip
    assert b.returncode == 0, b.stderr
    days = files / "days"
    days.mkdir(exist_ok=True)
    cur = pd.read_csv(files / "current.csv")
    labels = pd.read_csv(files / "labels.csv")
    for i, part in enumerate(np.array_split(np.arange(len(cur)), 5)):
        cur.iloc[part].to_csv(days / f"2026-03-0{i + 1}.csv", index=False)
        labels.iloc[part].to_csv(days / f"labels-{i}.csv", index=False)
    common = ["--reference", "days.ref", "--performance"]
    one = dl(env, "replay", "--events", "current.csv", "--labels", "labels.csv", *common,
             "-o", "one.jsonl", cwd=files)  # fmt: skip
    listed = sorted(str(p.relative_to(files)) for p in days.glob("2026-*.csv"))
    label_files = sorted(str(p.relative_to(files)) for p in days.glob("labels-*.csv"))
    many = dl(env, "replay", "--events", *listed, "--labels", *label_files, *common,
              "-o", "many.jsonl", cwd=files)  # fmt: skip
    pattern = dl(env, "replay", "--events", "days/2026-*.csv", "--labels", "days/labels-*.csv",
                 *common, "-o", "pattern.jsonl", cwd=files)  # fmt: skip
    for r in (one, many, pattern):
        assert r.returncode == 0, r.stderr
    alerts = (files / "one.jsonl").read_bytes()
    assert alerts and (files / "many.jsonl").read_bytes() == alerts
    assert (files / "pattern.jsonl").read_bytes() == alerts
    summary = [ln for ln in one.stderr.splitlines() if "labels:" in ln]
    assert summary and summary == [ln for ln in many.stderr.splitlines() if "labels:" in ln]
    none = dl(env, "replay", "--events", "days/2027-*.csv", *common, "-o", "x.jsonl", cwd=files)
    assert none.returncode == 2 and "days/2027-*.csv: no file matches this pattern" in none.stderr


def test_an_excel_csv_in_windows_1252_replays_with_encoding(
    env: dict[str, str], files: Path
) -> None:
    """Files Excel saved as "CSV" on Windows (Windows-1252: "Café", "€"): one line that
    names the first line that is not UTF-8 and the option; with ``--encoding cp1252``
    the reference, the alerts and the labels (a labels CSV takes the events' encoding)
    are those of the same files in UTF-8 (the oracle)."""
    names = {True: "Café", False: "€ basic"}
    for name, df in (("train", frame(4000, 0)), ("current", frame(3000, 1, shift=8.0))):
        df["is_member"] = df["is_member"].map(names)
        for enc in ("utf-8", "cp1252"):
            df.drop(columns=["target"]).to_csv(files / f"xl-{name}-{enc}.csv", index=False,
                                               encoding=enc)  # fmt: skip
            df[["id", "target"]].assign(note="reçu").to_csv(
                files / f"xl-labels-{name}-{enc}.csv", index=False, encoding=enc
            )
    build = ["reference", "build", "--model", "churn", "--version", "1", "--data"]
    refused = dl(env, *build, "xl-train-cp1252.csv", "-o", "xl.ref", cwd=files)
    text = (files / "xl-train-utf-8.csv").read_text(encoding="utf-8").splitlines()
    first = next(i for i, line in enumerate(text, 1) if not line.isascii())
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith(f"driftline: error: xl-train-cp1252.csv, line {first}: ")
    assert "--encoding cp1252" in refused.stderr and len(refused.stderr.splitlines()) == 1
    ids = []
    for enc, extra in (("utf-8", []), ("cp1252", ["--encoding", "cp1252"])):
        b = dl(env, *build, f"xl-train-{enc}.csv", *extra, "-o", f"xl-{enc}.ref", cwd=files)
        assert b.returncode == 0, b.stderr
        ids.append(re.findall(r"reference (churn:1:\w+)", b.stderr))
        r = dl(env, "replay", "--events", f"xl-current-{enc}.csv", "--labels",
               f"xl-labels-current-{enc}.csv", "--reference", f"xl-{enc}.ref", *extra,
               "-o", f"xl-{enc}.jsonl", cwd=files)  # fmt: skip
        assert r.returncode == 0, r.stderr
        ids[-1] += [ln for ln in r.stderr.splitlines() if "labels:" in ln or "replayed" in ln]
    assert ids[0] == ids[1] and len(ids[0]) == 3
    alerts = (files / "xl-utf-8.jsonl").read_bytes()
    assert alerts and (files / "xl-cp1252.jsonl").read_bytes() == alerts


def test_replay_at_a_terminal_prints_one_readable_line_an_alert(
    env: dict[str, str], files: Path
) -> None:
    """At a terminal, ``driftline replay`` printed the alert events as JSON, one blob a
    line. A person now reads one line an alert (as ``driftline alerts`` prints them); a
    pipe or ``-o`` still gets the JSON lines, alert for alert."""
    build = ["reference", "build", "--model", "churn", "--version", "1"]
    assert dl(env, *build, "--data", "train.csv", "--out", "tty.ref", cwd=files).returncode == 0
    replay = ["replay", "--events", "current.csv", "--reference", "tty.ref"]
    piped = dl(env, *replay, cwd=files)
    events = [orjson.loads(line) for line in piped.stdout.splitlines()]
    assert piped.returncode == 0 and events
    shown = at_terminal(env, replay, files)
    lines = shown.splitlines()
    assert len(lines) == len(events)
    for line, event in zip(lines, events, strict=True):
        assert not line.startswith("{")
        assert event["alert_id"][:12] in line and event["kind"] in line
        assert f"model={event['model_id']}:{event['model_version']}" in line


def test_a_table_without_a_timestamp_reads_in_rows_not_in_1970(
    env: dict[str, str], files: Path
) -> None:
    """A table without a timestamp column replays in row order, each event's time its
    row's number. Its alerts are those of the same table with times, at the rows that
    those times give back (the oracle: row = (time - first time) / spacing); the
    terminal, the summary and the report say ``row N``, never a date in 1970."""
    build = ["reference", "build", "--model", "churn", "--version", "1"]
    assert dl(env, *build, "--data", "train.csv", "-o", "rows.ref", cwd=files).returncode == 0
    timed = pd.read_csv(files / "current.csv")
    timed.drop(columns=["timestamp"]).to_csv(files / "untimed.csv", index=False)
    t0 = pd.Timestamp(timed["timestamp"].iloc[0])
    step = pd.Timestamp(timed["timestamp"].iloc[1]) - t0
    runs = {}
    for name in ("current", "untimed"):
        r = dl(env, "replay", "--events", f"{name}.csv", "--reference", "rows.ref", cwd=files)
        assert r.returncode == 0, r.stderr
        runs[name] = ([orjson.loads(line) for line in r.stdout.splitlines()], r.stderr)
    (with_times, _), (in_rows, said) = runs["current"], runs["untimed"]
    assert in_rows and [a["alert_id"] for a in in_rows] == [a["alert_id"] for a in with_times]
    rows = []
    for a, b in zip(with_times, in_rows, strict=True):
        at = pd.Timestamp(a["detected_at"], unit="ms", tz="UTC")
        rows.append(int((at - t0) / step))
        assert b["detected_at"] == rows[-1], (a, b)
    assert "no timestamp column" in said and "row numbers" in said
    lines = at_terminal(env, ["replay", "--events", "untimed.csv", "--reference", "rows.ref"],
                        files).splitlines()  # fmt: skip
    assert [ln.split(" [")[0] for ln in lines] == [f"row {r:,}" for r in rows]
    rep = dl(env, "report", "--events", "untimed.csv", "--reference", "rows.ref",
             "-o", "rows.html", cwd=files)  # fmt: skip
    assert rep.returncode == 0, rep.stderr
    page = re.sub(r"<script.*?</script>", "", (files / "rows.html").read_text(), flags=re.S)
    assert "1970" not in page
    assert f"row 0 → row {len(timed) - 1:,}" in page  # the period: the first and last row
    assert f"<td>row {rows[0]:,}</td>" in page  # the alert timeline
    assert "event time" not in page and "alert episodes (rows of the table)" in page


def test_day_files_that_each_number_their_rows_from_0_are_one_line(
    env: dict[str, str], files: Path
) -> None:
    """Day files whose ids each start at 0: labels join by id, so two thirds of the
    labels counted as duplicates and the rest joined other days' predictions (accuracy
    61% where it is 75%, a false performance alert). One line now names the first
    repeat and the fixes; numbered by row instead, the labels in the table give the
    accuracy of the same rows with unique ids (the oracle)."""
    build = ["reference", "build", "--model", "churn", "--version", "1"]
    assert dl(env, *build, "--data", "train.csv", "-o", "ids.ref", cwd=files).returncode == 0
    whole = frame(3000, 1, shift=8.0)
    whole.to_csv(files / "ids-whole.csv", index=False)
    days = files / "id-days"
    days.mkdir(exist_ok=True)
    parts = [whole.iloc[i : i + 1000].assign(id=np.arange(1000)) for i in (0, 1000, 2000)]
    for i, part in enumerate(parts):
        part.to_csv(days / f"day{i}.csv", index=False)
        part[["id", "target"]].to_csv(days / f"labels{i}.csv", index=False)
    stacked = pd.concat(parts, ignore_index=True)
    repeats = int(stacked["id"].duplicated().sum())
    again = int(stacked["id"].duplicated().to_numpy().argmax())  # first repeating row
    first = int((stacked["id"] == stacked["id"][again]).to_numpy().argmax())
    lines = [f"day{r // 1000}.csv line {r % 1000 + 2}" for r in (first, again)]
    common = ["--reference", "ids.ref", "-o", "ids.jsonl"]
    inline = dl(env, "replay", "--events", "id-days/day*.csv", *common, cwd=files)
    apart = dl(env, "replay", "--events", "id-days/day*.csv", "--labels",
               "id-days/labels*.csv", *common, cwd=files)  # fmt: skip
    for r in (inline, apart):
        assert r.returncode == 2 and "Traceback" not in r.stderr
        last = r.stderr.splitlines()[-1]
        assert f"{repeats:,} rows repeat the id of an earlier row" in last
        assert f": {lines[0]} and {lines[1]})" in last and "--id COLUMN" in last
    assert "--id '' and --exclude id" in inline.stderr.splitlines()[-1]
    numbered = dl(env, "replay", "--events", "id-days/day*.csv", "--id", "", "--exclude", "id",
                  *common, cwd=files)  # fmt: skip
    unique = dl(env, "replay", "--events", "ids-whole.csv", *common, cwd=files)
    assert numbered.returncode == unique.returncode == 0, numbered.stderr
    summary = [ln for ln in unique.stderr.splitlines() if "labels:" in ln or "replayed" in ln]
    assert summary and summary == [
        ln for ln in numbered.stderr.splitlines() if "labels:" in ln or "replayed" in ln
    ]


def test_jsonl_day_files_that_each_number_their_events_from_0_are_one_line(
    env: dict[str, str], files: Path
) -> None:
    """The same for JSONL event files (what a model server's log holds): day files whose
    prediction ids each start at ``p0`` joined one day's labels to another day's
    predictions (half the labels 'duplicates', the lags of the others negative, the
    accuracy of the wrong rows). One line names the first repeat; the same events with
    the day in their ids join every label (the oracle: the table of the same rows)."""
    build = ["reference", "build", "--model", "churn", "--version", "1"]
    assert dl(env, *build, "--data", "train.csv", "-o", "jids.ref", cwd=files).returncode == 0
    whole = frame(2000, 1, shift=8.0)
    whole.to_csv(files / "jids-whole.csv", index=False)
    days = files / "jid-days"
    days.mkdir(exist_ok=True)

    def event(r: Any, pid: str) -> dict[str, Any]:
        return {
            "prediction_id": pid,
            "model_id": "churn",
            "model_version": "1",
            "timestamp": pd.Timestamp(r.timestamp).isoformat(),
            "features": {"age": r.age, "plan": r.plan, "is_member": bool(r.is_member)},
            "prediction": str(bool(r.prediction)).lower(),  # the wire's booleans
            "scores": {"false": r.proba_False, "true": r.proba_True},
        }

    for day, unique in ((0, False), (1, False), (0, True), (1, True)):
        part = whole.iloc[day * 1000 : (day + 1) * 1000]
        tag = "u" if unique else ""
        ids = [f"d{day}-{r.id}" if unique else f"p{i}" for i, r in enumerate(part.itertuples())]
        with open(days / f"{tag}day{day}.jsonl", "wb") as fh:
            for r, pid in zip(part.itertuples(), ids, strict=True):
                fh.write(orjson.dumps(event(r, pid)) + b"\n")
        with open(days / f"{tag}labels{day}.jsonl", "wb") as fh:
            for r, pid in zip(part.itertuples(), ids, strict=True):
                truth = str(bool(r.target)).lower()
                label = {"prediction_id": pid, "model_id": "churn", "label": truth,
                         "timestamp": pd.Timestamp(r.timestamp).isoformat()}  # fmt: skip
                fh.write(orjson.dumps(label) + b"\n")
    common = ["--reference", "jids.ref", "-o", "jids.jsonl"]
    repeated = dl(env, "replay", "--events", "jid-days/day*.jsonl", "--labels",
                  "jid-days/labels*.jsonl", *common, cwd=files)  # fmt: skip
    assert repeated.returncode == 2 and "Traceback" not in repeated.stderr
    assert repeated.stderr.splitlines()[-1].endswith(
        "1,000 events repeat the prediction_id of an earlier event (id 'p0': day0.jsonl "
        "line 1 and day1.jsonl line 1), and labels join their predictions by id, so a label "
        "would join another event's prediction: give every prediction its own id (the files "
        "of several days: put the day in it)"
    )
    apart = dl(env, "replay", "--events", "jid-days/uday*.jsonl", "--labels",
               "jid-days/ulabels*.jsonl", *common, cwd=files)  # fmt: skip
    table = dl(env, "replay", "--events", "jids-whole.csv", *common, cwd=files)
    assert apart.returncode == table.returncode == 0, apart.stderr + table.stderr
    joined = [ln for ln in apart.stderr.splitlines() if "labels:" in ln]
    assert joined and "2,000 of 2,000 joined" in joined[0]
    assert joined == [ln for ln in table.stderr.splitlines() if "labels:" in ln]


def test_the_accuracy_line_says_which_rows_it_is_when_not_the_whole_table(
    env: dict[str, str], files: Path
) -> None:
    """The replay's accuracy is the workers' "now", the predictions within the label
    horizon of the latest: for a table of three weeks it read as the whole table's.
    The line now says how many labelled rows since when; the oracle is pandas' share of
    correct predictions among the table's rows since that time, and their count."""
    build = ["reference", "build", "--model", "churn", "--version", "1"]
    assert dl(env, *build, "--data", "train.csv", "-o", "acc.ref", cwd=files).returncode == 0
    r = dl(env, "replay", "--events", "current.csv", "--labels", "labels.csv",
           "--reference", "acc.ref", "-o", "acc.jsonl", cwd=files)  # fmt: skip
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stderr.splitlines() if "labels:" in ln)
    found = re.search(r"accuracy ([\d.]+)% \(.*\) on the ([\d,]+) labelled since (\S+ \S+)Z", line)
    assert found, line
    rows = pd.read_csv(files / "current.csv", parse_dates=["timestamp"]).merge(
        pd.read_csv(files / "labels.csv")[["id", "target"]], on="id"
    )
    since = rows[rows["timestamp"] >= pd.Timestamp(found[3], tz="UTC")]
    assert 0 < len(since) < len(rows)
    assert int(found[2].replace(",", "")) == len(since)
    want = (since["prediction"] == since["target"]).mean() * 100
    assert float(found[1]) == pytest.approx(want, abs=0.005)


def test_the_roles_named_at_build_hold_for_the_replay_and_the_report(
    env: dict[str, str], files: Path
) -> None:
    """A training table whose outputs have their own names (``predicted_churn``,
    ``churned``, ``p_churn``): the roles named once to ``reference build`` are in the
    reference file, so ``replay`` and ``report`` of current data with the same columns,
    and a labels table naming its label as training did, need no option again. Oracle:
    the same alerts and join as the conventionally named files; a role the user names
    still wins."""
    names = {
        "prediction": "predicted_churn",
        "target": "churned",
        "proba_True": "p_churn",
        "id": "customer",
    }
    pd.read_csv(files / "train.csv").drop(columns=["proba_False"]).rename(columns=names).to_csv(
        files / "train-own.csv", index=False
    )
    cur = pd.read_csv(files / "current.csv").drop(columns=["proba_False"])
    cur.rename(columns=names).to_csv(files / "current-own.csv", index=False)
    pd.read_csv(files / "labels.csv").rename(columns=names).to_csv(
        files / "labels-own2.csv", index=False
    )
    roles = ["--prediction", "predicted_churn", "--label", "churned", "--id", "customer"]
    roles += ["--scores", "True=p_churn"]
    build = ["reference", "build", "--model", "churn", "--version", "1"]
    built = dl(env, *build, "--data", "train-own.csv", *roles, "-o", "own2.ref", cwd=files)
    assert built.returncode == 0, built.stderr
    plain = dl(env, *build, "--data", "train.csv", "--scores", "True=proba_True",
               "--exclude", "proba_False", "-o", "plain2.ref", cwd=files)  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    shown = dl(env, "reference", "show", "own2.ref", cwd=files)
    assert shown.returncode == 0 and "predicted_churn" in shown.stdout + shown.stderr
    runs = {}
    for name, ref, extra in (
        ("own", "own2.ref", []),
        ("told", "own2.ref", [*roles[:2], *roles[4:]]),
        ("plain", "plain2.ref", []),
    ):
        events = "current.csv" if name == "plain" else "current-own.csv"
        labels = "labels.csv" if name == "plain" else "labels-own2.csv"
        if name == "plain":
            extra = ["--scores", "True=proba_True", "--exclude", "proba_False"]
        r = dl(env, "replay", "--events", events, "--reference", ref, "--labels", labels,
               "--performance", *extra, cwd=files)  # fmt: skip
        assert r.returncode == 0, r.stderr
        runs[name] = r
    alerts = {k: [orjson.loads(x) for x in r.stdout.splitlines()] for k, r in runs.items()}
    assert alerts["own"] and alerts["own"] == alerts["told"]
    what = ("kind", "status", "feature", "detected_at", "severity", "statistic")
    assert [tuple(a[k] for k in what) for a in alerts["own"]] == [
        tuple(a[k] for k in what) for a in alerts["plain"]
    ]
    said = runs["own"].stderr
    assert re.search(r"predicted_churn +prediction", said), said
    assert re.search(r"p_churn +score", said), said
    told = "as in the reference's training table: id customer, prediction predicted_churn, "
    assert told + "scores p_churn" in said
    assert "as in the reference's training table: id customer, label churned" in said
    assert "labels: 3,000 of 3,000 joined" in said
    assert "as in the reference's training table" not in runs["told"].stderr.split("labels-own2")[0]
    swapped = dl(env, "replay", "--events", "current-own.csv", "--reference", "own2.ref",
                 "--label", "predicted_churn", "--dry-run",
                 cwd=files)  # fmt: skip
    assert re.search(r"predicted_churn +label", swapped.stderr), swapped.stderr
    rep = dl(env, "report", "--events", "current-own.csv", "--reference", "own2.ref",
             "--labels", "labels-own2.csv", "-o", "own2.html", cwd=files)  # fmt: skip
    assert rep.returncode == 0, rep.stderr
    assert "no prediction column" not in rep.stderr


def test_labels_written_otherwise_than_the_classes_join_through_label_map(
    env: dict[str, str], files: Path
) -> None:
    """Labels exported as yes/no for a model that predicts true/false: one line that
    names ``--label-map``, and with it the join, accuracy and alerts of the labels
    written as the classes (the oracle), for a labels table and for JSONL label events,
    and in the notebook (``label_map=``)."""
    build = ["reference", "build", "--model", "churn", "--version", "1"]
    assert dl(env, *build, "--data", "train.csv", "-o", "lmap.ref", cwd=files).returncode == 0
    plain = pd.read_csv(files / "labels.csv")
    said = plain.assign(target=plain["target"].map({True: "Yes", False: "No"}))
    said.to_csv(files / "labels-yesno.csv", index=False)
    with open(files / "labels-yesno.jsonl", "wb") as fh:
        for r in said.itertuples():
            event = {"prediction_id": str(r.id), "model_id": "churn", "label": r.target,
                     "timestamp": pd.Timestamp(r.timestamp).isoformat()}  # fmt: skip
            fh.write(orjson.dumps(event) + b"\n")
    base = ["replay", "--events", "current.csv", "--reference", "lmap.ref", "--performance"]
    unmapped = dl(env, *base, "--labels", "labels-yesno.csv", cwd=files)
    assert "accuracy counts each of them wrong (--label-map No=CLASS,Yes=CLASS says" in (
        unmapped.stderr
    )
    want = dl(env, *base, "--labels", "labels.csv", cwd=files)
    assert want.returncode == 0, want.stderr

    def summary(r: subprocess.CompletedProcess[str]) -> list[str]:
        assert r.returncode == 0, r.stderr
        return [ln for ln in r.stderr.splitlines() if "labels:" in ln or "accuracy" in ln]

    assert "3,000 of 3,000 joined" in summary(want)[0]
    for labels in ("labels-yesno.csv", "labels-yesno.jsonl"):
        got = dl(env, *base, "--labels", labels, "--label-map", "yes=true,no=false", cwd=files)
        assert summary(got) == summary(want), labels
        assert got.stdout == want.stdout, labels  # the alerts, the concept drift's too

    import driftline

    ref = driftline.build_reference(pd.read_csv(files / "train.csv"), "churn", "1", show=False)
    current = pd.read_csv(files / "current.csv")
    mapped = driftline.monitor(current, ref, labels=said, label_map={"yes": "true", "no": "false"},
                               show=False)  # fmt: skip
    direct = driftline.monitor(current, ref, labels=plain, show=False)
    assert mapped.summary == direct.summary and mapped.alerts.equals(direct.alerts)


def test_a_second_worker_on_one_machine_is_told_to_take_its_own_metrics_port(
    env: dict[str, str],
) -> None:
    """`driftline monitor` then `driftline labels` in another shell, as the README has
    it, ended the second with 'internal error: OSError: [Errno 98] Address already in
    use' (exit 1), naming neither the port nor the setting. Now one line and exit 2."""
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = dl({**env, "DRIFTLINE_METRICS_PORT": str(port)}, "labels")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"driftline: error: metrics port {port} is already in use")
    assert "DRIFTLINE_METRICS_PORT" in done.stderr and len(done.stderr.splitlines()) == 1


def test_the_html_report_has_the_per_class_table_the_replay_prints(
    env: dict[str, str], files: Path
) -> None:
    """A classifier with labels: the replay printed precision and recall per class, the
    HTML report had none (only the accuracy chart). Now the report's performance section
    has the table, with the replay's figures (the oracle: its printed lines)."""
    built = dl(env, "reference", "build", "--model", "churn", "--version", "1",
               "--data", "train.csv", "-o", "pc.ref", cwd=files)  # fmt: skip
    assert built.returncode == 0, built.stderr
    both = ["--events", "current.csv", "--reference", "pc.ref", "--labels", "labels.csv"]
    replay = dl(env, "replay", *both, "--performance", cwd=files)
    assert replay.returncode == 0, replay.stderr
    printed = re.findall(
        r"class (\S+) +precision +([\d.]+)% +recall +([\d.]+)% +support (\d+)", replay.stderr
    )
    assert len(printed) == 2, replay.stderr
    rep = dl(env, "report", *both, "--out", "pc.html", cwd=files)
    assert rep.returncode == 0, rep.stderr
    page = (files / "pc.html").read_text()
    table = page.split('id="per-class"')[1].split("</table>")[0]
    shown = re.findall(
        r"<tr><td>(\S+?)</td><td class=num>([\d.]+)%</td><td class=num>([\d.]+)%</td>"
        r"<td class=num>([\d,]+)</td></tr>",
        table,
    )
    assert len(shown) == 2, table
    for (c1, p1, r1, s1), (c2, p2, r2, s2) in zip(sorted(printed), sorted(shown), strict=True):
        assert c1 == c2 and int(s1) == int(s2.replace(",", ""))
        assert abs(float(p1) - float(p2)) <= 0.051 and abs(float(r1) - float(r2)) <= 0.051
