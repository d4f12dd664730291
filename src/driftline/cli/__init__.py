"""The ``driftline`` command line (internal; the entry point is :func:`main`).

:func:`main` parses the arguments (:mod:`driftline.cli.parser`, whose ``USAGE`` lists
the commands) and hands each command to its group's module: :mod:`.reference`,
:mod:`.replay`, :mod:`.workers` (monitor, labels, retrain), :mod:`.alerts`,
:mod:`.report` (report, serve) and :mod:`.dev` (dev up, demo). User errors print one
line and exit 2. Configuration comes from ``DRIFTLINE_*`` environment variables
(:mod:`driftline.config`).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from driftline.cli import alerts, dev, reference, replay, report, workers
from driftline.cli.parser import build_parser
from driftline.config import load_settings
from driftline.errors import DriftlineError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``driftline`` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        if args.cmd == "dev":
            return dev.dev_up(args)
        if args.cmd == "demo":
            return asyncio.run(dev.demo(args))
        if args.cmd == "monitor":
            return asyncio.run(workers.monitor(args, settings))
        if args.cmd == "reference":
            fn = reference.reference_build if args.ref_cmd == "build" else reference.reference_show
            return asyncio.run(fn(args, settings))
        if args.cmd == "replay":
            return asyncio.run(replay.replay(args, settings))
        if args.cmd == "alerts":
            return asyncio.run(alerts.alerts(args, settings))
        if args.cmd == "report":
            return asyncio.run(report.report(args, settings))
        if args.cmd == "serve":
            return report.serve(args, settings)
        if args.cmd == "retrain":
            return asyncio.run(workers.retrain(args, settings))
        if args.cmd == "labels":
            return asyncio.run(workers.labels(args, settings))
    except DriftlineError as exc:
        print(f"driftline: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
