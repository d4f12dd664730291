"""``driftline report|serve|status``: the HTML drift report, the live status page, and
the status page in a terminal."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from driftline.cli.common import input_files
from driftline.cli.replay import offline_run, refusal_exit
from driftline.config import Settings
from driftline.core.slowloop import build_report as performance_report
from driftline.errors import InputError
from driftline.offline.replay import report_from_run
from driftline.runtime.store import open_store
from driftline.views.report import report_from_store, write_report
from driftline.views.report.build import parse_since
from driftline.views.slow_loop import load_perf_states
from driftline.views.status import Page, StatusServer, model_statuses, status_text

__all__ = ["report", "serve", "status"]

log = logging.getLogger("driftline")


async def report(args: argparse.Namespace, settings: Settings) -> int:
    """Write the HTML report of a model, from Redis or from files (``--events``)."""
    status = 0
    try:
        parse_since(args.since, 0)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if args.events:
        run = await offline_run(args, settings)
        if run is None:
            return 0
        data = report_from_run(
            run,
            model_id=args.model,
            version=args.version,
            segment=args.segment,
            since=args.since,
            source=f"replay of {_names(input_files(args.events) or [])}",
        )
        status = refusal_exit(args, run)
    else:
        if not args.model:
            raise InputError("report: give --model (Redis) or --events (files)")
        states, _ = await load_perf_states(settings)
        performance = performance_report(states, model=args.model).get(args.model, {})
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
                performance=performance,
            )
        finally:
            await client.aclose()
    size = write_report(Path(args.out), data)
    print(
        f"wrote {args.out} ({size:,} bytes): model {data['model']} v{data['version']}, "
        f"{data['windows']} windows, {len(data['features'])} features "
        f"({data['drifted_count']} drifted), {len(data['alerts'])} alerts, state {data['state']}",
        file=sys.stderr,
    )
    return status


def serve(args: argparse.Namespace, settings: Settings) -> int:
    settings.redis.signing_key()  # references are signed: no key, no page
    server = StatusServer(settings, host=args.host, port=args.port)

    def _stop(signum: int, frame: Any) -> None:
        import threading

        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("status page on %s (redis %s)", server.url, settings.redis.redacted_url())
    server.serve_forever()
    return 0


async def status(args: argparse.Namespace, settings: Settings) -> int:
    """``driftline status``: what the status page shows, printed (or as JSON)."""
    client, store = open_store(settings.redis, settings.monitor.group_id)
    try:
        names = await store.history_models()
        if args.model is not None:
            if args.model not in names:
                raise InputError(
                    f"no history for model {args.model!r} (a model is listed once a monitor "
                    f"handled its events); models: {', '.join(names[:10]) or 'none yet'}"
                )
            names = [args.model]
        try:
            page = Page.of(args.page, len(names))
        except ValueError as exc:
            raise InputError(str(exc)) from None
        statuses = await model_statuses(store, list(page.slice(names)))
    finally:
        await client.aclose()
    if args.json:
        print(json.dumps({"models": statuses, **page.to_dict()}, indent=2))
    else:
        print(status_text(statuses, page))
    return 0


def _names(files: list[str]) -> str:
    """The replayed files, by name, for the report's source line."""
    names = [Path(f).name for f in files]
    return names[0] if len(names) == 1 else f"{names[0]} and {len(names) - 1} more files"
