"""The control socket: change the prompt and read statistics of a running pipeline.

Protocol: a ZeroMQ REP socket (bound to 127.0.0.1 by default). Each request is one JSON object with
a ``cmd`` key; each gets exactly one JSON reply with ``ok`` true or false:

- ``{"cmd": "set_prompt", "prompt": "fog, trust thermal"}`` -> ``{"ok": true, "routing": {...}}``
  (the new prompt applies from the next fused frame; no frame is dropped or re-ordered)
- ``{"cmd": "get_prompt"}`` -> ``{"ok": true, "routing": {...}}``
- ``{"cmd": "get_stats"}`` -> ``{"ok": true, "stats": {...}}``

- ``{"cmd": "get_health"}`` -> ``{"ok": true, "health": {...}}`` (as served at ``/health``)

A request with unknown or missing keys, wrong types, over 64 KiB, in more than one message part, or
beyond the rate limit gets ``{"ok": false, "error": "..."}`` and is not executed; an unknown command
also lists the known ones in ``commands``. With ``control.curve`` keys only clients whose public key
is in the allow-list get through the handshake (see :mod:`streamfuse.security`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from streamfuse.config import MAX_PROMPT_CHARS, ControlConfig, is_local_endpoint
from streamfuse.errors import ConfigError, StreamfuseError
from streamfuse.security import secure_client, secure_server
from streamfuse.sinks.zmq import bound_endpoint

if TYPE_CHECKING:
    from streamfuse.pipeline import Pipeline

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
#: Larger messages are not even received: ZeroMQ drops the connection (protects memory).
HARD_LIMIT_BYTES = 1024 * 1024

Handler = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Command:
    """A control command: its handler and the request fields it takes (all required), by type."""

    handler: Handler
    fields: dict[str, type] = field(default_factory=dict)


class _RateLimit:
    """Token bucket: ``rate`` requests per second on average, bursts of up to ``rate``."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self._lock = threading.Lock()  # the web view asks from several server threads at once

    def allow(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens < 1.0:
                return False
            self.tokens -= 1.0
            return True


class CommandHandler:
    """Checks and executes control requests: the one path every prompt change goes through.

    The control socket and the web view (:mod:`streamfuse.view`) both hand it raw request bytes and
    send back the reply it returns, so the same request gets the same answer from either. A request
    must be a JSON object with a known ``cmd`` and exactly that command's fields, of the right types;
    it is refused (with an error reply, not executed) when malformed, over :data:`MAX_REQUEST_BYTES`,
    or beyond ``max_requests_per_s``.

    Args:
        commands: Command name -> :class:`Command`. A handler raising ``ValueError`` or
            :class:`StreamfuseError` produces an error reply.
        max_requests_per_s: Rate limit (a token bucket with bursts of the same size).
    """

    def __init__(self, commands: dict[str, Command], max_requests_per_s: float) -> None:
        self.commands = commands
        self._limit = _RateLimit(max_requests_per_s)

    def handle(self, raw: bytes) -> dict[str, Any]:
        """The reply to one raw request (never raises)."""
        if len(raw) > MAX_REQUEST_BYTES:
            return too_large(len(raw))
        if not self._limit.allow():
            return {"ok": False, "error": f"rate limit: at most {self._limit.rate:g} requests per second; retry later"}
        try:
            request = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return {"ok": False, "error": "request is not valid JSON"}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return {"ok": False, "error": "request must be a JSON object with a string 'cmd'"}
        command = self.commands.get(request["cmd"])
        if command is None:
            return {"ok": False, "error": f"unknown command {request['cmd'][:64]!r}", "commands": sorted(self.commands)}
        problem = _check_fields(request, command)
        if problem:
            return {"ok": False, "error": f"{request['cmd']}: {problem}"}
        try:
            return {"ok": True, **command.handler(request)}
        except (ValueError, StreamfuseError) as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug must not take the pipeline down through its control socket
            log.exception("control command %s failed", request["cmd"])
            return {"ok": False, "error": f"internal error: {exc}"}


def too_large(size: int) -> dict[str, Any]:
    """The reply to a request of ``size`` bytes, over :data:`MAX_REQUEST_BYTES` (not read, not executed)."""
    return {"ok": False, "error": f"request of {size} bytes is over the {MAX_REQUEST_BYTES}-byte limit"}


class ControlServer:
    """Serves control requests (checked by a :class:`CommandHandler`) on its own thread.

    Every request gets exactly one reply; a message in more than one part is refused.

    Args:
        config: Endpoint, CURVE keys, remote-bind permission and rate limit.
        commands: Command name -> :class:`Command`.
    """

    def __init__(self, config: ControlConfig, commands: dict[str, Command]) -> None:
        self.endpoint = config.endpoint
        self.handler = CommandHandler(commands, config.max_requests_per_s)
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.REP)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.MAXMSGSIZE, HARD_LIMIT_BYTES)
        self._authenticator = None
        try:
            self._authenticator = secure_server(self._socket, config.curve, what="control.curve")
            self._socket.bind(self.endpoint)
            self.endpoint = bound_endpoint(self._socket, self.endpoint, "control.endpoint")
        except (zmq.ZMQError, ConfigError) as exc:
            self._release()
            if isinstance(exc, ConfigError):
                raise
            raise StreamfuseError(f"control.endpoint: cannot bind {self.endpoint} ({exc.strerror}); choose another "
                                  "port or disable the control socket (control.enabled: false)") from None
        client = self.endpoint.replace("tcp://0.0.0.0:", "tcp://127.0.0.1:").replace("tcp://*:", "tcp://127.0.0.1:")
        server_public = Path(config.curve.server_secret_key or "server").with_suffix(".key")
        keys = f" --client-key CLIENT.key_secret --server-key {server_public}" if config.curve.enabled else ""
        log.info("control socket: %s (streamfuse prompt set TEXT --control %s%s)", self.endpoint, client, keys)
        if not is_local_endpoint(self.endpoint) and not config.curve.enabled:
            log.warning("control socket %s is reachable from the network without CURVE keys "
                        "(control.allow_insecure_remote): anyone who can connect can change the prompt", self.endpoint)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()

    def handle(self, raw: bytes) -> dict[str, Any]:
        """The reply to one raw request (never raises)."""
        return self.handler.handle(raw)

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    if not self._socket.poll(100, zmq.POLLIN):
                        continue
                    parts = self._socket.recv_multipart()  # all parts: REP replies only once a message is read whole
                except zmq.ZMQError:
                    break
                reply = self.handle(parts[0]) if len(parts) == 1 else {
                    "ok": False, "error": f"request must be one message part, got {len(parts)}"}
                try:
                    self._socket.send(json.dumps(reply).encode())
                except zmq.ZMQError as exc:  # the client went away: nothing to answer, keep serving the others
                    log.debug("control socket: reply not sent (%s)", exc)
        finally:
            self._release()  # this thread owns the socket: it closes it, never another thread while in use

    def close(self) -> None:
        """Stop serving; the socket is released as soon as a command still running returns."""
        self._stop.set()
        self._thread.join(2)
        if self._thread.is_alive():
            log.warning("control socket %s: a command is still running; the socket closes when it returns",
                        self.endpoint)

    def _release(self) -> None:
        self._socket.close(0)
        if self._authenticator is not None:
            self._authenticator.stop()
        self._context.term()


def pipeline_commands(pipeline: Pipeline) -> dict[str, Command]:
    """The commands a running pipeline answers: set_prompt, get_prompt, get_stats, get_health."""
    def set_prompt(request: dict) -> dict:
        if len(request["prompt"]) > MAX_PROMPT_CHARS:
            raise ValueError(f"set_prompt: 'prompt' must be at most {MAX_PROMPT_CHARS} characters")
        return {"routing": pipeline.set_prompt(request["prompt"]).as_dict()}

    return {
        "set_prompt": Command(set_prompt, {"prompt": str}),
        "get_prompt": Command(lambda _request: {"routing": pipeline.routing.as_dict()}),
        "get_stats": Command(lambda _request: {"stats": pipeline.stats.as_dict()}),
        "get_health": Command(lambda _request: {"health": pipeline.health()}),
    }


def _check_fields(request: dict[str, Any], command: Command) -> str | None:
    """What is wrong with the request's fields for ``command`` (None: nothing)."""
    extra = sorted(set(request) - {"cmd"} - set(command.fields))
    if extra:
        expected = ", ".join(command.fields) or "no other keys"
        return f"unexpected key {extra[0][:64]!r} (expected: {expected})"
    for name, kind in command.fields.items():
        if name not in request:
            return f"missing key {name!r}"
        if not isinstance(request[name], kind) or isinstance(request[name], bool) and kind is not bool:
            return f"{name!r} must be a {kind.__name__}, got {type(request[name]).__name__}"
    return None


def request(endpoint: str, message: dict[str, Any], *, timeout_s: float = 5.0, client_key: str | None = None,
            server_key: str | None = None) -> dict[str, Any]:
    """Send one control request and return the reply.

    Args:
        endpoint: The control socket's endpoint.
        message: The request (``{"cmd": ...}``).
        timeout_s: How long to wait for the reply.
        client_key: This client's ``.key_secret`` file, for a CURVE-secured control socket.
        server_key: The control socket's public ``.key`` file (with ``client_key``).

    Raises:
        StreamfuseError: No reply within ``timeout_s`` (nothing listening, a busy pipeline, or a
            CURVE handshake that was refused).
    """
    context = zmq.Context()
    socket = context.socket(zmq.REQ)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        if client_key or server_key:
            if not (client_key and server_key):
                raise ConfigError("a CURVE control client needs --client-key and --server-key")
            secure_client(socket, client_key, server_key)
        socket.connect(endpoint)
        socket.send(json.dumps(message).encode())
        if not socket.poll(int(timeout_s * 1000), zmq.POLLIN):
            change = " the request may still be carried out (check with 'streamfuse prompt get');" \
                if message.get("cmd") == "set_prompt" else ""
            raise StreamfuseError(f"--control {endpoint}: no reply within {timeout_s:g} s;{change} a pipeline still "
                                  "loading its text encoder answers late (raise --timeout), and one that is stopping "
                                  "does not answer; otherwise, is a pipeline running with control.enabled: true at "
                                  "that endpoint (and, if it uses CURVE, is this client's public key in its "
                                  "authorized_keys)?")
        return json.loads(socket.recv())
    except zmq.ZMQError as exc:
        raise StreamfuseError(f"--control {endpoint}: {exc.strerror}") from None
    finally:
        socket.close(0)
        context.term()
