"""Where episodes step: one episode per drift, and the alerts it publishes.

Input drift and output drift follow the stream's detector banks
(:func:`on_transitions`). A unit (feature or output) whose bank sends a channel away
fires the kind's episode if none is open (``firing``); a unit that starts drifting
while the episode is open is published as ``updated``; the episode stays open while
any of the kind's units is away and resolves only once every one has *returned*: the
banks' return test, whose boundary (half the smallest watched shift) keeps a drift that
persists from resolving and re-firing (``resolved``). Each alert ranks every unit that is
drifting by its effect (the mean of the drifting channel since it went away, in
reference sd of the channel; the detection's shift until enough events are measured).

Severity follows effect size and persistence: ``critical`` once a unit's effect is, at
99% confidence, at least ``critical_multiple`` times the smallest shift its bank
watches, or once the episode has been firing ``critical_after_events`` events; checked
at each transition and window close (deterministic points of the stream), and an
escalation is published as ``updated``. A resolved alert carries the episode's summary:
the peak effect (``statistic``), its unit, every unit that drifted (``top_features``,
by peak effect), the episode's span and events (``window``).

The multivariate detector (:mod:`~driftline.core.fastloop.multivariate`) is one more
unit of the ``input_drift`` episode, ``__multivariate__``: its firing opens the episode
when none is open (detector ``multivariate``, the crossing's statistic and threshold,
``top_features`` the features whose joint behaviour moved most), adds nothing to an
open one, and the episode resolves only once it has returned too. Since issue 13 the
banks' episodes have no cooldown (resolution follows the return), so a firing never
waits.

Data quality follows the window checks (:func:`step_episode`): it fires on a window
over its margins, stays firing at half of them (hysteresis), resolves after
``resolve_after_windows`` clean windows and cools down for ``cooldown_windows``
(:class:`driftline.core.episode.Episode`).

``alert_id = blake2b(model, version, segment, kind, episode, status[, update number])``:
deterministic, so a replay, whatever its batches, and a re-published outbox dedupe.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.contract.events import (
    AlertWindow,
    DriftAlert,
    FeatureContribution,
    make_alert_id,
)
from driftline.core.detectors.bank import CusumBank, Transition
from driftline.core.fastloop import multivariate
from driftline.core.fastloop.plan import Plan
from driftline.core.fastloop.result import BatchResult
from driftline.core.fastloop.state import DriftEpisode, ModelState
from driftline.core.fastloop.window_tests import WindowTest
from driftline.core.multivariate import Transition as JointTransition
from driftline.core.reference import ReferenceProfile

__all__ = [
    "BANK_KINDS",
    "DETECTOR",
    "at_window_close",
    "input_away",
    "on_transitions",
    "reconcile",
    "step_episode",
]

#: Alert kinds the detector banks drive.
BANK_KINDS = ("input_drift", "output_drift")
#: The ``detector`` of the banks' alerts.
DETECTOR = "cusum"
#: The multivariate detector's unit (of ``input_drift``) and its alerts' ``detector``.
JOINT = multivariate.FEATURE
JOINT_DETECTOR = "multivariate"
#: Below this many events since a channel went away, its effect is the detection's shift.
MIN_MEASURED = 50
#: One-sided 99% normal quantile (the severity's confidence bound).
Z99 = 2.326
#: ``top_features`` holds at most this many units (the alert schema's limit).
MAX_TOP = 50

#: A unit's effect: (|effect| in sd of the channel, the channel, its smallest shift, the
#: events it was measured on: 0 for the detection's shift).
Effect = tuple[float, str, float, int]


# ---------------------------------------------------------------------- bank episodes


def input_away(plan: Plan, bank: CusumBank | None) -> bool:
    """Whether some ``input_drift`` unit of the bank is away now."""
    if bank is None:
        return False
    groups = bank.away.nonzero()[0].tolist()
    return _input_groups(plan, [(g, 0, 0, 0) for g in groups])


def _input_groups(plan: Plan, groups: Sequence[tuple[int, int, int, int]]) -> bool:
    units = plan.bank_layout.group_unit
    return any(plan.bank_units[int(units[g])][1] == "input_drift" for g, *_ in groups)


def _after(states: list[tuple[int, bool]], position: int, before: bool) -> bool:
    """The state after event ``position``: that of the last change at or before it."""
    now = before
    for at, state in states:
        if at > position:
            break
        now = state
    return now


def on_transitions(
    st: ModelState,
    ref: ReferenceProfile,
    plan: Plan,
    found: Sequence[Transition],
    joint: Sequence[JointTransition],
    clock: NDArray[np.int64],
    a: int,
    events_before: int,
    count_before: int,
    input_before: bool,
    result: BatchResult,
) -> None:
    """The banks' and the multivariate detector's transitions in segment events ``a:``
    (positions from ``a``), in event order (the banks' first at one event).

    ``clock`` is the event clock at each of the segment's events
    (:mod:`~driftline.core.fastloop.clock`): a transition is dated at the clock of its
    event, not at the event's own time, so a late event's detection is not dated before
    events the stream already saw, nor a resolve before its firing. ``events_before``
    and ``count_before`` are the stream's and the open window's event counts before
    event ``a``; ``input_before`` whether an ``input_drift`` unit of the bank was away
    before it. The input-drift episode resolves only when, after the event, neither a
    bank unit nor the multivariate detector is away.
    """
    joint_before = (joint[0].kind != "fire") if joint else multivariate.holding(st)
    joint_after = [(t.position, t.kind != "resolve") for t in joint]
    bank_after = [(t.position, _input_groups(plan, t.away)) for t in found]
    order = sorted(
        [(t.position, 0, i) for i, t in enumerate(found)]
        + [(t.position, 1, i) for i, t in enumerate(joint)]
    )
    for pos, source, i in order:
        at_ms = int(clock[a + pos])
        events_at = events_before + pos + 1
        if source == 0:
            joint_away = _after(joint_after, pos, joint_before)
            _bank_transition(
                st,
                ref,
                plan,
                found[i],
                at_ms,
                events_at,
                events_before - count_before,
                joint_away,
                result,
            )
        else:
            bank_away = _after(bank_after, pos, input_before)
            _joint_transition(
                st,
                ref,
                joint[i],
                at_ms,
                events_at,
                events_before - count_before,
                bank_away,
                result,
            )


def _open(st: ModelState, ep: DriftEpisode, unit: str, at_ms: int, window_start: int) -> None:
    """Open ``ep`` at ``at_ms``; its evidence starts with the open window."""
    w = st.window
    ep.open()
    ep.feature, ep.severity, ep.updates, ep.features = unit, "warning", 0, {}
    ep.start_ms = min(w.start_ms, at_ms) if w.start_ms >= 0 else at_ms
    ep.start_event = window_start


def _bank_transition(
    st: ModelState,
    ref: ReferenceProfile,
    plan: Plan,
    t: Transition,
    at_ms: int,
    events_at: int,
    window_start: int,
    joint_away: bool,
    result: BatchResult,
) -> None:
    bank = st.bank
    assert bank is not None
    unit, kind = plan.bank_units[t.unit]
    ep = st.episode(kind)
    away, raw = _away_effects(plan, bank, t, kind, ep if ep.firing else None)
    if t.kind in ("return", "resolve"):
        n, total = t.measured
        if n >= MIN_MEASURED:
            # what the unit read as with the returning channel's last measurement
            back = (t.group, n, total, t.direction)
            mine = [x for x in t.away if int(plan.bank_layout.group_unit[x[0]]) == t.unit]
            _peak(ep, unit, _unit_reading(plan, bank, t.unit, [*mine, back], None, ep, ()))
    if t.kind == "fire" and not ep.firing:
        _open(st, ep, unit, at_ms, window_start)
        _note(ep, away)
        _escalate(ep, ref, raw, events_at)
        _publish(st, ref, kind, "firing", ep, unit, away, at_ms, events_at, result)
    elif t.kind == "fire":  # another unit starts drifting during the open episode
        _note(ep, away)
        _escalate(ep, ref, raw, events_at)
        ep.updates += 1
        _publish(st, ref, kind, "updated", ep, unit, away, at_ms, events_at, result)
    elif t.kind == "update":
        _note(ep, away)
    elif t.kind == "resolve" and ep.firing and not away:
        if not (kind == "input_drift" and joint_away):
            _resolve(st, ref, kind, ep, at_ms, events_at, result)


def _joint_transition(
    st: ModelState,
    ref: ReferenceProfile,
    t: JointTransition,
    at_ms: int,
    events_at: int,
    window_start: int,
    bank_away: bool,
    result: BatchResult,
) -> None:
    """The multivariate detector's transition: its unit of the input-drift episode."""
    ep = st.episode("input_drift")
    if t.kind == "fire" and not ep.firing:
        top = multivariate.top_features(t.attribution)
        _open(st, ep, top[0][0] if top else JOINT, at_ms, window_start)
        level = t.statistic / t.threshold if t.threshold > 0 else 0.0
        ep.features[JOINT] = [round(level, 6), "cusum_level", 1.0]
        alert = _drift_alert(
            st,
            ref,
            "input_drift",
            "firing",
            ep,
            alert_id=_alert_id(st, "input_drift", ep, "firing"),
            feature=ep.feature,
            detector=JOINT_DETECTOR,
            measured=(round(t.statistic, 6), round(t.threshold, 6), None),
            span=(ep.start_ms, at_ms, max(0, events_at - ep.start_event)),
            top=[
                FeatureContribution(feature=f, score=score, contribution=share, statistic=stat)
                for f, score, share, stat in top
            ],
        )
        result.alerts.append(alert)
    elif t.kind == "resolve" and ep.firing and not bank_away:
        _resolve(st, ref, "input_drift", ep, at_ms, events_at, result)


def at_window_close(st: ModelState, ref: ReferenceProfile, plan: Plan, result: BatchResult) -> None:
    """A window closed (a deterministic point of the stream; the banks' state is exact
    here): note each drifting unit's effect, escalate to ``critical`` if due."""
    bank = st.bank
    if bank is None:
        return
    for kind in BANK_KINDS:
        ep = st.episodes.get(kind)
        if ep is None or not ep.firing:
            continue
        away, raw = _away_effects(plan, bank, None, kind, ep)
        _note(ep, away)
        if ep.severity != "critical" and _escalate(ep, ref, raw, st.events):
            ep.updates += 1
            top = max(away, key=lambda u: (away[u][0], u)) if away else ep.feature or ""
            at_ms = _clock_at_close(st)
            _publish(st, ref, kind, "updated", ep, top, away, at_ms, st.events, result)


def _clock_at_close(st: ModelState) -> int:
    """The event clock as the open window closes: the stream's newest time (a count
    window's newest event may be older than an earlier window's), or the window's newest
    placed time while every event was future-dated."""
    return max(st.window.end_ms, st.max_event_ms)


def reconcile(
    st: ModelState, ref: ReferenceProfile, plan: Plan, at_ms: int, result: BatchResult
) -> None:
    """Resolve an episode left firing with none of its units away: the detectors
    restarted under it (a new reference, or a state from before the banks)."""
    for kind in BANK_KINDS:
        ep = st.episodes.get(kind)
        if ep is None or not ep.firing:
            continue
        bank = st.bank
        if kind == "input_drift" and multivariate.holding(st):
            continue
        if bank is None or not _away_effects(plan, bank, None, kind)[1]:
            _resolve(st, ref, kind, ep, at_ms, st.events, result)


def _resolve(
    st: ModelState,
    ref: ReferenceProfile,
    kind: str,
    ep: DriftEpisode,
    at_ms: int,
    events_at: int,
    result: BatchResult,
) -> None:
    ep.firing = False
    summary = {u: (float(v[0]), str(v[1]), float(v[2]), 0) for u, v in ep.features.items()}
    top = max(summary, key=lambda u: (summary[u][0], u)) if summary else ep.feature or ""
    _publish(st, ref, kind, "resolved", ep, top, summary, at_ms, events_at, result)


def _abs_effect(bank: CusumBank, g: int, n: int, total: int) -> float:
    return abs(bank.effect(g, n, total))


def _channel(plan: Plan, g: int) -> tuple[str, float]:
    return plan.bank_layout.group_name[g], plan.group_min_shift[g]


def _away_effects(
    plan: Plan, bank: CusumBank, t: Transition | None, kind: str, ep: DriftEpisode | None = None
) -> tuple[dict[str, Effect], dict[str, Effect]]:
    """The units of ``kind`` away (after transition ``t``, or now) and their effects.

    Returns ``(read, raw)``. ``raw``: per unit its largest channel effect; until
    measured, the detection's shift (the crossing row's, or what the episode noted for
    the unit): what severity is decided on. ``read``: per unit what its alert says
    (:func:`_unit_reading`): which channel moved, its direction and effect.
    """
    lay = plan.bank_layout
    if t is not None:
        groups = t.away
    else:
        groups = tuple(
            (g, int(bank.away_n[g]), int(bank.away_sum[g]), int(bank.away[g]))
            for g in bank.away.nonzero()[0].tolist()
        )
    raw: dict[str, Effect] = {}
    mine: dict[int, list[tuple[int, int, int, int]]] = {}
    for g, n, total, direction in groups:
        u = int(lay.group_unit[g])
        unit, unit_kind = plan.bank_units[u]
        if unit_kind != kind:
            continue
        mine.setdefault(u, []).append((g, n, total, direction))
        size = _size(plan, bank, t, g, n, total, ep, unit)
        name, least = _channel(plan, g)
        measured = n >= MIN_MEASURED
        if unit not in raw or size > raw[unit][0]:
            raw[unit] = (size, name, least, n if measured else 0)
    read = {
        plan.bank_units[u][0]: _unit_reading(plan, bank, u, seen, t, ep, _evidence(bank, t, u))
        for u, seen in mine.items()
    }
    return read, raw


def _evidence(bank: CusumBank, t: Transition | None, u: int) -> tuple[tuple[int, int, float], ...]:
    """Unit ``u``'s groups at reference and their levels: at transition ``t``'s event
    when it is ``u``'s detection, now when ``t`` is None (a window close: the bank's
    state is exact), else unknown."""
    if t is None:
        return bank.evidence(u)
    return t.evidence if t.unit == u else ()


def _size(
    plan: Plan,
    bank: CusumBank,
    t: Transition | None,
    g: int,
    n: int,
    total: int,
    ep: DriftEpisode | None,
    unit: str,
) -> float:
    """A channel's |effect|; until measured, the detection's shift (the crossing row's,
    or what the episode noted for the unit, or the channel's smallest shift)."""
    if n >= MIN_MEASURED:
        return _abs_effect(bank, g, n, total)
    if t is not None and g == t.group:
        return abs(t.shift)
    if ep is not None and unit in ep.features:
        return float(ep.features[unit][0])
    return plan.group_min_shift[g]


#: A numeric unit's fresh rise of ``z**2`` reads as possibly its mean while its mean
#: rows hold at least this share of their threshold (module :func:`_unit_reading`).
MEAN_EVIDENCE = 0.5


def _unit_reading(
    plan: Plan,
    bank: CusumBank,
    u: int,
    seen: Sequence[tuple[int, int, int, int]],
    t: Transition | None,
    ep: DriftEpisode | None,
    evidence: Sequence[tuple[int, int, float]],
) -> Effect:
    """What an alert says about unit ``u``, from its groups away ``seen`` (``(group,
    events, sum, direction)``): the statistic (``mean up``, ``spread down``,
    ``share:eu up``, ...) and the effect of the channel it names.

    A numeric unit watches ``z`` (``mean``) and ``z**2`` (``spread``). A mean shift of
    ``d`` sd alone raises ``z**2`` by ``d**2`` (``E[z**2] = 1 + d**2``), so its spread
    rows can cross first; read literally, a mean shift said "spread". So:

    * ``z**2`` fell: ``spread down`` (no mean shift lowers it);
    * ``z**2`` rose, the mean channel away too: when both are measured, the rise the
      measured mean explains, ``((m0 + e sd)**2 - m0**2) / sd2``, is taken off the
      spread's effect; what is left under the spread's smallest watched shift reads
      ``mean`` alone, else both (``mean up, spread up``); a mean effect within 99%
      noise of the measured variance (a wider spread can make the mean rows cross)
      reads ``spread``. Until both are measured: ``mean`` (the simpler account);
    * ``z**2`` rose, the mean channel at reference: until the spread is measured,
      ``mean up or spread up`` (the mean rows' direction) while a mean row holds at
      least :data:`MEAN_EVIDENCE` of its threshold (at the crossing for a fresh
      detection, at a window close now; a pure
      mean shift large enough to cross the spread first left them at 0.52-1.0 in
      simulation, a pure scale change at 0-0.95), else what the episode noted for the
      unit if it read as its mean (the spread's stretch still holds that shift), else
      ``spread up``.

    Other units: their channel's name, a share with its direction (``share:eu down``),
    a rate as it is.
    """
    lay = plan.bank_layout
    by_name: dict[str, tuple[int, int, int, int]] = {lay.group_name[x[0]]: x for x in seen}
    unit = plan.bank_units[u][0]

    def effect(x: tuple[int, int, int, int], name: str | None = None) -> Effect:
        g, n, total, direction = x
        own, least = _channel(plan, g)
        size = _size(plan, bank, t, g, n, total, ep, unit)
        return size, name or own, least, n if n >= MIN_MEASURED else 0

    if lay.plans[u].kind != "numeric":
        best = max(seen, key=lambda x: (effect(x)[0], -x[0]))
        own = _channel(plan, best[0])[0]
        # A share says which way it moved: "share:basic" read as more of it when a new
        # category took its place, and of two classes either share can be named.
        return effect(best, f"{own} {_way(best[3])}" if own.startswith("share:") else None)
    mean, spread = by_name.get("mean"), by_name.get("spread")
    if spread is None:
        assert mean is not None
        return effect(mean, f"mean {_way(mean[3])}")
    if mean is None and spread[3] < 0:
        return effect(spread, "spread down")
    if mean is not None:
        said = f"mean {_way(mean[3])}"
        if spread[3] < 0:
            return effect(mean, f"{said}, spread down")
        if mean[1] < MIN_MEASURED or spread[1] < MIN_MEASURED:
            return effect(mean, said)
        gm, gs = mean[0], spread[0]
        m0, sd1 = lay.group_mean[gm], lay.group_sd[gm]
        q0, sd2 = lay.group_mean[gs], lay.group_sd[gs]
        spread_effect = bank.effect(gs, spread[1], spread[2])
        now = m0 + bank.effect(gm, mean[1], mean[2]) * sd1
        q = q0 + spread_effect * sd2
        if abs(now - m0) < Z99 * math.sqrt(max(q - now * now, 0.0) / mean[1]):
            return effect(spread, "spread up")
        left = spread_effect - (now * now - m0 * m0) / sd2
        if left < plan.group_min_shift[gs]:
            return effect(mean, said)
        return effect(mean, f"{said}, spread up")
    lean = [(level, d) for g, d, level in evidence if lay.group_name[g] == "mean"]
    if spread[1] < MIN_MEASURED and lean and max(lean)[0] >= MEAN_EVIDENCE:
        return effect(spread, f"mean {_way(max(lean)[1])} or spread up")
    noted = ep.features.get(unit) if ep is not None else None
    if noted is not None and str(noted[1]).startswith("mean"):
        # read as the mean while both were away: the spread's stretch still holds it
        return float(noted[0]), str(noted[1]), float(noted[2]), 0
    return effect(spread, "spread up")


def _way(direction: int) -> str:
    return "up" if direction > 0 else "down"


def _peak(ep: DriftEpisode, unit: str, eff: Effect) -> None:
    cur = ep.features.get(unit)
    if cur is None or eff[0] > cur[0]:
        ep.features[unit] = [round(eff[0], 6), eff[1], eff[2]]


def _note(ep: DriftEpisode, away: dict[str, Effect]) -> None:
    for unit, eff in away.items():
        _peak(ep, unit, eff)


def _escalate(
    ep: DriftEpisode, ref: ReferenceProfile, away: dict[str, Effect], events_at: int
) -> bool:
    """Make the episode critical if due (module notes); whether it just became so.

    An effect is a mean of ``n`` standardised values: its standard error is about
    ``1 / sqrt(n)``, so ``size - Z99 / sqrt(n)`` is its 99% lower bound.
    """
    if ep.severity == "critical":
        return False
    pol = ref.policy
    persistent = events_at - ep.start_event >= pol.critical_after_events
    large = any(
        n > 0 and least > 0 and size - Z99 / n**0.5 >= pol.critical_multiple * least
        for size, _, least, n in away.values()
    )
    if persistent or large:
        ep.severity = "critical"
        return True
    return False


# ---------------------------------------------------------------------- the alerts


def _publish(
    st: ModelState,
    ref: ReferenceProfile,
    kind: str,
    status: str,
    ep: DriftEpisode,
    unit: str,
    units: dict[str, Effect],
    at_ms: int,
    events_at: int,
    result: BatchResult,
) -> None:
    ranked = sorted(units.items(), key=lambda kv: (-kv[1][0], kv[0]))[:MAX_TOP]
    total = sum(e[0] for _, e in ranked) or 1.0
    top = [
        FeatureContribution(
            feature=u,
            score=round(e[0], 6),
            contribution=round(e[0] / total, 6),
            statistic=e[1][:128],
        )
        for u, e in ranked
    ]
    own = units.get(unit) or (0.0, "", 0.0, 0)
    start = ep.start_ms if 0 <= ep.start_ms <= at_ms else at_ms
    alert = _drift_alert(
        st,
        ref,
        kind,
        status,
        ep,
        alert_id=_alert_id(st, kind, ep, status, *((ep.updates,) if status == "updated" else ())),
        feature=unit or None,
        detector=JOINT_DETECTOR if unit == JOINT else DETECTOR,
        measured=(round(own[0], 6), round(own[2], 6), None),
        span=(start, at_ms, max(0, events_at - ep.start_event)),
        top=top,
    )
    result.alerts.append(alert)


def _alert_id(st: ModelState, kind: str, ep: DriftEpisode, status: str, *more: object) -> str:
    """Deterministic: the stream, kind, episode, status, ``more`` (an update's number),
    then the state's ``origin`` (absent in states older than it: their ids keep the
    earlier form)."""
    key = st.key
    origin = (st.origin,) if st.origin else ()
    return make_alert_id(
        key.model_id, key.model_version, key.segment, kind, ep.number, status, *more, *origin
    )


def _drift_alert(
    st: ModelState,
    ref: ReferenceProfile,
    kind: str,
    status: str,
    ep: DriftEpisode,
    *,
    alert_id: str,
    feature: str | None,
    detector: str,
    measured: tuple[float, float, float | None],
    span: tuple[int, int, int],
    top: list[FeatureContribution],
    detected_at: int | None = None,
) -> DriftAlert:
    """The alert of ``st``'s ``kind`` episode: ``measured`` is (statistic, threshold,
    p-value), ``span`` the window's (start, end, events), ``detected_at`` the detection
    time (None: the window's end)."""
    key = st.key
    start, end, count = span
    at_ms = end if detected_at is None else detected_at
    return DriftAlert(
        alert_id=alert_id,
        model_id=key.model_id,
        model_version=key.model_version,
        segment=key.segment_dict(),
        kind=kind,
        status=status,
        severity=ep.severity,
        feature=feature,
        detector=detector,
        statistic=measured[0],
        threshold=measured[1],
        p_value=measured[2],
        window=AlertWindow(start=max(0, start), end=max(0, end), count=count),
        reference=ref.reference_id,
        detected_at=max(0, at_ms),
        episode=ep.number,
        diagnosis=_diagnosis(kind),
        top_features=top,
    )


# ---------------------------------------------------------------------- data quality


def step_episode(
    st: ModelState,
    ref: ReferenceProfile,
    kind: str,
    drifted: list[WindowTest],
    result: BatchResult,
    detector: str,
) -> None:
    """A window of ``st`` closed: fire, keep, resolve or cool down ``kind``'s episode
    (data quality), ``drifted`` being the window's tests over their margins."""
    ep = st.episode(kind)
    pol = ref.policy
    status = ep.close_window(
        bool(drifted),
        False,
        resolve_after=pol.resolve_after_windows,
        cooldown=pol.cooldown_windows,
    )
    if status is None:
        return
    if status == "firing":
        ep.severity = _severity(kind, drifted)
        ep.feature = sorted(drifted, key=lambda t: (-t.effect, t.feature))[0].feature
    result.alerts.append(_alert(st, ref, kind, status, ep, detector, drifted))


def _severity(kind: str, drifted: Sequence[WindowTest]) -> str:
    if kind == "data_quality":
        return "critical" if any(t.effect >= 0.5 for t in drifted) else "warning"
    top = max((t.effect for t in drifted), default=0.0)
    return "critical" if top >= 0.25 or len(drifted) >= 3 else "warning"


def _top_features(drifted: Sequence[WindowTest]) -> list[FeatureContribution]:
    ranked = sorted(drifted, key=lambda t: (-t.effect, t.feature))[:20]
    total = sum(max(t.effect, 0.0) for t in ranked) or 1.0
    return [
        FeatureContribution(
            feature=t.feature,
            score=round(t.effect, 6),
            contribution=round(max(t.effect, 0.0) / total, 6),
            statistic=t.statistic,
        )
        for t in ranked
    ]


def _alert(
    st: ModelState,
    ref: ReferenceProfile,
    kind: str,
    status: str,
    ep: DriftEpisode,
    detector: str,
    drifted: Sequence[WindowTest],
) -> DriftAlert:
    """The alert of the window that just closed: its span, detected at the event clock."""
    top = sorted(drifted, key=lambda t: (-t.effect, t.feature))
    first = top[0] if top else None
    w = st.window
    start = w.start_ms if w.start_ms >= 0 else w.end_ms
    p_value = min(1.0, max(0.0, first.p_value)) if first and first.statistic == "psi" else None
    return _drift_alert(
        st,
        ref,
        kind,
        status,
        ep,
        alert_id=_alert_id(st, kind, ep, status),
        feature=first.feature if first else ep.feature,
        detector=detector,
        measured=(
            round(first.effect, 6) if first else 0.0,
            round(first.threshold, 6) if first else 0.0,
            p_value,
        ),
        span=(start, w.end_ms, w.count),
        top=_top_features(drifted),
        detected_at=_clock_at_close(st),
    )


def _diagnosis(kind: str) -> Any:
    # The fast loop alone cannot tell benign from harmful input drift; the slow loop
    # (labels) refines this. Until then input drift is "undetermined".
    return {"output_drift": "output_drift", "data_quality": "data_quality"}.get(
        kind, "undetermined"
    )
