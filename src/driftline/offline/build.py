"""Building a reference from a file or a table with an explicit column mapping."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from driftline.core.detectors.plans import DETECT
from driftline.core.reference import Policy, ReferenceProfile, build_reference
from driftline.offline.roles import ColumnMap, Resolved, resolve
from driftline.offline.table_base import Table
from driftline.offline.tables import table_from

__all__ = ["build_from_table", "detectors_off", "small_reference_note", "with_roles"]


def build_from_table(
    data: Any,
    model_id: str,
    model_version: str,
    *,
    columns: ColumnMap | None = None,
    policy: Policy | None = None,
    source: str | None = None,
    seed: int = 0,
    created_at: int | None = None,
) -> tuple[ReferenceProfile, Resolved]:
    """Resolve the columns of ``data`` and build the reference from its rows.

    ``data`` is anything :func:`~driftline.offline.tables.table_from` reads (a file
    path, a data frame, a pyarrow table, records). Rows set aside for bad values
    (``columns.on_bad_value="dlq"``) are left out and listed in ``Resolved.refused``.
    """
    table: Table = table_from(data, encoding=columns.encoding if columns else None)
    res = resolve(table, columns)
    # a table of several models: this one's rows, of whichever version made them
    # (training data logged by the version before is still this model's)
    res.keep_only(model_id, None)
    ref = build_reference(
        res.training_data(),
        model_id,
        model_version,
        policy=policy,
        source=source if source is not None else table.source,
        seed=seed,
        created_at=created_at,
    )
    return with_roles(ref, res), res


def with_roles(ref: ReferenceProfile, res: Resolved) -> ReferenceProfile:
    """``ref`` recording which of the table's columns had which role, so that a replay
    of a table laid out the same way needs no ``--prediction``/``--label``/... again."""
    return dataclasses.replace(ref, columns=res.roles() or None)


def detectors_off(ref: ReferenceProfile) -> tuple[int, int, dict[float, int]]:
    """The detection rows of the reference's banks that calibration turned off (a
    reference too small to bound their false alarms), all of them, and how many are
    off per shift (in sd)."""
    rows = [
        (abs(plan.shift[r]), math.isfinite(plan.threshold[r]))
        for _, _, plan in ref.banks()
        for r in range(plan.n_rows)
        if plan.role[r] == DETECT
    ]
    by_shift: dict[float, int] = {}
    for shift, on in sorted(rows):
        if not on:
            by_shift[shift] = by_shift.get(shift, 0) + 1
    return sum(by_shift.values()), len(rows), by_shift


def small_reference_note(ref: ReferenceProfile) -> str | None:
    """One line when the reference is too small for some of its detectors (None when
    every detector is on)."""
    off, total, by_shift = detectors_off(ref)
    if not off:
        return None
    sizes = ", ".join(f"{n} for drifts of {s:g} sd" for s, n in by_shift.items())
    return (
        f"{ref.row_count:,} rows are few for drift detection: {off} of {total} detectors "
        f"are off ({sizes}), since a reference this small cannot bound their false "
        "alarms (its own means are uncertain by about that much); drifts that small go "
        "unwatched. A reference from more rows turns them on."
    )
