"""The ``driftline`` argument parser: every command and its options."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from driftline._version import __version__

__all__ = ["USAGE", "DriftlineParser", "add_mapping_options", "build_parser", "positive_int"]

#: The command overview printed by ``driftline --help``.
USAGE = """Streaming drift detection for machine-learning models in production.

commands:
  driftline dev up                      start Tansu + redis-server for a person
  driftline demo                        the whole fast loop end to end, locally
  driftline monitor                     run a monitor worker (predictions -> alerts)
  driftline labels [--report]           label joiner: performance, concept drift (slow loop)
  driftline reference build|show        build / print a model's reference profile
  driftline replay --events FILE        run both loops over files, print alerts (no servers)
  driftline alerts [--since 1h]         follow the alert topic (history, filters)
  driftline retrain [--approval]        alerts -> retraining requests (topic, webhook)
  driftline report --out FILE           one self-contained HTML drift report (Redis or files)
  driftline serve                       the live status page (read-only)
  driftline status [--model M]          the status page in the terminal

with your own data, no servers:
  driftline reference build --model churn --version 3 --data train.csv --out churn.ref
  driftline replay --events current.csv --reference churn.ref --labels labels.csv
  driftline report --events current.csv --reference churn.ref --out report.html

exit status: 0 ok; 1 failure (a server unreachable, an internal error); 2 usage or
input error (a bad option, a missing or malformed file, input rows refused).
Configuration comes from DRIFTLINE_* environment variables (docs/operations.md).
"""


#: Options that take a file beside a command's inputs (not what a lone file name means).
_AUX = frozenset({"--out", "--mapping", "--dlq", "--windows"})


class DriftlineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line: ``driftline: error: ...``."""

    #: The words being parsed (set by :meth:`parse_args`): a usage error looks among them
    #: for a file given without its option.
    words: Sequence[str] = ()

    def error(self, message: str) -> NoReturn:
        hint = self._file_hint(message)
        # a subcommand's line names it (driftline replay: ...); the top level's is already
        # named by the line's start
        where = "" if self.prog == "driftline" else f"{self.prog}: "
        self.exit(2, f"driftline: error: {where}{message}{hint} (see {self.prog} --help)\n")

    def _file_hint(self, message: str) -> str:
        """``; x.csv: a file is given with --events`` when a word that names a file
        follows no option that takes a value (``driftline replay current.csv``): the
        missing option that takes a file, else the command's options for its inputs."""
        files = [
            a.option_strings[-1]
            for a in self._actions
            if a.metavar == "FILE" and a.option_strings and a.option_strings[-1] not in _AUX
        ]
        missing = [o for o in files if "required" in message and o in message]
        takes = missing or files
        prev = ""
        for word in self.words:
            opt = self._option_string_actions.get(prev)
            after_value = opt is not None and opt.nargs != 0
            if not word.startswith("-") and Path(word).suffix and not after_value and takes:
                return f"; {word}: a file is given with {' or '.join(takes)}"
            prev = word
        return ""

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        """As argparse's, but a word left over is reported by the command it was given
        to, which says the option a file is given with."""
        DriftlineParser.words = list(sys.argv[1:] if args is None else args)
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            leaf: DriftlineParser = getattr(ns, "_parser", self)
            leaf.error(f"unrecognized arguments: {' '.join(extras)}")
        return ns


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} must be at least 1")
    return v


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a number above 0")
    return v


def non_negative_float(text: str) -> float:
    """An argparse type: a finite number of at least 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a number of at least 0")
    return v


def add_mapping_options(p: argparse.ArgumentParser) -> None:
    """The options that say which column of a file plays which role."""
    g = p.add_argument_group(
        "columns of a CSV/Parquet/Feather/JSON/JSONL table (inferred from names and values "
        "when not given; the outcome is printed)"
    )
    g.add_argument(
        "--mapping",
        metavar="FILE",
        help="a JSON or TOML file with these keys "
        "(id, timestamp, prediction, label, scores, features, exclude, types, task, "
        "time_format, encoding)",
    )
    g.add_argument("--id", metavar="COL", help="the prediction id column ('' = none)")
    g.add_argument("--timestamp", metavar="COL", help="the event time column ('' = none)")
    g.add_argument(
        "--time-format",
        metavar="LAYOUT",
        help="the time column's layout in strptime codes, e.g. '%%d.%%m.%%Y %%H:%%M' "
        "(default: ISO 8601, or the one common layout that reads every value)",
    )
    g.add_argument(
        "--encoding",
        metavar="NAME",
        help="the text encoding of a CSV/TSV file, and of a labels CSV without its own "
        "(default: UTF-8; cp1252 for a 'CSV' saved by Excel on Windows)",
    )
    g.add_argument("--prediction", metavar="COL", help="the model's prediction ('' = none)")
    g.add_argument("--label", metavar="COL", help="the true label / target ('' = none)")
    g.add_argument(
        "--label-map",
        metavar="TEXT=CLASS,...",
        help="labels written otherwise than the model's classes, e.g. no=0,yes=1 (any "
        "case); also for a --labels file",
    )
    g.add_argument(
        "--scores",
        metavar="COLS",
        help="class probability columns: "
        "proba_a,proba_b or CLASS=COL,... (one column of a binary model: CLASS=COL)",
    )
    g.add_argument(
        "--features", metavar="COLS", help="only these feature columns (comma-separated)"
    )
    g.add_argument("--exclude", metavar="COLS", help="columns that are neither features nor roles")
    g.add_argument(
        "--types", metavar="COL=TYPE,...", help="declared types: COL=numeric|categorical,..."
    )
    g.add_argument(
        "--task",
        choices=("classification", "regression"),
        help="the model's task (default: inferred from the outputs)",
    )
    g.add_argument(
        "--on-bad-value",
        choices=("error", "dlq"),
        default="error",
        help="a value that is not a number in a numeric column: stop with an error "
        "naming line and column (default), or set the row aside into --dlq",
    )
    g.add_argument(
        "--dlq",
        metavar="FILE",
        help="JSONL file for rows set aside (default: <data>.refused.jsonl)",
    )
    g.add_argument(
        "--dry-run", action="store_true", help="print the columns' roles and types, then stop"
    )


def _add_follow_options(p: argparse.ArgumentParser, topics: str, what: str) -> None:
    """Where a command that follows a topic starts, and whether it keeps following:
    ``--since-start``, ``--since``, ``--no-follow`` (``alerts``, ``dead-letters``)."""
    p.add_argument("--since-start", action="store_true", help=f"from {topics} beginning")
    p.add_argument(
        "--since",
        help=f"from {what} since: ISO time (2026-01-01T10:00Z), epoch ms, "
        "or a duration back from now (30m, 1h, 7d)",
    )
    p.add_argument(
        "--no-follow", action="store_true", help="print the history up to now, then exit"
    )


def build_parser() -> argparse.ArgumentParser:
    p = DriftlineParser(
        prog="driftline", description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--version",
        action="version",
        version=f"driftline {__version__}",
        help="print the version and exit",
    )
    p.add_argument(
        "--debug", action="store_true", help="on an error, print the Python traceback too"
    )
    sub = p.add_subparsers(
        dest="cmd", required=True, metavar="COMMAND", parser_class=DriftlineParser
    )

    dev = sub.add_parser("dev", help="local stack for people")
    dev_sub = dev.add_subparsers(dest="dev_cmd", required=True, metavar="SUBCOMMAND")
    up = dev_sub.add_parser("up", help="start Tansu + redis-server until Ctrl-C or SIGTERM")
    up.add_argument(
        "--workdir",
        help="keep logs and data in this directory (kept on exit); "
        "default: a temporary directory, removed on exit",
    )
    up.add_argument(
        "--cluster",
        action="store_true",
        help="a local Redis Cluster (three masters) instead of a single redis-server",
    )

    demo = sub.add_parser("demo", help="run the fast loop end to end with simulated traffic")
    demo.add_argument(
        "--events",
        type=positive_int,
        default=9000,
        help="simulated predictions to send (default 9000)",
    )
    demo.add_argument(
        "--sigmas",
        type=float,
        default=1.0,
        help="size of the shift of feature f03, in standard deviations",
    )
    demo.add_argument(
        "--window", type=positive_int, default=500, help="events per monitor window (default 500)"
    )
    demo.add_argument("--report", default="driftline-demo-report.html", help="report path")
    demo.add_argument("--skip-slow-loop", action="store_true", help="fast loop only")

    mon = sub.add_parser("monitor", help="run a monitor worker")
    mon.add_argument("--name", default="monitor", help="worker name in metric labels")
    mon.add_argument(
        "--idle-exit",
        type=positive_float,
        default=None,
        help="exit after this many seconds without records (tests, batch use)",
    )

    ref = sub.add_parser("reference", help="reference profiles")
    ref_sub = ref.add_subparsers(dest="ref_cmd", required=True, metavar="SUBCOMMAND")
    b = ref_sub.add_parser(
        "build",
        help="build a reference from training data (into Redis, or a file with --out)",
        description="Build a model's reference profile from training data: a CSV, Parquet "
        "or JSONL file whose columns' roles are inferred from their names and values "
        "(printed before any work) or given with the options below.",
    )
    b.add_argument("--model", required=True, help="model id")
    b.add_argument("--version", required=True, help="model version ('default': the fallback)")
    b.add_argument(
        "--data",
        required=True,
        metavar="FILE",
        help="CSV, TSV, Parquet, Feather, JSON or JSONL file",
    )
    b.add_argument(
        "-o",
        "--out",
        metavar="FILE",
        help="write the signed reference to this file instead of Redis",
    )
    b.add_argument(
        "--window-events",
        type=positive_int,
        default=500,
        help="events per monitor window (default 500)",
    )
    b.add_argument(
        "--window-seconds",
        type=non_negative_float,
        default=0.0,
        help="event-time window length in seconds (default 0: count windows only)",
    )
    b.add_argument(
        "--false-alarm-events",
        type=positive_float,
        default=1_000_000.0,
        help="expected events between false alarms (the one number to set)",
    )
    b.add_argument(
        "--default",
        action="store_true",
        help="also store it as the model's default (fallback for other versions)",
    )
    b.add_argument(
        "--no-multivariate",
        action="store_true",
        help="no multivariate model (features watched one at a time only)",
    )
    add_mapping_options(b)
    s = ref_sub.add_parser("show", help="print a reference (from Redis or a file)")
    s.add_argument("--model", help="model id (Redis)")
    s.add_argument("--version", default="default", help="model version (default 'default')")
    s.add_argument("--file", metavar="FILE", help="a reference file instead of Redis")
    s.add_argument("path", nargs="?", metavar="FILE", help="a reference file (as --file)")
    s.add_argument("--json", action="store_true", help="print the stored JSON envelope")
    s.add_argument(
        "-o",
        "--out",
        metavar="FILE",
        help="also write the reference read from Redis to this signed file",
    )

    rp = sub.add_parser(
        "replay",
        help="run both loops over files: drift alerts, and accuracy with --labels",
        description="Run the monitor's core (and, with --labels, the label joiner's) over "
        "a file of predictions: a JSONL file of prediction events, or a "
        "CSV/Parquet/Feather/JSON/JSONL table whose columns are mapped as for reference "
        "build. Alerts go to --out.",
    )
    rp.add_argument(
        "--events",
        required=True,
        nargs="+",
        metavar="FILE",
        help="predictions: JSONL events, or a CSV/Parquet/Feather/JSON/JSONL table; "
        "several files (or a quoted pattern, 'preds/*.csv') are read as one, in order",
    )
    rp.add_argument(
        "--reference",
        action="append",
        metavar="FILE",
        help="a signed reference file (repeatable; default: Redis)",
    )
    rp.add_argument(
        "--labels",
        nargs="+",
        metavar="FILE",
        help="labels: JSONL label events, or a table with id and label columns (several "
        "files as for --events); a table's label column also counts",
    )
    rp.add_argument(
        "--labels-columns",
        metavar="ROLE=COL,...",
        help="columns of a --labels table: id=COL,label=COL,timestamp=COL "
        "(default: inferred from names such as prediction_id, target, timestamp)",
    )
    rp.add_argument("--model", help="model id of a table's rows (default: the reference's)")
    rp.add_argument("--version", help="model version of a table's rows (default: the reference's)")
    rp.add_argument(
        "-o",
        "--out",
        default="-",
        metavar="FILE",
        help="alert events as JSONL (default: stdout; one readable line an alert at a terminal)",
    )
    rp.add_argument(
        "--windows",
        metavar="FILE",
        help="also write every window's tests as JSONL (per-window results)",
    )
    rp.add_argument(
        "--performance",
        action="store_true",
        help="print accuracy and the other performance figures (with labels)",
    )
    rp.add_argument(
        "--batch",
        type=positive_int,
        default=5000,
        help="events per core call; results do not depend on it (default 5000)",
    )
    add_mapping_options(rp)

    al = sub.add_parser("alerts", help="follow the alert topic (or show its history)")
    _add_follow_options(al, "the topic's", "alerts published")
    al.add_argument("--model", help="only these models (comma-separated)")
    al.add_argument("--kind", help="only these kinds, e.g. input_drift,concept_drift")
    al.add_argument("--severity", help="only these severities, e.g. warning,critical")

    dl = sub.add_parser(
        "dead-letters",
        help="show refused records and why (the dead-letter topics), one line each",
    )
    _add_follow_options(dl, "the topics'", "dead letters")
    dl.add_argument(
        "--topic",
        help="whose dead letters, comma-separated: predictions, labels, alerts "
        "(default: predictions,labels)",
    )

    rep = sub.add_parser(
        "report", help="write one self-contained HTML drift report (Redis, or files)"
    )
    rep.add_argument("--model", help="model id (required with Redis)")
    rep.add_argument("--version", help="model version (default: the most recent one)")
    rep.add_argument("--segment", help="segment key, e.g. 'region=eu' (default: unsegmented)")
    rep.add_argument(
        "--since", help="date-time (2026-01-01T10:00Z), epoch ms, or a span back (6h, 7d)"
    )
    rep.add_argument("-o", "--out", required=True, metavar="FILE", help="the HTML file to write")
    rep.add_argument(
        "--events",
        nargs="+",
        metavar="FILE",
        help="replay this file (JSONL events or a table; several files as one) instead of "
        "reading Redis",
    )
    rep.add_argument(
        "--reference", action="append", metavar="FILE", help="signed reference file(s) for --events"
    )
    rep.add_argument(
        "--labels",
        nargs="+",
        metavar="FILE",
        help="labels for --events (one file or several): accuracy and concept drift in the report",
    )
    rep.add_argument(
        "--labels-columns",
        metavar="ROLE=COL,...",
        help="columns of a --labels table: id=COL,label=COL,timestamp=COL "
        "(default: inferred from names such as prediction_id, target, timestamp)",
    )
    rep.add_argument("--max-windows", type=positive_int, default=5000, help="newest windows read")
    add_mapping_options(rep)

    srv = sub.add_parser("serve", help="serve the read-only status page")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: all)")
    srv.add_argument("--port", type=int, default=9109, help="port to listen on (default 9109)")

    sta = sub.add_parser(
        "status", help="print what the status page shows: models, active alerts, last windows"
    )
    sta.add_argument("--model", help="only this model")
    sta.add_argument("--page", type=positive_int, default=1, help="page of 50 models, by name")
    sta.add_argument("--json", action="store_true", help="the status as JSON (as /api/status)")

    rt = sub.add_parser("retrain", help="turn drift alerts into retraining requests")
    rt.add_argument(
        "--kinds", help="alert kinds that trigger (default input/output/concept/performance)"
    )
    rt.add_argument("--severities", help="severities that trigger (default warning,critical)")
    rt.add_argument(
        "--ignore-diagnoses",
        help="diagnoses that never trigger (default input_drift_benign,data_quality; '' = none)",
    )
    rt.add_argument("--debounce", default="24h", help="per-model minimum gap (event time)")
    rt.add_argument("--approval", action="store_true", help="publish requests as pending_approval")
    rt.add_argument(
        "--trigger-on-updates",
        action="store_true",
        help="an updated alert (another feature drifting, or the episode became critical) "
        "may trigger a request; by default it only refreshes the request context",
    )
    rt.add_argument("--webhook", help="POST each request as JSON to this http(s) URL")
    rt.add_argument(
        "--no-publish", action="store_true", help="do not publish to the retrain-requests topic"
    )
    rt.add_argument("--group", help="consumer group, the faust app id (default retrain.group_id)")
    rt.add_argument(
        "--from-start", action="store_true", help="a new group reads the alert topic from start"
    )
    rt.add_argument("--no-metrics", action="store_true", help="do not serve /metrics")
    rt.add_argument(
        "--idle-exit", type=positive_float, default=None, help="exit after idle seconds"
    )

    lb = sub.add_parser("labels", help="join labels to predictions: performance, concept drift")
    lb.add_argument("--report", action="store_true", help="print performance and exit")
    lb.add_argument("--model", help="--report: only this model")
    lb.add_argument("--champion", help="--report: version compared with the others")
    lb.add_argument("--json", action="store_true", help="--report: as JSON")
    lb.add_argument("--name", default="labels", help="worker name in metric labels")
    lb.add_argument(
        "--idle-exit", type=positive_float, default=None, help="exit after idle seconds"
    )
    _mark_leaves(p)
    return p


def _mark_leaves(p: argparse.ArgumentParser) -> None:
    """Every (sub)command's parser as ``_parser`` of what it parses: the command a
    leftover word is reported by (:meth:`DriftlineParser.parse_args`)."""
    p.set_defaults(_parser=p)
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _mark_leaves(sub)
