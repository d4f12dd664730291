"""What a batch needs from Redis before the join: :func:`plan_lookups`.

A prediction is probed in its own generation (an earlier copy makes it a duplicate); a
label in every stored generation of its model that may hold its prediction, newest
first. :class:`MemoryRecords` answers a plan with Redis's semantics from a dict (tests,
replays, benchmarks).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftline.config import LabelsSettings
from driftline.contract.columnar import ColumnarBatch
from driftline.core.slowloop.columns import batch_times
from driftline.core.slowloop.pending import (
    FUTURE_TOLERANCE_MS,
    TOMBSTONE,
    Horizons,
    batch_digests,
    bucket_of,
    event_ms,
    prediction_digests,
    record_key,
)
from driftline.core.slowloop.perf_state import ModelJoin, UnitState
from driftline.core.slowloop.results import JoinResult

__all__ = [
    "Found",
    "LookupPlan",
    "MemoryRecords",
    "plan_label_lookups",
    "plan_lookups",
    "plan_prediction_lookups",
]


@dataclass
class LookupPlan:
    """The pending predictions a batch needs from Redis.

    ``keys`` are record key names (relative to the partition, see :func:`record_key`);
    each probe is ``(digest, key indices)``, probed in order until found.
    """

    keys: list[str] = field(default_factory=list)
    probes: list[tuple[bytes, tuple[int, ...]]] = field(default_factory=list)
    pred_probe: list[int] = field(default_factory=list)
    label_probe: list[int] = field(default_factory=list)
    #: Digest of each prediction / label of the batch (computed once, here).
    pred_digest: list[bytes] = field(default_factory=list)
    label_digest: list[bytes] = field(default_factory=list)
    _kix: dict[str, int] = field(default_factory=dict, repr=False)
    # Key index of each (model, generation, bucket), so a name is built once a batch.
    _at: dict[tuple[str, int, int], int] = field(default_factory=dict, repr=False)
    # The text each prediction digest hashes -> the digest (a label whose prediction is
    # in the batch reuses it).
    _known: dict[str, bytes] = field(default_factory=dict, repr=False)

    def key_index(self, name: str) -> int:
        """Index of ``name`` in :attr:`keys` (added when new)."""
        i = self._kix.get(name)
        if i is None:
            i = self._kix[name] = len(self.keys)
            self.keys.append(name)
        return i

    def key_of(self, model: str, gen: int, bucket: int) -> int:
        """Index in :attr:`keys` of one generation bucket's record key (added when new)."""
        i = self._at.get((model, gen, bucket))
        if i is None:
            i = self._at[(model, gen, bucket)] = self.key_index(record_key(model, gen, bucket))
        return i

    def label_split(self) -> int:
        """How many probes, from the first, hold every prediction's probe (those after
        are labels' only: :func:`plan_lookups` adds the predictions' first)."""
        return max(self.pred_probe, default=-1) + 1

    def label_probes(self) -> tuple[list[int], list[int]]:
        """The labels' probes in two lists, each in order: those of labels whose
        prediction is not one of this batch's, then those whose prediction is. A label
        of the second kind reads Redis's answer only when the batch did not store its
        prediction (a duplicate, too old, invalid): which of them are still read is
        known once the predictions' half ran (:func:`~.join.label_probes_to_ask`)."""
        batch = set(self.pred_digest)
        elsewhere: list[int] = []
        here: list[int] = []
        for pi, d in zip(self.label_probe, self.label_digest, strict=True):
            if pi >= 0:
                (here if d in batch else elsewhere).append(pi)
        return elsewhere, here


#: Result of one probe: (index into plan.keys where found, stored value), or None.
Found = tuple[int, bytes] | None


def plan_lookups(
    predictions: Sequence[Mapping[str, Any]],
    labels: Sequence[Mapping[str, Any]],
    unit: UnitState,
    settings: LabelsSettings,
) -> LookupPlan:
    """What to read from Redis before :func:`join_batch`. Pure; reads ``unit`` only.

    ``predictions`` are events and columnar batches (a batch's rows are predictions
    of the plan's one each, in order), ``labels`` label events.

    A prediction is probed in its own generation (to find an earlier copy); a label in
    every stored generation of its model that may hold its prediction. The two halves
    are :func:`plan_prediction_lookups` and :func:`plan_label_lookups` (the shell asks
    Redis for the first's probes while it plans the second).
    """
    plan = plan_prediction_lookups(predictions, unit, settings)
    plan_label_lookups(plan, labels, unit, settings)
    return plan


def plan_prediction_lookups(
    predictions: Sequence[Mapping[str, Any]], unit: UnitState, settings: LabelsSettings
) -> LookupPlan:
    """The first half of :func:`plan_lookups`: the predictions' probes, each in its own
    generation. Pure; reads ``unit`` only."""
    c = Horizons(settings)
    plan = LookupPlan()
    probes = plan.probes
    models = unit.models
    key_of = plan.key_of
    plan.pred_digest = _digests(predictions, plan._known)
    pred_probe = plan.pred_probe
    row = 0
    for e in predictions:
        if type(e) is ColumnarBatch:
            # a batch's rows: one model, their times from the column
            model, n = e.model_id, e.count
            ds = plan.pred_digest[row : row + n]
            row += n
            mj = models.get(model)
            if mj is None:
                pred_probe += [-1] * n
                continue
            row_gen = np.asarray(batch_times(e), dtype=np.int64) // c.gen_ms(model)
            have = [g for g in dict.fromkeys(row_gen.tolist()) if g in mj.gens]
            if not have:
                pred_probe += [-1] * n
                continue
            # The rows in a stored generation, and each one's key: a key's index taken in
            # order of first use, as row by row takes it.
            rows = np.flatnonzero(np.isin(row_gen, have))
            hashes = np.frombuffer(b"".join(ds), dtype="<u4").reshape(n, -1)[rows, 0]
            hashes = hashes.astype(np.int64)
            row_gen = row_gen[rows]
            slot = np.zeros(len(rows), dtype=np.int64)
            for k, g in enumerate(have):
                at = row_gen == g
                slot[at] = (k << 32) | (hashes[at] % mj.gens[g][0])
            uniq, first, inv = np.unique(slot, return_index=True, return_inverse=True)
            kidx = [0] * len(uniq)
            for j in np.argsort(first, kind="stable").tolist():
                u = int(uniq[j])
                kidx[j] = key_of(model, have[u >> 32], u & 0xFFFFFFFF)
            at_probe = np.full(n, -1, dtype=np.int64)
            at_probe[rows] = np.arange(len(probes), len(probes) + len(rows))
            picked = rows.tolist()
            keys = [kidx[j] for j in inv.tolist()]
            probes += zip([ds[i] for i in picked], zip(keys), strict=True)
            pred_probe += at_probe.tolist()
            continue
        d = plan.pred_digest[row]
        row += 1
        model = e["model_id"]
        mj = models.get(model)
        if mj is not None:
            gen = event_ms(e) // c.gen_ms(model)
            info = mj.gens.get(gen)
            if info is not None:
                probes.append((d, (key_of(model, gen, bucket_of(d, info[0])),)))
                pred_probe.append(len(probes) - 1)
                continue
        pred_probe.append(-1)
    return plan


def plan_label_lookups(
    plan: LookupPlan,
    labels: Sequence[Mapping[str, Any]],
    unit: UnitState,
    settings: LabelsSettings,
) -> None:
    """The second half of :func:`plan_lookups`: the labels' probes added to ``plan``
    (:func:`plan_prediction_lookups` of the same batch and state), each in every stored
    generation of its model that may hold its prediction, newest first. Pure but for
    ``plan``; reads ``unit`` only."""
    c = Horizons(settings)
    probes = plan.probes
    models = unit.models
    key_of = plan.key_of
    plan.label_digest = prediction_digests(labels, plan._known)
    # (model, first, last generation) -> the generations a label may be in, newest
    # first, with their hash buckets, and a period of the hash buckets (a common
    # multiple of their counts: a digest's bucket in each is that of its hash modulo
    # the period), and the key indices probed for each hash modulo the period.
    cands: dict[tuple[str, int, int], tuple[list[tuple[int, int]], int, dict[int, Any]]] = {}
    # model -> (its state, generation width, how far before a label its prediction may be)
    spans: dict[str, tuple[ModelJoin, int, int] | None] = {}
    label_probe = plan.label_probe
    add_probe, add_label = probes.append, label_probe.append
    n_probes = len(probes)
    last: tuple[str, int, int] | None = None  # the previous label's (model, lo, hi)
    got: tuple[list[tuple[int, int]], int, dict[int, Any]] = ([], 1, {})
    for lab, d in zip(labels, plan.label_digest, strict=True):
        model = lab["model_id"]
        span = spans.get(model)
        if span is None and model not in spans:
            mj = models.get(model)
            if mj is None:
                span = spans[model] = None
            else:
                g = c.gen_ms(model)
                span = spans[model] = (mj, g, c.horizon_ms(model) + 2 * g)
        if span is not None:
            mj, g, back = span
            t = lab["timestamp"]
            if type(t) is not int:
                t = event_ms(lab)
            at = (model, (t - back) // g, (t + FUTURE_TOLERANCE_MS) // g)
            if at != last:
                last = at
                got_at = cands.get(at)
                if got_at is None:
                    _, lo, hi = at
                    gens = [
                        (x, mj.gens[x][0]) for x in sorted(mj.gens, reverse=True) if lo <= x <= hi
                    ]
                    period = math.lcm(*[nb for _, nb in gens]) if gens else 1
                    got_at = cands[at] = (gens, period, {})
                got = got_at
            gens, period, by_hash = got
            if gens:
                h = int.from_bytes(d[:4], "little") % period
                ks = by_hash.get(h)
                if ks is None:
                    ks = by_hash[h] = tuple([key_of(model, gen, h % nb) for gen, nb in gens])
                add_probe((d, ks))
                add_label(n_probes)
                n_probes += 1
                continue
        add_label(-1)


def _digests(items: Sequence[Mapping[str, Any]], known: dict[str, bytes]) -> list[bytes]:
    """The digest of each prediction of ``items`` (events, and columnar batches' rows)."""
    out: list[bytes] = []
    lo, n = 0, len(items)
    while lo < n:
        first = items[lo]
        if type(first) is ColumnarBatch:
            out += batch_digests(first.model_id, first.prediction_ids, known)
            lo += 1
            continue
        hi = lo + 1
        while hi < n and type(items[hi]) is not ColumnarBatch:
            hi += 1
        out += prediction_digests(items if (lo, hi) == (0, n) else items[lo:hi], known)
        lo = hi
    return out


class MemoryRecords:
    """Pending predictions in a dict, with Redis's semantics (tests and replays).

    Examples
    --------
    >>> mem = MemoryRecords()
    >>> plan = LookupPlan(keys=["k"], probes=[(b"d", (0,))])
    >>> mem.lookup(plan)
    [None]
    """

    def __init__(self) -> None:
        self.data: dict[str, dict[bytes, bytes]] = {}

    def lookup(self, plan: LookupPlan) -> list[Found]:
        """Answer a plan like the Redis lookup script."""
        out: list[Found] = []
        for digest, ks in plan.probes:
            hit: Found = None
            for k in ks:
                v = self.data.get(plan.keys[k], {}).get(digest)
                if v is not None:
                    hit = (k, v)
                    break
            out.append(hit)
        return out

    def apply(self, result: JoinResult) -> None:
        """Write a batch's records and tombstones."""
        for k, fields in result.puts.items():
            self.data.setdefault(k, {}).update(fields)
        for k, digests in result.tombs.items():
            if k in self.data:
                self.data[k].update(dict.fromkeys(digests, TOMBSTONE))

    def pending(self) -> int:
        """Stored predictions not joined yet."""
        return sum(1 for h in self.data.values() for v in h.values() if v != TOMBSTONE)
