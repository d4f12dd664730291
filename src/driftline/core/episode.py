"""The episode: hysteresis and cooldown of one alert kind of one stream.

Both loops publish one alert per episode and status: an episode opens (``firing``),
stays open while its evidence holds, resolves after ``resolve_after`` clean windows and
then cools down for ``cooldown`` windows before it may open again. :class:`Episode` is
that state machine; each loop subclasses it with what its alerts carry.

Examples
--------
>>> ep = Episode()
>>> [ep.close_window(d, False, resolve_after=2, cooldown=1) for d in (1, 1, 0, 0, 1, 1)]
['firing', None, None, 'resolved', None, 'firing']
>>> ep.number
2
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Episode", "Transition"]

Transition = Literal["firing", "resolved"]


@dataclass
class Episode:
    """Whether an alert kind is firing, its episode number and its window counters."""

    firing: bool = False
    number: int = 0
    clean_windows: int = 0
    cooldown: int = 0
    severity: str = "warning"

    @property
    def may_open(self) -> bool:
        """Whether a detection may open a new episode now (not firing, not cooling down)."""
        return not self.firing and self.cooldown <= 0

    def open(self) -> None:
        """Start the next episode."""
        self.firing, self.clean_windows = True, 0
        self.number += 1

    def close_window(
        self, drifting: bool, holding: bool, *, resolve_after: int, cooldown: int
    ) -> Transition | None:
        """A window closed: ``drifting`` whether its evidence opens (or keeps) the
        episode, ``holding`` whether other evidence keeps a firing episode open.

        Returns the transition to publish, if any.
        """
        if not self.firing:
            if self.cooldown > 0:
                self.cooldown -= 1
                return None
            if drifting:
                self.open()
                return "firing"
            return None
        if drifting or holding:
            self.clean_windows = 0
            return None
        self.clean_windows += 1
        if self.clean_windows < resolve_after:
            return None
        self.firing = False
        self.cooldown = cooldown
        return "resolved"

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form."""
        return dict(self.__dict__)
