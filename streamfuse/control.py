"""The control socket: change the prompt and read statistics of a running pipeline.

Protocol: a ZeroMQ REP socket (bound to 127.0.0.1 by default). Each request is one JSON object with
a ``cmd`` key; each gets exactly one JSON reply with ``ok`` true or false:

- ``{"cmd": "set_prompt", "prompt": "fog, trust thermal"}`` -> ``{"ok": true, "routing": {...}}``
  (the new prompt applies from the next fused frame; no frame is dropped or re-ordered)
- ``{"cmd": "get_prompt"}`` -> ``{"ok": true, "routing": {...}}``
- ``{"cmd": "get_stats"}`` -> ``{"ok": true, "stats": {...}}``

A malformed request gets ``{"ok": false, "error": "..."}``; an unknown command also lists the known
ones in ``commands``. Requests over 64 KiB are refused.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import zmq

from streamfuse.errors import StreamfuseError

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlServer:
    """Serves control requests on its own thread.

    Args:
        endpoint: Where to bind (``tcp://127.0.0.1:5556``).
        handlers: Command name -> function taking the request and returning the reply fields.
            A handler raising ``ValueError`` or :class:`StreamfuseError` produces an error reply.
    """

    def __init__(self, endpoint: str, handlers: dict[str, Handler]) -> None:
        self.endpoint = endpoint
        self.handlers = handlers
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.REP)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        try:
            self._socket.bind(endpoint)
        except zmq.ZMQError as exc:
            self._socket.close(0)
            self._context.term()
            raise StreamfuseError(f"control.endpoint: cannot bind {endpoint} ({exc.strerror}); choose another port "
                                  "or disable the control socket (control.enabled: false)") from None
        if not endpoint.startswith(("tcp://127.", "tcp://localhost", "ipc://", "inproc://")):
            log.warning("control socket %s is reachable from the network: anyone who can connect can change "
                        "the prompt", endpoint)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()

    def handle(self, raw: bytes) -> dict[str, Any]:
        """The reply to one raw request (never raises)."""
        try:
            request = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return {"ok": False, "error": "request is not valid JSON"}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return {"ok": False, "error": "request must be a JSON object with a string 'cmd'"}
        handler = self.handlers.get(request["cmd"])
        if handler is None:
            return {"ok": False, "error": f"unknown command {request['cmd']!r}", "commands": sorted(self.handlers)}
        try:
            return {"ok": True, **handler(request)}
        except (ValueError, StreamfuseError) as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug must not take the pipeline down through its control socket
            log.exception("control command %s failed", request["cmd"])
            return {"ok": False, "error": f"internal error: {exc}"}

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._socket.poll(100, zmq.POLLIN):
                    continue
                raw = self._socket.recv()
            except zmq.ZMQError:
                break
            self._socket.send(json.dumps(self.handle(raw)).encode())

    def close(self) -> None:
        """Stop serving and release the socket."""
        self._stop.set()
        self._thread.join(2)
        self._socket.close(0)
        self._context.term()


def request(endpoint: str, message: dict[str, Any], *, timeout_s: float = 5.0) -> dict[str, Any]:
    """Send one control request and return the reply.

    Raises:
        StreamfuseError: No reply within ``timeout_s`` (nothing listening, or a busy pipeline).
    """
    context = zmq.Context()
    socket = context.socket(zmq.REQ)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        socket.connect(endpoint)
        socket.send(json.dumps(message).encode())
        if not socket.poll(int(timeout_s * 1000), zmq.POLLIN):
            raise StreamfuseError(f"--control {endpoint}: no reply within {timeout_s:g} s; is a pipeline running with "
                                  "control.enabled: true at that endpoint?")
        return json.loads(socket.recv())
    except zmq.ZMQError as exc:
        raise StreamfuseError(f"--control {endpoint}: {exc.strerror}") from None
    finally:
        socket.close(0)
        context.term()
