"""The slow loop's text report (``driftline labels --report``): performance per model,
champion vs challengers, label outcome totals, read from the joiner's stored state."""

from __future__ import annotations

import orjson

from driftline.config import Settings
from driftline.core.slowloop import PerfState, UnitState, build_report, format_report
from driftline.runtime.store import open_store

__all__ = ["load_perf_states", "report_text"]


async def load_perf_states(
    settings: Settings, held: dict[str, int] | None = None
) -> tuple[list[PerfState], dict[str, dict[str, int]]]:
    """Every stored performance state and the label outcome totals per model; ``held``,
    if given, receives the number of labels held for their prediction per model.

    Read-only (:meth:`StateStore.peek`): a running joiner is not fenced. From Redis
    alone (:meth:`StateStore.stored_partitions`): the report works with the broker down.
    """
    client, store = open_store(settings.redis, settings.labels.group_id)
    states: list[PerfState] = []
    totals: dict[str, dict[str, int]] = {}
    try:
        for p in await store.stored_partitions(settings.topics.labels):
            got = await store.peek(settings.topics.labels, p)
            if got is None:
                continue
            unit = UnitState.from_fields(got[1])
            states.extend(unit.perf.values())
            for mj in unit.models.values():
                t = totals.setdefault(mj.model_id, {})
                for k, v in mj.labels.items():
                    t[k] = t.get(k, 0) + v
            if held is not None:
                for h in unit.held:
                    held[h.model_id] = held.get(h.model_id, 0) + 1
    finally:
        await client.aclose()
    return states, totals


async def report_text(
    settings: Settings,
    model: str | None = None,
    champion: str | None = None,
    as_json: bool = False,
) -> str:
    """The ``driftline labels --report`` view: performance, champion vs challengers."""
    held: dict[str, int] = {}
    states, totals = await load_perf_states(settings, held)
    rep = build_report(states, model=model, champion=champion)
    for mid, entry in rep.items():
        entry["labels"] = totals.get(mid, {})
    if as_json:
        return orjson.dumps(rep, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    lines = [format_report(rep)]
    for mid in sorted(totals.keys() | held.keys()):
        if model is None or mid == model:
            t = {**totals.get(mid, {}), **({"held": held[mid]} if mid in held else {})}
            said = ", ".join(f"{k}={v}" for k, v in sorted(t.items()))
            if mid in held and mid not in rep:
                # Held until the model's prediction clock passes them: a model that never
                # predicts never does (a label pipeline's model_id no server sends).
                said += (
                    f" (no prediction of model {mid!r} seen: they wait for one; check the"
                    " model_id the label pipeline sends against the model servers' one)"
                )
            lines.append(f"labels {mid}: {said or 'none yet'}")
    return "\n".join(x for x in lines if x)
