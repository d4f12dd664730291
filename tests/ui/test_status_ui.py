"""The live status page (``driftline serve``) over a real redis-server, in headless Chromium."""

from __future__ import annotations

import json
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from ui_fixtures import artifacts as artifacts
from ui_fixtures import browser as browser

from driftline.offline.replay import Replayer
from driftline.runtime.history import record_history, record_performance
from driftline.runtime.store import open_store
from driftline.views.status import StatusServer
from report_scenarios import (
    churn_events,
    churn_reference,
    perf_points,
    quiet_events,
    quiet_reference,
)
from support import ON_BOTH_REDIS

pytestmark = pytest.mark.integration

READY = "window.__driftlineReady === true || !!document.getElementById('js-errors')?.textContent"


async def _seed(settings) -> None:
    """Two models as the worker leaves them: churn ends mid-drift, fraud is quiet."""
    client, store = open_store(settings.redis, settings.monitor.group_id)
    try:
        for ref, events in (
            (churn_reference(), churn_events(18_000)[:11_000]),
            (quiet_reference("fraud", "7"), quiet_events(4_000, "fraud", "7")),
        ):
            await store.put_reference(ref.model_id, ref.model_version, ref.to_bytes())
            rp = Replayer({(ref.model_id, ref.model_version): ref})
            for i in range(0, len(events), 1000):
                await record_history(store, rp.feed(events[i : i + 1000]))
        await record_performance(store, "fraud", perf_points("7"))
    finally:
        await client.aclose()


@pytest.fixture
async def server(settings) -> Iterator[StatusServer]:
    await _seed(settings)
    srv = StatusServer(settings, host="127.0.0.1", port=0).start()
    try:
        yield srv
    finally:
        srv.stop()


def _get(url: str, method: str = "GET", context: ssl.SSLContext | None = None):
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30, context=context) as r:  # noqa: S310
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_status_page_lists_models_with_state_and_links_to_charts(browser, server, artifacts):
    b = browser
    b.goto(server.url + "/", "document.readyState === 'complete'")
    assert b.log.problems() == []
    rows = b.eval(
        "[...document.querySelectorAll('tr.model')].map(r => [r.dataset.model, r.dataset.state])"
    )
    assert rows == [["churn", "drifting"], ["fraud", "healthy"]]
    text = b.eval("document.body.textContent")
    assert "2 models; 1 drifting, 0 degraded." in text
    assert "input_drift" in b.eval("document.querySelector('tr.model').textContent")
    assert "window #21" in b.eval("document.querySelector('tr.model').textContent")
    b.screenshot(artifacts / "status-index.png")

    # A person follows the link to the model's page: the report's charts, live.
    b.eval("document.querySelector('tr.model a').click()")
    b.pump(0.5)
    b.goto(server.url + "/model/churn", READY)
    assert b.log.problems() == [], b.log.problems()
    assert b.eval("document.querySelector('h1 .badge').textContent") == "drifting"
    assert b.eval("document.querySelector('nav.crumbs a').getAttribute('href')") == "/"
    assert b.eval("document.getElementById('chart-ranking').dataset.drawn") == "1"
    assert b.eval("document.querySelector('tr.frow td:nth-child(2)').textContent") == "f03"
    assert b.eval("document.querySelectorAll('#summary table.alerts tbody tr').length") >= 1
    b.screenshot(artifacts / "status-model.png")

    # The quiet model has labels: accuracy charts instead of "no labels yet".
    b.goto(server.url + "/model/fraud?version=7", READY)
    assert b.log.problems() == []
    assert b.eval("document.getElementById('no-labels')") is None
    assert b.eval("document.querySelector('canvas[data-chart=\"accuracy\"]').dataset.drawn") == "1"
    # Nothing but the server itself was ever asked for anything.
    assert all(u.startswith(server.url) or u == "about:blank" for u in b.log.requests)


@ON_BOTH_REDIS
def test_status_http_surface(server):
    status, headers, body = _get(server.url + "/api/status")
    assert status == 200 and headers["Content-Type"] == "application/json"
    models = json.loads(body)["models"]
    assert [m["model"] for m in models] == ["churn", "fraud"]
    # Active episodes by their latest alert's time; the drifting model's input drift is one.
    assert "input_drift" in {a["kind"] for a in models[0]["active"]}
    # The references carry a multivariate model: its level in the last window, per stream.
    joint = models[0]["streams"][0]["joint"]
    assert set(joint) == {"value", "drifted"} and joint["value"] >= 0
    status, _, page = _get(server.url + "/")
    assert status == 200 and b" / 1</small>" in page
    assert _get(server.url + "/healthz")[:1] == (200,)
    assert _get(server.url + "/", method="POST")[0] == 405
    assert _get(server.url + "/", method="HEAD")[2] == b""
    assert _get(server.url + "/model/nobody")[0] == 404
    assert _get(server.url + "/nothing")[0] == 404
    assert _get(server.url + "/model/churn?since=yesterday")[0] == 400
    status, headers, body = _get(server.url + "/model/churn?since=30s")
    assert status == 200
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "sha256-" in csp
    assert headers["X-Content-Type-Options"] == "nosniff"


@pytest.fixture
def certificate(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_status_page_serves_tls_with_the_metrics_certificate(settings, certificate):
    await _seed(settings)
    cert, key = certificate
    tls_settings = settings.model_copy(
        update={"metrics_certfile": str(cert), "metrics_keyfile": str(key)}
    )
    srv = StatusServer(tls_settings, port=0).start()
    try:
        assert srv.url.startswith("https://")
        ctx = ssl.create_default_context(cafile=str(cert))
        status, _, body = _get(srv.url + "/", context=ctx)
        assert status == 200 and b"Driftline status" in body
        plain = srv.url.replace("https://", "http://")
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(plain + "/", timeout=5)  # noqa: S310
        # After a failed handshake the server still answers.
        assert _get(srv.url + "/healthz", context=ctx)[0] == 200
    finally:
        srv.stop()
