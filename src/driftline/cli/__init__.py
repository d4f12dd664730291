"""The ``driftline`` command line.

::

    driftline dev up                      start Tansu + redis-server for a person
    driftline demo                        the whole fast loop end to end, locally
    driftline monitor                     run a monitor worker (predictions -> alerts)
    driftline labels [--report]           label joiner: performance, concept drift (slow loop)
    driftline reference build|show        build / print a model's reference profile
    driftline replay --events FILE        run the core over a JSONL file, print alerts
    driftline alerts [--since 1h]         follow the alert topic (history, filters)
    driftline retrain [--approval]        alerts -> retraining requests (topic, webhook)
    driftline report --model M --out F    one self-contained HTML drift report (or --events)
    driftline serve                       the live status page (read-only)

Configuration comes from ``DRIFTLINE_*`` environment variables (:mod:`driftline.config`).
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
