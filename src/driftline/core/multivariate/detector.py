"""The sequential multivariate detector: CUSUM rows on the channels, episodes, state.

Per stream, one :class:`MultivariateDetector` runs the calibrated rows of its
:class:`~driftline.core.multivariate.fit.MultivariateProfile` over the per-event
channels (``t2`` and, with dropped components, ``spe``) on the shared fixed-point
kernel :class:`~driftline.core.detectors.bank.CusumBank`. Each channel is a *group*
that is at reference or away (up or down), as in ``bench/DETECTION.md``: a detection
row crossing its threshold sends its channel away (``fire`` if no channel was away,
else ``update``); while away, its return row runs and brings it back (``return``, or
``resolve`` when it was the last channel away).

Exact and batch-invariant: given the per-event channels (bit-identical whatever the
batch, see :mod:`.design`) the kernel's integer state and transitions do not depend
on batch boundaries. The window and episode sketches are float sums (equal to 1e-9
relative).

River-like: ``update_many`` feeds events, results are read-only properties
(``drift_detected``, ``drifting``, ``transitions``, ``effects``, ``level``). State goes
through :func:`driftline.contract.codec.pack` (never pickle).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.contract.codec import pack, unpack
from driftline.core.detectors.bank import BankLayout, CusumBank
from driftline.core.multivariate.fit import Channels, MultivariateProfile
from driftline.core.multivariate.sketch import Attribution, ComponentSketch, attribute
from driftline.errors import SketchMismatch, StateCorrupt

__all__ = ["MultivariateDetector", "Transition"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


@dataclass(frozen=True)
class Transition:
    """What happened at one event of a batch.

    ``kind`` is ``fire`` (the detector's episode opens), ``update`` (the other channel
    went away too), ``return`` (a channel came back, the other still away) or
    ``resolve`` (the last channel came back). ``position`` is the event's index in the
    batch given to :meth:`MultivariateDetector.update_many`; ``statistic`` and
    ``threshold`` are the crossing row's CUSUM value and threshold, in nats.
    """

    position: int
    kind: str
    channel: str
    direction: int
    statistic: float
    threshold: float
    #: ``fire`` and ``update``: what moved, from the events up to and including this
    #: one (the open window, with the previous one while it is short).
    attribution: Attribution | None = None


class MultivariateDetector:
    """The multivariate detector of one stream (model, version, segment).

    Parameters
    ----------
    profile
        The fitted, calibrated model (:func:`~driftline.core.multivariate.fit_multivariate`).

    Examples
    --------
    See ``tests/unit/test_multivariate.py`` and ``bench/bench_multivariate.py``.
    """

    TAG = "mv_detector"
    VERSION = 1

    def __init__(self, profile: MultivariateProfile) -> None:
        self.profile = profile
        p = profile
        # Each channel is its own group.
        self.bank = CusumBank(
            BankLayout.from_rows(
                p.row_channel,
                p.row_a,
                p.row_b,
                p.row_channel,
                p.row_direction,
                p.row_role,
                p.row_threshold,
                names=p.channel_names,
            )
        )
        #: Highest CUSUM level (statistic / threshold over the detection rows) this window.
        self.window_level = 0.0
        self.window = ComponentSketch.zero(p)
        #: The last closed window (attribution early in a window needs more events).
        self.previous = ComponentSketch.zero(p)
        #: Events since the episode opened (None between episodes).
        self.episode: ComponentSketch | None = None
        self._last: list[Transition] = []

    # ---------------------------------------------------------------- properties
    @property
    def n(self) -> int:
        """Events seen."""
        return self.bank.n

    @property
    def drift_detected(self) -> bool:
        """Whether the last batch opened an episode."""
        return any(t.kind == "fire" for t in self._last)

    @property
    def drifting(self) -> bool:
        """Whether an episode is open (some channel is away)."""
        return self.bank.drifting

    @property
    def transitions(self) -> list[Transition]:
        """What the last batch did, in event order."""
        return list(self._last)

    @property
    def level(self) -> float:
        """Current CUSUM level: the highest statistic / threshold of the detection rows."""
        return self.bank.level

    def effects(self) -> dict[str, float]:
        """Per channel away: its mean standardised value since it went away (in sd)."""
        names = self.profile.channel_names
        return {names[g]: v for g, v in self.bank.effects().items()}

    # ---------------------------------------------------------------- updates
    def update_many(self, z: F64) -> I64:
        """Feed a batch of scores (``(d, n)``, from the profile's design), in order.

        Returns the positions (within the batch) where an episode opened.
        """
        self.update_channels(self.profile.channels(z))
        return np.asarray([t.position for t in self._last if t.kind == "fire"], dtype=np.int64)

    def update_channels(self, ch: Channels) -> None:
        """Feed a batch's channels (from ``profile.channels``), in order."""
        was = self.drifting
        names = self.profile.channel_names
        crossings = self.bank.update_many(ch.u)
        self.window_level = max(self.window_level, self.bank.peak)
        self._last = []
        # The sketches take the events up to each transition first, so what a firing
        # says about the window does not depend on where the batch ended. The episode
        # sketch takes the events after the firing, up to the resolving event.
        drifting, done = was, 0
        for c in crossings:
            stop = c.position + 1
            self.window.update(ch, done, stop)
            if drifting and self.episode is not None:
                self.episode.update(ch, done, stop)
            done = stop
            att = None
            if c.kind in ("fire", "update"):
                att = attribute(self.profile, self.recent())
            if c.kind == "fire":
                self.episode = ComponentSketch.zero(self.profile)
                drifting = True
            elif c.kind == "resolve":
                drifting = False
            self._last.append(
                Transition(
                    c.position,
                    c.kind,
                    names[c.group],
                    c.direction,
                    c.statistic,
                    c.threshold,
                    att,
                )
            )
        self.window.update(ch, done)
        if drifting and self.episode is not None:
            self.episode.update(ch, done)

    def close_window(self) -> tuple[ComponentSketch, float]:
        """End the window: its sketch and highest level; both start afresh."""
        out = (self.window, self.window_level)
        self.previous = self.window
        self.window = ComponentSketch.zero(self.profile)
        self.window_level = self.level
        return out

    def recent(self, min_events: int = 250) -> ComponentSketch:
        """The open window, with the previous one if it holds fewer than ``min_events``."""
        if self.window.n >= min_events:
            return self.window
        return self.previous.merge(self.window)

    # ---------------------------------------------------------------- state
    def to_bytes(self) -> bytes:
        """The state as a versioned record (integers, floats, lists); not the model."""
        return pack(self.TAG, self.VERSION, self.to_fields())

    def to_fields(self) -> dict[str, Any]:
        """Plain fields for embedding in a larger record."""
        return {
            "fp": self.profile.fingerprint,
            **self.bank.state_fields(),
            "window_level": self.window_level,
            "window": self.window.to_fields(),
            "previous": self.previous.to_fields(),
            "episode": None if self.episode is None else self.episode.to_fields(),
        }

    @classmethod
    def from_bytes(cls, data: bytes, profile: MultivariateProfile) -> MultivariateDetector:
        """Inverse of :meth:`to_bytes` for ``profile`` (StateCorrupt, SketchMismatch)."""
        return cls.from_fields(unpack(data, cls.TAG, cls.VERSION), profile)

    @classmethod
    def from_fields(cls, f: dict[str, Any], profile: MultivariateProfile) -> MultivariateDetector:
        """Inverse of :meth:`to_fields`."""
        if f.get("fp") != profile.fingerprint:
            raise SketchMismatch("detector state of another multivariate model")
        det = cls(profile)
        try:
            det.bank.load_state(f)
            det.window_level = float(f["window_level"])
            det.window = ComponentSketch.from_fields(f["window"], profile)
            det.previous = ComponentSketch.from_fields(f["previous"], profile)
            ep = f["episode"]
            det.episode = None if ep is None else ComponentSketch.from_fields(ep, profile)
        except (KeyError, TypeError, ValueError):
            raise StateCorrupt(f"{cls.TAG}: missing or malformed fields") from None
        return det

    def same_state(self, other: MultivariateDetector, rtol: float = 1e-9) -> bool:
        """Exactly equal CUSUM state; sketches equal to ``rtol``."""
        episodes_match = (self.episode is None) == (other.episode is None) and (
            self.episode is None
            or other.episode is None
            or self.episode.close_to(other.episode, rtol)
        )
        return (
            self.bank.same_state(other.bank)
            and self.window_level == other.window_level
            and self.window.close_to(other.window, rtol)
            and self.previous.close_to(other.previous, rtol)
            and episodes_match
        )
