"""RTSP output: the fused frames as H.264 for VLC, ffplay and video management systems.

A small RTSP/1.0 server inside streamfuse (no other program to run): ``OPTIONS``, ``DESCRIBE``
(SDP with the SPS/PPS in ``sprop-parameter-sets``), ``SETUP`` (RTP over the RTSP connection,
"TCP interleaved"; a request for UDP gets ``461 Unsupported Transport``, on which ffmpeg and VLC
retry over TCP), ``PLAY``, ``TEARDOWN`` and ``GET_PARAMETER`` (keep-alive), with optional Basic
authentication. Frames are encoded once, whatever the number of clients, with libx264
(``ultrafast``, ``zerolatency``: no B-frames, one frame in, one out) and only while a client plays;
they go out as RTP packets per RFC 6184 (single NAL units, FU-A fragments above the MTU). A client
that joins asks for a keyframe and receives from it; a client too slow for the stream skips to the
next keyframe instead of holding the pipeline (counted in ``drops.rtsp``).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hmac
import logging
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np

try:  # how much of a socket's send buffer is still unsent (Linux and other POSIX systems)
    import fcntl
    import termios
except ImportError:
    fcntl = termios = None

from streamfuse.config import RtspSinkConfig
from streamfuse.errors import SinkError
from streamfuse.frames import FusedFrame
from streamfuse.registry import SINKS
from streamfuse.sinks.base import Sink, SinkContext
from streamfuse.sinks.video import encoder_input
from streamfuse.sinks.zmq import wall_clock
from streamfuse.stats import PipelineStats
from streamfuse.webserver import listen_advice, url_host

log = logging.getLogger(__name__)

CLOCK_RATE = 90000
PAYLOAD_TYPE = 96
#: Largest RTP payload; a larger NAL unit is sent as FU-A fragments.
MAX_PAYLOAD = 1400
#: Frames waiting for one client before it is considered too slow and skips to the next keyframe.
CLIENT_BACKLOG = 30
#: Seconds the oldest frame a client has not received yet (in the system's send buffer, which holds many
#: seconds of a small stream) may lag before the client skips to the next keyframe: a viewer that paused
#: or lost the network for a while comes back to live, not that many seconds behind.
CLIENT_MAX_LAG_S = 1.0
#: Seconds a connection has to log in and start playing; until then it does not count towards
#: ``max_clients`` (connections that never log in locked every viewer out for 90 s).
LOGIN_TIMEOUT_S = 10.0
#: Connections not playing yet, beyond which new ones are refused.
MAX_PENDING = 32
#: How long DESCRIBE waits for the first frame (the SPS/PPS depend on its size).
DESCRIBE_WAIT_S = 10.0
MAX_REQUEST_BYTES = 16 * 1024
#: Seconds a client may stay silent (no request, no RTCP report) before its session ends (announced in SETUP).
SESSION_TIMEOUT_S = 60
#: NAL unit types of the parameter sets and the FU-A payload (RFC 6184).
NAL_SPS, NAL_PPS, NAL_FU_A = 7, 8, 28


def split_annex_b(data: bytes) -> list[bytes]:
    """The NAL units of an H.264 Annex B byte stream (start codes removed)."""
    units = []
    for chunk in data.split(b"\x00\x00\x01"):
        chunk = chunk.rstrip(b"\x00")  # a 4-byte start code leaves a zero at the end of the previous unit
        if chunk:
            units.append(chunk)
    return units


def packetize(units: list[bytes], timestamp: int, seq: int, ssrc: int) -> list[bytes]:
    """RTP packets (RFC 6184, packetization-mode 1) for one access unit; ``seq`` is the first sequence number.

    Units up to :data:`MAX_PAYLOAD` bytes go out whole; larger ones as FU-A fragments. The marker
    bit is set on the access unit's last packet.
    """
    payloads = []
    for unit in units:
        if len(unit) <= MAX_PAYLOAD:
            payloads.append(unit)
            continue
        indicator = (unit[0] & 0xE0) | NAL_FU_A
        body = unit[1:]
        step = MAX_PAYLOAD - 2
        for start in range(0, len(body), step):
            flags = (0x80 if start == 0 else 0) | (0x40 if start + step >= len(body) else 0)
            payloads.append(bytes((indicator, flags | (unit[0] & 0x1F))) + body[start:start + step])
    packets = []
    for i, payload in enumerate(payloads):
        marker = 0x80 if i == len(payloads) - 1 else 0
        header = struct.pack("!BBHII", 0x80, marker | PAYLOAD_TYPE, (seq + i) & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc)
        packets.append(header + payload)
    return packets


class H264Encoder:
    """libx264 for live streaming: one frame in, one access unit out; SPS/PPS known as soon as it opens.

    Args:
        width, height: Frame size (even).
        fps: Nominal frame rate (for the rate control).
        crf: Quality (lower = better).
        keyframe_interval_s: Seconds between keyframes.
    """

    def __init__(self, width: int, height: int, *, fps: float, crf: int, keyframe_interval_s: float) -> None:
        context = av.CodecContext.create("libx264", "w")
        context.width, context.height, context.pix_fmt = width, height, "yuv420p"
        context.time_base = Fraction(1, CLOCK_RATE)
        context.framerate = Fraction(fps).limit_denominator(1001)
        context.gop_size = max(1, round(keyframe_interval_s * fps))
        # Parameter sets both out of band (for the SDP) and before every keyframe (for clients that join).
        context.flags |= av.codec.context.Flags.global_header
        context.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": str(crf), "forced-idr": "1",
                           "x264-params": "repeat-headers=1"}
        context.open()
        self.size = (width, height)
        self.parameter_sets = [unit for unit in split_annex_b(bytes(context.extradata))
                               if unit[0] & 0x1F in (NAL_SPS, NAL_PPS)]
        self._context = context

    def encode(self, image: np.ndarray, pts: int, *, keyframe: bool = False) -> tuple[list[bytes], bool]:
        """The NAL units of ``image`` (BGR, the encoder's size) at ``pts`` (90 kHz), and whether it is a keyframe."""
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24").reformat(format="yuv420p")
        frame.pts = pts
        if keyframe:
            frame.pict_type = av.video.frame.PictureType.I
        units, is_key = [], False
        for packet in self._context.encode(frame):
            units += split_annex_b(bytes(packet))
            is_key = is_key or packet.is_keyframe
        return units, is_key


@dataclass
class _Client:
    """One RTSP connection and, once it plays, its RTP stream."""

    connection: socket.socket
    address: str
    session: str = field(default_factory=lambda: os.urandom(8).hex())
    channel: int = 0
    seq: int = field(default_factory=lambda: int.from_bytes(os.urandom(2), "big"))
    set_up: bool = False
    """The client has sent SETUP (PLAY before it is refused)."""
    playing: bool = False
    needs_keyframe: bool = True
    backlog: collections.deque = field(default_factory=collections.deque)
    wake: threading.Condition = field(default_factory=threading.Condition)
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False
    first_timestamp: int | None = None
    """The RTP timestamp of the first frame sent (clients count presentation times from it)."""
    bytes_sent: int = 0
    sent: collections.deque = field(default_factory=collections.deque)
    """``(end offset in the byte stream, when queued)`` of the frames sent and maybe not received yet."""

    def send(self, data: bytes) -> None:
        with self.write_lock:
            self.connection.sendall(data)

    def lag_s(self, now: float) -> float:
        """How long ago the oldest frame the client has not received yet was queued (0 when none, or where the
        system does not say how much of the send buffer is left)."""
        if fcntl is None:
            return 0.0
        try:
            unsent = struct.unpack("i", fcntl.ioctl(self.connection.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
        except (OSError, AttributeError):
            return 0.0
        received = self.bytes_sent - unsent
        while self.sent and self.sent[0][0] <= received:
            self.sent.popleft()
        return now - self.sent[0][1] if self.sent else 0.0


class RtspSink(Sink):
    """Serves the fused frames at ``rtsp://BIND:PORT/PATH`` (see the module docstring).

    Args:
        bind: Address to listen on.
        port: TCP port (0 picks a free one; see :attr:`port`).
        path: The stream's name in the URL.
        fps: Nominal frame rate (rate control, keyframe interval).
        crf: H.264 quality.
        keyframe_interval_s: Seconds between keyframes.
        user, password: Basic authentication (both None: none).
        max_clients: Clients playing at once; a further PLAY gets 503 Service Unavailable. A connection has
            :data:`LOGIN_TIMEOUT_S` to log in and play.
        key: Config key path used in error messages.
        queue_size: Fused frames buffered for this sink (the oldest is dropped when it is full).
        stats: Where encode latency and drops are recorded.
    """

    stage = "rtsp"

    def __init__(self, *, bind: str = "127.0.0.1", port: int = 8554, path: str = "fused", fps: float = 30.0,
                 crf: int = 23, keyframe_interval_s: float = 1.0, user: str | None = None,
                 password: str | None = None, max_clients: int = 16, key: str = "sinks.rtsp", queue_size: int = 2,
                 stats: PipelineStats | None = None) -> None:
        # A live view wants the newest frame: the fusion thread never waits for this sink.
        super().__init__(queue_size=queue_size, policy="drop_oldest", stats=stats)
        self.bind, self.port, self.path, self.fps = bind, port, path, fps
        self.crf, self.keyframe_interval_s, self.max_clients, self.key = crf, keyframe_interval_s, max_clients, key
        self._credentials = None if user is None else base64.b64encode(f"{user}:{password}".encode()).decode()
        self.ssrc = int.from_bytes(os.urandom(4), "big")
        self.encoder: H264Encoder | None = None
        self._first_size: tuple[int, int] | None = None  # of the first frame as given (before even-padding)
        self.frames_encoded = 0
        """Frames encoded (once each, whatever the number of clients; none while nobody plays)."""
        self.captured_at: dict[int, float] = {}
        """RTP timestamp -> Unix time of capture, for the last frames sent (latency measurements)."""
        self._clients: list[_Client] = []
        self._clients_lock = threading.Lock()
        self._encoder_ready = threading.Event()
        self._want_keyframe = False
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None
        self._closing = threading.Event()

    @property
    def url(self) -> str:
        """The stream's URL."""
        return f"rtsp://{url_host(self.bind)}:{self.port}/{self.path}"

    def describe(self) -> str:
        return f"rtsp sink {self.url}"

    def open(self) -> None:
        listener = socket.socket(socket.AF_INET6 if ":" in self.bind else socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.bind, self.port))
        except OSError as exc:
            listener.close()
            raise SinkError(f"{self.key}: cannot listen on {self.bind}:{self.port} ({exc.strerror}); "
                            f"{listen_advice(exc, f'{self.key}.bind', f'{self.key}.port')}") from None
        listener.listen(8)
        listener.settimeout(0.2)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._accepting = threading.Thread(target=self._accept, name="rtsp-accept", daemon=True)
        self._accepting.start()
        log.info("RTSP stream %s", self.url)

    # ------------------------------------------------------------------------------------- encoding
    @property
    def clients(self) -> int:
        """Clients receiving the stream now."""
        with self._clients_lock:
            return sum(client.playing for client in self._clients)

    def capture_time(self, pts: int | None) -> float | None:
        """Unix capture time of the frame an FFmpeg-based client (PyAV, ffplay) decoded at ``pts`` (90 kHz), for
        latency measurements with a single client: FFmpeg counts presentation times from the first frame it
        was sent. None if unknown (no ``pts``, as FFmpeg gives the first frame; another client; a frame too old)."""
        if pts is None:
            return None
        with self._clients_lock:
            firsts = [client.first_timestamp for client in self._clients if client.first_timestamp is not None]
        if len(firsts) != 1:
            return None
        return self.captured_at.get((firsts[0] + pts) & 0xFFFFFFFF)

    def write(self, frame: FusedFrame) -> None:
        given = frame.image.shape[1::-1]  # the size the error names: the encoder's is padded to even sides
        image = encoder_input(frame.image, even=True)
        height, width = image.shape[:2]
        if self.encoder is None:
            self.encoder = H264Encoder(width, height, fps=self.fps, crf=self.crf,
                                       keyframe_interval_s=self.keyframe_interval_s)
            self._first_size = given
            self._encoder_ready.set()
        elif self.encoder.size != (width, height):
            raise SinkError(f"{self.describe()}: frame size changed from {self._first_size[0]}x"
                            f"{self._first_size[1]} to {given[0]}x{given[1]}; an RTSP stream has one size")
        with self._clients_lock:
            playing = [client for client in self._clients if client.playing]
            keyframe, self._want_keyframe = self._want_keyframe, False
        if not playing:
            return  # nobody watches: nothing to encode
        timestamp = int(frame.created * CLOCK_RATE) & 0xFFFFFFFF
        units, is_key = self.encoder.encode(image, int(frame.created * CLOCK_RATE), keyframe=keyframe)
        self.frames_encoded += 1
        self.captured_at[timestamp] = wall_clock(frame.created)
        while len(self.captured_at) > 300:
            del self.captured_at[next(iter(self.captured_at))]
        for client in playing:
            self._queue(client, units, is_key, timestamp)

    def _queue(self, client: _Client, units: list[bytes], is_key: bool, timestamp: int) -> None:
        with client.wake:
            if client.needs_keyframe and not is_key:
                return
            too_slow = len(client.backlog) >= CLIENT_BACKLOG
            if not too_slow:
                client.needs_keyframe = False
                if client.first_timestamp is None:
                    client.first_timestamp = timestamp
                client.backlog.append((units, timestamp, time.monotonic()))
                client.wake.notify()
        if too_slow:  # start again from the next keyframe
            self._skip_to_keyframe(client, "is too slow")
            self._request_keyframe()

    def _skip_to_keyframe(self, client: _Client, why: str) -> None:
        """Drop what waits for ``client``: it resumes at the next keyframe."""
        with client.wake:
            dropped = len(client.backlog)
            client.backlog.clear()
            client.needs_keyframe = True
        self.stats.count("drops.rtsp", dropped)
        log.warning("%s: client %s %s; %d frames dropped, it resumes at the next keyframe", self.describe(),
                    client.address, why, dropped)

    def _request_keyframe(self) -> None:
        """Have the next frame encoded as a keyframe."""
        with self._clients_lock:
            self._want_keyframe = True

    def _send_loop(self, client: _Client) -> None:
        """Sends the client's frames as interleaved RTP packets until it leaves."""
        while True:
            with client.wake:
                client.wake.wait_for(lambda: client.backlog or client.closed)
                if client.closed:
                    return
                units, timestamp, queued_at = client.backlog.popleft()
            lag = client.lag_s(time.monotonic())
            if lag > CLIENT_MAX_LAG_S:  # paused, or its network stalled: what it has not received yet is old
                self.stats.count("drops.rtsp")
                self._skip_to_keyframe(client, f"has not received what was sent {lag:.1f} s ago")
                while not client.closed and client.lag_s(time.monotonic()) > CLIENT_MAX_LAG_S / 2:
                    time.sleep(0.05)  # a keyframe now would only wait in the send buffer too
                self._request_keyframe()
                continue
            packets = packetize(units, timestamp, client.seq, self.ssrc)
            client.seq = (client.seq + len(packets)) & 0xFFFF
            data = b"".join(struct.pack("!cBH", b"$", client.channel, len(p)) + p for p in packets)
            client.bytes_sent += len(data)
            client.sent.append((client.bytes_sent, queued_at))
            try:
                client.send(data)
            except OSError:
                self._drop(client)
                return

    # ------------------------------------------------------------------------------------- protocol
    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                connection, address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._clients_lock:
                pending = sum(1 for client in self._clients if not client.playing)
            if pending >= MAX_PENDING:
                log.warning("%s: refused %s (%d connections not playing yet)", self.describe(), address[0], pending)
                connection.close()
                continue
            connection.settimeout(LOGIN_TIMEOUT_S)  # to log in and play; then its session's
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = _Client(connection, f"{address[0]}:{address[1]}")
            with self._clients_lock:
                self._clients.append(client)
            threading.Thread(target=self._serve, args=(client,), name="rtsp-client", daemon=True).start()

    def _serve(self, client: _Client) -> None:
        reader = client.connection.makefile("rb")
        try:
            while not client.closed:
                request = _read_request(reader)
                if request is None:
                    break
                if not self._answer(client, *request):
                    break
        except ValueError as exc:  # not RTSP, or over the size limit: say so before closing
            log.debug("%s: client %s: %s", self.describe(), client.address, exc)
            with contextlib.suppress(OSError):
                self._reply(client, "0", "400 Bad Request")
        except OSError as exc:
            log.debug("%s: client %s: %s", self.describe(), client.address, exc)
        finally:
            reader.close()
            self._drop(client)

    def _answer(self, client: _Client, method: str, url: str, headers: dict[str, str]) -> bool:
        """Reply to one request; False when the connection should end."""
        cseq = headers.get("cseq", "0")
        if self._credentials is not None and not hmac.compare_digest(
                headers.get("authorization", ""), f"Basic {self._credentials}"):
            self._reply(client, cseq, "401 Unauthorized", WWW_Authenticate='Basic realm="streamfuse"')
            return True
        if method != "OPTIONS" and not _names_stream(url, self.path):
            self._reply(client, cseq, "404 Not Found")
            return True
        if method == "OPTIONS":
            self._reply(client, cseq, "200 OK", Public="OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER")
        elif method == "DESCRIBE":
            if not self._encoder_ready.wait(DESCRIBE_WAIT_S):
                self._reply(client, cseq, "503 Service Unavailable")
                return True
            base = url.split("?", 1)[0].rstrip("/") + "/"
            self._reply(client, cseq, "200 OK", self._sdp().encode(), Content_Base=base,
                        Content_Type="application/sdp")
        elif method == "SETUP":
            transport = headers.get("transport", "")
            if "RTP/AVP/TCP" not in transport:
                self._reply(client, cseq, "461 Unsupported Transport")
                return True
            channels = _interleaved(transport)
            client.channel = channels[0]
            client.set_up = True
            self._reply(client, cseq, "200 OK", Session=f"{client.session};timeout={SESSION_TIMEOUT_S}",
                        Transport=f"RTP/AVP/TCP;unicast;interleaved={channels[0]}-{channels[1]};ssrc={self.ssrc:08X}")
        elif method == "PLAY" and not client.set_up:
            self._reply(client, cseq, "455 Method Not Valid in This State")  # RFC 2326: SETUP first
        elif method == "PLAY" and headers.get("session", client.session).split(";")[0] != client.session:
            self._reply(client, cseq, "454 Session Not Found")
        elif method == "PLAY":
            starts = not client.playing
            if starts:
                with self._clients_lock:
                    full = sum(1 for other in self._clients if other.playing) >= self.max_clients
                    client.playing = not full
                if full:
                    log.warning("%s: refused %s (max_clients %d playing)", self.describe(), client.address,
                                self.max_clients)
                    self._reply(client, cseq, "503 Service Unavailable")
                    return False
                client.connection.settimeout(SESSION_TIMEOUT_S * 1.5)  # silent past its session, or not reading
            self._reply(client, cseq, "200 OK", Session=client.session, Range="npt=0.000-")
            if starts:  # after the reply: the first RTP packet may not come before it
                self._request_keyframe()
                threading.Thread(target=self._send_loop, args=(client,), name="rtsp-send", daemon=True).start()
        elif method == "TEARDOWN":
            self._reply(client, cseq, "200 OK", Session=client.session)
            return False
        elif method in ("GET_PARAMETER", "SET_PARAMETER"):
            self._reply(client, cseq, "200 OK", Session=client.session)
        else:
            self._reply(client, cseq, "405 Method Not Allowed",
                        Allow="OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER")
        return True

    def _sdp(self) -> str:
        sps, pps = (next(u for u in self.encoder.parameter_sets if u[0] & 0x1F == kind) for kind in (NAL_SPS, NAL_PPS))
        sets = ",".join(base64.b64encode(unit).decode() for unit in (sps, pps))
        return ("v=0\r\n"
                f"o=- {self.ssrc} 1 IN IP4 {self.bind if ':' not in self.bind else '0.0.0.0'}\r\n"
                "s=streamfuse fused stream\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\na=control:*\r\n"
                f"m=video 0 RTP/AVP {PAYLOAD_TYPE}\r\n"
                f"a=rtpmap:{PAYLOAD_TYPE} H264/{CLOCK_RATE}\r\n"
                f"a=fmtp:{PAYLOAD_TYPE} packetization-mode=1;profile-level-id={sps[1:4].hex()};"
                f"sprop-parameter-sets={sets}\r\n"
                f"a=framerate:{self.fps:g}\r\na=control:track1\r\n")

    def _reply(self, client: _Client, cseq: str, status: str, body: bytes = b"", **headers: str) -> None:
        lines = [f"RTSP/1.0 {status}", f"CSeq: {cseq}", "Server: streamfuse",
                 *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items())]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        client.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def _drop(self, client: _Client) -> None:
        with client.wake:
            if client.closed:
                return
            client.closed = True
            client.wake.notify_all()
        with self._clients_lock:
            if client in self._clients:
                self._clients.remove(client)
        try:
            client.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        client.connection.close()

    def interrupt(self) -> None:
        self._closing.set()

    def close(self) -> None:
        self._closing.set()
        if self._listener is not None:
            self._listener.close()
            if self._accepting is not None:
                self._accepting.join(2)
            self._listener = None
        with self._clients_lock:
            clients = list(self._clients)
        for client in clients:
            self._drop(client)


def _read_request(reader) -> tuple[str, str, dict[str, str]] | None:
    """The next RTSP request ``(method, url, headers)`` on the connection, skipping interleaved RTCP
    packets the client sends; None when the client closed it."""
    while True:
        first = reader.read(1)
        if not first:
            return None
        if first == b"$":  # an interleaved packet (the client's RTCP receiver reports): skip it
            channel_and_size = reader.read(3)
            if len(channel_and_size) < 3:
                return None
            reader.read(struct.unpack("!H", channel_and_size[1:])[0])
            continue
        lines = [first + reader.readline(MAX_REQUEST_BYTES)]
        while lines[-1] not in (b"\r\n", b"\n", b""):
            if sum(map(len, lines)) > MAX_REQUEST_BYTES:
                raise ValueError(f"request over {MAX_REQUEST_BYTES} bytes")
            lines.append(reader.readline(MAX_REQUEST_BYTES))
        parts = lines[0].decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("RTSP/"):
            raise ValueError(f"not an RTSP request: {lines[0][:80]!r}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            if value:
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        if length > MAX_REQUEST_BYTES:
            raise ValueError(f"request body of {length} bytes")
        reader.read(length)
        return parts[0].upper(), parts[1], headers


def _names_stream(url: str, path: str) -> bool:
    """True when the request URL is the stream (``.../PATH``) or its track (``.../PATH/track1``)."""
    segments = [s for s in url.split("?", 1)[0].split("://", 1)[-1].split("/")[1:] if s]
    return segments in ([path], [path, "track1"])


def _interleaved(transport: str) -> tuple[int, int]:
    """The channel pair a SETUP asks for (``interleaved=0-1``), or 0-1."""
    for option in transport.split(";"):
        if option.strip().startswith("interleaved="):
            low, _, high = option.strip()[len("interleaved="):].partition("-")
            try:
                return int(low), int(high or int(low) + 1)
            except ValueError:
                break
    return 0, 1


@SINKS.register("rtsp", RtspSinkConfig)
def from_config(config: RtspSinkConfig, context: SinkContext) -> RtspSink:
    """An RTSP server for the fused stream."""
    return RtspSink(bind=config.bind, port=config.port, path=config.path, fps=context.fps, crf=config.crf,
                    keyframe_interval_s=config.keyframe_interval_s, user=config.user, password=config.password,
                    max_clients=config.max_clients, key=context.key, queue_size=config.queue_size,
                    stats=context.stats)
