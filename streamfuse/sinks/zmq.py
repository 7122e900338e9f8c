"""ZeroMQ output: a publisher sink and a subscriber client.

Wire format: multipart ``[topic, header, payload]``. ``topic`` is UTF-8 (subscribers filter on it),
``header`` is UTF-8 JSON (see :func:`make_header`), ``payload`` is the image: raw bytes in
row-major ``(height, width[, channels])`` ``uint8`` order (BGR for colour) or a JPEG file. When the
publisher closes it sends one end-of-stream message, ``[topic, {"type": "end", ...}, b""]``
(:func:`end_of_stream_header`), so a client can tell "finished" from "stalled".

The publisher is an XPUB socket with ``XPUB_NODROP``, so reaching a subscriber's high-water mark is
visible instead of silent: in the default live mode the frame is counted as dropped and still goes to
every subscriber with room (a plain PUB would drop it for the full one silently), in ``lossless`` mode
the publisher waits for the slow subscriber (after an interrupt, at most :data:`LOSSLESS_END_WAIT_S`).
``ZMQ_CONFLATE`` cannot be used with multipart messages, which is why :class:`Subscriber` keeps the
newest frame itself, on its own thread.
"""

from __future__ import annotations

import errno
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import zmq

from streamfuse.config import CurveConfig, ZmqSinkConfig
from streamfuse.errors import ConfigError, SinkError, StreamfuseError
from streamfuse.frames import FusedFrame
from streamfuse.imageio import encode_image
from streamfuse.registry import SINKS
from streamfuse.security import secure_client, secure_server
from streamfuse.sinks.base import Sink, SinkContext
from streamfuse.stats import PipelineStats

log = logging.getLogger(__name__)

HEADER_VERSION = 1

#: ``type`` of the header of the message a publisher sends when it closes (frames have ``"frame"``).
END_OF_STREAM = "end"

#: How long closing a publisher waits for the end-of-stream message to leave, in milliseconds.
END_LINGER_MS = 500
#: In lossless mode, how long closing waits for slow subscribers (recorders) to take the frames still
#: queued and the end-of-stream message, in seconds.
LOSSLESS_END_WAIT_S = 10.0
#: How often a lossless write retries a full subscriber, in seconds.
LOSSLESS_RETRY_S = 0.002
#: A lossless write waiting this long for a full subscriber is warned about (it holds the whole pipeline).
LOSSLESS_STUCK_WARNING_S = 2.0


def wall_clock(perf_time: float) -> float:
    """Convert a ``time.perf_counter()`` instant of this process to Unix time (seconds)."""
    return time.time() - (time.perf_counter() - perf_time)


def make_header(frame: FusedFrame, image: np.ndarray, encoding: str, topic: str) -> dict[str, Any]:
    """The JSON header published with a fused frame.

    Keys: ``version``, ``topic``, ``index`` (output counter), ``seq`` (visible frame sequence
    number), ``mode`` (``fused``, or ``passthrough_ir``/``passthrough_vis`` while a camera is
    lost), ``seq_ir``, ``timestamp_vis`` / ``timestamp_ir`` (capture timestamps, seconds, source
    clocks), ``skew_ms``, ``captured_at`` and ``published_at`` (Unix time, seconds), ``width``,
    ``height``, ``channels``, ``dtype``, ``encoding`` (``raw``/``jpeg``), ``fuser``,
    ``latency_ms`` (per stage), ``prompt`` / ``encoder`` / ``routing`` (intent weights; null when
    the run has no prompt), and ``registration_quality`` (online registration refinement's alignment
    score, null without it).
    """
    pair = frame.pair
    routing = frame.routing
    # Published alone (passthrough), a pair holds the surviving camera's frame in both places: the lost
    # camera's fields are null, not copies of the survivor's.
    vis = None if pair.mode == "passthrough_ir" else pair.vis
    ir = None if pair.mode == "passthrough_vis" else pair.ir
    return {
        "version": HEADER_VERSION,
        "type": "frame",
        "topic": topic,
        "index": frame.index,
        "seq": vis.seq if vis else None,
        "mode": pair.mode,
        "seq_ir": ir.seq if ir else None,
        "timestamp": frame.timestamp,
        "timestamp_vis": vis.timestamp if vis else None,
        "timestamp_ir": ir.timestamp if ir else None,
        "skew_ms": pair.skew * 1000.0 if vis and ir else None,
        "captured_at": wall_clock(frame.created),
        "published_at": time.time(),
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "channels": 1 if image.ndim == 2 else int(image.shape[2]),
        "dtype": str(image.dtype),
        "encoding": encoding,
        "fuser": frame.fuser,
        "latency_ms": {name: round(ms, 3) for name, ms in frame.latency.items()},
        "prompt": routing.prompt if routing else None,
        "encoder": routing.encoder if routing else None,
        "routing": {k: round(v, 4) for k, v in routing.active().items()} if routing else None,
        "registration_quality": pair.registration_quality,
    }


def bound_endpoint(socket: zmq.Socket, endpoint: str, key: str) -> str:
    """The endpoint ``socket`` was bound to: for a wildcard port (``tcp://127.0.0.1:*``) the port ZeroMQ chose,
    logged, since nobody can connect to ``*``; otherwise ``endpoint`` as it is."""
    if not endpoint.endswith(":*"):
        return endpoint
    bound = socket.getsockopt_string(zmq.LAST_ENDPOINT)
    log.info("%s: %s bound to %s", key, endpoint, bound)
    return bound


def _socket_error(key: str, endpoint: str, exc: zmq.ZMQError) -> SinkError:
    if exc.errno == errno.EADDRINUSE:
        return SinkError(f"{key}.endpoint: {endpoint} is already in use; stop the other program or choose "
                         "another port")
    if exc.errno == errno.ENODEV:  # bind to a host name or interface this machine does not have
        return SinkError(f"{key}.endpoint: cannot bind {endpoint}: no such address or interface on this host; bind "
                         "to one of its addresses (tcp://127.0.0.1:PORT for this host only, tcp://0.0.0.0:PORT for "
                         f"every network), or set {key}.bind: false to connect to a subscriber that binds")
    return SinkError(f"{key}.endpoint: cannot use {endpoint} ({exc.strerror}); expected e.g. tcp://127.0.0.1:5555")


class ZmqSink(Sink):
    """Publishes fused frames on an XPUB socket (see the module docstring for the wire format).

    Args:
        endpoint: ZeroMQ endpoint, e.g. ``tcp://0.0.0.0:5555`` (bind) or ``tcp://host:5555`` (connect).
        bind: Bind (subscribers connect here) or connect (to a broker or a binding subscriber).
        topic: Topic frame of every message.
        encoding: ``jpeg`` (small) or ``raw`` (exact pixels).
        jpeg_quality: 1..100.
        hwm: Messages queued per subscriber before dropping (or waiting, in lossless mode).
        lossless: Wait for slow subscribers instead of dropping.
        wait_for_subscribers: Before the first frame, wait until this many subscribers joined.
        subscriber_timeout_s: How long to wait for them.
        curve: CURVE server keys and client allow-list (off by default; see :mod:`streamfuse.security`).
        key: Config key path used in error messages.
        queue_size: Fused frames buffered for this sink (the fusion thread waits when it is full).
        stats: Where write latency is recorded.
    """

    stage = "publish"

    def __init__(self, endpoint: str, *, bind: bool = True, topic: str = "fused", encoding: str = "jpeg",
                 jpeg_quality: int = 90, hwm: int = 4, lossless: bool = False, wait_for_subscribers: int = 0,
                 subscriber_timeout_s: float = 5.0, curve: CurveConfig | None = None, key: str = "sinks.zmq",
                 queue_size: int = 16, stats: PipelineStats | None = None) -> None:
        super().__init__(queue_size=queue_size, stats=stats)
        self.endpoint = endpoint
        self.bind = bind
        self.topic = topic
        self.encoding = encoding
        self.jpeg_quality = jpeg_quality
        self.hwm = hwm
        self.lossless = lossless
        self.wait_for_subscribers = wait_for_subscribers
        self.subscriber_timeout_s = subscriber_timeout_s
        self.curve = curve or CurveConfig()
        self.key = key
        self.dropped = 0
        self.subscribers = 0
        self._context: zmq.Context | None = None
        self._socket: zmq.Socket | None = None
        self._authenticator = None
        self._closing = threading.Event()
        self._give_up_at: float | None = None  # set when the pipeline is interrupted (finish_soon)
        self._gave_up = False  # a lossless write gave a frame up: a subscriber is stuck
        self._waiting_since: float | None = None  # a lossless write waits for a full subscriber since then
        self._warned_stuck = False

    def describe(self) -> str:
        return f"zmq sink {self.endpoint}"

    def open(self) -> None:
        self._context = zmq.Context()
        socket = self._context.socket(zmq.XPUB)
        socket.setsockopt(zmq.SNDHWM, self.hwm)
        socket.setsockopt(zmq.XPUB_NODROP, 1)
        socket.setsockopt(zmq.XPUB_VERBOSE, 1)
        socket.setsockopt(zmq.LINGER, 1000 if self.lossless else 0)
        self._socket = socket
        try:
            self._authenticator = secure_server(socket, self.curve, what=f"{self.key}.curve")
            if self.bind:
                socket.bind(self.endpoint)
                self.endpoint = bound_endpoint(socket, self.endpoint, f"{self.key}.endpoint")
            else:
                socket.connect(self.endpoint)
        except (zmq.ZMQError, ConfigError) as exc:
            self.close()
            raise exc if isinstance(exc, ConfigError) else _socket_error(self.key, self.endpoint, exc) from None
        if self.wait_for_subscribers:
            self._await_subscribers()

    def _poll_subscriptions(self, timeout_ms: int = 0) -> None:
        """Read subscribe/unsubscribe notifications to keep :attr:`subscribers` current."""
        while self._socket.poll(timeout_ms, zmq.POLLIN):
            message = self._socket.recv()
            if message[:1] == b"\x01":
                self.subscribers += 1
            elif message[:1] == b"\x00":
                self.subscribers = max(0, self.subscribers - 1)
            timeout_ms = 0

    def _await_subscribers(self) -> None:
        deadline = time.monotonic() + self.subscriber_timeout_s
        while self.subscribers < self.wait_for_subscribers and time.monotonic() < deadline:
            if self.stop_requested():  # a Ctrl-C or SIGTERM meanwhile: it was held until the timeout
                log.info("%s: stopped waiting for subscribers (%d of %d joined): the run was interrupted",
                         self.describe(), self.subscribers, self.wait_for_subscribers)
                return
            self._poll_subscriptions(50)
        if self.subscribers < self.wait_for_subscribers:
            log.warning("%s: only %d of %d subscribers joined within %.1f s; publishing anyway",
                        self.describe(), self.subscribers, self.wait_for_subscribers, self.subscriber_timeout_s)

    def encode(self, image: np.ndarray) -> bytes:
        """The payload bytes of ``image`` in this sink's encoding."""
        if self.encoding == "jpeg":
            return encode_image(image, ".jpg", self.jpeg_quality)
        return np.ascontiguousarray(image).tobytes()

    def write(self, frame: FusedFrame) -> None:
        self._poll_subscriptions()
        payload = self.encode(frame.image)
        header = make_header(frame, frame.image, self.encoding, self.topic)
        message = [self.topic.encode(), json.dumps(header).encode(), payload]
        while True:
            try:
                self._socket.send_multipart(message, flags=zmq.NOBLOCK, copy=False)
                self._no_longer_waiting(sent=True)
                return
            except zmq.Again:  # a subscriber is at its high-water mark
                if self.lossless and not self._giving_up():
                    self._waiting()
                    # XPUB reports no room for the full pipe by poll (it returns at once): wait, then retry.
                    self._closing.wait(LOSSLESS_RETRY_S)
                    continue
                self._no_longer_waiting(sent=False)
                self.dropped += 1
                self.stats.count("drops.zmq")
                self._gave_up = self._gave_up or self.lossless
                self._send_to_those_with_room(message)
                return

    def _waiting(self) -> None:
        """A lossless write found a subscriber full: warn once it has waited :data:`LOSSLESS_STUCK_WARNING_S`."""
        now = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since = now
        elif not self._warned_stuck and now - self._waiting_since >= LOSSLESS_STUCK_WARNING_S:
            self._warned_stuck = True
            self.stats.count("stalls.zmq")
            log.warning("%s: a subscriber has taken no frame for %.1f s; with lossless: true the pipeline waits for "
                        "it (a recorder that stopped reading?); set lossless: false to drop frames for a slow "
                        "subscriber instead", self.describe(), now - self._waiting_since)

    def _no_longer_waiting(self, *, sent: bool) -> None:
        """A write ended: ``sent`` (the slow subscriber took it) or gave the frame up."""
        if self._warned_stuck and sent:
            log.info("%s: the slow subscriber takes frames again after %.1f s", self.describe(),
                     time.monotonic() - self._waiting_since)
        self._waiting_since, self._warned_stuck = None, False

    def _giving_up(self) -> bool:
        """A lossless write stops waiting: an abort, or past the interrupted pipeline's deadline."""
        return self._closing.is_set() or (self._give_up_at is not None and time.monotonic() >= self._give_up_at)

    def _send_to_those_with_room(self, message: list) -> None:
        """Send to every subscriber with room (dropped only for the full ones): one slow subscriber must not
        starve the others."""
        self._socket.setsockopt(zmq.XPUB_NODROP, 0)
        try:
            self._socket.send_multipart(message, flags=zmq.NOBLOCK, copy=False)
        finally:
            self._socket.setsockopt(zmq.XPUB_NODROP, 1)

    def finish_soon(self) -> None:
        """The pipeline was interrupted: a lossless write waits at most :data:`LOSSLESS_END_WAIT_S` more."""
        self._give_up_at = time.monotonic() + LOSSLESS_END_WAIT_S
        if self._waiting_since is not None:
            log.warning("%s: waiting up to %.0f s for a slow subscriber to take the frames still queued (lossless: "
                        "true; interrupt again to stop now)", self.describe(), LOSSLESS_END_WAIT_S)

    def _send_end_of_stream(self) -> None:
        """Tell subscribers the stream is over and how many frames it published. In lossless mode a
        subscriber at its high-water mark (a slow recorder) gets up to :data:`LOSSLESS_END_WAIT_S` to make
        room (none when one was already given up on); then every subscriber with room gets it, and only a
        full one misses it."""
        header = {"version": HEADER_VERSION, "topic": self.topic, "type": END_OF_STREAM,
                  "frames": self.frames_written}
        message = [self.topic.encode(), json.dumps(header).encode(), b""]
        deadline = time.monotonic() + (LOSSLESS_END_WAIT_S if self.lossless and not self._gave_up else 0.0)
        while True:
            try:
                self._socket.send_multipart(message, flags=zmq.NOBLOCK)
                return
            except zmq.Again:
                if time.monotonic() >= deadline:
                    log.debug("%s: a subscriber is full and misses the end-of-stream message", self.describe())
                    self._gave_up = self._gave_up or self.lossless
                    self._send_to_those_with_room(message)
                    return
                time.sleep(LOSSLESS_RETRY_S)

    def interrupt(self) -> None:
        """A lossless write waiting for a slow subscriber gives the frame up."""
        self._closing.set()

    def close(self) -> None:
        self._closing.set()
        if self._socket is not None:
            self._send_end_of_stream()
            stuck = not self.lossless or self._gave_up  # lingering would wait on a stuck subscriber in vain
            self._socket.close(linger=END_LINGER_MS if stuck else int(LOSSLESS_END_WAIT_S * 1000))
            self._socket = None
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None
        if self._context is not None:
            self._context.term()
            self._context = None


# ---------------------------------------------------------------------------------------- subscriber
@dataclass
class ReceivedFrame:
    """A frame received from a streamfuse publisher.

    Attributes:
        image: Decoded ``uint8`` pixels (BGR or gray).
        header: The JSON header (see :func:`make_header`).
        received_at: Unix time of arrival.
    """

    image: np.ndarray
    header: dict[str, Any]
    received_at: float

    @property
    def latency_ms(self) -> float:
        """Capture-to-arrival latency (needs publisher and subscriber clocks in sync across machines)."""
        return (self.received_at - self.header["captured_at"]) * 1000.0


def end_of_stream_header(parts: list[bytes]) -> dict[str, Any] | None:
    """The header of a publisher's end-of-stream message (``frames``: how many it sent); None for any other message."""
    if len(parts) != 3 or parts[2]:
        return None
    try:
        header = json.loads(parts[1])
    except ValueError:
        return None
    return header if isinstance(header, dict) and header.get("type") == END_OF_STREAM else None


def decode_message(parts: list[bytes]) -> ReceivedFrame:
    """Decode one ``[topic, header, payload]`` message.

    Raises:
        StreamfuseError: The message is not a streamfuse frame.
    """
    received_at = time.time()
    if len(parts) != 3:
        raise StreamfuseError(f"expected a 3-part message [topic, header, payload], got {len(parts)} parts")
    try:
        header = json.loads(parts[1])
        shape = (header["height"], header["width"]) + ((header["channels"],) if header["channels"] > 1 else ())
        if header["encoding"] == "jpeg":
            flag = cv2.IMREAD_COLOR if header["channels"] == 3 else cv2.IMREAD_GRAYSCALE
            image = cv2.imdecode(np.frombuffer(parts[2], np.uint8), flag)
        else:
            image = np.frombuffer(parts[2], dtype=header["dtype"]).reshape(shape)
    except (ValueError, KeyError, TypeError) as exc:
        raise StreamfuseError(f"malformed streamfuse message ({exc})") from None
    if image is None or image.shape != shape:
        raise StreamfuseError(f"payload does not decode to the {shape} image its header announces")
    return ReceivedFrame(image, header, received_at)


class Subscriber:
    """Client for a streamfuse ZeroMQ publisher.

    Two ways to consume:

    * ``keep="latest"`` (live viewers): a background thread takes everything that has arrived,
      decodes only the newest message, and keeps it; :meth:`latest` returns it, never a frame older
      than ``max_age_s``. Frames the caller was too slow for are counted in :attr:`skipped`, frames
      that were too old when their turn came in :attr:`stale`.
    * ``keep="all"`` (recording, analysis): :meth:`receive` returns every frame in order (up to the
      socket's high-water mark ``hwm``), however old: a reader slower than the publisher falls
      further and further behind (pair it with a ``lossless: true`` publisher).

    A frame's age is capture to now, measured without trusting the two machines' clocks to agree:
    the smallest publish-to-arrival delay seen so far is taken as clock offset plus transit.

    Args:
        endpoint: The publisher's endpoint (``tcp://host:5555``).
        topic: Topic prefix to subscribe to.
        keep: ``latest`` or ``all``.
        bind: Bind instead of connect (when the publisher connects).
        hwm: Receive high-water mark (None: 2 for ``latest``, 1000 for ``all``).
        max_age_s: With ``keep="latest"``, the oldest frame :meth:`latest` returns (None: no limit).
        client_key: This subscriber's ``.key_secret`` file, for a CURVE-secured publisher.
        server_key: The publisher's public ``.key`` file (with ``client_key``).
    """

    def __init__(self, endpoint: str, *, topic: str = "fused", keep: str = "latest", bind: bool = False,
                 hwm: int | None = None, max_age_s: float | None = 1.0, client_key: str | None = None,
                 server_key: str | None = None) -> None:
        if keep not in ("latest", "all"):
            raise ValueError(f"keep must be 'latest' or 'all', got {keep!r}")
        if hwm is None:
            hwm = 2 if keep == "latest" else 1000
        self.endpoint = endpoint
        self.keep = keep
        self.max_age_s = max_age_s
        self.received = 0
        self.skipped = 0
        self.ended: dict[str, Any] | None = None
        """The end-of-stream header once every stream this subscriber received frames from has ended (several
        publishers, each its own topic, may connect to a binding subscriber); nothing is read after it."""
        self._open_topics: set[str] = set()
        self.stale = 0
        self._offset: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.RCVHWM, hwm)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
        if client_key or server_key:
            if not (client_key and server_key):
                self.close()
                raise ConfigError("a CURVE subscriber needs both its own secret key (--client-key) and the "
                                  "publisher's public key (--server-key)")
            try:
                secure_client(self._socket, client_key, server_key)
            except ConfigError:
                self.close()
                raise
        try:
            self._socket.bind(endpoint) if bind else self._socket.connect(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise StreamfuseError(f"{endpoint}: cannot {'bind' if bind else 'connect'} ({exc.strerror})") from None
        self._newest: ReceivedFrame | None = None
        self._condition = threading.Condition()
        if keep == "latest":
            self._thread = threading.Thread(target=self._receive_loop, name="zmq-subscriber", daemon=True)
            self._thread.start()

    def _receive_once(self, timeout: float | None) -> ReceivedFrame | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.ended is None:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._socket.poll(None if left is None else int(left * 1000), zmq.POLLIN):
                return None
            parts = self._socket.recv_multipart()
            end = end_of_stream_header(parts)
            if end is None:
                self._open_topics.add(parts[0].decode(errors="replace"))
                frame = decode_message(parts)
                self.received += 1
                return frame
            self._stream_ended(end)  # another topic may still be going: read on
        return None

    def _newest_message(self, timeout: float) -> tuple[list[bytes] | None, int]:
        """The newest frame message that has arrived (older ones are skipped unread) and how many frame
        messages were read, waiting up to ``timeout`` s; the end-of-stream message sets :attr:`ended` and ends
        the reading."""
        if not self._socket.poll(int(timeout * 1000), zmq.POLLIN):
            return None, 0
        newest, count = None, 0
        while True:
            try:
                parts = self._socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return newest, count
            end = end_of_stream_header(parts)
            if end is not None:
                if self._stream_ended(end):
                    return newest, count
                continue
            self._open_topics.add(parts[0].decode(errors="replace"))
            count += 1
            if newest is not None:
                self.skipped += 1
            newest = parts

    def _stream_ended(self, end: dict[str, Any]) -> bool:
        """Take an end-of-stream message: True (and :attr:`ended` set) when no other topic this subscriber has
        received frames from is still going."""
        self._open_topics.discard(str(end.get("topic")))
        if self._open_topics:
            return False
        self.ended = end
        return True

    def age_s(self, frame: ReceivedFrame) -> float:
        """Seconds from ``frame``'s capture to now, with the publisher's clock offset taken out."""
        transit = frame.received_at - frame.header["published_at"]
        self._offset = transit if self._offset is None else min(self._offset, transit)
        return time.time() - frame.header["captured_at"] - self._offset

    def _fresh(self, frame: ReceivedFrame) -> bool:
        if self.max_age_s is None or self.age_s(frame) <= self.max_age_s:
            return True
        self.stale += 1
        return False

    def _receive_loop(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    parts, count = self._newest_message(0.1)
                except zmq.ZMQError:
                    break  # socket closed
                try:
                    frame = None if parts is None else decode_message(parts)
                except StreamfuseError as exc:
                    self.received += count
                    log.warning("%s: skipped a message: %s", self.endpoint, exc)
                    continue
                with self._condition:
                    if frame is not None and self._fresh(frame):
                        if self._newest is not None:
                            self.skipped += 1
                        self._newest = frame
                        self._condition.notify_all()
                    self.received += count  # counted once the newest of them can be taken (latest())
                if self.ended is not None:
                    with self._condition:
                        self._condition.notify_all()
                    break
        finally:
            self._release()  # this thread owns the socket: it closes it, never another thread while in use

    def latest(self, timeout: float | None = None) -> ReceivedFrame | None:
        """The newest frame not yet returned and at most ``max_age_s`` old, waiting up to ``timeout``
        seconds; None on timeout or at the end of the stream (:attr:`ended`)."""
        if self.keep != "latest":
            raise RuntimeError("latest() needs keep='latest'; use receive() with keep='all'")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not self._condition.wait_for(lambda: self._newest is not None or self.ended is not None, left):
                    return None
                frame, self._newest = self._newest, None
                if frame is None or self._fresh(frame):  # None: the stream ended; a frame may have waited here
                    return frame

    def receive(self, timeout: float | None = None) -> ReceivedFrame | None:
        """The next frame in order, waiting up to ``timeout`` seconds; None on timeout or, at once, after the
        end of the stream (:attr:`ended`)."""
        if self.keep != "all":
            raise RuntimeError("receive() needs keep='all'; use latest() with keep='latest'")
        return self._receive_once(timeout)

    def close(self) -> None:
        """Stop receiving and release the socket (with ``keep='latest'``, the receiving thread does, as it ends)."""
        self._stop.set()
        if self._thread is None:
            self._release()
            return
        self._thread.join(1.0)
        if self._thread.is_alive():
            log.warning("%s: the receiving thread is still running; it closes the socket when it ends", self.endpoint)

    def _release(self) -> None:
        self._socket.close(0)
        self._context.term()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@SINKS.register("zmq", ZmqSinkConfig)
def from_config(config: ZmqSinkConfig, context: SinkContext) -> ZmqSink:
    """A ZeroMQ publisher."""
    return ZmqSink(config.endpoint, bind=config.bind, topic=config.topic, encoding=config.encoding,
                   jpeg_quality=config.jpeg_quality, hwm=config.hwm, lossless=config.lossless,
                   wait_for_subscribers=config.wait_for_subscribers, subscriber_timeout_s=config.subscriber_timeout_s,
                   curve=config.curve, key=context.key, queue_size=config.queue_size, stats=context.stats)
