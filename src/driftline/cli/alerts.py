"""``driftline alerts``: follow the alert topic (or print its history)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from driftline.config import Settings
from driftline.views.alerts import follow_alerts, parse_since_ms

__all__ = ["alerts"]


async def alerts(args: argparse.Namespace, settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    since_ms = parse_since_ms(args.since) if args.since else None
    shown = await follow_alerts(
        settings,
        args.since_start,
        stop,
        args.model,
        args.kind,
        severity=args.severity,
        since_ms=since_ms,
        follow=not args.no_follow,
    )
    if args.no_follow:
        print(f"{shown} alerts", file=sys.stderr)
    return 0
