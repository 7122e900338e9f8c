"""A small threaded HTTP server for the health endpoint and the web view."""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import re
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from streamfuse.errors import StreamfuseError

log = logging.getLogger(__name__)

Answer = Callable[[BaseHTTPRequestHandler], None]

#: Seconds a connection may stall (a request not sent in full, a response not read) before it is closed.
IDLE_TIMEOUT_S = 30.0


class WebServer:
    """Answers every request (any method: ``answer`` refuses the ones a route does not take) with
    ``answer(request)``, one thread per connection, in the background.

    Args:
        host: Address to bind (``127.0.0.1`` keeps it local).
        port: TCP port (0 picks a free one; see :attr:`port`).
        answer: Writes the response to the request (``request.path``, ``request.command``, ...).
        section: The config section serving it (``health``, ``view``), named in errors and logs.
        loopback_only: Refuse (403) a request whose ``Host`` names no loopback address: a DNS-rebinding page
            in the browser of someone on this machine names its own host (for a server without credentials).
    """

    def __init__(self, host: str, port: int, answer: Answer, *, section: str, loopback_only: bool = False) -> None:
        web = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = IDLE_TIMEOUT_S  # a client that stops sending or reading is disconnected

            def __getattr__(self, name: str) -> Callable[[], None]:
                # Every method (do_GET, do_POST, do_TRACE, ...) is answered here: http.server answers one it
                # finds no do_ method for with its own HTML 501, past the token check and routing.
                if name.startswith("do_"):
                    return lambda: web._dispatch(self, answer, loopback_only)
                raise AttributeError(name)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
                log.debug(section + ": " + format, *(_without_token(str(arg)) for arg in args))

        server = _Server if ":" not in host else _Server6  # an IPv6 address: ::1, ::
        try:
            self._http = server((host, port), Handler)
            self._http.section = section
        except OSError as exc:
            raise StreamfuseError(f"{section}: cannot listen on {host}:{port} ({exc.strerror}); "
                                  f"{listen_advice(exc, f'{section}.bind', f'{section}.port')} or set "
                                  f"{section}.enabled: false") from None
        self._http.daemon_threads = True
        self.port = self._http.server_address[1]
        self.url = f"http://{url_host(host)}:{self.port}"
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=section, daemon=True)
        self._thread.start()

    def _dispatch(self, request: BaseHTTPRequestHandler, answer: Answer, loopback_only: bool) -> None:
        host = request.headers.get("Host", "")
        if loopback_only and not _names_loopback(host):
            request.close_connection = True
            named = f"the request named {host!r}" if host else "the request has no Host header, which HTTP/1.1 requires"
            respond(request, 403, json.dumps({"error": f"this endpoint answers at {self.url} ({named})"}).encode(),
                    "application/json")
            return
        answer(request)

    def close(self) -> None:
        """Stop accepting requests and release the port."""
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(2)


def respond(request: BaseHTTPRequestHandler, code: int, body: bytes, kind: str, **headers: str) -> None:
    """Send a whole response: status, ``Content-Type``, ``Content-Length``, extra headers, body (not to HEAD)."""
    request.send_response(code)
    request.send_header("Content-Type", kind)
    request.send_header("Content-Length", str(len(body)))
    for name, value in headers.items():
        request.send_header(name.replace("_", "-"), value)
    request.end_headers()
    if request.command != "HEAD":
        request.wfile.write(body)


def refuse_method(request: BaseHTTPRequestHandler, allowed: str) -> None:
    """405 for a route that exists but does not take this method (the connection closes: a body sent with it is
    not read, and would be taken for the next request)."""
    request.close_connection = True
    respond(request, 405, json.dumps({"error": f"{request.command} not allowed here; use {allowed}"}).encode(),
            "application/json", Allow=allowed)


def _without_token(text: str) -> str:
    """``text`` with the value of a ``token=`` query parameter masked (a request line in the debug log)."""
    return re.sub(r"([?&]token=)[^&\s]*", r"\1...", text)


def listen_advice(exc: OSError, bind_key: str, port_key: str) -> str:
    """What to change after a failed ``bind``: the address when this machine has no such one (or its name is
    unknown), else the port."""
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or isinstance(exc, socket.gaierror):
        return f"choose an address of this machine for {bind_key} (127.0.0.1, or 0.0.0.0 for every interface)"
    return f"choose another {port_key} (0 picks a free one)"


class _Server(ThreadingHTTPServer):
    """A client gone mid-answer is routine (a closed tab, curl's --max-filesize): a debug line, not the traceback
    socketserver prints on standard error; anything else a warning in the log."""

    section = "http"

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            log.debug("%s: client %s went away (%s)", self.section, client_address, error)
        else:
            log.warning("%s: answering %s failed", self.section, client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


def url_host(host: str) -> str:
    """``host`` as it is written in a URL (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host else host


def _names_loopback(host_header: str) -> bool:
    """Whether a ``Host`` header (``name[:port]``) names this machine's loopback interface: ``localhost`` or a
    loopback address, not a name that merely starts like one (``127.0.0.1.attacker.example``)."""
    name = (host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header).strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
