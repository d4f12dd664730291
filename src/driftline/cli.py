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

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from driftline.config import Settings, load_settings
from driftline.core.reference import Policy, ReferenceProfile, build_reference, load_training_data
from driftline.errors import DriftlineError

__all__ = ["main"]

log = logging.getLogger("driftline")


def _store(settings: Settings, group: str | None = None) -> tuple[Any, Any]:
    from driftline.runtime.store import open_store

    return open_store(settings.redis, group or settings.monitor.group_id)


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
    from driftline.runtime.metrics import serve_metrics
    from driftline.runtime.monitor import MonitorWorker

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


# ---------------------------------------------------------------------------- labels


async def _labels(args: argparse.Namespace, settings: Settings) -> int:
    from driftline.runtime.labels import LabelJoiner, report_text
    from driftline.runtime.metrics import serve_metrics

    if args.report:
        print(await report_text(settings, args.model, args.champion, args.json))
        return 0
    serve_metrics(settings.metrics_port, settings.metrics_certfile, settings.metrics_keyfile)
    worker = LabelJoiner(settings, name=args.name)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    await worker.start()
    try:
        await worker.run(idle_exit_s=args.idle_exit)
    finally:
        await worker.close()
    log.info(
        "label joiner stopped after %d predictions, %d labels, %d alerts, %d dead letters",
        worker.predictions_seen,
        worker.labels_seen,
        worker.alerts_published,
        worker.dead_letters,
    )
    return 0


# ---------------------------------------------------------------------------- alerts


def format_alert(a: dict[str, Any]) -> str:
    """One readable line for an alert event."""
    from datetime import UTC, datetime

    top = ", ".join(f"{f['feature']}={f['score']:.3g}" for f in a.get("top_features", [])[:3])
    mark = "FIRING  " if a["status"] == "firing" else "resolved"
    at = datetime.fromtimestamp(a["detected_at"] / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    diagnosis = a.get("diagnosis")
    diag = f"  diagnosis={diagnosis}" if diagnosis and diagnosis != "undetermined" else ""
    return (
        f"{at} [{mark}] {a['severity']:<8} {a['kind']:<12} model={a['model_id']}:"
        f"{a['model_version']} feature={a['feature']} detector={a['detector']} "
        f"stat={a['statistic']:.3g} thr={a['threshold']:.3g} "
        f"window={a['window']['count']} ev  top=[{top}]{diag}  id={a['alert_id'][:12]}"
    )


def _choices(value: str | Sequence[str] | None) -> frozenset[str] | None:
    """``"a,b"`` or ``["a", "b"]`` -> {"a", "b"}; nothing -> no filter."""
    if not value:
        return None
    parts = value.split(",") if isinstance(value, str) else value
    return frozenset(p.strip() for p in parts if p.strip()) or None


def alert_matches(
    a: dict[str, Any],
    model: str | Sequence[str] | None = None,
    kind: str | Sequence[str] | None = None,
    severity: str | Sequence[str] | None = None,
) -> bool:
    """Whether an alert passes the ``--model``/``--kind``/``--severity`` filters
    (each a value or a comma-separated list; empty means any)."""
    for key, allowed in (("model_id", model), ("kind", kind), ("severity", severity)):
        values = _choices(allowed)
        if values is not None and a.get(key) not in values:
            return False
    return True


def parse_since_ms(text: str, now_ms: int | None = None) -> int:
    """``--since``: an ISO 8601 date-time (``2026-01-01T10:00Z``; naive means UTC), epoch
    ms, or a duration back from now (``90s``, ``30m``, ``1h``, ``7d``, ``2w``)."""
    from driftline.report import parse_since

    now = int(time.time() * 1000) if now_ms is None else now_ms
    try:
        ms = parse_since(text, now)
    except ValueError as exc:
        raise DriftlineError(str(exc)) from None
    if ms is None:
        raise DriftlineError(f"--since {text!r}: empty")
    return ms


#: At most this many alert ids are remembered for deduplication (oldest forgotten).
DEDUPE_IDS = 100_000


async def follow_alerts(
    settings: Settings,
    from_start: bool,
    stop: asyncio.Event,
    model: str | Sequence[str] | None = None,
    kind: str | Sequence[str] | None = None,
    *,
    severity: str | Sequence[str] | None = None,
    since_ms: int | None = None,
    follow: bool = True,
    emit: Callable[[str], None] | None = None,
) -> int:
    """Print alerts from the alert topic until ``stop`` is set; return how many.

    Where to start: ``since_ms`` (records whose Kafka timestamp is at or after it; the
    consumer seeks there with ``offsets_for_times``), else the beginning
    (``from_start``), else the end. With
    ``follow=False`` it stops at the end offsets seen at the start (history only).
    Alerts are deduplicated by ``alert_id`` (the outbox may publish one twice) and
    filtered by model, kind and severity.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    out = emit or (lambda line: print(line, flush=True))
    topic = settings.topics.alerts
    consumer = AIOKafkaConsumer(
        **settings.kafka.client_kwargs(), group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    seen: dict[str, None] = {}
    shown = 0
    try:
        parts: set[int] | None = None
        while not stop.is_set():
            await consumer.topics()  # refresh metadata
            parts = consumer.partitions_for_topic(topic)
            if parts or not follow:
                break
            await asyncio.sleep(1.0)  # the topic does not exist yet: wait for it
        if not parts:
            return 0
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        if since_ms is not None:
            found = await consumer.offsets_for_times({tp: since_ms for tp in tps})
            for tp in tps:
                hit = found.get(tp)
                if hit is None:  # nothing published since then
                    await consumer.seek_to_end(tp)
                else:
                    consumer.seek(tp, hit.offset)
        elif from_start:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        end = await consumer.end_offsets(tps) if not follow else {}
        while not stop.is_set():
            if not follow:
                positions = [await consumer.position(tp) for tp in tps]
                if all(pos >= end[tp] for pos, tp in zip(positions, tps, strict=True)):
                    break
            batch = await consumer.getmany(timeout_ms=300)
            for recs in batch.values():
                for r in recs:
                    if not follow and r.offset >= end[TopicPartition(r.topic, r.partition)]:
                        continue
                    if since_ms is not None and r.timestamp < since_ms:
                        # offsets_for_times is a lower bound on some brokers (Tansu
                        # answers with the earliest offset): the timestamp decides.
                        continue
                    try:
                        a = orjson.loads(r.value)
                        alert_id = a["alert_id"]
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        log.warning("skipped an unreadable record at offset %d", r.offset)
                        continue
                    if alert_id in seen:  # consumers deduplicate on the alert id
                        continue
                    seen[alert_id] = None
                    if len(seen) > DEDUPE_IDS:
                        del seen[next(iter(seen))]
                    if alert_matches(a, model, kind, severity):
                        out(format_alert(a))
                        shown += 1
    finally:
        await consumer.stop()
    return shown


async def _alerts(args: argparse.Namespace, settings: Settings) -> int:
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


# ---------------------------------------------------------------------------- retrain


async def _retrain(args: argparse.Namespace, settings: Settings) -> int:
    from driftline.runtime.metrics import serve_metrics
    from driftline.runtime.retrain import RetrainPolicy, RetrainService, parse_duration_ms

    default = RetrainPolicy()

    def _set(text: str | None, fallback: frozenset[str]) -> frozenset[str]:
        return frozenset(_choices(text) or fallback) if text is not None else fallback

    policy = RetrainPolicy(
        kinds=_set(args.kinds, default.kinds),
        severities=_set(args.severities, default.severities),
        ignore_diagnoses=frozenset(_choices(args.ignore_diagnoses) or ())
        if args.ignore_diagnoses is not None
        else default.ignore_diagnoses,
        debounce_ms=parse_duration_ms(args.debounce),
        require_approval=args.approval,
    )
    service = RetrainService(
        settings,
        policy,
        group_id=args.group,
        webhook_url=args.webhook,
        publish=not args.no_publish,
        from_start=args.from_start,
    )
    if not args.no_metrics:
        port = serve_metrics(
            settings.metrics_port, settings.metrics_certfile, settings.metrics_keyfile
        )
        log.info("metrics on :%d/metrics", port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.stop)
    log.info("retrain policy: %s", policy.to_dict())
    await service.start()
    try:
        await service.run(idle_exit_s=args.idle_exit)
    finally:
        await service.close()
    log.info(
        "retrain stopped after %d alerts, %d requests", service.decisions, len(service.requests)
    )
    return 0


# ---------------------------------------------------------------------------- dev / demo


def _dev_up(args: argparse.Namespace) -> int:
    from driftline.runtime.devstack import DevStack

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
    from driftline.producer import AsyncPredictionProducer
    from driftline.runtime.devstack import DevStack
    from driftline.runtime.monitor import MonitorWorker, ensure_topics
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
            from driftline.report import report_from_store, write_report

            client, store = _store(settings)
            try:
                data = await report_from_store(store, sim.model_id, source="driftline demo")
            finally:
                await client.aclose()
            out = Path(args.report)
            size = write_report(out, data)
            print(f"5. wrote the drift report {out.resolve()} ({size:,} bytes)")
            if not args.skip_slow_loop:
                from driftline.runtime.labels import demo_slow_loop

                print("6. the slow loop: delayed labels, a concept switch, concept-drift alerts")
                await demo_slow_loop(settings)
        finally:
            stack.stop()
    return 0


# ---------------------------------------------------------------------------- report


async def _report(args: argparse.Namespace, settings: Settings) -> int:
    from driftline.report import report_from_replay, report_from_store, write_report

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
            client, store = _store(settings)
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


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from driftline.serve import StatusServer

    server = StatusServer(settings, host=args.host, port=args.port)

    def _stop(signum: int, frame: Any) -> None:
        import threading

        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("status page on %s (redis %s)", server.url, settings.redis.redacted_url())
    server.serve_forever()
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
        if args.cmd == "report":
            return asyncio.run(_report(args, settings))
        if args.cmd == "serve":
            return _serve(args, settings)
        if args.cmd == "retrain":
            return asyncio.run(_retrain(args, settings))
        if args.cmd == "labels":
            return asyncio.run(_labels(args, settings))
    except DriftlineError as exc:
        print(f"driftline: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
