"""The record writes' script arguments (``lua/store_join.lua`` reads them): each hash's
records and tombstones packed as u8 length + bytes, in order."""

from __future__ import annotations

import pytest

from driftline.runtime.store_records import RecordWrites


def _packed(items: list[bytes]) -> bytes:
    return b"".join(bytes((len(x),)) + x for x in items)


def test_arguments_pack_each_hash_in_order() -> None:
    puts = {"a": {b"d1": b"r1" * 8, b"d2": b""}, "b": {}, "c": {bytes(255): b"x"}}
    tombs = {"a": [b"t1", b"t2"], "z": []}
    w = RecordWrites(puts, {"a": 7, "c": 9}, tombs, b"\x00")
    assert w.arguments({"a": 0, "b": 1, "c": 2, "z": 3}) == [
        "2",
        "0",
        "7",
        _packed([b"d1", b"r1" * 8, b"d2", b""]),
        "2",
        "9",
        _packed([bytes(255), b"x"]),
        "1",
        "0",
        _packed([b"t1", b"t2"]),
        b"\x00",
    ]


def test_a_string_over_255_bytes_is_refused() -> None:
    w = RecordWrites({"a": {b"d": bytes(256)}}, {"a": 1})
    with pytest.raises(ValueError, match="at most 255 bytes"):
        w.arguments({"a": 0})


def test_a_record_without_expiry_is_refused() -> None:
    with pytest.raises(ValueError, match="without an expiry"):
        RecordWrites({"a": {b"d": b"r"}}).arguments({"a": 0})
