"""``driftline monitor|labels|retrain``: run a worker until stopped (or idle)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable

from driftline.config import Settings
from driftline.runtime.gc_policy import JOINER_YOUNG_THRESHOLD, batch_sized_gc
from driftline.runtime.health import HEALTH, install_stop_handlers
from driftline.runtime.labels import LabelJoiner
from driftline.runtime.metrics import serve_metrics
from driftline.runtime.monitor import MonitorWorker
from driftline.runtime.retrain import RetrainPolicy, parse_duration_ms
from driftline.runtime.retrain_app import RetrainService
from driftline.views.alerts import parse_choices
from driftline.views.slow_loop import report_text

__all__ = ["labels", "monitor", "retrain"]

log = logging.getLogger("driftline")


def _stop_on_signals(stop: Callable[[], None], settings: Settings) -> None:
    """SIGTERM/SIGINT stop the worker, within ``health.shutdown_seconds`` in every state
    (driftline.runtime.health); its liveness is judged from now on."""
    HEALTH.configure(settings.health)
    install_stop_handlers(stop, asyncio.get_running_loop(), settings.health)


async def monitor(args: argparse.Namespace, settings: Settings) -> int:
    settings.redis.signing_key()  # no key: one line, before anything starts
    port = serve_metrics(settings.metrics_port, settings.metrics_certfile, settings.metrics_keyfile)
    log.info(
        "metrics on :%d/metrics; kafka %s; redis %s",
        port,
        settings.kafka.bootstrap_servers,
        settings.redis.redacted_url(),
    )
    worker = MonitorWorker(settings, name=args.name)
    _stop_on_signals(worker.stop, settings)
    await worker.start()
    batch_sized_gc()  # this process is the worker's: runtime/gc_policy.py
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


async def labels(args: argparse.Namespace, settings: Settings) -> int:
    if args.report:
        print(await report_text(settings, args.model, args.champion, args.json))
        return 0
    settings.redis.signing_key()  # no key: one line, before anything starts
    port = serve_metrics(settings.metrics_port, settings.metrics_certfile, settings.metrics_keyfile)
    log.info("metrics on :%d/metrics", port)
    worker = LabelJoiner(settings, name=args.name)
    _stop_on_signals(worker.stop, settings)
    await worker.start()
    batch_sized_gc(JOINER_YOUNG_THRESHOLD)  # this process is the worker's: runtime/gc_policy.py
    try:
        await worker.run(idle_exit_s=args.idle_exit)
    finally:
        await worker.close()
    log.info(
        "label joiner stopped after %d predictions, %d labels, %d alerts, %d dead letters "
        "(%d labels)",
        worker.predictions_seen,
        worker.labels_seen,
        worker.alerts_published,
        worker.dead_letters,
        worker.labels_dead_lettered,
    )
    return 0


async def retrain(args: argparse.Namespace, settings: Settings) -> int:
    settings.redis.signing_key()  # its state is signed: no key, one line, nothing started
    default = RetrainPolicy()

    def _set(text: str | None, fallback: frozenset[str]) -> frozenset[str]:
        return frozenset(parse_choices(text) or fallback) if text is not None else fallback

    policy = RetrainPolicy(
        kinds=_set(args.kinds, default.kinds),
        severities=_set(args.severities, default.severities),
        ignore_diagnoses=frozenset(parse_choices(args.ignore_diagnoses) or ())
        if args.ignore_diagnoses is not None
        else default.ignore_diagnoses,
        debounce_ms=parse_duration_ms(args.debounce),
        require_approval=args.approval,
        trigger_on_updates=args.trigger_on_updates,
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
    # faust and mode log every service start and stop at INFO; keep their warnings.
    for name in ("faust", "mode"):
        logging.getLogger(name).setLevel(max(logging.WARNING, log.getEffectiveLevel()))
    _stop_on_signals(service.stop, settings)
    log.info("retrain policy: %s", policy.to_dict())
    try:
        await service.start()
        await service.run(idle_exit_s=args.idle_exit)
    finally:
        await service.close()
    log.info(
        "retrain stopped after %d alerts, %d requests, %d dead letters",
        service.decisions,
        service.requested,
        service.dead_letters,
    )
    if service.crashed:
        log.error("the faust app stopped on an error: %r", service.app_error)
        return 1
    return 0
