"""The signed, versioned envelope, under its historical runtime path.

The envelope is a stored format, so it lives in :mod:`driftline.contract.sealed`
(reference files written without Redis use it too); this module keeps the import
path the store and its tests use.
"""

from driftline.contract.sealed import (
    ENVELOPE_FORMAT,
    ENVELOPE_OVERHEAD,
    MAGIC,
    MIN_SIGNING_KEY_BYTES,
    Sealer,
)

__all__ = ["ENVELOPE_FORMAT", "ENVELOPE_OVERHEAD", "MAGIC", "MIN_SIGNING_KEY_BYTES", "Sealer"]
