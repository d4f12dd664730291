"""A small Chrome DevTools Protocol client: headless Chromium as a person's browser.

Starts Debian's ``chromium`` with a fresh profile and ``--remote-debugging-port=0``,
reads the port from ``DevToolsActivePort``, opens one page over the browser's
websocket (``websockets``' sync client, flattened sessions) and records what a
person would not see but a test must: uncaught exceptions, console errors, failed
loads and every network request the page makes.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--mute-audio",
]


@dataclass
class PageLog:
    """What the page reported while it was open."""

    exceptions: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """Everything that counts as a script or load error."""
        return [*self.exceptions, *self.console_errors, *self.log_errors, *self.failed]


class Browser:
    """One headless Chromium process and one page in it."""

    def __init__(self, binary: str, width: int = 1400, height: int = 1000) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="dl-chromium-"))
        self.proc = subprocess.Popen(
            [
                binary,
                *FLAGS,
                f"--user-data-dir={self.profile}",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.width, self.height = width, height
        self._ids = itertools.count(1)
        self.log = PageLog()
        self._stack = contextlib.ExitStack()
        self._ws = self._stack.enter_context(self._connect())
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=True,
        )

    def _connect(self) -> ClientConnection:
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}")
            if port_file.exists():
                lines = port_file.read_text().split()
                if len(lines) >= 2:
                    url = f"ws://127.0.0.1:{lines[0]}{lines[1]}"
                    return connect(url, max_size=256 * 1024 * 1024, open_timeout=10)
            time.sleep(0.05)
        raise RuntimeError("chromium did not open its DevTools port within 30 s")

    # ------------------------------------------------------------------ protocol
    def _event(self, msg: dict[str, Any]) -> None:
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            desc = d.get("exception", {}).get("description") or d.get("text", "")
            self.log.exceptions.append(f"exception: {desc}")
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
            self.log.console_errors.append(f"console.{p['type']}: {args}")
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            self.log.log_errors.append(
                f"log: {e.get('source')}: {e.get('text')} {e.get('url', '')}"
            )
        elif method == "Network.requestWillBeSent":
            self.log.requests.append(p.get("request", {}).get("url", ""))
        elif method == "Network.loadingFailed" and not p.get("canceled"):
            self.log.failed.append(f"load failed: {p.get('errorText')}")

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: bool = False,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Send one command and wait for its reply, recording events meanwhile."""
        msg_id = next(self._ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        self._ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no reply to {method} within {timeout} s")
            reply = json.loads(self._ws.recv(timeout=left))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self._event(reply)

    def pump(self, seconds: float) -> None:
        """Record events for a while (lets late errors surface)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self._event(json.loads(self._ws.recv(timeout=left)))
            except TimeoutError:
                return

    # ------------------------------------------------------------------ page
    def goto(
        self, url: str, ready: str = "document.readyState === 'complete'", timeout: float = 30.0
    ) -> None:
        """Navigate and wait until the JS expression ``ready`` is true."""
        self.call("Page.navigate", {"url": url}, session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                done = self.eval(f"Boolean({ready})") is True
            except RuntimeError:  # the old document, or the new one half-way
                done = False
            if done:
                self.pump(0.3)
                return
            self.pump(0.1)
        raise TimeoutError(f"page {url} not ready ({ready}) within {timeout} s")

    def eval(self, expression: str) -> Any:
        """Evaluate JS in the page and return its JSON value."""
        r = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session=True,
        )
        if "exceptionDetails" in r:
            raise RuntimeError(f"evaluation failed: {r['exceptionDetails'].get('text')}")
        return r.get("result", {}).get("value")

    def screenshot(self, path: Path, full_page: bool = False, max_height: int = 6000) -> Path:
        """Save a PNG of the viewport (or of the page, up to ``max_height`` pixels)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            height = min(max_height, int(self.eval("document.documentElement.scrollHeight")))
            params["clip"] = {"x": 0, "y": 0, "width": self.width, "height": height, "scale": 1}
            params["captureBeyondViewport"] = True
        data = self.call("Page.captureScreenshot", params, session=True, timeout=60)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        """Close the browser (by its own process id) and remove the profile."""
        try:
            self._stack.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
