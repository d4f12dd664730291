"""``driftline reference build|show``: build, store and print reference profiles."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from driftline.config import Settings
from driftline.core.reference import Policy, ReferenceProfile, build_reference, load_training_data
from driftline.errors import DriftlineError
from driftline.runtime.store import open_store

__all__ = ["reference_build", "reference_show"]

def _parse_types(spec: str | None) -> dict[str, Any]:
    if not spec:
        return {}
    out: dict[str, Any] = {}
    for part in spec.split(","):
        name, _, kind = part.partition("=")
        if kind not in ("numeric", "categorical"):
            raise DriftlineError(f"--types: {part!r} must be name=numeric|categorical")
        out[name.strip()] = kind
    return out


async def reference_build(args: argparse.Namespace, settings: Settings) -> int:
    data = load_training_data(Path(args.data))
    policy = Policy(
        window_events=args.window_events,
        window_seconds=args.window_seconds,
        false_alarm_events=args.false_alarm_events,
    )
    ref = build_reference(
        data,
        args.model,
        args.version,
        policy=policy,
        feature_types=_parse_types(args.types),
        source=str(args.data),
    )
    client, store = open_store(settings.redis, settings.monitor.group_id)
    try:
        await store.put_reference(args.model, args.version, ref.to_bytes())
        if args.default:
            await store.put_reference(args.model, "default", ref.with_version("default").to_bytes())
    finally:
        await client.aclose()
    print(
        f"stored reference {ref.reference_id}: {len(ref.features)} features, "
        f"{ref.row_count} rows, window {policy.window_events} events, "
        f"budget 1 false alarm per {policy.false_alarm_events:.0f} events"
    )
    return 0


async def reference_show(args: argparse.Namespace, settings: Settings) -> int:
    client, store = open_store(settings.redis, settings.monitor.group_id)
    try:
        blob = await store.get_reference(args.model, args.version)
    finally:
        await client.aclose()
    if blob is None:
        print(f"no reference for {args.model} {args.version}", file=sys.stderr)
        return 1
    ref = ReferenceProfile.from_bytes(blob)
    if args.json:
        print(blob.decode())
        return 0
    print(f"reference {ref.reference_id}  rows={ref.row_count}  source={ref.source}")
    print(f"policy: {ref.policy.to_dict()}")
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
    print(
        f"outputs: task={out.task} low_confidence<{out.low_confidence_threshold:.3f} "
        f"(rate {out.low_confidence_rate:.2%}) top_class_share={out.top_class_share:.2%}"
    )
    return 0
