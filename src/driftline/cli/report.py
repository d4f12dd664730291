"""``driftline report|serve``: the HTML drift report and the live status page."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from driftline.config import Settings
from driftline.core.reference import ReferenceProfile
from driftline.errors import DriftlineError
from driftline.offline.replay import report_from_replay
from driftline.runtime.store import open_store
from driftline.views.report import report_from_store, write_report
from driftline.views.status import StatusServer

__all__ = ["report", "serve"]

log = logging.getLogger("driftline")


async def report(args: argparse.Namespace, settings: Settings) -> int:
    try:
        if args.events:
            refs = [ReferenceProfile.from_bytes(Path(f).read_bytes()) for f in args.reference or []]
            data = report_from_replay(
                Path(args.events),
                refs,
                model_id=args.model,
                version=args.version,
                segment=args.segment,
                since=args.since,
            )
        else:
            if not args.model:
                raise DriftlineError("report: give --model (Redis) or --events (replay)")
            client, store = open_store(settings.redis, settings.monitor.group_id)
            try:
                data = await report_from_store(
                    store,
                    args.model,
                    version=args.version,
                    segment=args.segment,
                    since=args.since,
                    max_windows=args.max_windows,
                    source=f"Redis {settings.redis.redacted_url()} "
                    f"(prefix {settings.redis.key_prefix})",
                )
            finally:
                await client.aclose()
    except ValueError as exc:
        print(f"driftline report: {exc}", file=sys.stderr)
        return 2
    size = write_report(Path(args.out), data)
    print(
        f"wrote {args.out} ({size:,} bytes): model {data['model']} v{data['version']}, "
        f"{data['windows']} windows, {len(data['features'])} features "
        f"({data['drifted_count']} drifted), {len(data['alerts'])} alerts, state {data['state']}",
        file=sys.stderr,
    )
    return 0


def serve(args: argparse.Namespace, settings: Settings) -> int:
    server = StatusServer(settings, host=args.host, port=args.port)

    def _stop(signum: int, frame: Any) -> None:
        import threading

        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("status page on %s (redis %s)", server.url, settings.redis.redacted_url())
    server.serve_forever()
    return 0
