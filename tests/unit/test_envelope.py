"""Signed envelopes and the key layout, without Redis."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from driftline.errors import ConfigError, StateCorrupt
from driftline.runtime.keyspace import (
    crc16,
    key_slot,
    partition_keys,
    reference_index_key,
    reference_key,
    state_record_name,
)
from driftline.runtime.sealer import ENVELOPE_FORMAT, ENVELOPE_OVERHEAD, MAGIC, Sealer

KEY = "dl:{g:predictions:0}:state\x00m1\x1fv1\x1fall"


@pytest.fixture
def sealer() -> Sealer:
    return Sealer(b"unit-test-signing-key-0123456789")


def test_round_trip(sealer):
    payload = b'{"t":"sketch","v":1,"n":3}'
    blob = sealer.seal(KEY, payload)
    assert blob.startswith(MAGIC + bytes([ENVELOPE_FORMAT]))
    assert len(blob) == len(payload) + ENVELOPE_OVERHEAD == len(payload) + 35
    assert sealer.open_sealed(KEY, blob) == payload


def test_empty_payload_and_unicode_key(sealer):
    blob = sealer.seal("dl:ref:{modèle}:v1", b"")
    assert sealer.open_sealed("dl:ref:{modèle}:v1", blob) == b""


def test_seal_is_deterministic(sealer):
    assert sealer.seal(KEY, b"x") == sealer.seal(KEY, b"x")


@pytest.mark.parametrize("index", [0, 1, 2, 3, 20, 34, 35, 40])
def test_any_flipped_byte_is_refused(sealer, index):
    blob = bytearray(sealer.seal(KEY, b"payload-of-some-length"))
    blob[index] ^= 0x01
    with pytest.raises(StateCorrupt):
        sealer.open_sealed(KEY, bytes(blob))


def test_moved_to_another_key_is_refused(sealer):
    blob = sealer.seal(KEY, b"payload")
    with pytest.raises(StateCorrupt, match="signature mismatch"):
        sealer.open_sealed(KEY.replace("all", "eu"), blob)


def test_key_and_payload_boundary_is_bound(sealer):
    # Without the length prefix ("ab", "c") and ("a", "bc") would sign the same bytes.
    blob = sealer.seal("ab", b"c")
    forged = blob[:ENVELOPE_OVERHEAD] + b"bc"
    with pytest.raises(StateCorrupt):
        sealer.open_sealed("a", forged)


def test_other_version_byte_is_refused(sealer):
    blob = bytearray(sealer.seal(KEY, b"payload"))
    blob[len(MAGIC)] = ENVELOPE_FORMAT + 1
    with pytest.raises(StateCorrupt, match="format version 2"):
        sealer.open_sealed(KEY, bytes(blob))


def test_other_signing_key_is_refused(sealer):
    blob = Sealer(b"another-signing-key-0123456789").seal(KEY, b"payload")
    with pytest.raises(StateCorrupt, match="signature mismatch"):
        sealer.open_sealed(KEY, blob)


@pytest.mark.parametrize("blob", [b"", b"DL", b"DL\x01" + b"\x00" * 31])
def test_truncated_is_refused(sealer, blob):
    with pytest.raises(StateCorrupt, match="shorter than an envelope"):
        sealer.open_sealed(KEY, blob)


def test_pickle_or_plain_json_is_refused(sealer):
    with pytest.raises(StateCorrupt, match="bad magic"):
        sealer.open_sealed(KEY, b"\x80\x04\x95" + b"\x00" * 40)
    with pytest.raises(StateCorrupt, match="bad magic"):
        sealer.open_sealed(KEY, b'{"t":"sketch","v":1,"padding":"' + b"x" * 40 + b'"}')


def test_signing_key_forms_and_minimum():
    blob = Sealer("a-string-signing-key-123").seal(KEY, b"p")
    assert Sealer(SecretStr("a-string-signing-key-123")).open_sealed(KEY, blob) == b"p"
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        Sealer(b"short")
    assert "signing-key" not in repr(Sealer("a-string-signing-key-123"))


# ------------------------------------------------------------------ key layout and slots


def test_crc16_reference_value():
    # The check value from the Redis Cluster specification.
    assert crc16(b"123456789") == 0x31C3


@pytest.mark.parametrize(
    ("key", "slot"),
    # Slots printed by `redis-cli -c` / CLUSTER KEYSLOT for these well-known keys.
    [("foo", 12182), ("bar", 5061), ("hello", 866), ("123456789", 0x31C3 & 0x3FFF)],
)
def test_key_slot_known_values(key, slot):
    assert key_slot(key) == slot


@pytest.mark.parametrize(
    ("key", "hashed"),
    # The hash-tag examples of the Redis Cluster specification.
    [
        ("{user1000}.following", "user1000"),
        ("{user1000}.followers", "user1000"),
        ("foo{}{bar}", "foo{}{bar}"),
        ("foo{{bar}}zap", "{bar"),
        ("foo{bar}{zap}", "bar"),
        ("no-tag-at-all", "no-tag-at-all"),
        ("open{only", "open{only"),
    ],
)
def test_key_slot_hash_tags(key, hashed):
    assert key_slot(key) == crc16(hashed.encode()) % 16384
    assert key_slot(key.encode()) == key_slot(key)


def test_partition_keys_share_one_slot():
    k = partition_keys("dl", "driftline-monitor", "predictions", 7)
    assert k.meta == "dl:{driftline-monitor:predictions:7}:meta"
    assert k.state == "dl:{driftline-monitor:predictions:7}:state"
    assert k.outbox == "dl:{driftline-monitor:predictions:7}:outbox"
    assert len({key_slot(x) for x in k.every()}) == 1
    # A group may contain ':' -- topics cannot, so the tag stays unambiguous.
    assert partition_keys("dl", "team:monitor", "p", 0).meta == "dl:{team:monitor:p:0}:meta"


def test_reference_keys_share_one_slot():
    a = reference_key("dl", "fraud-v", "v3")
    b = reference_key("dl", "fraud-v", "default")
    idx = reference_index_key("dl", "fraud-v")
    assert a == "dl:ref:{fraud-v}:v3"
    assert idx == "dl:refs:{fraud-v}"
    assert key_slot(a) == key_slot(b) == key_slot(idx)


@pytest.mark.parametrize(
    ("prefix", "group", "topic", "partition"),
    [
        ("dl{x}", "g", "t", 0),
        ("dl", "g}", "t", 0),
        ("dl", "", "t", 0),
        ("", "g", "t", 0),
        ("dl", "g", "a:b", 0),
        ("dl", "g", "a b", 0),
        ("dl", "g", "", 0),
        ("dl", "g", "t", -1),
        ("dl", "g", "t", True),
        ("dl", "g\x00", "t", 0),
    ],
)
def test_bad_key_parts_are_refused(prefix, group, topic, partition):
    with pytest.raises(ValueError):
        partition_keys(prefix, group, topic, partition)


def test_bad_reference_parts_are_refused():
    with pytest.raises(ValueError):
        reference_key("dl", "m}", "v1")
    with pytest.raises(ValueError):
        reference_key("dl", "m", "")


def test_state_record_name_separates_key_and_field():
    assert state_record_name("k", "f") == "k\x00f"
    assert state_record_name("k", "a\x00b") == "k\x00a\x00b"  # the first NUL splits
    with pytest.raises(ValueError):
        state_record_name("k\x00a", "b")
