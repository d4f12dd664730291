"""The ``driftline`` argument parser: every command and its options."""

from __future__ import annotations

import argparse

__all__ = ["USAGE", "build_parser"]

#: The command overview printed by ``driftline --help``.
USAGE = """The ``driftline`` command line.

::

    driftline dev up [--cluster]          start Tansu + redis-server (or a Redis Cluster)
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="driftline", description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    dev = sub.add_parser("dev", help="local stack for people")
    dev_sub = dev.add_subparsers(dest="dev_cmd", required=True)
    up = dev_sub.add_parser("up", help="start Tansu + redis-server until Ctrl-C or SIGTERM")
    up.add_argument(
        "--workdir",
        help="keep logs and data in this directory (kept on exit); "
        "default: a temporary directory, removed on exit",
    )
    up.add_argument(
        "--cluster",
        action="store_true",
        help="a local Redis Cluster (three masters) instead of a single redis-server",
    )

    demo = sub.add_parser("demo", help="run the fast loop end to end with simulated traffic")
    demo.add_argument("--events", type=int, default=9000)
    demo.add_argument("--sigmas", type=float, default=1.0)
    demo.add_argument("--window", type=int, default=500)
    demo.add_argument("--report", default="driftline-demo-report.html", help="report path")
    demo.add_argument("--skip-slow-loop", action="store_true", help="fast loop only")

    mon = sub.add_parser("monitor", help="run a monitor worker")
    mon.add_argument("--name", default="monitor", help="worker name in metric labels")
    mon.add_argument(
        "--idle-exit",
        type=float,
        default=None,
        help="exit after this many seconds without records (tests, batch use)",
    )

    ref = sub.add_parser("reference", help="reference profiles")
    ref_sub = ref.add_subparsers(dest="ref_cmd", required=True)
    b = ref_sub.add_parser("build", help="build and store a reference from training data")
    b.add_argument("--model", required=True)
    b.add_argument("--version", required=True)
    b.add_argument("--data", required=True, help="CSV, Parquet or JSONL file")
    b.add_argument("--types", help="declared types: name=numeric|categorical,...")
    b.add_argument("--window-events", type=int, default=500)
    b.add_argument("--window-seconds", type=float, default=0.0)
    b.add_argument(
        "--false-alarm-events",
        type=float,
        default=1_000_000.0,
        help="expected events between false alarms (the one number to set)",
    )
    b.add_argument(
        "--default",
        action="store_true",
        help="also store it as the model's default (fallback for other versions)",
    )
    s = ref_sub.add_parser("show", help="print a stored reference")
    s.add_argument("--model", required=True)
    s.add_argument("--version", default="default")
    s.add_argument("--json", action="store_true")

    rp = sub.add_parser("replay", help="run the core over a JSONL file of prediction events")
    rp.add_argument("--events", required=True)
    rp.add_argument("--reference", action="append", help="reference JSON file (else Redis)")
    rp.add_argument("--out", default="-", help="alerts JSONL (default stdout)")
    rp.add_argument("--batch", type=int, default=5000)

    al = sub.add_parser("alerts", help="follow the alert topic (or show its history)")
    al.add_argument("--since-start", action="store_true", help="from the topic's beginning")
    al.add_argument(
        "--since",
        help="from alerts published since: ISO time (2026-01-01T10:00Z), epoch ms, "
        "or a duration back from now (30m, 1h, 7d)",
    )
    al.add_argument(
        "--no-follow", action="store_true", help="print the history up to now, then exit"
    )
    al.add_argument("--model", help="only these models (comma-separated)")
    al.add_argument("--kind", help="only these kinds, e.g. input_drift,concept_drift")
    al.add_argument("--severity", help="only these severities, e.g. warning,critical")

    rep = sub.add_parser(
        "report", help="write one self-contained HTML drift report (Redis or --events replay)"
    )
    rep.add_argument("--model", help="model id (required with Redis)")
    rep.add_argument("--version", help="model version (default: the most recent one)")
    rep.add_argument("--segment", help="segment key, e.g. 'region=eu' (default: unsegmented)")
    rep.add_argument(
        "--since", help="date-time (2026-01-01T10:00Z), epoch ms, or a span back (6h, 7d)"
    )
    rep.add_argument("--out", required=True, help="the HTML file to write")
    rep.add_argument("--events", help="replay this JSONL file instead of reading Redis")
    rep.add_argument("--reference", action="append", help="reference JSON file(s) for --events")
    rep.add_argument("--max-windows", type=int, default=5000, help="newest windows read")

    srv = sub.add_parser("serve", help="serve the read-only status page")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: all)")
    srv.add_argument("--port", type=int, default=9109)

    rt = sub.add_parser("retrain", help="turn drift alerts into retraining requests")
    rt.add_argument(
        "--kinds", help="alert kinds that trigger (default input/output/concept/performance)"
    )
    rt.add_argument("--severities", help="severities that trigger (default warning,critical)")
    rt.add_argument(
        "--ignore-diagnoses",
        help="diagnoses that never trigger (default input_drift_benign,data_quality; '' = none)",
    )
    rt.add_argument("--debounce", default="24h", help="per-model minimum gap (event time)")
    rt.add_argument("--approval", action="store_true", help="publish requests as pending_approval")
    rt.add_argument("--webhook", help="POST each request as JSON to this http(s) URL")
    rt.add_argument(
        "--no-publish", action="store_true", help="do not publish to the retrain-requests topic"
    )
    rt.add_argument("--group", default="driftline-retrain", help="consumer group")
    rt.add_argument(
        "--from-start", action="store_true", help="a new group reads the alert topic from start"
    )
    rt.add_argument("--no-metrics", action="store_true", help="do not serve /metrics")
    rt.add_argument("--idle-exit", type=float, default=None, help="exit after idle seconds")

    lb = sub.add_parser("labels", help="join labels to predictions: performance, concept drift")
    lb.add_argument("--report", action="store_true", help="print performance and exit")
    lb.add_argument("--model", help="--report: only this model")
    lb.add_argument("--champion", help="--report: version compared with the others")
    lb.add_argument("--json", action="store_true", help="--report: as JSON")
    lb.add_argument("--name", default="labels", help="worker name in metric labels")
    lb.add_argument("--idle-exit", type=float, default=None, help="exit after idle seconds")
    return p
