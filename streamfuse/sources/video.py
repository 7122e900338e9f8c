"""Video files and network streams decoded with PyAV."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av

from streamfuse.errors import SourceError
from streamfuse.sources.base import Capture, Source

log = logging.getLogger(__name__)

#: Seconds allowed to open a network stream and to wait for each packet before giving up.
NETWORK_TIMEOUT_S = (10.0, 5.0)


def is_url(uri: str) -> bool:
    """True for network stream addresses (``rtsp://``, ``http://``, ...), False for local files."""
    return "://" in uri and not uri.startswith("file://")


def redact(uri: str) -> str:
    """The URI with any ``user:password@`` credentials replaced, safe to log."""
    if "://" in uri and "@" in uri.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri


def open_container(uri: str) -> av.container.InputContainer:
    """Open ``uri`` with PyAV, mapping failures to one clear :class:`SourceError`.

    Network streams get bounded open/read timeouts and RTSP uses TCP transport.
    """
    shown = redact(uri)
    if not is_url(uri):
        path = Path(uri.removeprefix("file://"))
        if not path.exists():
            raise SourceError(f"{path}: no such video file")
        if path.is_dir():
            raise SourceError(f"{path}: is a folder; use a source of type 'images' for a folder of frames")
    options = {"rtsp_transport": "tcp"} if uri.startswith("rtsp") else {}
    try:
        container = av.open(uri, options=options, timeout=NETWORK_TIMEOUT_S if is_url(uri) else None)
    except av.error.FFmpegError as exc:
        raise SourceError(f"{shown}: cannot open video ({exc.strerror or exc}); "
                          "check that it is a playable video file or a reachable stream URL") from None
    if not container.streams.video:
        container.close()
        raise SourceError(f"{shown}: contains no video stream")
    return container


class VideoSource(Source):
    """Frames decoded from a video file or stream URL.

    Timestamps come from the stream's presentation timestamps, counted from the first frame (so
    two files recorded together pair up even if their containers start at different times).
    Colour video is delivered as BGR; use it for either camera (a gray infrared video decodes to
    three equal channels and the fuser takes its luminance).

    Args:
        name: Source name (``ir``/``vis``).
        uri: A file path or a URL (``rtsp://``, ``http://``, ...).
        realtime: For files, release frames at the stream's own frame rate.
        **kwargs: Passed to :class:`Source` (drop policy, queue size, stats).
    """

    def __init__(self, name: str, uri: str, *, realtime: bool = False, **kwargs) -> None:
        if kwargs.get("drop_policy") is None and is_url(uri):
            kwargs["drop_policy"] = "drop_oldest"
        super().__init__(name, **kwargs)
        self.uri = uri
        self.realtime = realtime
        self._container: av.container.InputContainer | None = None
        self._frames = None
        self._first_time: float | None = None
        self._rate: Fraction | None = None
        self._count = 0

    def open(self) -> None:
        self._container = open_container(self.uri)
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        self._rate = stream.average_rate or stream.guessed_rate
        self._count = stream.frames or 0
        if self.realtime and not is_url(self.uri) and self._rate:
            self.pace_fps = float(self._rate)
        self._frames = self._container.decode(stream)

    def read(self) -> Capture | None:
        try:
            frame = next(self._frames)
        except StopIteration:
            return None
        except av.error.FFmpegError as exc:
            raise SourceError(f"sources.{self.name}: {redact(self.uri)}: corrupt or broken video after "
                              f"{self.frames_read} frames ({exc.strerror or exc})") from None
        if frame.time is not None:
            if self._first_time is None:
                self._first_time = frame.time
            timestamp = frame.time - self._first_time
        else:
            timestamp = self.frames_read / float(self._rate or 25)
        return Capture(frame.to_ndarray(format="bgr24"), timestamp, {})

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    @property
    def expected_frames(self) -> int | None:
        return self._count or None

    @property
    def nominal_fps(self) -> float | None:
        return float(self._rate) if self._rate else None

    def describe(self) -> str:
        return f"video {redact(self.uri)}"
