"""``driftline alerts`` and ``driftline dead-letters``: follow the alert topic or the
dead-letter topics (or print their history)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from driftline.config import Settings
from driftline.errors import InputError
from driftline.views.alerts import follow_alerts, parse_since_ms
from driftline.views.dead_letters import follow_dead_letters

__all__ = ["alerts", "dead_letters"]


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


async def dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    topics = {
        "predictions": settings.topics.predictions,
        "labels": settings.topics.labels,
        "alerts": settings.topics.alerts,
    }
    names = [t.strip() for t in (args.topic or "predictions,labels").split(",") if t.strip()]
    unknown = [t for t in names if t not in topics]
    if unknown or not names:
        raise InputError(f"--topic {args.topic!r}: choose among predictions, labels, alerts")
    chosen = [topics[t] for t in names]
    shown = await follow_dead_letters(
        settings,
        chosen,
        stop,
        from_start=args.since_start,
        since_ms=parse_since_ms(args.since) if args.since else None,
        follow=not args.no_follow,
    )
    if args.no_follow:
        print(f"{shown} dead letters", file=sys.stderr)
    return 0
