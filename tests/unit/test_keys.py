"""Stream keys survive any strings (issue 16): segment texts and state keys round-trip,
and what an earlier version stored is found and read the same way.

Random strings come from a seeded generator biased towards the characters the
encodings use (``,``, ``=``, ``%``, U+001F), control characters, Redis hash-tag braces
and non-ASCII text (hypothesis-like, without a new dependency).
"""

from __future__ import annotations

import random

import pytest

from driftline.contract.keys import StateKey, segment_dict, segment_key

#: Characters the encodings care about, then ordinary and non-ASCII ones.
SPECIAL = [",", "=", "%", "\x1f", "\x00", "\n", "\x7f", "\x85", "{", "}", "%2C", "%25", "%1F"]
ORDINARY = ["a", "b", "Z", "0", "-", "_", ".", " ", "é", "e\u0301", "ｍ", "日", "😀", ":"]


def _text(rng: random.Random, min_len: int = 0) -> str:
    n = rng.choice([0, 1, 1, 2, 3, 5, 8, 20])
    n = max(n, min_len)
    pool = SPECIAL if rng.random() < 0.5 else ORDINARY
    return "".join(rng.choice(pool if rng.random() < 0.7 else SPECIAL + ORDINARY) for _ in range(n))


def _plain(rng: random.Random) -> str:
    return "".join(rng.choice(ORDINARY) for _ in range(rng.randrange(1, 8)))


def _segment(rng: random.Random) -> dict[str, str]:
    if rng.random() < 0.3:  # what real data mostly looks like
        return {_plain(rng): _plain(rng) for _ in range(rng.randrange(1, 5))}
    return {_text(rng): _text(rng) for _ in range(rng.randrange(1, 5))}


def _legacy_segment_key(segment: dict[str, str]) -> str:
    """What the version before issue 16 wrote."""
    return ",".join(f"{k}={segment[k]}" for k in sorted(segment))


def test_segment_text_round_trips_for_any_strings() -> None:
    rng = random.Random(16)
    escaped = 0
    for _ in range(10_000):
        seg = _segment(rng)
        text = segment_key(seg)
        assert segment_dict(text) == seg, (seg, text)
        escaped += text.startswith("=")
        # the text is printable: no control character reaches a hash field or a page
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text), text
    assert 1_000 < escaped < 9_500  # both forms were exercised


def test_state_key_round_trips_for_any_strings() -> None:
    rng = random.Random(1601)
    for _ in range(10_000):
        seg = segment_key(_segment(rng)) if rng.random() < 0.5 else _text(rng)
        key = StateKey(_text(rng), _text(rng), seg)
        assert StateKey.decode(key.encode()) == key, key


def test_distinct_keys_never_share_a_field() -> None:
    rng = random.Random(7)
    seen: dict[str, StateKey] = {}
    for _ in range(10_000):
        key = StateKey(_text(rng), _text(rng), _text(rng))
        prior = seen.setdefault(key.encode(), key)
        assert prior == key, (prior, key)
    segs: dict[str, dict[str, str]] = {}
    for _ in range(10_000):
        seg = _segment(rng)
        prior_seg = segs.setdefault(segment_key(seg), seg)
        assert prior_seg == seg, (prior_seg, seg)


@pytest.mark.parametrize(
    "segment",
    [{"region": "eu"}, {"plan": "pro", "region": "eu"}, {"rate": "50%"}, {"k": "{x}"}, {"a": ""}],
)
def test_keys_that_needed_no_escaping_are_written_as_before(segment: dict[str, str]) -> None:
    """Backward compatible: the state fields an earlier version stored are found again."""
    legacy = _legacy_segment_key(segment)
    assert segment_key(segment) == legacy
    assert segment_dict(legacy) == segment
    key = StateKey("churn", "3", legacy)
    assert key.encode() == f"churn\x1f3\x1f{legacy}"
    assert StateKey.decode(f"churn\x1f3\x1f{legacy}") == key


def test_issue_16_row_3_a_comma_in_a_value_is_not_a_second_key() -> None:
    # Joined naively, {"a": "b", "c": "d"} and {"a": "b,c=d"} give the same text: the
    # first, seen first, must not hand its text over to the second.
    assert segment_key({"a": "b", "c": "d"}) == "a=b,c=d"
    assert segment_key({"a": "b,c=d"}) == "=a=b%2Cc%3Dd"
    text = segment_key({"r": "x,q=z"})
    assert text == "=r=x%2Cq%3Dz"
    assert segment_dict(text) == {"r": "x,q=z"}
    assert segment_key({"r": "x", "q": "z"}) == "q=z,r=x" != text


def test_issue_16_row_2_a_separator_in_an_id_still_decodes() -> None:
    key = StateKey("m\x1fx", "1", "")
    assert key.encode().count("\x1f") == 3
    assert StateKey.decode(key.encode()) == key


def test_ambiguous_texts_of_earlier_versions_decode_without_raising() -> None:
    # What an earlier version wrote for {"r": "x,q"} and {"a,b": "c"} (which it could
    # not read back itself): a best reading, never an exception.
    assert segment_dict("r=x,q") == {"r": "x,q"}
    assert segment_dict("a,b=c") == {"a": "", "b": "c"}
    with pytest.raises(ValueError, match="not a state key"):
        StateKey.decode("no separator")
