"""Dead letters for people: ``driftline dead-letters`` reads ``<topic>.dlq``.

A refused record is kept in the dead-letter topic with its original bytes and the
reason in its headers (``dl.error.*``, :func:`driftline.runtime.topics.dead_letter_headers`).
:func:`format_dead_letter` prints one line a record: when, where it came from, the stage
and the reason, and the start of the value, so an on-call can tell which producer sends
what without a Kafka command-line client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from driftline.config import Settings
from driftline.views.alerts import follower_watch, topic_records

__all__ = ["VALUE_CHARS", "follow_dead_letters", "format_dead_letter"]

#: How much of a dead letter's value a line shows.
VALUE_CHARS = 200


def format_dead_letter(
    dlq: str,
    timestamp_ms: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]],
) -> str:
    """One readable line for a dead-letter record.

    Examples
    --------
    >>> line = format_dead_letter("predictions.dlq", 1796601600000, b"fraud", b'{"a": 1,}',
    ...     [("dl.error.topic", b"predictions"), ("dl.error.partition", b"2"),
    ...      ("dl.error.offset", b"41"), ("dl.error.stage", b"decode"),
    ...      ("dl.error.class", b"DecodeError"), ("dl.error.message", b"not JSON")])
    >>> for part in line.split("  "):
    ...     print(part)
    2026-12-07T00:00:00Z predictions.dlq key=fraud stage=decode DecodeError: not JSON
    from=predictions[2]@41
    value={"a": 1,}
    """
    h: Mapping[str, str] = {k: v.decode("utf-8", "replace") for k, v in headers}
    at = datetime.fromtimestamp(timestamp_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = (value or b"").decode("utf-8", "replace")
    shown = text[:VALUE_CHARS].encode("unicode_escape").decode("ascii")
    more = f"... ({len(value or b''):,} bytes)" if len(text) > VALUE_CHARS else ""
    if "dl.error.truncated" in h:
        more += f" (truncated; {h['dl.error.truncated']} bytes sent)"
    origin = (
        f"{h['dl.error.topic']}[{h.get('dl.error.partition', '?')}]@{h.get('dl.error.offset', '?')}"
        if "dl.error.topic" in h
        else "?"
    )
    who = key.decode("utf-8", "replace") if key else "-"
    why = f"{h.get('dl.error.class', '?')}: {h.get('dl.error.message', '(no reason header)')}"
    return (
        f"{at} {dlq} key={who} stage={h.get('dl.error.stage', '?')} {why}"
        f"  from={origin}  value={shown}{more}"
    )


async def follow_dead_letters(
    settings: Settings,
    topics: Sequence[str],
    stop: asyncio.Event,
    *,
    from_start: bool = False,
    since_ms: int | None = None,
    follow: bool = True,
    emit: Callable[[str], None] | None = None,
) -> int:
    """Print the dead letters of ``topics`` (their ``<topic>.dlq``) until ``stop`` is
    set; return how many. Where to start and when to end:
    :func:`driftline.views.alerts.topic_records`, one topic after the other when not
    following, all at once when following."""
    out = emit or (lambda line: print(line, flush=True))
    shown = 0
    watch = follower_watch("dead-letters", settings)  # one line per outage, all topics

    async def one(dlq: str) -> None:
        nonlocal shown
        records = topic_records(
            settings,
            dlq,
            stop,
            from_start=from_start,
            since_ms=since_ms,
            follow=follow,
            watch=watch,
        )
        try:
            async for r in records:
                out(format_dead_letter(dlq, r.timestamp, r.key, r.value, r.headers or ()))
                shown += 1
        finally:
            await records.aclose()

    dlqs = [settings.topics.dlq(t) for t in topics]
    if follow:
        await asyncio.gather(*(one(d) for d in dlqs))
    else:
        for d in dlqs:
            await one(d)
    return shown
