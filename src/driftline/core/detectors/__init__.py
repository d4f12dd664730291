"""Sequential change detectors with explicit, versioned, pickle-free state.

The fast loop runs calibrated banks of one-sided CUSUMs (:mod:`.bank`, thresholds from
:mod:`.arl`): :class:`FeatureBank` is one feature's bank with the detectors' surface,
:class:`~driftline.core.detectors.bank.CusumBank` a stream's stacked banks. Two textbook
detectors give exactly the detection indices of their ``river`` 0.26.1 counterparts on
the same sequence (ADWIN watches the slow loop's error stream):

* :class:`PageHinkley` -- ``river.drift.PageHinkley``, with a numpy-vectorised
  :meth:`PageHinkley.update_many` for long arrays (tens of ns per value);
* :class:`ADWIN` -- ``river.drift.ADWIN`` (whose core is Rust in river), re-implemented
  in plain Python with the same floating-point operation order, so the window and
  its statistics are bit-for-bit those of river.

Both follow river's style: one verb (``update``), results as read-only properties
(``drift_detected`` ...). As in river, a detector that reported a drift resets itself
on the *next* update. State is written with :func:`driftline.contract.codec.pack` (a tagged,
versioned JSON record: never pickle) and read back with ``from_bytes``, which raises
:class:`~driftline.errors.StateCorrupt` on anything it does not recognise.

Examples
--------
>>> import numpy as np
>>> xs = np.r_[np.zeros(500), np.full(500, 5.0)]
>>> ph = PageHinkley()
>>> ph.update_many(xs)
array([510])
>>> ADWIN().update_many(xs)
array([511])
>>> DETECTORS["adwin"].from_bytes(ADWIN().update(1.0).to_bytes()).width
1
"""

from __future__ import annotations

from typing import Final, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt

from driftline.core.detectors.adwin import ADWIN
from driftline.core.detectors.bank import FeatureBank
from driftline.core.detectors.page_hinkley import PageHinkley

_I64 = npt.NDArray[np.int64]

__all__ = ["ADWIN", "DETECTORS", "Detector", "FeatureBank", "PageHinkley"]


@runtime_checkable
class Detector(Protocol):
    """What every sequential change detector offers.

    Examples
    --------
    >>> all(isinstance(cls(), Detector) for cls in (PageHinkley, ADWIN))
    True
    """

    @property
    def drift_detected(self) -> bool:
        """Whether the last update signalled a change."""
        ...

    def update(self, x: float) -> Self:
        """Feed one value; return the detector itself."""
        ...

    def update_many(self, xs: npt.ArrayLike) -> _I64:
        """Feed a 1-D sequence; return the positions (within it) of the detections."""
        ...

    def to_bytes(self) -> bytes:
        """Serialise the parameters and the whole state."""
        ...

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Rebuild a detector written by :meth:`to_bytes`."""
        ...


#: Detector classes by the tag of their serialised state.
DETECTORS: Final[dict[str, type[Detector]]] = {
    PageHinkley.TAG: PageHinkley,
    ADWIN.TAG: ADWIN,
    FeatureBank.TAG: FeatureBank,
}
