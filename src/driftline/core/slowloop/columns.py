"""A columnar prediction batch as the join reads it, column by column.

The label joiner receives ``prediction_batch.v1`` records (up to 10 000 predictions of
one model, version and segment; what the SDK sends by default). The join stores each
row as a pending prediction; this module gives it what it needs of the rows without a
dict per row: the event times, the quantised scores as one matrix, and each row's
pattern of null scores. :func:`join_rows` is the rows themselves, as single events:
the join's reference path, and its fallback for scores the matrix cannot hold exactly
(a value that is not a finite number once scaled; the contract never lets one in).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from itertools import repeat
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.contract.columnar import ColumnarBatch
from driftline.contract.events import event_time_ms
from driftline.core.calibration import Calibration
from driftline.core.slowloop.pending import SCORE_SCALE, PendingPrediction, encode_scored

__all__ = [
    "Layout",
    "QuantisedScores",
    "batch_times",
    "classified_event",
    "classified_records",
    "confidences",
    "join_rows",
    "quantised_scores",
    "stretches",
]

#: A prediction's class layout in its stream: (class index, dense score order -- the
#: scores dict's position of each class index, -1 for none -- or None, in order).
Layout = tuple[int, tuple[int, ...] | None, bool]
#: A pending record from its fields in order, and its bytes (C-level callables).
_make = partial(tuple.__new__, PendingPrediction)
_encode = PendingPrediction.encode

#: ``v * SCORE_SCALE`` as a bound method (the int scale is exact as a float, and the
#: product commutes, so the quantised scores are the same).
_SCALE_MUL = float(SCORE_SCALE).__mul__
#: Python types a score matrix holds exactly as float64 (``None``: a null score).
_SCORE_TYPES = frozenset({float, int, bool, type(None)})


def join_rows(b: ColumnarBatch) -> list[dict[str, Any]]:
    """The rows of a batch as prediction events with the fields the join reads.

    :meth:`ColumnarBatch.rows` also copies every feature (the monitor's business, not
    the join's). Scores and segment are as in ``rows()`` (a row's null scores left out,
    the segment shared by the batch's rows).
    """
    head = {"model_id": b.model_id, "model_version": b.model_version}
    if b.segment:
        head["segment"] = dict(b.segment)  # type: ignore[assignment]
    ids, times, preds = b.prediction_ids, b.timestamps, b.predictions
    if not b.scores:
        return [
            {**head, "prediction_id": pid, "timestamp": t, "prediction": y}
            for pid, t, y in zip(ids, times, preds, strict=True)
        ]
    names = tuple(b.scores)
    cols = list(b.scores.values())
    if all(type(c) is list and None not in c for c in cols):
        # No null score: each row's scores are all the columns (one C-level dict a row).
        all_scores = map(dict, map(partial(zip, names), zip(*cols, strict=True)))
        return [
            {**head, "prediction_id": pid, "timestamp": t, "prediction": y, "scores": sc}
            for pid, t, y, sc in zip(ids, times, preds, all_scores, strict=True)
        ]
    rows: list[dict[str, Any]] = []
    for pid, t, y, *vals in zip(ids, times, preds, *b.scores.values(), strict=True):
        row = {**head, "prediction_id": pid, "timestamp": t, "prediction": y}
        scores = {c: v for c, v in zip(names, vals, strict=True) if v is not None}
        if scores:
            row["scores"] = scores
        rows.append(row)
    return rows


def batch_times(b: ColumnarBatch) -> list[int]:
    """Each row's event time, epoch ms (what ``pending.event_ms`` gives its event)."""
    ts = b.timestamps
    if set(map(type, ts)) == {int}:
        return list(ts)  # type: ignore[arg-type]  # ints only, as tested
    return [t if type(t) is int else event_time_ms(t) for t in ts]


@dataclass(frozen=True)
class QuantisedScores:
    """A batch's scores as the join stores them, one row a prediction.

    ``q[i, j]`` is ``round(score * SCORE_SCALE)`` of row ``i``'s class ``names[j]``,
    clamped to ``0..SCORE_SCALE``, or -1 where the score is null; ``top[i]`` the row's
    largest (-1: every score null). ``pattern[i]`` numbers the row's set of non-null
    classes (bit ``j``: class ``names[j]`` present), ``None`` when no score is null.
    """

    names: tuple[str, ...]
    q: NDArray[np.int64]
    top: NDArray[np.int64]
    pattern: NDArray[np.int64] | None

    def present(self, pattern: int | None) -> tuple[int, ...]:
        """Columns of the classes a row of ``pattern`` has scores for, in order."""
        k = len(self.names)
        return (
            tuple(range(k)) if pattern is None else tuple(j for j in range(k) if pattern >> j & 1)
        )


def quantised_scores(b: ColumnarBatch) -> QuantisedScores | None:
    """The batch's quantised scores, or ``None`` when the rows must be quantised one by
    one: a value that is not a number, or not finite once scaled (``round`` raises on
    those; the contract refuses every one of them).

    ``np.rint`` rounds half to even like ``round``, and the product is the same IEEE
    multiplication, so each value is the row path's (tests/unit/test_join_columns.py
    checks halves, tiny, huge and negative values).
    """
    cols = list(b.scores.values()) if b.scores else []
    if not cols:
        return None
    for col in cols:
        if not set(map(type, col)) <= _SCORE_TYPES:
            return None
    try:
        mat = np.array(cols, dtype=np.float64).T  # null becomes NaN
    except (OverflowError, TypeError, ValueError):
        return None
    with np.errstate(over="ignore"):
        scaled = mat * float(SCORE_SCALE)
    null = np.isnan(mat)
    nulls = sum(c.count(None) for c in cols)
    if int(np.count_nonzero(null)) != nulls:
        return None  # a float NaN among the scores
    if not np.isfinite(scaled[~null]).all():
        return None
    with np.errstate(invalid="ignore"):
        q = np.clip(np.rint(scaled), 0, SCORE_SCALE)
    q[null] = -1
    qi = q.astype(np.int64)
    pattern = None
    if nulls:
        bits = np.left_shift(1, np.arange(len(cols), dtype=np.int64))
        pattern = (~null).astype(np.int64) @ bits
    return QuantisedScores(tuple(b.scores or ()), qi, qi.max(axis=1), pattern)


def classified_records(
    scores: QuantisedScores | None,
    keep: list[int],
    n: int,
    ts: list[int],
    preds: list[Any],
    layout: Callable[[tuple[Any, ...]], Layout],
    sidx: int,
) -> tuple[list[PendingPrediction], list[bytes]]:
    """The pending records of a batch's stored classification rows ``keep`` (of ``n``;
    their times ``ts`` and predictions ``preds``) in stream ``sidx``, and their bytes:
    what ``join._classified`` makes of each row as an event, from the columns.

    ``layout(names)`` is the joiner's class layout of a prediction's class and scored
    classes (``names``), which gives classes their indices when new: it is asked for
    each (class, scored classes) of the rows in order of first appearance, as row by
    row asks it.
    """
    m = len(keep)
    if scores is None:
        lay = {y: layout((y,)) for y in dict.fromkeys(preds)}
        cls = [lay[y][0] for y in preds]
        none = repeat(None)
        made = list(map(_make, zip(repeat(sidx), ts, repeat(False), repeat(0.0), cls, none, none)))
        return made, list(map(_encode, made))
    q = scores.q if m == n else scores.q[keep]
    top = scores.top if m == n else scores.top[keep]
    # Each pattern of null scores (one when none is null): its rows, and the layout of
    # each (class, pattern), asked in order of first appearance.
    layouts: dict[tuple[Any, int | None], Layout] = {}
    if scores.pattern is None:
        for y in dict.fromkeys(preds):
            layouts[(y, None)] = layout((y, *scores.names))
        cls = [layouts[(y, None)][0] for y in preds]
        groups: dict[int | None, NDArray[np.intp] | None] = {None: None}
    else:
        pat = scores.pattern if m == n else scores.pattern[keep]
        pats = pat.tolist()
        for y, c in dict.fromkeys(zip(preds, pats, strict=True)):
            layouts[(y, c)] = layout((y, *[scores.names[j] for j in scores.present(c)]))
        cls = [layouts[yc][0] for yc in zip(preds, pats, strict=True)]
        groups = {c: np.flatnonzero(pat == c) for c in dict.fromkeys(pats) if c}
    # A class's dense score order is that of its pattern (the same for every class).
    dense_of = {c: lay[1] for (_, c), lay in layouts.items()}
    if groups.keys() == {None}:
        tops: list[int | None] = top.tolist()
        vecs: list[tuple[int, ...] | None] = [None] * m
        encs: list[bytes | None] = [None] * m
    else:
        tops, vecs, encs = [None] * m, [None] * m, [None] * m
    with_zero = np.concatenate([q, np.zeros((m, 1), dtype=np.int64)], axis=1)
    for c, where in groups.items():
        if where is not None:
            for i, v in zip(where.tolist(), top[where].tolist(), strict=True):
                tops[i] = v
        dense = dense_of[c]
        if dense is None:
            continue  # scores of classes past the stored vector: the top score only
        present = scores.present(c)
        cols = [present[j] if j >= 0 else len(scores.names) for j in dense]
        if where is None:
            vec = with_zero[:, cols]
            vecs = list(map(tuple, vec.tolist()))
            packed = encode_scored(sidx, ts, cls, vec)
            if packed is not None:
                encs = list(packed)
            continue
        vec = with_zero[where][:, cols]
        idx = where.tolist()
        for i, v in zip(idx, map(tuple, vec.tolist()), strict=True):
            vecs[i] = v
        packed = encode_scored(sidx, [ts[i] for i in idx], [cls[i] for i in idx], vec)
        for i, e in zip(idx, packed or (), strict=False):
            encs[i] = e
    made = list(map(_make, zip(repeat(sidx), ts, repeat(False), repeat(0.0), cls, tops, vecs)))
    return made, [e if e is not None else rec.encode() for e, rec in zip(encs, made, strict=True)]


def classified_event(
    e: Mapping[str, Any], layout: Layout, stream: int, t: int
) -> PendingPrediction:
    """The pending record of a classified single event with the class ``layout`` of its
    score names (:func:`classified_records` for a batch's rows)."""
    cls, dense, in_order = layout
    scores = e.get("scores")
    top_q = scores_q = None
    if scores:
        # Rounding and clamping are monotone, so the top score is the largest
        # quantised score.
        qs = list(map(round, map(_SCALE_MUL, scores.values())))
        top_q = max(qs)
        if min(qs) < 0 or top_q > SCORE_SCALE:
            qs = [0 if q < 0 else SCORE_SCALE if q > SCORE_SCALE else q for q in qs]
            top_q = max(qs)
        if dense is not None:
            scores_q = tuple(qs) if in_order else tuple(qs[j] if j >= 0 else 0 for j in dense)
    # positional: a named tuple's keywords cost a tenth of a microsecond
    return PendingPrediction(stream, t, False, 0.0, cls, top_q, scores_q)


def stretches(values: NDArray[np.int64]) -> list[tuple[int, int]]:
    """``(start, stop)`` of each stretch of equal consecutive ``values``, in order."""
    cut = (np.flatnonzero(values[1:] != values[:-1]) + 1).tolist()
    bounds = [0, *cut, len(values)]
    return list(zip(bounds, bounds[1:], strict=False))


def confidences(tops: list[int | None], cal: Calibration | None) -> list[float | None]:
    """Each record's confidence (its top score, calibrated), ``None`` without one: what
    :attr:`PendingPrediction.top` and :meth:`Calibration.apply` give, for many."""
    if cal is None:
        return [None if q is None else q / SCORE_SCALE for q in tops]
    apply = {q: cal.apply(q / SCORE_SCALE) for q in dict.fromkeys(tops) if q is not None}
    return [None if q is None else apply[q] for q in tops]
