"""The web view's HTTP server: the page, MJPEG streams, a snapshot, status JSON and the prompt box.

Routes (every one needs ``?token=`` when ``view.token`` is set; without it, or with another, the
answer is an empty 403):

- ``GET /``: the page (``page.html``).
- ``GET /stream/fused.mjpg``, ``/stream/ir.mjpg``, ``/stream/vis.mjpg``: ``multipart/x-mixed-replace``
  JPEG streams, one part per new frame (a slow viewer skips frames, it never holds the pipeline);
  each part carries ``X-Index`` and ``X-Captured-At`` (Unix time of capture, seconds).
- ``GET /snapshot.png``: the newest fused frame, lossless.
- ``GET /api/status``: prompt routing, stage latencies, counters (drops), camera health, viewers.
- ``POST /api/control``: a control request (``{"cmd": "set_prompt", "prompt": "..."}``), checked and
  executed by the same :class:`~streamfuse.control.CommandHandler` as the control socket, so it
  gets the same reply; HTTP 200 when ``ok``, else 400 (413 over the size limit).

Other sites the operator's browser visits must not reach it: without a token (loopback only) a request
must name a loopback host (``Host``: a DNS-rebinding page names its own), and a control request must be
``application/json`` (a cross-site page cannot send that without a preflight, which is not answered)
from no other origin (``Origin``, when the browser sends one, must be the view's own).
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from streamfuse.config import ViewConfig
from streamfuse.control import MAX_REQUEST_BYTES, CommandHandler, too_large
from streamfuse.imageio import encode_image
from streamfuse.sinks.zmq import wall_clock
from streamfuse.view.board import KINDS, FrameBoard
from streamfuse.webserver import WebServer, refuse_method, respond

log = logging.getLogger(__name__)

BOUNDARY = "streamfuse-frame"
#: A stream with no new frame for this long ends (the page reconnects).
NO_FRAME_TIMEOUT_S = 10.0


class ViewServer:
    """Serves the web view of a running pipeline on its own threads.

    Args:
        config: The ``view`` section (bind, port, token, JPEG quality, rate limit, streams at once).
        board: Where the pipeline publishes its newest fused frame.
        handler: Checks and executes control requests (the same path as the control socket).
        status: Returns the JSON served at ``/api/status``.
    """

    def __init__(self, config: ViewConfig, board: FrameBoard, handler: CommandHandler,
                 status: Callable[[], dict[str, Any]]) -> None:
        self.board = board
        self.handler = handler
        self.status = status
        self.viewers = 0
        self.max_viewers = config.max_viewers
        self._token = config.token
        self._viewers_lock = threading.Lock()
        self._page = resources.files("streamfuse.view").joinpath("page.html").read_bytes()
        self._web = WebServer(config.bind, config.port, self._answer, section="view",
                              loopback_only=config.token is None)  # without a token the view is on loopback
        self.port = self._web.port
        self.url = self._web.url

    def _allowed(self, request: BaseHTTPRequestHandler, query: dict[str, list[str]]) -> bool:
        if self._token is None:
            return True
        given = query.get("token", [""])[0]
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":  # schemes are case-insensitive (RFC 9110)
            given = credentials.strip()
        return hmac.compare_digest(given.encode(), self._token.encode())

    def _answer(self, request: BaseHTTPRequestHandler) -> None:
        url = urlsplit(request.path)
        if not self._allowed(request, parse_qs(url.query)):
            request.close_connection = True
            respond(request, 403, b"", "text/plain")
            return
        streams = {f"/stream/{kind}.mjpg" for kind in KINDS}
        allowed = "POST" if url.path == "/api/control" else "GET" if url.path in streams else "GET, HEAD"
        method = "GET" if request.command == "HEAD" and allowed == "GET, HEAD" else request.command
        if url.path not in {"/", "/snapshot.png", "/api/status", "/api/control", *streams}:
            request.close_connection = True  # a body sent with it is not read
            respond(request, 404, b'{"error": "not found; open / for the page"}', "application/json")
        elif method not in allowed.split(", "):
            refuse_method(request, allowed)
        elif url.path == "/":
            respond(request, 200, self._page, "text/html; charset=utf-8", Cache_Control="no-store")
        elif url.path in streams:
            self._stream(request, url.path.removeprefix("/stream/").removesuffix(".mjpg"))
        elif url.path == "/snapshot.png":
            self._snapshot(request)
        elif url.path == "/api/status":
            body = json.dumps({**self.status(), "viewers": self.viewers}).encode()
            respond(request, 200, body, "application/json", Cache_Control="no-store")
        else:
            self._control(request)

    def _control(self, request: BaseHTTPRequestHandler) -> None:
        origin, host = request.headers.get("Origin"), request.headers.get("Host")
        kind = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if kind != "application/json" or (origin is not None and urlsplit(origin).netloc != host):
            request.close_connection = True
            respond(request, 403, b'{"ok": false, "error": "a control request is JSON (Content-Type: application/json) '
                                  b'from the view\'s own page or a client without an Origin"}', "application/json")
            return
        try:
            size = int(request.headers.get("Content-Length", ""))
            if size < 0:
                raise ValueError(size)
        except ValueError:  # missing, not a number, or negative (read(-1) would wait for the client to hang up)
            request.close_connection = True
            respond(request, 411, b'{"ok": false, "error": "a control request needs a Content-Length of 0 or more"}',
                    "application/json")
            return
        if size > MAX_REQUEST_BYTES:  # not read: the connection is closed instead
            request.close_connection = True
            respond(request, 413, json.dumps(too_large(size)).encode(), "application/json")
            return
        reply = self.handler.handle(request.rfile.read(size))
        respond(request, 200 if reply["ok"] else 400, json.dumps(reply).encode(), "application/json")

    def _snapshot(self, request: BaseHTTPRequestHandler) -> None:
        frame = self.board.latest
        if frame is None:
            respond(request, 503, b'{"error": "no frame yet; retry in a moment"}', "application/json")
            return
        respond(request, 200, encode_image(frame.image, ".png"), "image/png", Cache_Control="no-store",
                Content_Disposition=f'attachment; filename="streamfuse-{frame.index:06d}.png"')

    def _stream(self, request: BaseHTTPRequestHandler, kind: str) -> None:
        request.close_connection = True
        with self._viewers_lock:
            full = self.viewers >= self.max_viewers
            self.viewers += 0 if full else 1
        if full:
            log.warning("view: a stream refused: view.max_viewers (%d) are being served", self.max_viewers)
            respond(request, 503, json.dumps({"error": f"{self.max_viewers} streams are being served "
                                                       "(view.max_viewers); close one, or raise the limit"}).encode(),
                    "application/json", Retry_After="5")
            return
        request.send_response(200)
        request.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        request.send_header("Cache-Control", "no-store")
        request.send_header("Connection", "close")
        request.end_headers()
        try:
            shown = -1
            while (frame := self.board.wait_newer(shown, NO_FRAME_TIMEOUT_S)) is not None:
                data = self.board.jpeg(frame, kind)
                head = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n"
                        f"X-Index: {frame.index}\r\nX-Captured-At: {wall_clock(frame.created):.6f}\r\n\r\n")
                request.wfile.write(head.encode() + data + b"\r\n")
                request.wfile.flush()
                shown = frame.index
        except OSError:
            pass  # the viewer left, or stopped reading (webserver.IDLE_TIMEOUT_S)
        finally:
            with self._viewers_lock:
                self.viewers -= 1

    def close(self) -> None:
        """End every stream and release the port."""
        self.board.close()
        self._web.close()


def status_report(pipeline: Any) -> dict[str, Any]:
    """What ``/api/status`` serves for ``pipeline``: its health, stage latencies and prompt routing."""
    routing = pipeline.routing
    return {
        "health": pipeline.health(),
        "stages": {name: {"p50_ms": round(p.p50_ms, 2), "p95_ms": round(p.p95_ms, 2)}
                   for name, p in pipeline.stats.stages().items()},
        "routing": routing.as_dict() if routing is not None else None,
        "active": routing.active() if routing is not None else {},
        "time": time.time(),
    }
