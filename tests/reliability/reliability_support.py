"""Shared data of the fault-injection suite: the stream, its references, the oracle.

(Not in conftest.py: a test module importing ``conftest`` by name would get whichever
conftest was imported first in a full run.)
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from typing import Any

from driftline.config import Settings
from driftline.core.reference import ReferenceProfile, build_reference
from driftline.demo.simulate import Shift, SimulatedModel
from driftline.offline.replay import Replayer

#: Events in the shared stream: two models, so both partitions carry traffic.
CHURN_EVENTS = 8_000
FRAUD_EVENTS = 4_000


@dataclass
class Stream:
    """A published topic, its events in publish order and the clean replay of them."""

    topic: str
    events: list[dict[str, Any]]
    references: list[ReferenceProfile]
    replay: Replayer


def references() -> list[ReferenceProfile]:
    """The two models' references (deterministic; a new list of the same profiles)."""
    return list(_built_references())


@functools.cache
def _built_references() -> tuple[ReferenceProfile, ReferenceProfile]:
    """Built once per test process (about 5 s of CPU each time, called by 16 tests);
    the profiles are frozen and the tests only store and replay them."""
    churn = build_reference(
        SimulatedModel(seed=3).training_data(20_000), "churn", "1", seed=0, created_at=0
    )
    fraud_model = SimulatedModel(seed=4, model_id="fraud", model_version="7")
    fraud = build_reference(fraud_model.training_data(20_000), "fraud", "7", seed=0, created_at=0)
    return churn, fraud


def stream_events() -> list[dict[str, Any]]:
    """churn drifts (f03 shifts) a third of the way in; fraud stays quiet."""
    churn = list(SimulatedModel(seed=41).events(CHURN_EVENTS, shift=Shift(start=2_500, sigmas=1.0)))
    fraud = list(SimulatedModel(seed=42, model_id="fraud", model_version="7").events(FRAUD_EVENTS))
    return churn + fraud


def clean_replay(refs: list[ReferenceProfile], events: list[dict[str, Any]]) -> Replayer:
    """The oracle: one pass of the pure core over ``events``."""
    replay = Replayer({(r.model_id, r.model_version): r for r in refs})
    replay.feed(events)
    return replay


def settings_for(
    bootstrap: str, redis_url: str, topic: str | None = None, **redis: Any
) -> Settings:
    """Settings with a fresh group, key prefix and alert topic (and ``topic`` if given)."""
    u = uuid.uuid4().hex[:10]
    return Settings(
        kafka={"bootstrap_servers": bootstrap},
        redis={"url": redis_url, "key_prefix": f"r{u}", **redis},
        topics={"predictions": topic or f"predictions-{u}", "alerts": f"alerts-{u}"},
        monitor={"group_id": f"rel-{u}", "max_batch_events": 500, "session_timeout_ms": 6_000},
        metrics_port=0,
    )
