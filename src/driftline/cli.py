"""The ``driftline`` command line.

::

    driftline dev up                      start Tansu + redis-server for a person
    driftline demo                        the whole fast loop end to end, locally
    driftline monitor                     run a monitor worker (predictions -> alerts)
    driftline reference build|show        build / print a model's reference profile
    driftline replay --events FILE        run the core over a JSONL file, print alerts
    driftline alerts [--since-start]      follow the alert topic and print alerts

Configuration comes from ``DRIFTLINE_*`` environment variables (:mod:`driftline.config`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from driftline.config import Settings, load_settings
from driftline.errors import DriftlineError
from driftline.reference import Policy, ReferenceProfile, build_reference, load_training_data

__all__ = ["main"]

log = logging.getLogger("driftline")


def _store(settings: Settings, group: str | None = None) -> tuple[Any, Any]:
    from driftline.store import StateStore

    client = aioredis.Redis.from_url(settings.redis.url, **settings.redis.client_kwargs())
    store = StateStore(
        client,
        prefix=settings.redis.key_prefix,
        group=group or settings.monitor.group_id,
        signing_key=settings.redis.state_signing_key.get_secret_value().encode(),
    )
    return client, store


# ---------------------------------------------------------------------------- reference


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


async def _reference_build(args: argparse.Namespace, settings: Settings) -> int:
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
    client, store = _store(settings)
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


async def _reference_show(args: argparse.Namespace, settings: Settings) -> int:
    client, store = _store(settings)
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


# ---------------------------------------------------------------------------- replay


async def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from driftline.replay import Replayer, read_events

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
        client, store = _store(settings)
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


# ---------------------------------------------------------------------------- monitor


async def _monitor(args: argparse.Namespace, settings: Settings) -> int:
    from driftline.ingest import MonitorWorker
    from driftline.metrics import serve_metrics

    port = serve_metrics(settings.metrics_port, settings.metrics_certfile, settings.metrics_keyfile)
    log.info(
        "metrics on :%d/metrics; kafka %s; redis %s",
        port,
        settings.kafka.bootstrap_servers,
        settings.redis.redacted_url(),
    )
    worker = MonitorWorker(settings, name=args.name)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    await worker.start()
    try:
        await worker.run(idle_exit_s=args.idle_exit)
    finally:
        await worker.close()
    log.info(
        "monitor stopped after %d events, %d alerts, %d dead letters",
        worker.processed,
        worker.alerts_published,
        worker.dead_letters,
    )
    return 0


# ---------------------------------------------------------------------------- alerts


def format_alert(a: dict[str, Any]) -> str:
    """One readable line for an alert event."""
    top = ", ".join(f"{f['feature']}={f['score']:.3g}" for f in a.get("top_features", [])[:3])
    mark = "FIRING  " if a["status"] == "firing" else "resolved"
    return (
        f"[{mark}] {a['severity']:<8} {a['kind']:<12} model={a['model_id']}:"
        f"{a['model_version']} feature={a['feature']} detector={a['detector']} "
        f"stat={a['statistic']:.3g} thr={a['threshold']:.3g} "
        f"window={a['window']['count']} ev  top=[{top}]  id={a['alert_id'][:12]}"
    )


async def follow_alerts(
    settings: Settings,
    from_start: bool,
    stop: asyncio.Event,
    model: str | None = None,
    kind: str | None = None,
) -> None:
    """Print alerts from the alert topic until ``stop`` is set."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        settings.topics.alerts,
        **settings.kafka.client_kwargs(),
        group_id=None,
        auto_offset_reset="earliest" if from_start else "latest",
    )
    await consumer.start()
    seen: set[str] = set()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=300)
            for recs in batch.values():
                for r in recs:
                    a = orjson.loads(r.value)
                    if a["alert_id"] in seen:  # consumers deduplicate on the alert id
                        continue
                    seen.add(a["alert_id"])
                    if (model and a["model_id"] != model) or (kind and a["kind"] != kind):
                        continue
                    print(format_alert(a), flush=True)
    finally:
        await consumer.stop()


async def _alerts(args: argparse.Namespace, settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await follow_alerts(settings, args.since_start, stop, args.model, args.kind)
    return 0


# ---------------------------------------------------------------------------- dev / demo


def _dev_up(args: argparse.Namespace) -> int:
    from driftline.devstack import DevStack

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="driftline-dev-"))
    stack = DevStack(workdir).start()
    print("Tansu broker and redis-server are up. In another shell:")
    for k, v in stack.env().items():
        print(f"  export {k}={v}")
    print("Ctrl-C stops both.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0


async def _demo(args: argparse.Namespace) -> int:
    from driftline.devstack import DevStack
    from driftline.ingest import MonitorWorker, ensure_topics
    from driftline.producer import AsyncPredictionProducer
    from driftline.simulate import Shift, SimulatedModel

    with tempfile.TemporaryDirectory(prefix="driftline-demo-") as tmp:
        stack = DevStack(Path(tmp)).start()
        try:
            settings = Settings(
                kafka={"bootstrap_servers": stack.broker.bootstrap},
                redis={"url": stack.redis.url},
                metrics_port=0,
            )
            print(
                f"1. started Tansu on {stack.broker.bootstrap} and redis-server on "
                f"{stack.redis.url}"
            )
            sim = SimulatedModel(seed=42)
            policy = Policy(window_events=args.window)
            ref = build_reference(
                sim.training_data(20_000),
                sim.model_id,
                sim.model_version,
                policy=policy,
                source="simulated training data",
            )
            client, store = _store(settings)
            await store.put_reference(sim.model_id, sim.model_version, ref.to_bytes())
            await client.aclose()
            print(
                f"2. built reference {ref.reference_id} from 20000 training rows "
                f"({len(ref.features)} features)"
            )
            await ensure_topics(
                settings,
                [
                    settings.topics.predictions,
                    settings.topics.alerts,
                    settings.topics.dlq(settings.topics.predictions),
                ],
            )
            worker = MonitorWorker(settings, name="demo")
            await worker.start()
            stop = asyncio.Event()
            monitor_task = asyncio.create_task(worker.run())
            printer = asyncio.create_task(follow_alerts(settings, True, stop))
            total, shift_at, recover_at = args.events, args.events // 3, 2 * args.events // 3
            print(
                f"3. the model server publishes {total} predictions; from event {shift_at} "
                f"feature f03 shifts by {args.sigmas} sd and 'plan' gains 'enterprise'; "
                f"from event {recover_at} the data recovers"
            )
            shift = Shift(
                start=shift_at,
                feature="f03",
                sigmas=args.sigmas,
                cat_feature="plan",
                category="enterprise",
                share=0.3,
            )
            async with AsyncPredictionProducer(settings, linger_ms=20) as producer:
                gen_shifted = sim.events(recover_at, shift=shift)
                gen_after = sim.events(total - recover_at, start=recover_at)
                for i, e in enumerate([*gen_shifted, *gen_after]):
                    while not producer.send(e):
                        await asyncio.sleep(0.01)
                    if i % 500 == 499:
                        await asyncio.sleep(0.05)  # a steady trickle, as a server would
                await producer.flush(30)
            deadline = time.monotonic() + 60
            while worker.processed < total and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.5)
            stop.set()
            worker.stop()
            await asyncio.gather(monitor_task, printer)
            await worker.close()
            print(
                f"4. processed {worker.processed} events, published "
                f"{worker.alerts_published} alert events, {worker.dead_letters} dead letters"
            )
        finally:
            stack.stop()
    return 0


# ---------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="driftline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    dev = sub.add_parser("dev", help="local stack for people")
    dev_sub = dev.add_subparsers(dest="dev_cmd", required=True)
    up = dev_sub.add_parser("up", help="start Tansu + redis-server until Ctrl-C")
    up.add_argument("--workdir")

    demo = sub.add_parser("demo", help="run the fast loop end to end with simulated traffic")
    demo.add_argument("--events", type=int, default=9000)
    demo.add_argument("--sigmas", type=float, default=1.0)
    demo.add_argument("--window", type=int, default=500)

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

    al = sub.add_parser("alerts", help="follow the alert topic")
    al.add_argument("--since-start", action="store_true", help="from the topic's beginning")
    al.add_argument("--model")
    al.add_argument("--kind")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``driftline`` console script."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        if args.cmd == "dev":
            return _dev_up(args)
        if args.cmd == "demo":
            return asyncio.run(_demo(args))
        if args.cmd == "monitor":
            return asyncio.run(_monitor(args, settings))
        if args.cmd == "reference":
            fn = _reference_build if args.ref_cmd == "build" else _reference_show
            return asyncio.run(fn(args, settings))
        if args.cmd == "replay":
            return asyncio.run(_replay(args, settings))
        if args.cmd == "alerts":
            return asyncio.run(_alerts(args, settings))
    except DriftlineError as exc:
        print(f"driftline: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
