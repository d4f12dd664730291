"""Fitting the multivariate model at reference build, and the per-event channels.

From the reference rows (scored by :mod:`.design`):

1. A seeded split: half the rows (at most ``max_fit_rows``) *fit* the model, the other
   half (at most ``max_calibration_rows``) are *held out* for calibration. The live
   stream relates to the fitted model as the held-out rows do (both are fresh samples),
   which in-sample rows do not: with 20 features the held-out T^2 averages 20.06 where
   the fitted rows give exactly 20, and with 300 features and 50 components 44.6 where
   they give 50. Calibrating on held-out rows carries that.
2. Principal components of the scores' second moment (the scores have mean 0 on the
   reference): all of them (``eigh``) when there are at most ``max_components``
   columns; otherwise the top ``max_components`` by a seeded randomized SVD (Halko,
   Martinsson and Tropp 2011: 10 extra columns, 2 power iterations, in numpy). The cap
   bounds the per-event cost at ``O(d k)`` and the stored model at ``k d`` numbers.
3. Per event two *channels*:
   * ``t2``: Hotelling's ``T^2 = sum_i u_i^2 / lambda_i`` over the kept components;
   * ``spe``: the reconstruction error weighted per column,
     ``Q = sum_j r_j^2 / v_j`` with ``r = z - P u`` and ``v_j`` the held-out mean of
     ``r_j^2`` (only when components were dropped). Weighting matters: two features
     that move together leave a small residual variance each, which their break
     multiplies; unweighted, that is lost among the other columns' residuals.
   Each channel is transformed by a cube root (Wilson-Hilferty: ``(T^2/k)^(1/3)`` is
   close to Gaussian), standardised by its held-out mean and sd and clipped.
4. Per channel a CUSUM bank like ``bench/DETECTION.md``'s: detection rows (Gaussian LLR
   of a shift of ``+-delta`` sd, for each ``delta`` in ``shifts``) and return rows (the
   reference against the boundary drift ``resolve_at * min(shifts)``). Thresholds from
   :func:`.arl.calibrate_thresholds` on the held-out channel values, each detection
   row getting an equal share of the detector's false-alarm budget.

Exactness: component entries are multiples of ``2**-COMPONENT_BITS`` and the
projections ``u`` are rounded to ``2**-PROJECTION_BITS`` before use, so with scores on
``2**-SCORE_BITS`` both matrix products are sums of integers below ``2**53`` (checked by
:data:`MAX_COLUMNS` and the ``max_components`` cap), exact in any order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.core.detectors.plans import DETECT, RETURN
from driftline.core.multivariate.arl import calibrate_thresholds
from driftline.core.multivariate.design import (
    CategoricalInput,
    Column,
    Design,
    NumericInput,
    quantise,
)

__all__ = [
    "FORMAT_VERSION",
    "MultivariateProfile",
    "MultivariateSettings",
    "fit_multivariate",
]

F64 = NDArray[np.float64]

FORMAT_VERSION = 1
COMPONENT_BITS = 22
PROJECTION_BITS = 14
#: With scores below 2**19 units and components below 2**22, d products sum exactly
#: while d * 2**41 < 2**53.
MAX_COLUMNS = 2048
#: With projections below 2**23 units and components below 2**22, k products sum
#: exactly while k * 2**45 < 2**53.
MAX_COMPONENTS = 64


@dataclass(frozen=True)
class MultivariateSettings:
    """How the multivariate model is fitted and watched. Stored with the model."""

    #: Components kept (all of them up to this many columns; the top ones beyond).
    max_components: int = 50
    #: Indicator columns per categorical feature, and the share range they need.
    max_levels: int = 8
    min_category_share: float = 0.05
    #: Features missing in more of the reference rows than this are not watched jointly.
    max_missing: float = 0.05
    #: Channel shifts (sd of the standardised channel) the detection rows watch, both ways.
    shifts: tuple[float, ...] = (0.25, 0.5)
    #: A channel has returned when its drift is back under ``resolve_at * min(shifts)``.
    resolve_at: float = 0.5
    #: Standardised channel values are clipped to +-this.
    clip: float = 4.0
    #: Fewer reference rows than this: no multivariate model.
    min_rows: int = 400
    max_fit_rows: int = 20_000
    max_calibration_rows: int = 20_000

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["shifts"] = list(self.shifts)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MultivariateSettings:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "shifts" in known:
            known["shifts"] = tuple(float(s) for s in known["shifts"])
        return cls(**known)


@dataclass(frozen=True)
class Channels:
    """Per-event values of a batch: projections, residuals, raw and standardised channels."""

    #: ``(n, k)`` whitened projections ``u_i / sqrt(lambda_i)``.
    t: F64
    #: ``(n, d)`` squared residuals ``r_j^2`` (None when every component is kept).
    rsq: F64 | None
    #: ``(n,)`` Hotelling's T^2 and ``(n,)`` weighted reconstruction error (or None).
    t2: F64
    spe: F64 | None
    #: ``(channels, n)`` standardised, clipped channel values (NaN: incomplete event).
    u: F64
    #: Events with every column present (None: all of them). The others move neither
    #: the CUSUM (their channels are NaN) nor the sketches.
    complete: NDArray[np.bool_] | None = None

    def slice(self, a: int, b: int) -> Channels:
        """Events ``a:b`` (views)."""
        return Channels(
            t=self.t[a:b],
            rsq=None if self.rsq is None else self.rsq[a:b],
            t2=self.t2[a:b],
            spe=None if self.spe is None else self.spe[a:b],
            u=self.u[:, a:b],
            complete=None if self.complete is None else self.complete[a:b],
        )


@dataclass(frozen=True)
class MultivariateProfile:
    """The fitted model: design, components, channel moments, calibrated CUSUM rows.

    Build it with :func:`fit_multivariate`; store it with :meth:`to_dict` (plain JSON
    numbers, versioned by ``FORMAT_VERSION``).
    """

    settings: MultivariateSettings
    design: Design
    #: ``(d, k)`` orthonormal components (quantised), and their reference variances.
    components: F64
    variances: F64
    #: ``(d,)`` per-column weights of the reconstruction error (0: not weighted).
    weights: F64
    #: Per channel: name, degrees of freedom (the divisor under the cube root), held-out
    #: mean and sd of its cube root.
    channel_names: tuple[str, ...]
    channel_dof: tuple[float, ...]
    channel_mean: tuple[float, ...]
    channel_sd: tuple[float, ...]
    #: Per CUSUM row: channel index, increment ``a * u + b``, direction, role, threshold.
    row_channel: tuple[int, ...]
    row_a: tuple[float, ...]
    row_b: tuple[float, ...]
    row_direction: tuple[int, ...]
    row_role: tuple[int, ...]
    row_threshold: tuple[float, ...]
    target_arl: float
    notes: Mapping[str, Any] = field(default_factory=dict)
    #: ``1 / sqrt(variances)``, derived.
    inv_sd: F64 = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inv_sd", 1.0 / np.sqrt(self.variances))

    # ------------------------------------------------------------------ shape
    @property
    def d(self) -> int:
        """Columns of the design."""
        return self.design.d

    @property
    def k(self) -> int:
        """Components kept."""
        return int(self.variances.size)

    @property
    def features(self) -> tuple[str, ...]:
        """Features the model covers, in design order."""
        return self.design.features

    @property
    def fingerprint(self) -> str:
        """Identifies the model (sketches and states refuse another model's)."""
        return str(self.notes.get("fingerprint", ""))

    # ------------------------------------------------------------------ channels
    def channels(self, z: F64) -> Channels:
        """Per-event projections and channel values of scores ``z`` (``(d, n)``).

        Every value depends on its own event only, bit for bit (see the module notes).
        An event with a missing score (NaN) gets NaN channels and ``complete`` False.
        """
        missing: NDArray[np.bool_] = np.asarray(np.isnan(z).any(axis=0))
        incomplete = bool(missing.any())
        if incomplete:
            z = np.where(np.isnan(z), 0.0, z)
        zt = z.T  # (n, d); BLAS reads the transpose without a copy
        u = quantise(zt @ self.components, PROJECTION_BITS)  # exact product, then rounded
        t = u * self.inv_sd
        t2 = np.sum(t * t, axis=1)  # per-row sums: the order depends on k only
        rsq: F64 | None = None
        spe: F64 | None = None
        if len(self.channel_names) > 1:
            r = zt - u @ self.components.T  # exact
            rsq = r * r
            spe = np.sum(rsq * self.weights, axis=1)
        roots = self._roots(t2, spe)
        out = np.empty((len(roots), z.shape[1]), dtype=np.float64)
        for c, root in enumerate(roots):
            np.subtract(root, self.channel_mean[c], out=out[c])
            out[c] /= self.channel_sd[c]
        lim = self.settings.clip
        np.minimum(out, lim, out=out)
        np.maximum(out, -lim, out=out)
        if incomplete:
            out[:, missing] = np.nan
        complete: NDArray[np.bool_] | None = ~missing if incomplete else None
        return Channels(t=t, rsq=rsq, t2=t2, spe=spe, u=out, complete=complete)

    def _roots(self, t2: F64, spe: F64 | None) -> list[F64]:
        """Cube roots of the channels over their degrees of freedom (Wilson-Hilferty)."""
        raw = [t2] if spe is None else [t2, spe]
        return [np.cbrt(v / self.channel_dof[c]) for c, v in enumerate(raw)]

    # ------------------------------------------------------------------ storage
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form (numbers, strings, lists), versioned."""
        return {
            "format_version": FORMAT_VERSION,
            "settings": self.settings.to_dict(),
            "columns": [c.to_dict() for c in self.design.columns],
            "components": self.components.T.tolist(),
            "variances": self.variances.tolist(),
            "weights": self.weights.tolist(),
            "channels": [
                {"name": n, "dof": f, "mean": m, "sd": s}
                for n, f, m, s in zip(
                    self.channel_names,
                    self.channel_dof,
                    self.channel_mean,
                    self.channel_sd,
                    strict=True,
                )
            ],
            "rows": {
                "channel": list(self.row_channel),
                "a": list(self.row_a),
                "b": list(self.row_b),
                "direction": list(self.row_direction),
                "role": list(self.row_role),
                "threshold": [t if math.isfinite(t) else None for t in self.row_threshold],
            },
            "target_arl": self.target_arl,
            "notes": dict(self.notes),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], edges: Mapping[str, F64]) -> MultivariateProfile:
        """Inverse of :meth:`to_dict`; ``edges`` are the numeric features' bin edges.

        Raises
        ------
        ValueError
            Unknown format version, inconsistent shapes, or edges other than those
            the scores were made for.
        """
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"multivariate model format {d.get('format_version')!r} unknown")
        columns = [Column.from_dict(c) for c in d["columns"]]
        design = Design(columns, edges)
        if not design.check_edges(edges):
            raise ValueError("multivariate model: bin edges differ from the reference's")
        comps = np.asarray(d["components"], dtype=np.float64).reshape(-1, design.d).T
        variances = np.asarray(d["variances"], dtype=np.float64)
        weights = np.asarray(d["weights"], dtype=np.float64)
        ch = d["channels"]
        rows = d["rows"]
        if comps.shape[1] != variances.size or weights.size != design.d:
            raise ValueError("multivariate model: inconsistent shapes")
        return cls(
            settings=MultivariateSettings.from_dict(d["settings"]),
            design=design,
            components=np.ascontiguousarray(comps),
            variances=variances,
            weights=weights,
            channel_names=tuple(str(c["name"]) for c in ch),
            channel_dof=tuple(float(c["dof"]) for c in ch),
            channel_mean=tuple(float(c["mean"]) for c in ch),
            channel_sd=tuple(float(c["sd"]) for c in ch),
            row_channel=tuple(int(x) for x in rows["channel"]),
            row_a=tuple(float(x) for x in rows["a"]),
            row_b=tuple(float(x) for x in rows["b"]),
            row_direction=tuple(int(x) for x in rows["direction"]),
            row_role=tuple(int(x) for x in rows["role"]),
            row_threshold=tuple(math.inf if x is None else float(x) for x in rows["threshold"]),
            target_arl=float(d["target_arl"]),
            notes=dict(d.get("notes", {})),
        )


# --------------------------------------------------------------------------- fitting


def _top_components(za: F64, kmax: int, rng: np.random.Generator) -> tuple[F64, F64, str]:
    """Components (columns, descending variance) and variances of ``za`` (``(n, d)``)."""
    n, d = za.shape
    if d <= kmax:
        lam, vec = np.linalg.eigh(za.T @ za / n)
        order = np.argsort(lam)[::-1]
        return vec[:, order], lam[order], "eigh"
    # Randomized SVD: a range finder with power iterations, then an exact small SVD.
    width = min(d, kmax + 10)
    y = za @ rng.standard_normal((d, width))
    for _ in range(2):
        q, _ = np.linalg.qr(y)
        y = za @ (za.T @ q)
    q, _ = np.linalg.qr(y)
    _, s, vt = np.linalg.svd(q.T @ za, full_matrices=False)
    return vt[:kmax].T, (s[:kmax] ** 2) / n, "randomized_svd"


def _rows(
    settings: MultivariateSettings, channels: int
) -> tuple[list[int], list[float], list[float], list[int], list[int]]:
    chan: list[int] = []
    a: list[float] = []
    b: list[float] = []
    direction: list[int] = []
    role: list[int] = []
    edge = settings.resolve_at * min(settings.shifts)
    for c in range(channels):
        for delta in settings.shifts:
            for sign in (1, -1):
                chan.append(c)
                a.append(sign * delta)
                b.append(-delta * delta / 2)
                direction.append(sign)
                role.append(DETECT)
        for sign in (1, -1):
            # LLR of the reference against the boundary drift ``sign * edge``.
            chan.append(c)
            a.append(-sign * edge)
            b.append(edge * edge / 2)
            direction.append(sign)
            role.append(RETURN)
    return chan, a, b, direction, role


def fit_multivariate(
    numeric: Sequence[NumericInput],
    categorical: Sequence[CategoricalInput],
    *,
    target_arl: float,
    seed: int = 0,
    settings: MultivariateSettings | None = None,
) -> MultivariateProfile | None:
    """Fit and calibrate the multivariate model on the reference columns.

    Parameters
    ----------
    numeric, categorical
        The reference's features (all columns the same length).
    target_arl
        Expected events between false alarms of this detector (its share of the
        stream's budget ``false_alarm_events``); each detection row gets an equal part.
    seed
        Seed of the split and of the randomized SVD: a rebuild is identical.
    settings
        Fitting and watching settings (defaults otherwise).

    Returns
    -------
    MultivariateProfile or None
        None when there are fewer than two usable columns or fewer than
        ``settings.min_rows`` complete rows.
    """
    st = settings or MultivariateSettings()
    if not 1 <= st.max_components <= MAX_COMPONENTS:
        raise ValueError(f"max_components must be 1..{MAX_COMPONENTS}")
    design = Design.build(
        numeric,
        categorical,
        min_share=st.min_category_share,
        max_levels=st.max_levels,
        max_missing=st.max_missing,
    )
    lengths = {len(f.values) for f in numeric} | {len(g.values) for g in categorical}
    if len(lengths) > 1:
        raise ValueError("reference columns differ in length")
    n = lengths.pop() if lengths else 0
    if design.d < 2 or n < st.min_rows:
        return None
    if design.d > MAX_COLUMNS:
        raise ValueError(f"{design.d} design columns, over {MAX_COLUMNS}")
    rng = np.random.default_rng([seed, 0x6D76])  # "mv"
    z = design.scores(
        {f.name: f.values for f in numeric}, {g.name: g.values for g in categorical}, n
    )
    # Only complete rows: the live detector watches complete events only.
    complete = np.flatnonzero(~np.isnan(z).any(axis=0))
    if complete.size < st.min_rows:
        return None
    perm = complete[rng.permutation(complete.size)]
    half = complete.size // 2
    fit_idx = np.sort(perm[:half][: st.max_fit_rows])
    cal_idx = np.sort(perm[half:][: st.max_calibration_rows])
    za = np.ascontiguousarray(z[:, fit_idx].T)
    vec, lam, method = _top_components(za, st.max_components, rng)
    keep = lam > max(1e-9, 1e-6 * float(lam[0]))
    comps = np.ascontiguousarray(quantise(vec[:, keep], COMPONENT_BITS))
    variances = lam[keep].astype(np.float64)
    k = int(variances.size)
    total = float(np.einsum("ij,ij->", za, za)) / za.shape[0]

    # Held-out rows: residual weights, then the channels' moments.
    zb = z[:, cal_idx]
    ub = quantise(zb.T @ comps, PROJECTION_BITS)
    resid = zb.T - ub @ comps.T
    v = np.mean(resid * resid, axis=0)
    weights = np.where(v > 1e-6, 1.0 / np.maximum(v, 1e-300), 0.0)
    names = ["t2"]
    dof = [float(k)]
    if k < design.d and np.count_nonzero(weights):
        names.append("spe")
        dof.append(float(np.count_nonzero(weights)))
    else:
        weights = np.zeros(design.d)
    # Channel moments and rows come from the held-out rows, through the draft's channels.
    draft = MultivariateProfile(
        settings=st,
        design=design,
        components=comps,
        variances=variances,
        weights=weights,
        channel_names=tuple(names),
        channel_dof=tuple(dof),
        channel_mean=(0.0,) * len(names),
        channel_sd=(1.0,) * len(names),
        row_channel=(),
        row_a=(),
        row_b=(),
        row_direction=(),
        row_role=(),
        row_threshold=(),
        target_arl=float(target_arl),
    )
    held = draft.channels(zb)
    roots = draft._roots(held.t2, held.spe)
    mean = [float(np.mean(r)) for r in roots]
    sd = [float(np.std(r)) for r in roots]
    if not all(s > 0 for s in sd):
        return None
    u = np.stack(
        [np.clip((r - m) / s, -st.clip, st.clip) for r, m, s in zip(roots, mean, sd, strict=True)]
    )
    chan, a, b, direction, role = _rows(st, len(names))
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    edge = st.resolve_at * min(st.shifts)
    samples = np.empty((len(chan), u.shape[1]))
    for r, c in enumerate(chan):
        # A return row is in control at the boundary drift, not at the reference.
        base = u[c] + (direction[r] * edge if role[r] == RETURN else 0.0)
        samples[r] = np.sort(a_arr[r] * base + b_arr[r])
    n_detect = sum(1 for x in role if x == DETECT)
    thresholds, log_arl = calibrate_thresholds(
        samples, a_arr, np.full(len(chan), float(target_arl) * n_detect), int(cal_idx.size)
    )
    fingerprint = _fingerprint(design, comps, variances)
    notes = {
        "fingerprint": fingerprint,
        "method": method,
        "fit_rows": int(fit_idx.size),
        "calibration_rows": int(cal_idx.size),
        "explained": round(float(variances.sum()) / total, 6) if total > 0 else 1.0,
        "rows_disabled": int(np.count_nonzero(~np.isfinite(thresholds))),
        "seed": seed,
    }
    return replace(
        draft,
        channel_mean=tuple(mean),
        channel_sd=tuple(sd),
        row_channel=tuple(chan),
        row_a=tuple(a),
        row_b=tuple(b),
        row_direction=tuple(direction),
        row_role=tuple(role),
        row_threshold=tuple(float(t) for t in thresholds),
        notes=notes,
    )


def _fingerprint(design: Design, comps: F64, variances: F64) -> str:
    import hashlib

    h = hashlib.blake2b(digest_size=12, person=b"dl.mv")
    for c in design.columns:
        h.update(repr((c.feature, c.category, c.scores)).encode())
    h.update(np.ascontiguousarray(comps, dtype="<f8").tobytes())
    h.update(np.ascontiguousarray(variances, dtype="<f8").tobytes())
    return h.hexdigest()
