"""Demo traffic for the docker-compose stack (`docker compose --profile demo up`).

Stores a reference for the simulated model "churn" version "1", then publishes its
predictions forever at a steady rate through the producer SDK, with a drift phase
(feature f03 shifted, category "plan" gaining "enterprise") every few minutes, so the
alerts, the dashboard and the paging path have something to show. Labels are sent
too (the true outcome, a little noisier during drift), for the label joiner.

Configuration: the usual DRIFTLINE_* variables, plus DEMO_RATE (events/s, default 200),
DEMO_PHASE_SECONDS (length of a calm or a drift phase, default 300).
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import redis.asyncio as aioredis

from driftline import load_settings
from driftline.core.reference import Policy, build_reference
from driftline.demo.simulate import Shift, SimulatedModel
from driftline.producer import AsyncPredictionProducer
from driftline.runtime.store import StateStore


async def store_reference(sim: SimulatedModel) -> None:
    settings = load_settings()
    ref = build_reference(
        sim.training_data(20_000),
        sim.model_id,
        sim.model_version,
        policy=Policy(window_events=500),
        source="demo: simulated training data",
    )
    client = aioredis.Redis.from_url(settings.redis.url, **settings.redis.client_kwargs())
    store = StateStore(
        client,
        prefix=settings.redis.key_prefix,
        group=settings.monitor.group_id,
        signing_key=settings.redis.signing_key(),
    )
    try:
        await store.put_reference(sim.model_id, sim.model_version, ref.to_bytes())
    finally:
        await client.aclose()
    print(f"stored reference {ref.reference_id}", flush=True)


async def run() -> None:
    rate = float(os.environ.get("DEMO_RATE", "200"))
    phase_s = float(os.environ.get("DEMO_PHASE_SECONDS", "300"))
    sim = SimulatedModel(seed=int(time.time()))
    await store_reference(sim)
    rnd = random.Random(7)
    index = 0
    started = time.monotonic()
    async with AsyncPredictionProducer(load_settings(), linger_ms=20) as producer:
        while True:
            drifting = int((time.monotonic() - started) // phase_s) % 2 == 1
            shift = (
                Shift(start=0, sigmas=1.5, cat_feature="plan", category="enterprise", share=0.3)
                if drifting
                else None
            )
            batch = max(1, int(rate // 10))
            now_ms = int(time.time() * 1000)
            for e in sim.events(batch, start=index, shift=shift):
                e["timestamp"] = now_ms
                producer.send(e)
                if rnd.random() < 0.5:  # half of the predictions get a label
                    correct = rnd.random() < (0.7 if drifting else 0.9)
                    label = e["prediction"] if correct else "churn"
                    producer.send_label(
                        {
                            "prediction_id": e["prediction_id"],
                            "model_id": e["model_id"],
                            "label": label,
                            "timestamp": now_ms,
                        }
                    )
            index += batch
            await asyncio.sleep(0.1)


if __name__ == "__main__":
    asyncio.run(run())
