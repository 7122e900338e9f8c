"""Video files and network streams decoded with PyAV."""

from __future__ import annotations

import logging
import socket
import time
import urllib.parse
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from streamfuse.config import VideoSourceConfig
from streamfuse.errors import SourceError, TransientSourceError
from streamfuse.imageio import relative_to_here
from streamfuse.registry import SOURCES
from streamfuse.sources.base import MAX_CONSECUTIVE_DECODE_ERRORS, Capture, Source, SourceContext, SourceOptions

log = logging.getLogger(__name__)

#: Seconds allowed to open a network stream and to wait for each packet before giving up (PyAV
#: raises after about twice the read timeout), when the source has no reconnect settings.
NETWORK_TIMEOUT_S = (10.0, 5.0)

#: File name extensions taken for videos (by ``streamfuse fuse`` and the archive jobs).
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".ts", ".m4v")

#: Errors that will not heal by retrying: a wrong scheme, credentials or option.
_CONFIGURATION_ERRORS = (av.error.ProtocolNotFoundError, av.error.HTTPUnauthorizedError, av.error.HTTPForbiddenError,
                         av.error.OptionNotFoundError, av.error.DemuxerNotFoundError, av.error.DecoderNotFoundError)


class StreamNotFoundError(TransientSourceError):
    """The server answered but has no stream at that path (RTSP/HTTP 404): a wrong path, or a camera
    that has not mounted its stream yet."""


def is_url(uri: str) -> bool:
    """True for network stream addresses (``rtsp://``, ``http://``, ...), False for local files."""
    return "://" in uri and not uri.startswith("file://")


def redact(uri: str) -> str:
    """The URI with any ``user:password@`` credentials replaced, safe to log."""
    if "://" in uri and "@" in uri.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri


def check_uri(uri: str) -> None:
    """Fail fast on a local file that is missing or a folder (URLs are only checked by connecting)."""
    if not is_url(uri):
        path = Path(uri.removeprefix("file://"))
        if not path.exists():
            raise SourceError(f"{path}: no such video file{relative_to_here(path)}")
        if path.is_dir():
            raise SourceError(f"{path}: is a folder; use a source of type 'images' for a folder of frames")


def open_container(uri: str, timeout: tuple[float, float] = NETWORK_TIMEOUT_S) -> av.container.InputContainer:
    """Open ``uri`` with PyAV, mapping failures to one clear :class:`SourceError`.

    Network streams get the bounded ``(open, read)`` timeouts and RTSP uses TCP transport. A
    network failure that may heal (refused, timed out, reset) raises :class:`TransientSourceError`,
    a 404 its subclass :class:`StreamNotFoundError`; a wrong scheme, credentials or a local file
    that cannot be decoded raise :class:`SourceError`.
    """
    shown = redact(uri)
    check_uri(uri)
    options = {}
    if uri.startswith("rtsp"):
        options = {"rtsp_transport": "tcp", "analyzeduration": "1000000", "probesize": "500000"}
    opening = time.monotonic()
    try:
        container = av.open(uri, options=options, timeout=timeout if is_url(uri) else None)
    except av.error.FFmpegError as exc:
        reason = exc.strerror or str(exc)
        limit = timeout[0] if isinstance(timeout, tuple) else timeout
        if is_url(uri) and time.monotonic() - opening >= 0.9 * limit:  # the timeout interrupted FFmpeg, whose
            reason = f"no answer within {limit:g} s"  # words for that are 'Immediate exit requested' or 'Invalid data'
        elif is_url(uri) and (unresolved := _unresolved_host(uri)):  # FFmpeg said only 'Input/output error'
            reason = unresolved

        message = f"{shown}: cannot open video ({reason})"
        if is_url(uri) and isinstance(exc, av.error.HTTPNotFoundError):
            raise StreamNotFoundError(message) from None
        if is_url(uri) and not isinstance(exc, _CONFIGURATION_ERRORS):
            raise TransientSourceError(message) from None
        raise SourceError(f"{message}; check that it is a playable video file or a reachable stream URL "
                          "(and its credentials)") from None
    if not container.streams.video:
        container.close()
        raise SourceError(f"{shown}: contains no video stream")
    return container


def _unresolved_host(url: str) -> str | None:
    """Why the host of ``url`` does not resolve (a typo, no DNS), or None when it does."""
    host = urllib.parse.urlsplit(url).hostname
    if not host:
        return None
    try:
        socket.getaddrinfo(host, None)
    except socket.gaierror as exc:
        return f"the host name {host} does not resolve: {exc.strerror}; check its spelling and the DNS"
    return None


def nominal_rate(stream: av.video.stream.VideoStream) -> Fraction | None:
    """A video stream's frame rate: the average the container states, else FFmpeg's guess."""
    return stream.average_rate or stream.guessed_rate


def frame_count(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                seconds: float | None = None) -> int | None:
    """Frames in a video file: the header's count, or duration x frame rate where the header has
    none (fragmented MP4, most MKV; ``seconds``, else :func:`duration_s`, which reads the file's end);
    None for streams of unknown length."""
    if stream.frames:
        return stream.frames
    rate, seconds = nominal_rate(stream), seconds if seconds is not None else duration_s(container, stream)
    return round(seconds * float(rate)) if rate and seconds else None


def stated_length_s(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    """Seconds from a video file's first frame to its end as its header states them (the stream's duration, else
    the container's, which Matroska counts from 0); None where the header has neither. Unlike
    :func:`duration_s`, never measured at the file's last packets: a file cut off still states its full length."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if len(container.streams) > 1:  # the container's length is its longest stream's: audio may go on after the video
        return None
    return container.duration / 1e6 - stream_origin(stream) if container.duration else None


def duration_s(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    """Seconds from a video file's first frame to the end of its last: the stream's own duration where the
    file states it, else measured at its last packets (the container's duration where they carry no time).

    Matroska states the time at which the file ends, counted from 0, not its length: a recording whose
    timestamps start at 60 s (a camera's clock, kept by a recorder) and that lasts 30 s says 90. The
    container is left at its start. None for streams of unknown length.
    """
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if not container.duration:
        return None
    end = _end_of_last_packet(container, stream)
    return container.duration / 1e6 if end is None else max(0.0, end - stream_origin(stream))


def _end_of_last_packet(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    """Where the stream's last packet ends, in seconds on its own clock (None: no packet carries a time)."""
    if not stream.time_base:
        return None
    end = None
    try:
        # Past any end the header could mean, back to the last keyframe, then read to the end of the file.
        target = stream_origin(stream) + container.duration / 1e6 + 1
        container.seek(int(target / stream.time_base), stream=stream, backward=True)
        for packet in container.demux(stream):
            if packet.pts is not None:
                end = max(end or 0.0, float((packet.pts + (packet.duration or 0)) * stream.time_base))
    except av.error.FFmpegError:
        end = None
    finally:
        container.seek(0)
    return end


def stream_origin(stream: av.video.stream.VideoStream) -> float:
    """The stream's start time in seconds (where its first frame is; times from it start at 0)."""
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def decode_from(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                start_s: float) -> Iterator[tuple[float | None, av.VideoFrame]]:
    """``(seconds from the first frame, frame)`` of a video file from the keyframe at or before ``start_s``
    (seeked to when ``start_s`` is after the start; the time is None for a frame without one)."""
    origin = stream_origin(stream)
    if start_s > 0:
        container.seek(int((start_s + origin) / stream.time_base), stream=stream, backward=True)
    for frame in container.decode(stream):
        yield (None if frame.time is None else frame.time - origin), frame


def to_array(frame: av.VideoFrame, aspect: Fraction | None = None) -> np.ndarray:
    """A decoded frame as an array, as players show it (:func:`as_displayed`; ``aspect``: the stream's
    :func:`pixel_aspect`): ``uint16`` gray for gray video deeper than 8 bits (``gray16le``, ``gray12le``,
    ...: radiometric or raw thermal, for the source's gain; the raw counts, not scaled to 16 bits), else
    ``uint8`` BGR."""
    components = frame.format.components
    deep_gray = len(components) == 1 and components[0].bits > 8
    if deep_gray and components[0].bits < 16:  # raw counts: a conversion to gray16le scales 12 bits up to 16
        plane = frame.planes[0]
        dtype = np.dtype("<u2" if frame.format.name.endswith("le") else ">u2")
        raw = np.frombuffer(plane, dtype).reshape(frame.height, plane.line_size // 2)[:, :frame.width]
        return as_displayed(raw.astype(np.uint16), frame.rotation, aspect)
    return as_displayed(frame.to_ndarray(format="gray16le" if deep_gray else "bgr24"), frame.rotation, aspect)


def pixel_aspect(stream: av.video.stream.VideoStream) -> Fraction | None:
    """The stream's sample (pixel) aspect ratio where its pixels are not square, else None."""
    aspect = stream.codec_context.sample_aspect_ratio
    return Fraction(aspect) if aspect and aspect != 1 else None


def quarter_turns(rotation: float) -> int:
    """A display ``rotation`` in degrees (counter-clockwise) as quarter turns, 0 to 3, to the nearest one."""
    return round(rotation / 90) % 4


def as_displayed(image: np.ndarray, rotation: float, aspect: Fraction | None) -> np.ndarray:
    """A decoded image as players show it: non-square pixels (``aspect``, width over height of a pixel)
    resampled to square ones along the width, then turned by the display ``rotation`` (degrees counter-clockwise,
    to the nearest quarter turn) that phones and some cameras record instead of turning the pixels."""
    if aspect is not None:
        height, width = image.shape[:2]
        display_width = max(1, round(width * aspect))
        image = cv2.resize(image, (display_width, height),
                           interpolation=cv2.INTER_AREA if display_width < width else cv2.INTER_LINEAR)
    turns = quarter_turns(rotation)
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


class VideoSource(Source):
    """Frames decoded from a video file or stream URL.

    Timestamps of files come from the stream's presentation timestamps, counted from the first frame
    (so two files recorded together pair up even if their containers start at different times).
    Frames of a live URL are stamped with the host's monotonic clock on arrival: two cameras' own
    clocks drift apart and restart with every reconnect, the host clock does neither.
    Colour video is delivered as BGR; use it for either camera (a gray infrared video decodes to
    three equal channels and the fuser takes its luminance). Gray video deeper than 8 bits
    (``gray16le`` from FFV1, PNG or raw Y16 streams) is delivered as 16 bits for the source's gain.

    Args:
        name: Source name (``ir``/``vis``).
        uri: A file path or a URL (``rtsp://``, ``http://``, ...).
        realtime: For files, release each frame when its timestamp is due (the recorded timing: pauses and a
            variable rate played as recorded).
        options: Drop policy (None: ``drop_oldest`` for a URL), queue size, statistics, supervision.
    """

    def __init__(self, name: str, uri: str, *, realtime: bool = False, options: SourceOptions | None = None) -> None:
        live = is_url(uri)
        super().__init__(name, options=options, live=live)
        self.uri = uri
        self.realtime = realtime
        self._container: av.container.InputContainer | None = None
        self._frames = None
        self._origin: float | None = None
        """Where the file's times start (its stream's start time): a frame's timestamp is its time from there."""
        self._rate: Fraction | None = None
        self._count: int | None = None
        self._count_stated = False
        """The file's header states its frame count (else :attr:`_count` is its length times its frame rate)."""
        self._stated_length_s: float | None = None
        self._last_timestamp: float | None = None
        self._aspect: Fraction | None = None
        self.decode_errors = 0
        """Frames of a file skipped because they could not be decoded (each one a warning)."""
        self._reached = False
        """The stream has been opened at least once (a 404 after that may heal; before, it is a wrong path)."""

    def validate(self) -> None:
        check_uri(self.uri)

    def open(self) -> None:
        timeout = NETWORK_TIMEOUT_S
        if self.reconnect is not None:  # a read gives up well after the watchdog has reported the stall
            timeout = (self.reconnect.open_timeout_s, 2 * self.reconnect.stall_timeout_s)
        self._origin = None
        try:
            self._container = open_container(self.uri, timeout)
        except StreamNotFoundError as exc:
            if self._reached:
                raise
            raise SourceError(f"sources.{self.name}: {exc}: the server answers but has no stream at that path; "
                              "check the path in the URI") from None
        self._reached = True
        videos = self._container.streams.video
        if len(videos) > 1 and not self.live:
            log.warning("sources.%s: %s has %d video streams; streamfuse reads the first (%dx%d) and ignores the "
                        "others. A recording that holds both cameras must be split first, e.g. `ffmpeg -i FILE -map "
                        "0:v:1 -c copy second.mkv`", self.name, redact(self.uri), len(videos),
                        videos[0].codec_context.width, videos[0].codec_context.height)
        stream = videos[0]
        self._aspect = pixel_aspect(stream)
        stream.thread_type = "AUTO"
        self._rate = nominal_rate(stream)
        self._count = None if self.live else frame_count(self._container, stream)
        self._count_stated = bool(stream.frames)
        self._stated_length_s = None if self.live else stated_length_s(self._container, stream)
        self._origin = None if stream.start_time is None else stream_origin(stream)
        if self.realtime and not self.live:
            self.pace_fps = float(self._rate) if self._rate else None
            self.paces_by_timestamp = True
        self._frames = self._decode(stream)

    def _decode(self, stream: av.video.stream.VideoStream) -> Iterator[av.VideoFrame]:
        """The stream's frames. In a file, a packet that fails to decode is skipped with a warning
        naming the frame; the demuxer failing, or many frames in a row failing, ends the source."""
        failures = 0
        for packet in self._container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:
                if self.live or failures + 1 >= MAX_CONSECUTIVE_DECODE_ERRORS:
                    raise
                failures += 1
                log.warning("sources.%s: %s: frame %d cannot be decoded (%s); skipped", self.name,
                            redact(self.uri), self.frames_read + self.decode_errors, exc.strerror or exc)
                self.decode_errors += 1
                self.stats.count(f"undecodable.{self.name}")
                continue
            failures = 0
            yield from frames

    def read(self) -> Capture | None:
        try:
            frame = next(self._frames)
        except StopIteration:
            return None
        except av.error.FFmpegError as exc:
            if self.live:
                raise TransientSourceError(f"{redact(self.uri)}: stream lost ({exc.strerror or exc})") from None
            raise SourceError(f"sources.{self.name}: {redact(self.uri)}: corrupt or broken video after "
                              f"{self.frames_read} frames ({exc.strerror or exc})") from None
        if self.live:
            timestamp = time.monotonic()
        elif frame.time is not None:
            if self.frames_read == 0 or self._origin is None:
                self._note_late_start(frame.time)
            timestamp = frame.time - self._origin
        else:
            timestamp = self.frames_read / float(self._rate or 25)
        self._last_timestamp = timestamp
        if self.frames_read == 0:
            self._log_display_form(frame.rotation)
        image = to_array(frame, self._aspect)
        self._check_size(image)
        return Capture(image, timestamp, {})

    def _check_size(self, image: np.ndarray) -> None:
        """A file whose frame size changes part-way is refused at that frame, by number (a stream
        is scaled back to its first size instead: :class:`~streamfuse.sources.base.Source`)."""
        size, first = (image.shape[1], image.shape[0]), self.first_size
        if first is not None and size != first and not self.live:
            raise SourceError(f"sources.{self.name}: {redact(self.uri)}: frame {self.frames_read} is {size[0]}x"
                              f"{size[1]} where the frames before it are {first[0]}x{first[1]}; re-encode the file "
                              f"at one size (e.g. ffmpeg -i IN -vf scale={first[0]}:{first[1]} OUT)")

    def _log_display_form(self, rotation: float) -> None:
        """Say once when the frames are resampled to square pixels or turned (:func:`as_displayed`)."""
        turns = quarter_turns(rotation)
        changes = ([f"with {self._aspect.numerator}:{self._aspect.denominator} pixels (resampled to square ones)"]
                   if self._aspect is not None else []) + ([f"rotated by {turns * 90} degrees (turned to match)"]
                                                          if turns else [])
        if changes:
            log.info("sources.%s: %s is to be shown %s", self.name, redact(self.uri), " and ".join(changes))

    def _note_late_start(self, first_time: float) -> None:
        """Times count from the stream's start, so that a file whose first frames cannot be decoded (an MPEG-TS
        cut mid-stream: the frames before its first keyframe) keeps its frames in step with the other camera's."""
        if self._origin is None or first_time < self._origin:  # no start time stated, or reordered frames before it
            self._origin = first_time
        late = first_time - self._origin
        if self._rate and late * float(self._rate) >= 1.5:
            log.info("sources.%s: %s starts %.2f s (about %d frames) before its first decodable frame: it was cut "
                     "mid-stream, before a keyframe; its frames keep their times from its start", self.name,
                     redact(self.uri), late, round(late * float(self._rate)))

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    @property
    def expected_frames(self) -> int | None:
        return self._count

    @property
    def frames_short(self) -> int:
        """As :attr:`Source.frames_short`; the undecodable frames skipped are not short. A file whose header
        states no frame count (most MKV, fragmented MP4) is short at its end only when its last frame comes
        more than a frame interval before the length the header states: a variable frame rate or a pause in
        the recording makes the count estimated from that length wrong, not the file short."""
        if self.live:
            return 0
        if self._count_stated or not self.reached_end:
            return max(0, (self._count or 0) - self.frames_read - self.decode_errors)
        if self._stated_length_s is None or self._last_timestamp is None or not self._rate:
            return 0
        short = round((self._stated_length_s - self._last_timestamp) * float(self._rate)) - 1
        return short if short >= 2 else 0  # one frame interval of slack: timestamps jitter

    @property
    def nominal_fps(self) -> float | None:
        return float(self._rate) if self._rate else None

    def describe(self) -> str:
        return f"video {redact(self.uri)}"


@SOURCES.register("video", VideoSourceConfig)
def from_config(name: str, config: VideoSourceConfig, context: SourceContext) -> VideoSource:
    """A file, or a live stream when the URI is a URL."""
    return VideoSource(name, config.uri, realtime=config.realtime,
                       options=context.options(config, live=is_url(config.uri)))
