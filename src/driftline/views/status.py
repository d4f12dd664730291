"""The live status page: ``driftline serve``.

A read-only web page over what Driftline keeps in Redis: every model with history, its
state (healthy, drifting, degraded), its active alerts and its last window, with a link
to a per-model page that carries the same charts as the report
(:mod:`driftline.views.report`).

Standard library only: a fixed pool of threads answers requests, whatever the number
of open connections (:mod:`driftline.views.bounded_http`); one asyncio loop in a
background thread owns the Redis client and the
:class:`~driftline.runtime.store.StateStore`, and request threads hand it coroutines. Pages are
cached for a few seconds, so a page left open on a wall screen costs Redis little.

The index lists :data:`PAGE_SIZE` models per page, sorted by name (problems first within
a page, ``/?page=N``); the model names are read with ``SSCAN`` and each page's history
in one pipelined round trip, so 100 000 models answer as fast as a few.

Routes (GET and HEAD only; anything else is 405)::

    /?page=N              the models and their state, 50 a page (refreshes every 15 s)
    /model/<model_id>     the model's report page (?version=&segment=&since=)
    /api/status?page=N    the same in JSON, with page, pages and total
    /healthz              "ok" when Redis answers

TLS uses the same settings as the metrics endpoint (``metrics_certfile`` and
``metrics_keyfile``); the TLS handshake runs in the request's thread, so a slow client
cannot hold up the others.
"""

from __future__ import annotations

import asyncio
import html
import logging
import ssl
import threading
import time
from collections.abc import Coroutine, Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlsplit

import orjson

from driftline.config import Settings
from driftline.contract.history import alert_order, decode_alert, decode_perf
from driftline.core.reference import ReferenceProfile
from driftline.runtime.redis_client import RedisClient
from driftline.runtime.store import StateStore, open_store
from driftline.views.bounded_http import BoundedHTTPServer
from driftline.views.report.build import (
    ACCURACY_DROP,
    active_alerts,
    classify_state,
    fmt_time,
    report_from_store,
    signal_name,
)
from driftline.views.report.render import (
    alerts_table,
    content_security_policy,
    page_css,
    render_report,
)

__all__ = [
    "PAGE_SIZE",
    "Page",
    "StatusServer",
    "late_future_text",
    "model_statuses",
    "render_index",
    "status_text",
    "warming_line",
    "window_line",
]

log = logging.getLogger("driftline.serve")

#: Seconds a rendered page or status is reused.
CACHE_SECONDS = 5.0
#: Alerts read per model for the index (newest first).
INDEX_ALERTS = 200
#: Models per page of the index (sorted by name; problems first within a page).
PAGE_SIZE = 50
#: Seconds a request waits for Redis before answering 503.
REDIS_TIMEOUT = 20.0
#: Socket timeout of one connection (also bounds the TLS handshake).
CONNECTION_TIMEOUT = 30.0

_T = TypeVar("_T")


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


#: Performance points read per model: the latest by event time is among the newest
#: written (labels join out of order, so the newest written may be an earlier time's).
STATUS_PERF = 32


def latest_point(entries: Sequence[tuple[str, bytes]]) -> dict[str, Any] | None:
    """The performance point of the whole model (no segment) with the latest event
    time among ``entries``: the one the report judges accuracy by, so the status page
    and the report say the same state."""
    points = []
    for _, blob in entries:
        try:
            p = decode_perf(blob)
        except ValueError:
            continue
        if not p.get("segment") and (
            p.get("accuracy") is not None or p.get("estimated_accuracy") is not None
        ):
            points.append(p)
    return max(points, key=lambda p: p["at"], default=None)


async def model_statuses(
    store: StateStore, models: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """One status record per model (``models``, or every model with history): state,
    active alerts, last windows; problems first.

    The history of all the models is read in one pipelined round trip
    (:meth:`StateStore.history_snapshots`), so a page of models costs one request to
    Redis, plus one per model with a performance point (its reference accuracy).
    """
    if models is None:
        models = await store.history_models()
    out: list[dict[str, Any]] = []
    for snap in await store.history_snapshots(models, alerts=INDEX_ALERTS, perf=STATUS_PERF):
        model = snap.model_id
        streams: dict[tuple[str, str], dict[str, Any]] = {}
        warming: list[dict[str, Any]] = []
        for blob in snap.latest.values():
            try:
                w = orjson.loads(blob)
                key = (str(w["model_version"]), str(w.get("segment", "")))
                if "warmup" in w:  # no window yet: its reference is being built
                    warming.append(_warming(key, w["warmup"]))
                    continue
                streams[key] = {
                    "version": key[0],
                    "segment": key[1],
                    "window": int(w["window"]),
                    "start": int(w["start"]),
                    "end": int(w["end"]),
                    "count": int(w["count"]),
                    "episodes": {str(k): bool(v) for k, v in dict(w["episodes"]).items()},
                    "drifted": [
                        {"feature": str(d["feature"]), "value": float(d["value"])}
                        for d in w.get("drifted", [])
                    ],
                    "joint": _joint(w.get("joint")),
                    "late_events": _count(w.get("late_events")),
                    "future_events": _count(w.get("future_events")),
                    # The last window's own (absent: unknown, or an older entry).
                    "window_late_events": _maybe_count(w.get("window_late_events")),
                    "window_future_events": _maybe_count(w.get("window_future_events")),
                }
            except (ValueError, KeyError, TypeError):
                continue
        alerts = []
        for _, blob in snap.alerts:
            try:
                alerts.append(decode_alert(blob))
            except ValueError:
                continue
        alerts.sort(key=alert_order)
        active = active_alerts(alerts, streams)
        acc_drop = False
        point = latest_point(snap.perf)
        if point is not None:
            try:
                found = await store.resolve_reference(model, point["model_version"])
                ref_acc = ReferenceProfile.from_bytes(found[1]).outputs.accuracy if found else None
                acc = point.get("accuracy")
                acc = acc if acc is not None else point.get("estimated_accuracy")
                acc_drop = ref_acc is not None and acc is not None and acc < ref_acc - ACCURACY_DROP
            except ValueError:
                acc_drop = False
        ordered = sorted(streams.values(), key=lambda s: -s["end"])
        out.append(
            {
                "model": model,
                "state": classify_state(active, bool(streams), acc_drop),
                "active": active,
                "streams": ordered,
                "warming_up": sorted(warming, key=lambda w: (w["version"], w["segment"])),
                "last_end": ordered[0]["end"] if ordered else None,
                "accuracy_drop": acc_drop,
            }
        )
    order = {"degraded": 0, "drifting": 1, "unknown": 2, "healthy": 3}
    out.sort(key=lambda s: (order[s["state"]], s["model"]))
    return out


def _warming(key: tuple[str, str], v: Any) -> dict[str, Any]:
    """A stream warming up (untrusted entry): events collected of how many."""
    events, of = _count(v["events"]), _count(v["of"])
    if not of:
        raise ValueError("warm-up entry without its target")
    return {"version": key[0], "segment": key[1], "events": min(events, of), "of": of}


def _warming_text(w: Mapping[str, Any]) -> str:
    """One stream warming up, for the index (escaped)."""
    head, _, note = warming_line(w).partition(" (")
    note = f" <small class=muted>({_e(note)}</small>" if note else ""
    return f'<span class="warming">{_e(head)}{note}</span>'


def warming_line(w: Mapping[str, Any]) -> str:
    """One stream warming up, as text."""
    name = f"v{w['version']}{(' ' + w['segment']) if w['segment'] else ''}"
    if w["events"] < w["of"]:
        return (
            f"{name}: warming up, {w['events']:,} of {w['of']:,} events (no reference: "
            "one is built from its first live events)"
        )
    return f"{name}: reference built from its first {w['of']:,} live events; first window open"


def _joint(v: Any) -> dict[str, Any] | None:
    """The multivariate detector's level in a stream's last window (None: no detector)."""
    if not isinstance(v, dict) or not isinstance(v.get("value"), int | float):
        return None
    return {"value": float(v["value"]), "drifted": bool(v.get("drifted"))}


def _count(v: Any) -> int:
    """A count of a history entry (untrusted): a non-negative integer, else 0."""
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


def _maybe_count(v: Any) -> int | None:
    """A count of a history entry (untrusted) that may be absent: None, else as
    :func:`_count`."""
    return None if v is None else _count(v)


def _counts(late: int, future: int) -> str:
    return ", ".join(
        text for n, text in ((late, f"{late:,} late"), (future, f"{future:,} future-dated")) if n
    )


def _late_future(streams: Sequence[Mapping[str, Any]]) -> str:
    """The line of :func:`late_future_text` for the index (escaped; empty: none)."""
    text = late_future_text(streams)
    body = html.escape(text, quote=False)  # element text: the apostrophes stay as they are
    return f'<br><small class="muted late-future">{body}</small>' if text else ""


def late_future_text(streams: Sequence[Mapping[str, Any]]) -> str:
    """The model's late and future-dated events in its streams' last windows (is it
    happening now?) and since each stream began, with what they mean, in one line;
    empty when there are none."""
    late = sum(w["late_events"] for w in streams)
    future = sum(w["future_events"] for w in streams)
    if not late and not future:
        return ""
    known = [w for w in streams if w.get("window_late_events") is not None]
    now = ""
    if known:
        in_last = _counts(
            sum(w["window_late_events"] for w in known),
            sum(w["window_future_events"] or 0 for w in known),
        )
        now = f"{in_last} events in the last window" if in_last else "none in the last window"
        now += "; " if len(known) == len(streams) else " (of the windows that say); "
    return (
        f"Late or future-dated: {now}{_counts(late, future)} since the stream began. "
        "Stamped before the window open when they arrived, or ahead of the monitor's "
        "clock; each was counted in the open window and none moved the stream's clock"
    )


def window_line(w: Mapping[str, Any]) -> str:
    """A stream's last window, as text."""
    seg = f" {w['segment']}" if w["segment"] else ""
    joint = f"; joint {w['joint']['value']:.2f} / 1" if w.get("joint") else ""
    return (
        f"v{w['version']}{seg}: window #{w['window']} ({w['count']:,} events) ended "
        f"{fmt_time(w['end'])}{joint}"
    )


def status_text(statuses: Sequence[Mapping[str, Any]], page: Page | None = None) -> str:
    """``driftline status``: what the index shows, as text for a terminal (one block per
    model: state, active alerts, last windows, warm-ups, late and future-dated events)."""
    page = page or Page(1, 1, len(statuses))
    out = []
    for s in statuses:
        out.append(f"{s['model']}  {s['state']}")
        for a in s["active"]:
            out.append(
                f"  {a['severity']:<8} {a['kind']}{_drivers_text(a)}  v{a['model_version']} "
                f"since {fmt_time(a['since'])}"
            )
        if not s["active"]:
            out.append("  no active alert")
        out.extend(f"  {window_line(w)}" for w in s["streams"][:5])
        out.extend(f"  {warming_line(w)}" for w in s.get("warming_up", [])[:5])
        drifted = sorted({d["feature"] for w in s["streams"] for d in w["drifted"]})
        if drifted:
            out.append(f"  drifted in the last window: {', '.join(drifted[:8])}")
        late = late_future_text(s["streams"])
        if late:
            out.append(f"  {late}")
    counts = {k: sum(1 for s in statuses if s["state"] == k) for k in ("degraded", "drifting")}
    n = page.total
    if not statuses:
        out.append("No model has history yet: start a monitor (driftline monitor) and send events.")
    else:
        out.append(
            f"{n:,} model{'' if n == 1 else 's'}"
            + (f" (page {page.number} of {page.pages}: --page)" if page.pages > 1 else "")
            + f"; {counts['drifting']} drifting, {counts['degraded']} degraded"
            + (" on this page." if page.pages > 1 else ".")
        )
    return "\n".join(out)


def _drivers_text(a: Mapping[str, Any]) -> str:
    """:func:`_drivers` as text."""
    top = [signal_name(t["feature"]) for t in (a.get("top_features") or [])[:3]]
    names = top or ([signal_name(a["feature"])] if a.get("feature") else [])
    return " · " + ", ".join(names) if names else ""


def _drivers(a: Mapping[str, Any]) -> str:
    """What an active alert's episode is about, largest first, as ``" · age, plan"``
    (escaped; empty when it names nothing): its top features (up to three), else its
    feature. An update's ``feature`` is the unit that just joined the episode
    ('input_drift · plan' while age had moved most)."""
    return _e(_drivers_text(a))


def _badge(text: str) -> str:
    return f'<span class="badge b-{_e(text)}">{_e(text)}</span>'


@dataclass(frozen=True)
class Page:
    """One page of the index: its number (from 1), the page count and the model count."""

    number: int = 1
    pages: int = 1
    total: int = 0

    @classmethod
    def of(cls, number: int, total: int) -> Page:
        """Page ``number`` of ``total`` models (:data:`PAGE_SIZE` per page)."""
        pages = max(1, -(-total // PAGE_SIZE))
        if not 1 <= number <= pages:
            raise ValueError(f"page {number} does not exist: there are {pages}")
        return cls(number, pages, total)

    def slice(self, names: Sequence[str]) -> Sequence[str]:
        """This page's share of the sorted model names."""
        start = (self.number - 1) * PAGE_SIZE
        return names[start : start + PAGE_SIZE]

    def to_dict(self) -> dict[str, int]:
        """The paging fields of ``/api/status``."""
        return {"page": self.number, "pages": self.pages, "total": self.total}


def parse_page(query: dict[str, str]) -> int:
    """The ``page`` query parameter (1 when absent); ValueError when not a positive int."""
    text = query.get("page", "1")
    if not text.isdigit() or int(text) < 1:
        raise ValueError("page must be a positive integer")
    return int(text)


def _pager(page: Page) -> str:
    if page.pages == 1:
        return ""
    links = []
    if page.number > 1:
        links.append(f'<a href="/?page={page.number - 1}" rel="prev">← previous</a>')
    links.append(f"page {page.number} of {page.pages}")
    if page.number < page.pages:
        links.append(f'<a href="/?page={page.number + 1}" rel="next">next →</a>')
    return f'<nav class="pager">{" · ".join(links)}</nav>'


def render_index(
    statuses: list[dict[str, Any]], generated_ms: int, page: Page | None = None
) -> str:
    """The status page: one row per model (of one page of models, sorted by name)."""
    page = page or Page(1, 1, len(statuses))
    rows = []
    for s in statuses:
        link = f"/model/{quote(s['model'], safe='')}"
        streams = "<br>".join(
            f"v{_e(w['version'])}{(' ' + _e(w['segment'])) if w['segment'] else ''}: "
            f"window #{w['window']} ({w['count']:,} events) ended {_e(fmt_time(w['end']))}"
            + (
                f" <small class=muted>joint {w['joint']['value']:.2f} / 1</small>"
                if w.get("joint")
                else ""
            )
            for w in s["streams"][:5]
        )
        warming = "<br>".join(_warming_text(w) for w in s.get("warming_up", [])[:5])
        drifted = sorted(
            {d["feature"] for w in s["streams"] for d in w["drifted"]}
            | {
                "joint (multivariate)"
                for w in s["streams"]
                if (w.get("joint") or {}).get("drifted")
            },
        )
        act = (
            "<br>".join(
                f"{_badge(a['severity'])} {_e(a['kind'])}"
                f"{_drivers(a)} "
                f"<small class=muted>v{_e(a['model_version'])} since "
                f"{_e(fmt_time(a['since']))}</small>"
                for a in s["active"]
            )
            or '<span class="muted">none</span>'
        )
        rows.append(
            f'<tr class="model" data-model="{_e(s["model"])}" data-state="{_e(s["state"])}">'
            f'<td><a href="{_e(link)}">{_e(s["model"])}</a></td>'
            f"<td>{_badge(s['state'])}</td>"
            f"<td>{act}</td>"
            f"<td>{streams or ('' if warming else '—')}{_late_future(s['streams'])}"
            f"{'<br>' if streams and warming else ''}{warming}</td>"
            f"<td>{_e(', '.join(drifted[:8])) or '—'}</td>"
            f'<td><a href="{_e(link)}">charts</a></td>'
            "</tr>"
        )
    counts = {k: sum(1 for s in statuses if s["state"] == k) for k in ("degraded", "drifting")}
    summary = (
        f"{len(statuses)} model{'' if len(statuses) == 1 else 's'}; "
        f"{counts['drifting']} drifting, {counts['degraded']} degraded."
        if statuses
        else "No model has history yet: start a monitor (driftline monitor) and send events."
    )
    if page.pages > 1:
        first = (page.number - 1) * PAGE_SIZE + 1
        summary = (
            f"{page.total:,} models; this page (models {first:,} to "
            f"{first + len(statuses) - 1:,} by name): {counts['drifting']} drifting, "
            f"{counts['degraded']} degraded."
        )
    table = (
        '<table class="models"><thead><tr><th>model</th><th>state</th><th>active alerts</th>'
        "<th>last window</th><th>drifted in last window</th><th></th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        if rows
        else ""
    )
    csp = content_security_policy([])
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">'
        '<meta http-equiv="refresh" content="15">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Driftline status</title><style>{page_css()}</style></head><body>"
        "<header><h1>Driftline status</h1>"
        f'<p id="status-summary">{_e(summary)}</p>'
        f'<p class="muted small">Updated {_e(fmt_time(generated_ms))}; refreshes every 15 s. '
        "Read-only. Times are event times (UTC).</p></header>"
        f"<section>{table}{_pager(page)}</section>"
        "<section><h2>Active alerts</h2>"
        + (
            alerts_table([a for s in statuses for a in s["active"]])
            if any(s["active"] for s in statuses)
            else '<p class="ok">No active alert.</p>'
        )
        + "</section></body></html>\n"
    )


class _Server(BoundedHTTPServer):
    """Threads bounded whatever the number of connections (issue 16): see
    :mod:`driftline.views.bounded_http`."""

    app: StatusServer

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(CONNECTION_TIMEOUT)
        ctx = self.app.tls
        if ctx is not None:
            try:
                request = ctx.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                log.debug("TLS handshake failed: %s", type(exc).__name__)
                return
        super().finish_request(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "driftline-status"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s %s", self.address_string(), format % args)

    def _send(
        self, status: int, body: bytes, ctype: str, csp: str | None = None, head: bool = False
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header(
            "Content-Security-Policy", csp or "default-src 'none'; style-src 'unsafe-inline'"
        )
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _not_allowed(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed  # noqa: N815

    def do_HEAD(self) -> None:  # noqa: N802
        self._route(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._route(head=False)

    def _route(self, head: bool) -> None:
        app = self.server.app
        url = urlsplit(self.path)
        try:
            query = {k: v[-1] for k, v in parse_qs(url.query).items() if v}
            if url.path == "/":
                body = app.index(parse_page(query)).encode()
                self._send(200, body, "text/html; charset=utf-8", head=head)
            elif url.path == "/api/status":
                page, statuses = app.page(parse_page(query))
                body = orjson.dumps({"models": statuses, **page.to_dict()})
                self._send(200, body, "application/json", head=head)
            elif url.path == "/healthz":
                app.ping()
                self._send(200, b"ok\n", "text/plain; charset=utf-8", head=head)
            elif url.path.startswith("/model/") and len(url.path) > len("/model/"):
                model = unquote(url.path[len("/model/") :])
                html_text, csp = app.model_page(
                    model, query.get("version"), query.get("segment"), query.get("since")
                )
                if html_text is None:
                    self._send(404, b"no such model\n", "text/plain; charset=utf-8", head=head)
                else:
                    self._send(200, html_text.encode(), "text/html; charset=utf-8", csp, head)
            else:
                self._send(404, b"not found\n", "text/plain; charset=utf-8", head=head)
        except (FutureTimeout, TimeoutError, ConnectionError, OSError) as exc:
            log.warning("status page: Redis unavailable: %s", type(exc).__name__)
            self._send(503, b"redis unavailable\n", "text/plain; charset=utf-8", head=head)
        except ValueError as exc:
            self._send(400, f"{exc}\n".encode(), "text/plain; charset=utf-8", head=head)
        except Exception:
            log.exception("status page error")
            self._send(500, b"internal error\n", "text/plain; charset=utf-8", head=head)


class StatusServer:
    """The status page server. ``start()`` serves in a thread; ``stop()`` ends it.

    Parameters
    ----------
    settings
        Redis connection, key prefix and signing key (references are signed), and the
        TLS certificate of the metrics endpoint, if any.
    host, port
        Where to listen (``port=0``: a free port, see :attr:`port`).
    """

    def __init__(self, settings: Settings, host: str = "127.0.0.1", port: int = 9109) -> None:
        self.settings = settings
        self.tls: ssl.SSLContext | None = None
        if settings.metrics_certfile:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(settings.metrics_certfile, settings.metrics_keyfile)
            self.tls = ctx
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name="driftline-serve-redis", daemon=True
        )
        self._client: RedisClient | None = None
        self._store: StateStore | None = None
        self._cache: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._httpd = _Server((host, port), _Handler, idle_timeout=CONNECTION_TIMEOUT)
        self._httpd.app = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The base URL (``https`` when TLS is on)."""
        bound = self._httpd.server_address[0]
        host = bound.decode() if isinstance(bound, bytes) else str(bound)
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> StatusServer:
        """Connect to Redis (lazily) and serve in a background thread."""
        self._loop_thread.start()
        s = self.settings
        self._call(self._connect(s))
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="driftline-serve", daemon=True
        )
        self._thread.start()
        return self

    async def _connect(self, s: Settings) -> None:
        self._client, self._store = open_store(s.redis, s.monitor.group_id)

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` (from another thread or a signal)."""
        self._loop_thread.start()
        self._call(self._connect(self.settings))
        self._httpd.serve_forever()

    def stop(self) -> None:
        """Stop serving and close the Redis connection."""
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._client is not None and self._loop.is_running():
            self._call(self._client.aclose())
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._loop_thread.is_alive():
            self._loop_thread.join(5)
        if self._thread is not None:
            self._thread.join(5)

    # ------------------------------------------------------------------ data
    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(REDIS_TIMEOUT)
        except FutureTimeout:
            fut.cancel()
            raise

    def _cached(self, key: str, make: Any) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] < CACHE_SECONDS:
                return hit[1]
        value = make()
        with self._lock:
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[key] = (now, value)
        return value

    @property
    def store(self) -> StateStore:
        assert self._store is not None, "start() first"
        return self._store

    def ping(self) -> None:
        """Raise ConnectionError when Redis does not answer."""
        client = self._client
        assert client is not None

        async def ping() -> bool:
            return bool(await client.ping())

        if not self._call(ping()):
            raise ConnectionError("redis did not answer PING")

    def model_names(self) -> list[str]:
        """Every model with history, sorted (cached; read with SSCAN)."""
        names: list[str] = self._cached("names", lambda: self._call(self.store.history_models()))
        return names

    def page(self, number: int = 1) -> tuple[Page, list[dict[str, Any]]]:
        """Page ``number`` of the index and its models' status records (cached)."""
        page = Page.of(number, len(self.model_names()))
        names = list(page.slice(self.model_names()))
        statuses: list[dict[str, Any]] = self._cached(
            f"page\x1f{number}\x1f{page.total}",
            lambda: self._call(model_statuses(self.store, names)),
        )
        return page, statuses

    def statuses(self) -> list[dict[str, Any]]:
        """The status records of the first page of models (cached)."""
        return self.page(1)[1]

    def index(self, number: int = 1) -> str:
        """The index page HTML (page ``number``)."""
        page, statuses = self.page(number)
        return render_index(statuses, int(time.time() * 1000), page)

    def model_page(
        self, model: str, version: str | None, segment: str | None, since: str | None
    ) -> tuple[str | None, str]:
        """A model's report page and its CSP, or ``(None, "")`` for an unknown model."""
        key = f"model\x1f{model}\x1f{version}\x1f{segment}\x1f{since}"

        def make() -> tuple[str | None, str]:
            try:
                data = self._call(
                    report_from_store(
                        self.store,
                        model,
                        version=version,
                        segment=segment,
                        since=since,
                        source=f"Redis {self.settings.redis.redacted_url()} "
                        f"(prefix {self.settings.redis.key_prefix})",
                    )
                )
            except ValueError as exc:
                if "no stored reference and no history" in str(exc):
                    return None, ""
                raise
            nav = '<nav class="crumbs"><a href="/">← all models</a></nav>'
            page = render_report(data, nav_html=nav)
            return page, _csp_of(page)

        result: tuple[str | None, str] = self._cached(key, make)
        return result


def _csp_of(page: str) -> str:
    """The CSP a report page carries in its meta tag (sent as a header too)."""
    start = page.find('http-equiv="Content-Security-Policy" content="')
    if start < 0:
        return "default-src 'none'"
    start += len('http-equiv="Content-Security-Policy" content="')
    end = page.find('"', start)
    return html.unescape(page[start:end])
