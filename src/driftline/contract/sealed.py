"""Signed, versioned envelopes for every record Driftline stores (:class:`Sealer`).

HMAC-SHA256 over the format version, the name of the place a record is stored and
the payload, so a record cannot be altered, forged, or moved to another field or key
without :class:`~driftline.errors.StateCorrupt`. Nothing is ever pickled.
"""

from __future__ import annotations

import hashlib
import hmac

from pydantic import SecretStr

from driftline.errors import ConfigError, StateCorrupt

__all__ = ["ENVELOPE_FORMAT", "ENVELOPE_OVERHEAD", "MAGIC", "MIN_SIGNING_KEY_BYTES", "Sealer"]


# --------------------------------------------------------------------------- envelope

#: Magic bytes that open every envelope.
MAGIC = b"DL"
#: Envelope format version (the byte after the magic). Bump on any layout change.
ENVELOPE_FORMAT = 1
_TAG_LEN = hashlib.sha256().digest_size
_HEADER_LEN = len(MAGIC) + 1
#: Bytes an envelope adds to its payload: magic, version byte, HMAC-SHA256 tag.
ENVELOPE_OVERHEAD = _HEADER_LEN + _TAG_LEN
#: Shortest signing key accepted, in bytes.
MIN_SIGNING_KEY_BYTES = 16


class Sealer:
    """Seals payloads into signed, versioned envelopes and opens them again.

    Layout: ``b"DL"`` | format version (1 byte) | HMAC-SHA256 tag (32 bytes) | payload.
    The tag covers the magic, the version, the length-prefixed name of the place the
    record is stored (``key``) and the payload; it is checked in constant time.

    Examples
    --------
    >>> s = Sealer(b"0123456789abcdef-example")
    >>> blob = s.seal("dl:ref:{m}:v1", b"profile")
    >>> s.open_sealed("dl:ref:{m}:v1", blob)
    b'profile'
    >>> try:
    ...     s.open_sealed("dl:ref:{m}:v2", blob)  # moved to another key
    ... except StateCorrupt:
    ...     print("refused")
    refused
    """

    __slots__ = ("_key",)

    def __init__(self, signing_key: bytes | str | SecretStr) -> None:
        if isinstance(signing_key, SecretStr):
            signing_key = signing_key.get_secret_value()
        if isinstance(signing_key, str):
            signing_key = signing_key.encode("utf-8")
        if len(signing_key) < MIN_SIGNING_KEY_BYTES:
            raise ConfigError(
                f"redis.state_signing_key must be at least {MIN_SIGNING_KEY_BYTES} bytes"
            )
        self._key = bytes(signing_key)

    def __repr__(self) -> str:
        return "Sealer(<signing key redacted>)"

    def _tag(self, key: str, version: int, payload: bytes) -> bytes:
        name = key.encode("utf-8")
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        mac.update(MAGIC)
        mac.update(bytes((version,)))
        mac.update(len(name).to_bytes(4, "big"))
        mac.update(name)
        mac.update(payload)
        return mac.digest()

    def seal(self, key: str, payload: bytes) -> bytes:
        """Wrap ``payload`` for storage under ``key`` (a Redis key, or key + field)."""
        tag = self._tag(key, ENVELOPE_FORMAT, payload)
        return MAGIC + bytes((ENVELOPE_FORMAT,)) + tag + payload

    def open_sealed(self, key: str, blob: bytes) -> bytes:
        """Check and unwrap an envelope read from ``key``; return the payload.

        Raises
        ------
        StateCorrupt
            Truncated bytes, wrong magic, unknown format version, or a tag that does
            not match (tampered, moved from another key, or signed with another key).
        """
        where = f"record for {key!r}"
        if len(blob) < ENVELOPE_OVERHEAD:
            raise StateCorrupt(f"{where}: {len(blob)} bytes, shorter than an envelope")
        if blob[: len(MAGIC)] != MAGIC:
            raise StateCorrupt(f"{where}: not a Driftline envelope (bad magic)")
        version = blob[len(MAGIC)]
        if version != ENVELOPE_FORMAT:
            raise StateCorrupt(
                f"{where}: envelope format version {version} is not {ENVELOPE_FORMAT}"
            )
        tag = blob[_HEADER_LEN:ENVELOPE_OVERHEAD]
        payload = blob[ENVELOPE_OVERHEAD:]
        if not hmac.compare_digest(tag, self._tag(key, version, payload)):
            raise StateCorrupt(
                f"{where}: signature mismatch (tampered, moved from another key, "
                "or signed with another key)"
            )
        return bytes(payload)
