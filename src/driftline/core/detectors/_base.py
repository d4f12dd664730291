"""What every detector shares: river's surface (one verb, read-only results) and the
versioned record around its parameters and state."""

from __future__ import annotations

from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from driftline.contract.codec import pack, unpack
from driftline.core.detectors._numeric import _F64, _I64, _as_1d
from driftline.errors import ConfigError, StateCorrupt


class DetectorBase:
    """A sequential change detector: ``update`` one value or ``update_many``, read
    ``drift_detected``; ``to_bytes``/``from_bytes`` as a tagged, versioned record.

    A subclass names its record (``TAG``, ``VERSION``) and its parameters (``PARAMS``,
    the constructor's keywords) and implements the hooks: ``_step`` (one value),
    ``_feed`` (an array; the detection positions), ``_param_fields`` and
    ``_state_fields`` (record fields), ``_params_from`` and ``_load`` (their inverse,
    refusing what they do not recognise with :class:`~driftline.errors.StateCorrupt`).
    """

    TAG: ClassVar[str]
    VERSION: ClassVar[int]
    PARAMS: ClassVar[tuple[str, ...]]

    _drift: bool

    @property
    def drift_detected(self) -> bool:
        """Whether the last update signalled a change."""
        return self._drift

    def update(self, x: float) -> Self:
        """Feed one value.

        Parameters
        ----------
        x
            The next value of the monitored sequence.

        Returns
        -------
        Self
            The detector, so that ``det.update(x).drift_detected`` reads naturally.
        """
        self._step(float(x))
        return self

    def update_many(self, xs: npt.ArrayLike) -> _I64:
        """Feed a whole 1-D array; return the positions at which a drift was detected.

        The same detections as calling :meth:`update` on each value in turn (see the
        class notes for the floats of the state).

        Parameters
        ----------
        xs
            The next values of the monitored sequence.

        Returns
        -------
        numpy.ndarray
            int64 positions within ``xs``, increasing.
        """
        return self._feed(_as_1d(xs))

    def to_bytes(self) -> bytes:
        """Serialise the parameters and the whole state (tag ``TAG``, version ``VERSION``)."""
        return pack(self.TAG, self.VERSION, {**self._param_fields(), **self._state_fields()})

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Rebuild a detector from :meth:`to_bytes` output.

        Raises
        ------
        StateCorrupt
            Not a record of this tag and version, or a field is missing, malformed or
            inconsistent.
        """
        fields = unpack(data, cls.TAG, cls.VERSION)
        params = cls._params_from(fields)
        try:
            obj = cls(**params)
        except ConfigError as exc:
            raise StateCorrupt(f"{cls.TAG}: {exc}") from None
        obj._load(fields)
        return obj

    def __repr__(self) -> str:
        args = ", ".join(f"{p}={getattr(self, p)!r}" for p in self.PARAMS)
        return f"{type(self).__name__}({args})"

    # ---- hooks -----------------------------------------------------------------------

    def _step(self, x: float) -> None:
        raise NotImplementedError

    def _feed(self, x: _F64) -> _I64:
        raise NotImplementedError

    def _param_fields(self) -> dict[str, Any]:
        raise NotImplementedError

    def _state_fields(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def _params_from(cls, fields: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _load(self, fields: dict[str, Any]) -> None:
        raise NotImplementedError


def positions(hits: list[int]) -> _I64:
    """Detection positions as the int64 array ``update_many`` returns."""
    return np.asarray(hits, dtype=np.int64)
