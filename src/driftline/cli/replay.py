"""``driftline replay``: run the core over a JSONL file of prediction events."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import orjson

from driftline.config import Settings
from driftline.core.reference import ReferenceProfile
from driftline.runtime.store import open_store

__all__ = ["replay"]

async def replay(args: argparse.Namespace, settings: Settings) -> int:
    from driftline.offline.replay import Replayer, read_events

    refs: dict[tuple[str, str], ReferenceProfile] = {}
    for path in args.reference or []:
        ref = ReferenceProfile.from_bytes(Path(path).read_bytes())
        refs[(ref.model_id, ref.model_version)] = ref
    if not refs:
        # Load every model's references from Redis for the models in the file.
        models: set[tuple[str, str]] = set()
        for _, raw in read_events(Path(args.events)):
            with contextlib.suppress(Exception):
                obj = orjson.loads(raw)
                models.add((obj["model_id"], obj["model_version"]))
        client, store = open_store(settings.redis, settings.monitor.group_id)
        try:
            for mo, v in sorted(models):
                blob = await store.get_reference(mo, v)
                if blob is not None:
                    refs[(mo, v)] = ReferenceProfile.from_bytes(blob)
        finally:
            await client.aclose()
    result = Replayer(refs).feed_lines(read_events(Path(args.events)), batch=args.batch)
    out = open(args.out, "wb") if args.out != "-" else sys.stdout.buffer  # noqa: SIM115
    try:
        for a in result.alerts:
            out.write(orjson.dumps(a.model_dump(mode="json")) + b"\n")
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    print(
        f"replayed {result.events} events, {len(result.alerts)} alerts, "
        f"{len(result.refused)} lines refused",
        file=sys.stderr,
    )
    return 0
