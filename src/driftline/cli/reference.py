"""``driftline reference build|show``: build, store and print reference profiles."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from driftline.cli.common import column_map, dlq_path, say
from driftline.config import Settings
from driftline.core.reference import Policy, ReferenceProfile, build_reference
from driftline.errors import InputError
from driftline.offline.build import detectors_off, small_reference_note, with_roles
from driftline.offline.files import read_reference_file, write_jsonl, write_reference_file
from driftline.offline.roles import resolve
from driftline.offline.tables import read_table

__all__ = ["reference_build", "reference_show"]


def _calibrating(done: int, total: int) -> None:
    """One line on a terminal, rewritten as the features' detectors are calibrated."""
    end = "\n" if done == total else "\r"
    print(f"driftline: calibrating detectors: {done:,}/{total:,} features", end=end,
          file=sys.stderr, flush=True)  # fmt: skip


async def reference_build(args: argparse.Namespace, settings: Settings) -> int:
    """Read the data, print the columns' roles, build; store in Redis or ``--out``."""
    t0 = time.monotonic()
    columns = column_map(args)
    table = read_table(Path(args.data), columns.encoding)
    res = resolve(table, columns)
    res.keep_only(args.model, None)  # as build_from_table: this model's rows, any version
    say(res.describe())
    if args.dry_run:
        return 0
    dlq = None
    if res.refused:
        dlq = dlq_path(args, args.data)
        write_jsonl(dlq, (r.to_dict() for r in sorted(res.refused.values(), key=lambda r: r.row)))
    policy = Policy(
        window_events=args.window_events,
        window_seconds=args.window_seconds,
        false_alarm_events=args.false_alarm_events,
        multivariate=not args.no_multivariate,
    )
    progress = None
    if sys.stderr.isatty():
        say(f"driftline: building the reference from {res.rows_kept():,} rows")
        progress = _calibrating
    ref = build_reference(
        res.training_data(),
        args.model,
        args.version,
        policy=policy,
        source=str(args.data),
        progress=progress,
    )
    ref = with_roles(ref, res)
    if args.out:
        size = write_reference_file(Path(args.out), ref, settings.redis.signing_key())
        where = f"wrote {args.out} ({size:,} bytes)"
    else:
        from driftline.runtime.store import open_store

        client, store = open_store(settings.redis, settings.monitor.group_id)
        try:
            await store.put_reference(args.model, args.version, ref.to_bytes())
            if args.default:
                await store.put_reference(
                    args.model, "default", ref.with_version("default").to_bytes()
                )
        finally:
            await client.aclose()
        where = f"stored in Redis {settings.redis.redacted_url()}"
    say(
        f"driftline: reference {ref.reference_id}: {len(ref.features)} features, "
        f"{ref.row_count:,} rows, task {ref.outputs.task}, window {policy.window_events} "
        f"events, 1 false alarm per {policy.false_alarm_events:,.0f} events; {where} "
        f"in {time.monotonic() - t0:.1f} s"
    )
    note = small_reference_note(ref)
    if note is not None:
        say(f"driftline: note: {note}")
    if dlq is not None:
        say(f"driftline: {len(res.refused):,} rows set aside (bad values), listed in {dlq}")
    return 0


async def reference_show(args: argparse.Namespace, settings: Settings) -> int:
    """Print a reference from Redis or a file (``--json``: the stored envelope)."""
    if args.file and args.path:
        raise InputError("reference show: give the file once (FILE or --file)")
    if args.file or args.path:
        ref = read_reference_file(Path(args.file or args.path), settings.redis.signing_key())
        blob = ref.to_bytes()
    else:
        if not args.model:
            raise InputError("reference show: give a reference FILE, or --model (Redis)")
        from driftline.runtime.store import open_store

        client, store = open_store(settings.redis, settings.monitor.group_id)
        try:
            found = await store.get_reference(args.model, args.version)
        finally:
            await client.aclose()
        if found is None:
            raise InputError(f"no reference for model {args.model!r} version {args.version!r}")
        blob = found
        ref = ReferenceProfile.from_bytes(blob)
        if args.out:
            write_reference_file(Path(args.out), ref, settings.redis.signing_key())
            say(f"driftline: wrote {args.out}")
    if args.json:
        print(blob.decode())
        return 0
    print(f"reference {ref.reference_id}  rows={ref.row_count}  source={ref.source}")
    print(f"policy: {ref.policy.to_dict()}")
    if ref.columns:  # what a replay of a table laid out the same way reads by default
        roles = (
            f"{role}={','.join(f'{k}:{v}' for k, v in col.items())}"
            if isinstance(col, dict)
            else f"{role}={col}"
            for role, col in ref.columns.items()
        )
        print(f"columns: {'  '.join(roles)}")
    for name, prof in ref.features.items():
        if prof.kind == "numeric":
            print(
                f"  {name:<24} numeric      mean={prof.mean:.4g} std={prof.std:.4g} "
                f"range=[{prof.min:.4g}, {prof.max:.4g}] bins={prof.counts.size} "
                f"missing={prof.missing_rate:.2%} psi_thr={prof.psi_threshold:.3f}"
            )
        else:
            top = ", ".join(prof.categories[:5])
            print(
                f"  {name:<24} categorical  top=[{top}] k={len(prof.categories)} "
                f"missing={prof.missing_rate:.2%} psi_thr={prof.psi_threshold:.3f}"
            )
    out = ref.outputs
    acc = f" accuracy={out.accuracy:.2%}" if out.accuracy is not None else ""
    print(
        f"outputs: task={out.task} low_confidence<{out.low_confidence_threshold:.3f} "
        f"(rate {out.low_confidence_rate:.2%}) top_class_share={out.top_class_share:.2%}{acc}"
    )
    off, total, by_shift = detectors_off(ref)
    sizes = ", ".join(f"{n} of {s:g} sd drifts" for s, n in by_shift.items())
    said = f"; off, the reference being too small for them: {sizes}" if off else ""
    print(f"detectors: {total - off}/{total} calibrated{said}")
    mv = ref.multivariate
    if mv is not None:
        n_off = sum(1 for t in mv.row_threshold if t == float("inf"))
        print(
            f"multivariate: {mv.d} columns of {len(mv.features)} features, {mv.k} components "
            f"({mv.notes.get('method', '?')}, {mv.notes.get('explained', 0):.1%} of the "
            f"variance), channels {'+'.join(mv.channel_names)}, "
            f"{len(mv.row_threshold) - n_off}/{len(mv.row_threshold)} CUSUM rows calibrated"
        )
    return 0
