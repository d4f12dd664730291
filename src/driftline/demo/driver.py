"""The demo driver (``driftline demo``): a local stack, simulated traffic, both loops.

Starts Tansu and redis-server, builds a reference, runs the monitor while a simulated
model server publishes predictions with a shift, prints the alerts, writes the drift
report, then runs the slow loop (delayed labels, a concept switch) on the same stack.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from driftline.config import Settings
from driftline.core.reference import Policy, build_reference
from driftline.demo.sea import SeaScenario, interleave
from driftline.demo.simulate import Shift, SimulatedModel
from driftline.producer import AsyncPredictionProducer
from driftline.runtime.devstack import DevStack
from driftline.runtime.labels import LabelJoiner
from driftline.runtime.monitor import MonitorWorker, ensure_topics
from driftline.runtime.store import open_store
from driftline.views.alerts import follow_alerts, format_alert
from driftline.views.report import report_from_store, write_report
from driftline.views.slow_loop import report_text

__all__ = ["demo_slow_loop", "run_demo"]


async def run_demo(
    events: int = 9000,
    sigmas: float = 1.0,
    window: int = 500,
    report: str = "driftline-demo-report.html",
    skip_slow_loop: bool = False,
) -> int:
    """The whole fast loop end to end on a local stack (``driftline demo``), then the slow
    loop (:func:`demo_slow_loop`) unless ``skip_slow_loop``; writes a drift report."""
    with tempfile.TemporaryDirectory(prefix="driftline-demo-") as tmp:
        stack = DevStack(Path(tmp)).start()
        try:
            settings = Settings(
                kafka={"bootstrap_servers": stack.broker.bootstrap},
                redis={"url": stack.redis.url, "state_signing_key": stack.signing_key},
                metrics_port=0,
            )
            print(
                f"1. started Tansu on {stack.broker.bootstrap} and redis-server on "
                f"{stack.redis.url}"
            )
            sim = SimulatedModel(seed=42)
            policy = Policy(window_events=window)
            ref = build_reference(
                sim.training_data(20_000),
                sim.model_id,
                sim.model_version,
                policy=policy,
                source="simulated training data",
            )
            client, store = open_store(settings.redis, settings.monitor.group_id)
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
            total, shift_at, recover_at = events, events // 3, 2 * events // 3
            print(
                f"3. the model server publishes {total} predictions; from event {shift_at} "
                f"feature f03 shifts by {sigmas} sd and 'plan' gains 'enterprise'; "
                f"from event {recover_at} the data recovers"
            )
            shift = Shift(
                start=shift_at,
                feature="f03",
                sigmas=sigmas,
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
            client, store = open_store(settings.redis, settings.monitor.group_id)
            try:
                data = await report_from_store(store, sim.model_id, source="driftline demo")
            finally:
                await client.aclose()
            out = Path(report)
            size = write_report(out, data)
            print(f"5. wrote the drift report {out.resolve()} ({size:,} bytes)")
            if not skip_slow_loop:
                print("6. the slow loop: delayed labels, a concept switch, concept-drift alerts")
                await demo_slow_loop(settings)
        finally:
            stack.stop()
    return 0


async def demo_slow_loop(
    settings: Settings, events: int = 12_000, out: Any = None
) -> dict[str, Any]:
    """The slow loop end to end on a running stack (called by ``driftline demo``).

    Builds a labelled reference for a SEA model (accuracy and score calibration), then
    runs the monitor and the label joiner while a model server publishes predictions
    and, ~3 s of event time later, their labels. Halfway the concept switches (same
    inputs, new labelling rule): the monitor stays quiet, the joiner raises
    ``concept_drift`` (diagnosis ``concept_drift``) and ``performance`` alerts. Prints
    alerts as they are published and the performance report at the end.
    """
    write = out or sys.stdout
    sc = SeaScenario()
    ref = build_reference(
        sc.training_data(5000),
        sc.model_id,
        sc.model_version,
        policy=Policy(window_events=500),
        source="SEA variant 0, labelled",
    )
    client, store = open_store(settings.redis, settings.monitor.group_id)
    await store.put_reference(sc.model_id, sc.model_version, ref.to_bytes())
    await client.aclose()
    acc = ref.outputs.accuracy or 0.0
    print(
        f"slow loop: reference {ref.reference_id} with labelled accuracy {acc:.3f} and a "
        f"score calibration; {events} predictions, labels ~3 s (300 events) later; "
        f"concept switch (SEA variant 0 -> 3) at prediction {events // 2}",
        file=write,
        flush=True,
    )
    await ensure_topics(
        settings,
        [
            settings.topics.predictions,
            settings.topics.labels,
            settings.topics.alerts,
            settings.topics.dlq(settings.topics.labels),
            settings.topics.dlq(settings.topics.predictions),
        ],
    )
    monitor = MonitorWorker(settings, name="demo-monitor")
    joiner = LabelJoiner(settings, name="demo-labels")
    await monitor.start()
    await joiner.start()
    tasks = [asyncio.create_task(monitor.run()), asyncio.create_task(joiner.run())]
    preds, labels = sc.events(events, concept_at=events // 2)
    printed = 0
    async with AsyncPredictionProducer(settings, linger_ms=20) as producer:
        for i, (kind, e) in enumerate(interleave(preds, labels)):
            send = producer.send if kind == "p" else producer.send_label
            while not send(e):
                await asyncio.sleep(0.01)
            if i % 1000 == 999:
                await asyncio.sleep(0.05)
                for a in joiner.alerts_after(printed):
                    print(f"  {format_alert(a)}", file=write)
                printed = joiner.alerts_published
        await producer.flush(30)
    deadline = time.monotonic() + 60
    while joiner.labels_seen < len(labels) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)
    monitor.stop()
    joiner.stop()
    await asyncio.gather(*tasks)
    for a in joiner.alerts_after(printed):
        print(f"  {format_alert(a)}", file=write)
    totals = joiner.totals()
    await monitor.close()
    await joiner.close()
    print(f"monitor alerts: {monitor.alerts_published} (inputs did not move)", file=write)
    print(await report_text(settings), file=write, flush=True)
    return {
        "alerts": list(joiner.recent_alerts),
        "totals": totals,
        "monitor_alerts": monitor.alerts_published,
    }
