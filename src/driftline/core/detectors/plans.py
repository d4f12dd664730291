"""Compiled detector banks: one unit's rows and thresholds, from its reference.

A *unit* is a watched quantity (a feature or an output); its bank is a set of one-sided
CUSUM rows, each the log-likelihood ratio (LLR) of one drift on one *channel* of the
unit, run by :mod:`driftline.core.detectors.bank`:

* numeric unit: ``z = clip((x - mean_ref) / sd_ref, +-clip)`` (channel ``mean``) and
  ``z**2`` (channel ``spread``); each row is the Gaussian LLR of the channel's mean
  moving by ``+-delta`` of its own reference sd (``shifts``, ``scale_shifts``);
* categorical unit: the indicator of each category with a reference share of at least
  ``min_category_share`` (the rest pooled); rows are the exact Bernoulli LLR of the
  share moving by ``+-delta`` sd of the indicator (``category_shifts``);
* rate unit: the indicator ``x < cut`` (e.g. a low-confidence answer), rises only;
* channels unit: channels computed elsewhere (the multivariate detector's), rows given
  as they are (:meth:`~driftline.core.detectors.bank.BankLayout.from_rows`).

Per channel (a *group*) the detection rows watch each shift both ways, and two return
rows (one per direction) the LLR of the reference against the boundary drift
``resolve_at x min(shifts)``. Thresholds come from :mod:`~driftline.core.detectors.arl`:
each detection row gets an equal share of the unit's false-alarm budget; return rows
the same ARL on the reference moved to the boundary. :class:`FeaturePlan` is the
result, stored with the reference as plain JSON.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from driftline.core.detectors._numeric import _F64
from driftline.core.detectors.arl import RowDistribution, calibrate_rows
from driftline.errors import StateCorrupt

__all__ = [
    "DETECT",
    "RETURN",
    "BankSettings",
    "FeaturePlan",
    "Group",
    "UnitKind",
    "compile_categorical",
    "compile_numeric",
    "compile_rate",
    "quantile_points",
]

#: Row roles: a detection row sends its group away, a return row brings it back.
DETECT, RETURN = 0, 1

UnitKind = Literal["numeric", "categorical", "rate", "channels"]


@dataclass(frozen=True)
class BankSettings:
    """What the banks watch; the policy (:class:`driftline.core.reference.Policy`) holds
    these values per model, with these defaults."""

    #: Mean shifts of a numeric feature, in its reference sd, watched both ways.
    shifts: tuple[float, ...] = (0.25, 0.5)
    #: Shifts of the mean of ``z**2`` in its sd, both ways (Gaussian data: 0.5 is the sd
    #: times 1.3 or divided by 1.2). Empty: spread is not watched.
    scale_shifts: tuple[float, ...] = (0.5,)
    #: Shifts of a category's share, in sd of its indicator, both ways (rates: rises).
    category_shifts: tuple[float, ...] = (0.25, 0.5)
    #: Categories below this reference share are pooled into one channel.
    min_category_share: float = 0.01
    #: A group returns once its drift is back below ``resolve_at`` x the smallest shift.
    resolve_at: float = 0.5
    #: Standardised values are clipped to +-this (one outlier cannot open an episode).
    clip: float = 4.0
    #: Quantile points of a numeric reference column the calibration resamples.
    calibration_points: int = 4096


@dataclass(frozen=True)
class Group:
    """One channel of a unit that can drift: its name and reference moments."""

    #: ``mean``, ``spread``, ``share:<category>``, ``share:(rest)`` or ``rate``.
    name: str
    #: The unit's channel it watches.
    channel: int
    #: Reference mean and sd of the channel (the effect is measured against them).
    mean: float
    sd: float


_ROW_FIELDS = ("channel", "a", "b", "group", "direction", "role", "shift", "threshold")


@dataclass(frozen=True)
class FeaturePlan:
    """One unit's compiled bank: its channel transform, groups, rows and thresholds.

    Row ``r`` reads channel ``channel[r]``, adds ``a[r] * v + b[r]`` nats per event and
    crosses at ``threshold[r]`` nats (``inf``: disabled, the reference was too small to
    calibrate it). ``shift[r]`` is the drift it is tuned to, signed, in sd of its
    channel. ``theta`` and ``inflation`` record the calibration (module
    :mod:`~driftline.core.detectors.arl`).
    """

    name: str
    kind: UnitKind
    #: Numeric: standardisation and clip.
    mean: float = 0.0
    std: float = 1.0
    clip: float = 4.0
    #: Categorical: the codes (indices of the reference's categories; ``len`` is
    #: "other") each channel counts.
    channel_codes: tuple[tuple[int, ...], ...] = ()
    #: Rate: the channel is 1 where the value is below this.
    cut: float = 0.0
    groups: tuple[Group, ...] = ()
    channel: tuple[int, ...] = ()
    a: tuple[float, ...] = ()
    b: tuple[float, ...] = ()
    group: tuple[int, ...] = ()
    direction: tuple[int, ...] = ()
    role: tuple[int, ...] = ()
    shift: tuple[float, ...] = ()
    threshold: tuple[float, ...] = ()
    theta: tuple[float, ...] = ()
    inflation: tuple[float, ...] = ()

    @property
    def n_rows(self) -> int:
        """Rows (detection and return)."""
        return len(self.channel)

    @property
    def n_channels(self) -> int:
        """Channels the transform produces."""
        if self.kind == "numeric":
            return 2
        if self.kind == "rate":
            return 1
        if self.kind == "channels":
            return 1 + max((g.channel for g in self.groups), default=-1)
        return len(self.channel_codes)

    @property
    def disabled(self) -> int:
        """Detection rows the calibration disabled (reference too small for them)."""
        return sum(
            1
            for r, t in zip(self.role, self.threshold, strict=True)
            if r == DETECT and not math.isfinite(t)
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form (stored with the reference)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "mean": self.mean,
            "std": self.std,
            "clip": self.clip,
            "channel_codes": [list(c) for c in self.channel_codes],
            "cut": self.cut,
            "groups": [
                {"name": g.name, "channel": g.channel, "mean": g.mean, "sd": g.sd}
                for g in self.groups
            ],
            "rows": {
                "channel": list(self.channel),
                "a": list(self.a),
                "b": list(self.b),
                "group": list(self.group),
                "direction": list(self.direction),
                "role": list(self.role),
                "shift": list(self.shift),
                "threshold": [t if math.isfinite(t) else None for t in self.threshold],
            },
            "theta": list(self.theta),
            "inflation": [x if math.isfinite(x) else None for x in self.inflation],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeaturePlan:
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        StateCorrupt
            A field is missing or malformed, or the rows do not fit the groups.
        """
        try:
            rows = d["rows"]
            n = len(rows["channel"])
            cols = {k: list(rows[k]) for k in _ROW_FIELDS}
            if any(len(v) != n for v in cols.values()):
                raise ValueError("row columns of different lengths")
            groups = tuple(
                Group(str(g["name"]), _int(g["channel"]), float(g["mean"]), float(g["sd"]))
                for g in d["groups"]
            )
            plan = cls(
                name=str(d["name"]),
                kind=d["kind"],
                mean=float(d["mean"]),
                std=float(d["std"]),
                clip=float(d["clip"]),
                channel_codes=tuple(tuple(int(c) for c in cc) for cc in d["channel_codes"]),
                cut=float(d["cut"]),
                groups=groups,
                channel=tuple(_int(v) for v in cols["channel"]),
                a=tuple(float(v) for v in cols["a"]),
                b=tuple(float(v) for v in cols["b"]),
                group=tuple(_int(v) for v in cols["group"]),
                direction=tuple(_int(v) for v in cols["direction"]),
                role=tuple(_int(v) for v in cols["role"]),
                shift=tuple(float(v) for v in cols["shift"]),
                threshold=tuple(math.inf if v is None else float(v) for v in cols["threshold"]),
                theta=tuple(float(v) for v in d["theta"]),
                inflation=tuple(math.inf if v is None else float(v) for v in d["inflation"]),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise StateCorrupt(f"detector bank: malformed plan ({exc})") from None
        plan.check()
        return plan

    def check(self) -> None:
        """Raise :class:`StateCorrupt` unless the rows fit the groups and channels."""
        bad = ""
        if self.kind not in ("numeric", "categorical", "rate", "channels"):
            bad = f"unknown kind {self.kind!r}"
        elif not all(0 <= g < len(self.groups) for g in self.group):
            bad = "a row's group does not exist"
        elif not all(0 <= g.channel < self.n_channels for g in self.groups):
            bad = "a group's channel does not exist"
        elif any(self.channel[r] != self.groups[g].channel for r, g in enumerate(self.group)):
            bad = "a row reads another channel than its group"
        elif not all(r in (DETECT, RETURN) for r in self.role):
            bad = "unknown row role"
        elif not all(d in (-1, 1) for d in self.direction):
            bad = "row direction not +-1"
        elif not all(t > 0 for t in self.threshold) or len(self.theta) != self.n_rows:
            bad = "thresholds must be positive, one per row"
        elif not all(math.isfinite(v) for v in (*self.a, *self.b, self.mean, self.std)):
            bad = "non-finite increments"
        elif self.kind == "numeric" and not self.std > 0:
            bad = "numeric plan without a positive sd"
        if bad:
            raise StateCorrupt(f"detector bank {self.name!r}: {bad}")


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"expected an integer, got {type(v).__name__}")
    return v


# ------------------------------------------------------------------------ compiling


@dataclass
class _Rows:
    """Rows under construction and each one's increment on the reference."""

    channel: list[int] = field(default_factory=list)
    a: list[float] = field(default_factory=list)
    b: list[float] = field(default_factory=list)
    group: list[int] = field(default_factory=list)
    direction: list[int] = field(default_factory=list)
    role: list[int] = field(default_factory=list)
    shift: list[float] = field(default_factory=list)
    dist: list[RowDistribution] = field(default_factory=list)

    def add(
        self,
        group: Group,
        g: int,
        a: float,
        b: float,
        direction: int,
        role: int,
        shift: float,
        values: _F64,
        weights: _F64,
    ) -> None:
        self.channel.append(group.channel)
        self.a.append(a)
        self.b.append(b)
        self.group.append(g)
        self.direction.append(direction)
        self.role.append(role)
        self.shift.append(shift)
        self.dist.append(RowDistribution(a * values + b, weights, abs(a) * group.sd))

    @property
    def n_detect(self) -> int:
        return sum(1 for r in self.role if r == DETECT)


def quantile_points(values: _F64, n: int) -> _F64:
    """``n`` equal-mass quantile points of the finite ``values`` (all of them if fewer)."""
    finite = values[np.isfinite(values)]
    if finite.size <= n:
        return np.sort(finite)
    qs = (np.arange(n) + 0.5) / n
    points: _F64 = np.quantile(finite, qs, method="inverted_cdf")
    return points


def _shift_rows(
    rows: _Rows, group: Group, g: int, v: _F64, w: _F64, sizes: Sequence[float], resolve_at: float
) -> None:
    """Detection rows for mean shifts ``+-size`` (in sd) of a channel, and its return rows.

    With ``u = (v - m) / sd``, a detection row is the Gaussian LLR ``d size u -
    size^2 / 2``; the return row of direction ``d`` is the LLR of the reference against
    the boundary drift ``d edge``, ``-d edge u + edge^2 / 2`` with ``edge = resolve_at x
    min(sizes)``, and is calibrated on the reference shifted to that boundary.
    """
    m, sd = group.mean, group.sd
    for delta in sizes:
        for d in (1, -1):
            rows.add(
                group,
                g,
                d * delta / sd,
                -d * delta * m / sd - delta * delta / 2,
                d,
                DETECT,
                d * delta,
                v,
                w,
            )
    edge = resolve_at * min(sizes)
    for d in (1, -1):
        rows.add(
            group,
            g,
            -d * edge / sd,
            d * edge * m / sd + edge * edge / 2,
            d,
            RETURN,
            d * edge,
            v + d * edge * sd,
            w,
        )


def _moments(v: _F64, w: _F64) -> tuple[float, float]:
    m = float(w @ v)
    return m, float(np.sqrt(max(0.0, float(w @ (v - m) ** 2))))


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(name.encode())])


def _calibrated(rows: _Rows, target_arl: float, n_ref: int, seed: int, name: str) -> dict[str, Any]:
    """Thresholds for ``rows``: each detection row gets an equal share of the unit's
    budget (``target_arl x detection rows``); return rows the same ARL, on the reference
    shifted to the return boundary."""
    # Return rows are calibrated as if the reference were exact: their boundary is a
    # convention (half the smallest shift), and a row that could not be calibrated would
    # leave an episode open for ever.
    n_refs = [n_ref if r == DETECT else 0 for r in rows.role]
    cal = calibrate_rows(rows.dist, target_arl * max(1, rows.n_detect), n_refs, _rng(seed, name))
    return {
        "channel": tuple(rows.channel),
        "a": tuple(rows.a),
        "b": tuple(rows.b),
        "group": tuple(rows.group),
        "direction": tuple(rows.direction),
        "role": tuple(rows.role),
        "shift": tuple(rows.shift),
        "threshold": tuple(c.threshold for c in cal),
        "theta": tuple(round(c.theta, 9) for c in cal),
        "inflation": tuple(
            round(c.inflation, 6) if math.isfinite(c.inflation) else math.inf for c in cal
        ),
    }


def compile_numeric(
    name: str,
    values: _F64,
    *,
    n_ref: int,
    target_arl: float,
    seed: int,
    mean: float | None = None,
    std: float | None = None,
    weights: _F64 | None = None,
    settings: BankSettings | None = None,
) -> FeaturePlan | None:
    """Compile and calibrate a numeric unit's bank from its reference values.

    Parameters
    ----------
    values
        The reference column, or points standing for it (:func:`quantile_points`, or
        points spread over a profile's bins, with ``weights``); NaN ignored.
    n_ref
        Reference rows the values come from (the calibration's sampling error).
    target_arl
        Expected events between false alarms of *this unit*.
    seed
        Seed of the calibration's simulation (with the unit's name): a rebuild is
        identical.
    mean, std
        The standardisation (default: the values' own).

    Returns
    -------
    FeaturePlan or None
        None for a constant column (nothing can shift in sd units).
    """
    s = settings or BankSettings()
    x = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(x)
    x = x[keep]
    if weights is None:
        pts = quantile_points(x, s.calibration_points)
        w = np.full(pts.size, 1.0 / max(pts.size, 1))
    else:
        pts = x
        w = np.asarray(weights, dtype=np.float64)[keep]
        w = w / w.sum()
    if pts.size == 0:
        return None
    mu = float(w @ pts) if mean is None else mean
    sd = float(np.sqrt(w @ (pts - mu) ** 2)) if std is None else std
    if not sd > 0 or not math.isfinite(sd):
        return None
    z = np.clip((pts - mu) / sd, -s.clip, s.clip)
    rows = _Rows()
    groups: list[Group] = []
    for ch, (label, v, sizes) in enumerate(
        (("mean", z, s.shifts), ("spread", z * z, s.scale_shifts))
    ):
        m, csd = _moments(v, w)
        if not sizes or not csd > 0:
            continue
        groups.append(Group(label, ch, m, csd))
        _shift_rows(rows, groups[-1], len(groups) - 1, v, w, sizes, s.resolve_at)
    if not groups:
        return None
    return FeaturePlan(
        name=name,
        kind="numeric",
        mean=mu,
        std=sd,
        clip=s.clip,
        groups=tuple(groups),
        **_calibrated(rows, target_arl, n_ref, seed, name),
    )


def _bernoulli(p0: float, p1: float) -> tuple[float, float]:
    """``(a, b)`` of the LLR of Bernoulli(p1) against Bernoulli(p0): ``a v + b``."""
    b = math.log((1 - p1) / (1 - p0))
    return math.log(p1 / p0) - b, b


def _share_rows(
    rows: _Rows,
    group: Group,
    g: int,
    p0: float,
    sizes: Sequence[float],
    resolve_at: float,
    both: bool,
) -> None:
    """Bernoulli rows of one share ``p0``: detection at ``p0 +- delta sd``, return rows
    at the boundary ``p0 +- resolve_at min(delta) sd`` (kept inside (p0/4, 1-(1-p0)/4))."""
    sd = group.sd
    two = np.array([1.0, 0.0])
    w0 = np.array([p0, 1 - p0])
    dirs = (1, -1) if both else (1,)
    for delta in sizes:
        for d in dirs:
            p1 = p0 + d * delta * sd
            if 0 < p1 < 1:
                a, b = _bernoulli(p0, p1)
                rows.add(group, g, a, b, d, DETECT, d * delta, two, w0)
    edge = resolve_at * min(sizes)
    for d in dirs:
        pb = min(max(p0 + d * edge * sd, p0 / 4), 1 - (1 - p0) / 4)
        a, b = _bernoulli(pb, p0)
        rows.add(group, g, a, b, d, RETURN, d * edge, two, np.array([pb, 1 - pb]))


def compile_categorical(
    name: str,
    categories: Sequence[str],
    counts: Sequence[int],
    *,
    target_arl: float,
    seed: int,
    settings: BankSettings | None = None,
) -> FeaturePlan | None:
    """Compile and calibrate a categorical unit's bank from its reference counts.

    Parameters
    ----------
    categories
        The reference's categories; code ``i`` is ``categories[i]``.
    counts
        ``len(categories) + 1`` counts, the last for every other category.

    Returns
    -------
    FeaturePlan or None
        None when no share can move (a single category).
    """
    s = settings or BankSettings()
    total = float(sum(counts))
    if total <= 0 or not s.category_shifts:
        return None
    shares = [c / total for c in counts]
    tracked = [i for i, p in enumerate(shares) if s.min_category_share <= p < 1]
    rest = tuple(i for i in range(len(shares)) if i not in tracked)
    channels: list[tuple[int, ...]] = [(i,) for i in tracked]
    if rest and 0 < sum(shares[i] for i in rest) < 1:
        channels.append(rest)
    rows = _Rows()
    groups: list[Group] = []
    for ch, members in enumerate(channels):
        p0 = sum(shares[i] for i in members)
        if len(members) > 1:
            label = "share:(rest)"
        else:
            label = (
                f"share:{categories[members[0]]}"
                if members[0] < len(categories)
                else "share:(other)"
            )
        groups.append(Group(label, ch, p0, math.sqrt(p0 * (1 - p0))))
        _share_rows(rows, groups[-1], ch, p0, s.category_shifts, s.resolve_at, both=True)
    if not rows.role:
        return None
    return FeaturePlan(
        name=name,
        kind="categorical",
        channel_codes=tuple(channels),
        groups=tuple(groups),
        **_calibrated(rows, target_arl, int(total), seed, name),
    )


def compile_rate(
    name: str,
    p0: float,
    cut: float,
    *,
    n_ref: int,
    target_arl: float,
    seed: int,
    settings: BankSettings | None = None,
) -> FeaturePlan | None:
    """A rate watched for rises only: the share of values below ``cut`` (reference share
    ``p0``, from ``n_ref`` rows). None when ``p0`` is 0 or 1."""
    s = settings or BankSettings()
    if not 0 < p0 < 1 or not s.category_shifts:
        return None
    rows = _Rows()
    group = Group("rate", 0, p0, math.sqrt(p0 * (1 - p0)))
    _share_rows(rows, group, 0, p0, s.category_shifts, s.resolve_at, both=False)
    if not rows.n_detect:
        return None
    return FeaturePlan(
        name=name,
        kind="rate",
        cut=cut,
        groups=(group,),
        **_calibrated(rows, target_arl, n_ref, seed, name),
    )
