"""``driftline replay``: both loops over files of predictions (and labels), no servers."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import orjson

from driftline.cli.common import (
    column_map,
    dlq_path,
    input_files,
    label_column_map,
    read_references,
    say,
)
from driftline.config import Settings
from driftline.contract.events import DriftAlert
from driftline.core.reference import ReferenceProfile
from driftline.core.slowloop import format_report
from driftline.core.slowloop.report import figure
from driftline.offline.files import write_jsonl
from driftline.offline.inputs import is_event_file, replay_inputs
from driftline.offline.replay import OfflineRun, read_events
from driftline.views.alerts import format_alert

__all__ = ["offline_run", "refusal_exit", "replay"]


async def _redis_references(paths: list[Path], settings: Settings) -> list[ReferenceProfile]:
    """The references in Redis of every model the JSONL files of events name."""
    from driftline.runtime.store import open_store

    models: set[tuple[str, str]] = set()
    for path in paths:
        for _, raw in read_events(path):
            with contextlib.suppress(Exception):
                obj = orjson.loads(raw)
                models.add((obj["model_id"], obj["model_version"]))
    client, store = open_store(settings.redis, settings.monitor.group_id)
    refs = []
    try:
        for mo, v in sorted(models):
            blob = await store.get_reference(mo, v)
            if blob is not None:
                refs.append(ReferenceProfile.from_bytes(blob))
    finally:
        await client.aclose()
    return refs


async def offline_run(args: argparse.Namespace, settings: Settings) -> OfflineRun | None:
    """Open ``--events``, ``--reference`` and ``--labels`` and run both loops.

    Returns ``None`` after ``--dry-run`` (the columns were printed).
    """
    refs = read_references(args.reference, settings)
    events = input_files(args.events)
    if not refs and is_event_file(events):
        refs = await _redis_references([Path(f) for f in events or []], settings)
    run, _ = replay_inputs(
        events,
        refs,
        columns=column_map(args),
        labels=input_files(args.labels),
        label_columns=label_column_map(args),
        model_id=args.model,
        model_version=args.version,
        labels_settings=settings.labels,
        batch=getattr(args, "batch", 5000),
        show=say,
        dry_run=args.dry_run,
    )
    return run


def refusal_exit(args: argparse.Namespace, run: OfflineRun) -> int:
    """Report refused input; the exit status: 2 when input was refused and not kept."""
    if not run.refused:
        return 0
    say(f"driftline: {len(run.refused):,} input rows refused: {run.refusal_summary()}")
    if args.dlq or args.on_bad_value == "dlq":
        path = dlq_path(args, (input_files(args.events) or [""])[0])  # the first file
        write_jsonl(path, ({"where": w, "reason": r} for w, r in run.refused))
        say(f"driftline: refused rows listed in {path}")
        return 0
    return 2


async def replay(args: argparse.Namespace, settings: Settings) -> int:
    """Replay files through both loops; alerts to ``--out``; a summary on stderr."""
    run = await offline_run(args, settings)
    if run is None:
        return 0
    if args.out == "-" and sys.stdout.isatty():
        # A person at a terminal reads one line an alert; a pipe or a file gets the
        # alert events as JSON lines, the wire format (as `driftline alerts` prints).
        for a in run.alerts:
            print(format_alert(a.model_dump(mode="json"), untimed=run.untimed))
    else:
        out = open(args.out, "wb") if args.out != "-" else sys.stdout.buffer  # noqa: SIM115
        try:
            for a in run.alerts:
                out.write(orjson.dumps(a.model_dump(mode="json")) + b"\n")
        finally:
            if out is not sys.stdout.buffer:
                out.close()
    if args.windows:
        write_jsonl(Path(args.windows), (w for m in sorted(run.windows) for w in run.windows[m]))
    say(
        f"driftline: replayed {run.events:,} events: {_alert_counts(run.alerts)}; "
        f"{sum(len(w) for w in run.windows.values()):,} windows"
    )
    for said in (run.order_note(), run.late_future_note(), run.unknown_features_note()):
        if said:
            say(f"driftline: {said}")
    if run.untimed:
        say(
            "driftline: no timestamp column: the events were replayed in row order, and "
            "the alerts' and windows' times are row numbers (0, 1, 2, ...), not epoch ms"
        )
    if run.slow is not None:
        joined = run.label_outcomes.get("joined", 0)
        others = ", ".join(
            f"{n:,} {_OUTCOME_NAMES.get(k, k)}"
            for k, n in sorted(run.label_outcomes.items())
            if k != "joined" and n
        )
        said = f" ({others})" if others else ""
        say(f"driftline: labels: {joined:,} of {run.labels:,} joined{said}; " + _accuracy(run))
        if args.performance:
            print(format_report(run.performance()), file=sys.stderr)
    return refusal_exit(args, run)


#: The label outcomes other than ``joined`` as the summary line says them.
_OUTCOME_NAMES = {
    "duplicate": "duplicates",
    "expired": "after the label horizon",
    "invalid": "invalid",
    "orphan": "without their prediction",
}


def _alert_counts(alerts: Sequence[DriftAlert]) -> str:
    """``4 alert events (2 fired: 1 input_drift, 1 output_drift; 1 resolved)``: an alert
    fires once an episode and is then updated or resolved, so the events outnumber the
    alerts; the kinds count the episodes that fired."""
    by_kind: dict[str, int] = {}
    resolved = 0
    for a in alerts:
        if a.status == "firing":
            by_kind[a.kind] = by_kind.get(a.kind, 0) + 1
        elif a.status == "resolved":
            resolved += 1
    if not alerts:
        return "no alerts"
    fired = sum(by_kind.values())
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(by_kind.items()))
    what = f"{fired} fired: {kinds}" if fired else "none fired"
    if resolved:
        what += f"; {resolved} resolved"
    return f"{len(alerts)} alert event{'s' if len(alerts) != 1 else ''} ({what})"


def _accuracy(run: OfflineRun) -> str:
    parts = []
    for model, entry in run.performance().items():
        first = min((w["start"] for w in run.windows.get(model, ())), default=None)
        for version, v in entry["versions"].items():
            # The figure is the workers' "now": the predictions within the label horizon
            # of the latest. Where that leaves out the run's first days, say which rows
            # it is, or it reads as the whole table's.
            period = v.get("period")
            since = ""
            if period and first is not None and period[0] > first and not run.untimed:
                at = datetime.fromtimestamp(period[0] / 1000, UTC).strftime("%Y-%m-%d %H:%MZ")
                since = f" on the {v['labelled']:,} labelled since {at}, the label horizon"
            acc, ref = v.get("accuracy"), v.get("reference_accuracy")
            if acc is not None:
                # without one in the reference, the baseline is learned from the first labels
                said = "first labels" if v.get("reference_source") == "learned" else "reference"
                ref_text = f" ({said} {ref:.2%})" if ref is not None else ""
                parts.append(f"{model} v{version} accuracy {acc:.2%}{ref_text}{since}")
            elif v.get("mae") is not None:
                ref_mae = v.get("reference_mae")
                ref_text = f" (reference {figure(ref_mae)})" if ref_mae is not None else ""
                parts.append(f"{model} v{version} MAE {figure(v['mae'])}{ref_text}{since}")
    return "; ".join(parts) or "no accuracy (no labels joined)"
