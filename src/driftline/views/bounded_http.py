"""An HTTP server whose threads do not grow with its connections (``driftline serve``).

:class:`http.server.ThreadingHTTPServer` starts a thread per connection, so 1 000 idle
connections cost 1 000 threads (issue 16). Here an accepted connection costs a file
descriptor until it sends something: one dispatcher thread waits on every idle
connection with a selector and hands a connection that has bytes to read to a fixed
pool of :data:`HANDLER_THREADS` handler threads. At most :data:`MAX_IDLE` connections
wait (the oldest is closed to make room for a new one) and none waits longer than the
connection timeout, so neither idle nor half-open connections can starve the page.
Each connection serves one request (HTTP/1.0, the handler's default).
"""

from __future__ import annotations

import logging
import queue
import selectors
import socket
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from http.server import HTTPServer
from typing import Any

__all__ = ["HANDLER_THREADS", "MAX_IDLE", "BoundedHTTPServer"]

log = logging.getLogger("driftline.serve")

#: Threads that read requests and answer them.
HANDLER_THREADS = 16
#: Connections that may wait for their request at once; beyond it the oldest is closed.
MAX_IDLE = 512


class BoundedHTTPServer(HTTPServer):
    """:class:`HTTPServer` with a dispatcher thread and a fixed pool of handlers.

    ``idle_timeout`` is how long an accepted connection may stay silent before it is
    closed (seconds).
    """

    #: Listen backlog: a burst of connections waits in the kernel, not in SYN retries
    #: (socketserver's default is 5).
    request_queue_size = 1024

    def __init__(
        self,
        address: tuple[str, int],
        handler: Any,
        *,
        idle_timeout: float,
        threads: int = HANDLER_THREADS,
        max_idle: int = MAX_IDLE,
    ) -> None:
        super().__init__(address, handler, bind_and_activate=True)
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="driftline-serve-handler")
        self._incoming: queue.SimpleQueue[tuple[socket.socket, Any]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._closing = threading.Event()
        self._dispatcher = threading.Thread(
            target=self._dispatch, name="driftline-serve-dispatch", daemon=True
        )
        self._dispatcher.start()

    # ------------------------------------------------------------------ accept side
    def process_request(self, request: Any, client_address: Any) -> None:
        """Queue an accepted connection for the dispatcher (called by ``serve_forever``)."""
        self._incoming.put((request, client_address))
        try:
            self._wake_w.send(b"\0")
        except OSError:  # closing
            self.shutdown_request(request)

    # ------------------------------------------------------------------ dispatcher
    def _dispatch(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ)
        waiting: OrderedDict[socket.socket, tuple[Any, float]] = OrderedDict()
        try:
            while not self._closing.is_set():
                for key, _ in sel.select(timeout=1.0):
                    if key.fileobj is self._wake_r:
                        self._drain_wakeups()
                        self._admit(sel, waiting)
                        continue
                    conn: socket.socket = key.fileobj  # type: ignore[assignment]
                    sel.unregister(conn)
                    address, _ = waiting.pop(conn)
                    self._pool.submit(self._serve_one, conn, address)
                self._expire(sel, waiting)
        finally:
            for conn in waiting:
                self.shutdown_request(conn)
            sel.close()

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _admit(
        self, sel: selectors.BaseSelector, waiting: OrderedDict[socket.socket, tuple[Any, float]]
    ) -> None:
        while True:
            try:
                conn, address = self._incoming.get_nowait()
            except queue.Empty:
                return
            while len(waiting) >= self.max_idle:
                oldest, _ = waiting.popitem(last=False)
                sel.unregister(oldest)
                self.shutdown_request(oldest)
            sel.register(conn, selectors.EVENT_READ)
            waiting[conn] = (address, time.monotonic())

    def _expire(
        self, sel: selectors.BaseSelector, waiting: OrderedDict[socket.socket, tuple[Any, float]]
    ) -> None:
        limit = time.monotonic() - self.idle_timeout
        while waiting:
            conn, (_, since) = next(iter(waiting.items()))
            if since > limit:
                return
            waiting.popitem(last=False)
            sel.unregister(conn)
            self.shutdown_request(conn)

    # ------------------------------------------------------------------ handlers
    def _serve_one(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s failed", client_address, exc_info=True)

    def server_close(self) -> None:
        """Stop the dispatcher, close waiting connections, let handlers finish."""
        self._closing.set()
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass
        self._dispatcher.join(5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()
