"""Encode fused frames into a video file with PyAV."""

from __future__ import annotations

import collections
import contextlib
import errno
import hashlib
import logging
import os
import shutil
import struct
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from av.video.frame import PictureType

from streamfuse.config import OUTPUT_VIDEO_EXTENSIONS, VideoSinkConfig, codec_container_problem
from streamfuse.errors import SinkError
from streamfuse.frames import FusedFrame
from streamfuse.registry import SINKS
from streamfuse.sinks.base import Sink, SinkContext, overwrite_hint
from streamfuse.sources.video import VIDEO_EXTENSIONS
from streamfuse.stats import PipelineStats

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

log = logging.getLogger(__name__)

#: codec name in config -> (FFmpeg encoder, pixel format of the encoded stream)
CODECS = {
    "h264": ("libx264", "yuv420p"),
    "ffv1": ("ffv1", "bgr0"),
    "mpeg4": ("mpeg4", "yuv420p"),
}

#: Presentation timestamps are in milliseconds.
TIME_BASE = Fraction(1, 1000)
KEYFRAME_INTERVAL_S = 2.0
SUSPENDED_REMINDER_S = 60.0
"""While a recording is suspended for lack of disk space, the log says so again this often."""
FRAGMENTED_MP4 = {"movflags": "frag_keyframe+empty_moov+delay_moov+default_base_moof", "flush_packets": "1"}
"""Muxer options of a fragmented MP4: a fragment per keyframe interval; the header waits for the first
fragment so that it can carry the edit list that makes the first frame play at time 0."""
#: Extensions of the MP4 family (ISO base media files), written fragmented by default.
MP4_FAMILY = (".mp4", ".mov", ".m4v")
STREAMED_CONTAINERS = {
    ".mkv": {"flush_packets": "1", "cluster_time_limit": str(int(KEYFRAME_INTERVAL_S * 1000))},
    ".ts": {"flush_packets": "1"},
}
"""Muxer options that put MKV and MPEG-TS recordings into the file as they go (a Matroska cluster per 2 s,
TS packets at once): the muxer's 256 KiB write buffer left them empty for 15-25 s at 160x128, and a kill
then lost everything."""


def container_options(path: Path, *, fragmented: bool) -> dict[str, str]:
    """The muxer options for a recording at ``path`` (see :data:`FRAGMENTED_MP4`, :data:`STREAMED_CONTAINERS`)."""
    suffix = path.suffix.lower()
    if suffix in MP4_FAMILY:
        return FRAGMENTED_MP4 if fragmented else {}
    return STREAMED_CONTAINERS.get(suffix, {})


MUXER_OVERHEAD_BYTES = 64 * 1024
"""Allowance for what the muxer writes besides the encoded frames (header, fragment boxes, trailer)."""
DISK_FULL_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""Write errors that mean "no room left": the device is full or the user's quota used up (recording
suspends until there is room), or the file reached the largest size allowed (a FAT32 drive's 4 GiB,
``ulimit -f``: recording goes on in a new file)."""


def encoder_input(image: np.ndarray, *, even: bool) -> np.ndarray:
    """``image`` as a video encoder takes it: BGR, and with ``even`` (4:2:0 codecs) an odd last row or
    column repeated to make both sides even."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if even and (image.shape[0] % 2 or image.shape[1] % 2):
        image = cv2.copyMakeBorder(image, 0, image.shape[0] % 2, 0, image.shape[1] % 2, cv2.BORDER_REPLICATE)
    return image


class DiskFullError(SinkError):
    """A recording ran out of disk space; its file was cut back to the last complete fragment.

    Attributes:
        frames_lost: Frames given to the writer that are not in the file.
        file_limit: The file reached the largest size allowed, not the disk its end (``EFBIG``).
    """

    def __init__(self, message: str, frames_lost: int, *, file_limit: bool = False) -> None:
        super().__init__(message)
        self.frames_lost = frames_lost
        self.file_limit = file_limit


def _path_key(key: str) -> str:
    """How to name the file's setting: a sink's ``KEY.path``, or a command-line flag (``--save``) as it is."""
    return key if key.startswith("-") else f"{key}.path"


def prepare_output_file(path: Path, overwrite: bool, key: str) -> None:
    """Check that ``path`` may be written: a video file name, parent folder created, existing file only with
    ``overwrite``."""
    if path.is_dir():
        raise SinkError(f"{key}: {path} is a folder; give a file name such as {path / 'fused.mp4'}")
    if path.suffix.lower() not in OUTPUT_VIDEO_EXTENSIONS:  # av opens .png (an image muxer), fails at frame 1
        why = "a format streamfuse reads but does not write" if path.suffix.lower() in VIDEO_EXTENSIONS else \
            "not a video file name"
        raise SinkError(f"{_path_key(key)}: cannot create video {path} ({why}); use one of "
                        f"{', '.join(OUTPUT_VIDEO_EXTENSIONS)}")
    if path.exists() and not overwrite:
        raise SinkError(f"{key}: {path} already exists; choose another path or {overwrite_hint(key)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SinkError(f"{key}: cannot create folder {path.parent} ({exc.strerror})") from None
    existed = path.exists()
    try:  # the muxer opens the file only at the first frame: find out now
        path.open("ab").close()
    except OSError as exc:
        raise SinkError(f"{key}: cannot write {path} ({exc.strerror}); choose a place you may write to") from None
    if not existed:
        path.unlink()


class OutputClaim:
    """An exclusive claim on a file path while it is written: a lock file beside it (``.NAME.lock``, holding the
    writer's process id; removed when released). A second run writing the same path (an overlapping cron job, a
    supervisor's restart while the old run still finalises) is refused, instead of replacing the file under the
    first and both losing the recording. The lock (``flock``) ends with the process, however it ends."""

    def __init__(self, path: Path, key: str) -> None:
        self.file = self.lock_file(path)
        self._fd: int | None = None
        if fcntl is None:  # not POSIX: no claim
            return
        try:
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SinkError(f"{key}: cannot write in {path.parent} ({exc.strerror}: its lock file {self.file.name}); "
                            "choose a place you may write to") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise SinkError(f"{key}: {path} is being written by another process"
                            f"{f' (pid {holder})' if holder else ''}; choose another path, or stop that run first"
                            ) from None
        except OSError as exc:  # a file system without locks (some network shares): record unclaimed
            log.debug("%s: %s cannot be locked (%s); recording without the claim", key, self.file, exc.strerror)
            os.close(fd)
            self.file.unlink(missing_ok=True)
            return
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    @staticmethod
    def lock_file(path: Path) -> Path:
        """The lock file of ``path``: ``.NAME.lock`` beside it (a hashed name where that would be too long)."""
        name = f".{path.name}.lock"
        if len(name.encode()) > 255:
            name = f".{hashlib.sha1(path.name.encode()).hexdigest()[:16]}.lock"
        return path.with_name(name)

    @classmethod
    def held_elsewhere(cls, path: Path) -> bool:
        """Whether another open claim (another run's, or another sink's) holds ``path``."""
        if fcntl is None:
            return False
        try:
            fd = os.open(cls.lock_file(path), os.O_RDONLY)
        except OSError:  # no lock file: nobody records there
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    def release(self) -> None:
        """Give the path up (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            self.file.unlink()
        os.close(fd)  # ends the lock


class VideoWriter:
    """Encodes images into a video file; the codec stream is created from the first image's size.

    Presentation timestamps come from the images' capture timestamps (relative to the first image,
    in milliseconds), so the file plays at real speed even when frames were dropped; a timestamp
    that does not increase is nudged forward by 1 ms. H.264 needs even dimensions: an odd last row
    or column is repeated. :meth:`close` flushes the encoder and finalises the file; as a context
    manager, the writer closes on leaving the block, whatever the exit.

    MP4, MOV and M4V files are fragmented by default (a fragment per keyframe interval of 2 s, index in
    each fragment): everything up to the last fragment plays even if the process is killed, and the
    muxer does not hold a growing sample index in memory (~3-5 MB per hour of 15 fps video for a
    classic MP4, written only at the end). MKV files get a cluster per 2 s and MPEG-TS packets as they
    come, both written out at once, so a kill loses as little of them.

    When the disk fills up, :meth:`write` or :meth:`close` closes the file, cuts it back to the end
    of its last complete fragment (a fragmented MP4 then plays to that point, with no broken frame at
    the end) and raises :class:`DiskFullError`.

    Args:
        path: Output file (the container is chosen from its extension: .mp4, .mkv, .avi, ...).
        codec: ``h264`` (yuv420p), ``ffv1`` (lossless) or ``mpeg4``.
        crf: H.264 constant rate factor.
        preset: x264 preset.
        fps: Nominal frame rate written in the stream header.
        overwrite: Replace an existing file.
        fragmented: Fragment MP4/MOV/M4V files (ignored for other containers); False writes a classic
            MP4 whose index is written on close.
        key: Config key path used in error messages.
        make_room: Called before each write with the bytes that may go out with it (the fragment
            waiting in the muxer, this frame's and, at close, the trailer's), so that the caller can
            free that much disk space first (a ring of segments deletes its oldest).
    """

    def __init__(self, path: str | Path, *, codec: str = "h264", crf: int = 23, preset: str = "veryfast",
                 fps: float = 30.0, overwrite: bool = False, fragmented: bool = True,
                 key: str = "sinks.video", make_room: Callable[[int], None] | None = None) -> None:
        if codec not in CODECS:
            raise SinkError(f"{key}.codec: unknown codec {codec!r} (available: {', '.join(CODECS)})")
        problem = codec_container_problem(codec, path)
        if problem:
            raise SinkError(f"{key}.codec: {path}: {problem}")
        self.path = Path(path)
        self.codec = codec
        self.crf = crf
        self.preset = preset
        self.fps = fps
        self.key = key
        self.frames_written = 0
        self.bytes_complete = 0
        """File size after the last successful write: the end of the last complete fragment."""
        self.frames_complete = 0
        """Frames in the file up to :attr:`bytes_complete`."""
        self.bytes_pending = 0
        """Encoded bytes muxed since then, not yet in the file (a fragment waiting for its end)."""
        self._make_room = make_room
        # An existing file (or link) is kept as it is unless a frame comes: a run with none loses nothing.
        self._replaces = self.path.exists() or self.path.is_symlink()
        prepare_output_file(self.path, overwrite, key)
        self._claim = OutputClaim(self.path, key)
        try:
            self._fragmented = fragmented and self.path.suffix.lower() in MP4_FAMILY
            self._container = av.open(str(self.path), mode="w",
                                      options=container_options(self.path, fragmented=self._fragmented))
        except (av.error.FFmpegError, ValueError) as exc:
            self._claim.release()
            raise SinkError(f"{_path_key(key)}: cannot create video {self.path} ({exc}); "
                            "use a known extension such as .mp4 or .mkv") from None
        self._stream = None
        self._first_timestamp: float | None = None
        self._last_pts = -1
        self._keyframe_pts: int | None = None
        """The pts (ms) of the last frame made a keyframe by time (:meth:`write`)."""
        self._size: tuple[int, int] | None = None
        self._first_size: tuple[int, int] | None = None  # of the first frame as given (before even-padding)

    def _open_stream(self, width: int, height: int) -> None:
        encoder, pix_fmt = CODECS[self.codec]
        stream = self._container.add_stream(encoder, rate=Fraction(self.fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.time_base = TIME_BASE
        # The encoder counts in milliseconds too: at 1/fps, a live camera's jittery timestamps would
        # round two frames onto one tick and the muxer would refuse the non-increasing timestamps.
        stream.codec_context.time_base = TIME_BASE
        stream.thread_type = "AUTO"
        if self.codec == "h264":
            # Every frame in comes out at once, so a fragment is complete when its interval ends (x264
            # held 20-25 frames): zerolatency drops lookahead and B-frames, and slice threads replace
            # frame threads (FFmpeg's libx264 wrapper turns slice threads off unless told "SLICE").
            stream.options = {"crf": str(self.crf), "preset": self.preset, "tune": "zerolatency", "forced-idr": "1"}
            stream.thread_type = "SLICE"
            # A keyframe every 2 s: seeking stays quick, and a fragmented MP4 is flushed that often.
            stream.codec_context.gop_size = max(1, round(KEYFRAME_INTERVAL_S * self.fps))
        self._stream = stream
        self._size = (width, height)

    def write(self, image: np.ndarray, timestamp: float) -> None:
        """Encode one ``uint8`` BGR or gray image captured at ``timestamp`` seconds."""
        if self._container is None:
            raise SinkError(f"{self.path}: the video is already closed")
        given = image.shape[1::-1]  # the size the error names: the encoder's is padded to even sides
        image = encoder_input(image, even=self.codec != "ffv1")
        height, width = image.shape[:2]
        first = self._stream is None
        if first:
            self._open_stream(width, height)
            self._first_size = given
        elif self._size != (width, height):
            raise SinkError(f"{self.path}: frame size changed from {self._first_size[0]}x{self._first_size[1]} to "
                            f"{given[0]}x{given[1]}; a video file needs one size (it keeps the {self.frames_written} "
                            "frame(s) before)")
        if self._first_timestamp is None:
            self._first_timestamp = timestamp
        pts = max(int(round((timestamp - self._first_timestamp) * 1000)), self._last_pts + 1)
        self._last_pts = pts
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        video_frame.pts = pts
        video_frame.time_base = TIME_BASE
        # A keyframe every KEYFRAME_INTERVAL_S by the frames' own times, not only every so many frames: a live
        # camera's rate is not known when the sink opens (30 fps is assumed), and at 15 fps the encoder's count
        # made one every 4 s, so a killed recorder lost up to 4 s of a fragmented MP4, not 2.
        if self._keyframe_pts is None or pts - self._keyframe_pts >= KEYFRAME_INTERVAL_S * 1000:
            video_frame.pict_type = PictureType.I
            self._keyframe_pts = pts
        try:
            packets = self._stream.encode(video_frame)
        except (av.error.FFmpegError, ValueError) as exc:
            if first:  # nothing to flush at close: the file (or an earlier one) stays as it is
                self._stream = None
            raise SinkError(f"{self.key}: the {self.codec} encoder refused its settings or frame ({exc}); an "
                            f"earlier {self.path.name} is left as it was" if first and self._replaces else
                            f"{self.key}: the {self.codec} encoder failed ({exc})") from None
        if first and self._replaces:  # encoding works: a new file in its place (written through, a link's
            self.path.unlink()        # target would change); the muxer creates it at the first packet
        self.frames_written += 1
        incoming = sum(packet.size for packet in packets)
        if self._make_room is not None:
            self._make_room(self.bytes_pending + incoming + MUXER_OVERHEAD_BYTES)
        try:
            self._container.mux(packets)
        except OSError as exc:
            if exc.errno in DISK_FULL_ERRORS:
                raise self._cut_after_disk_full(self._container, exc) from exc
            raise
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:  # the muxer writes on into the removed file, which nobody can read
            raise SinkError(f"{self.key}: {self.path} was deleted or moved while being recorded (its "
                            f"{self.frames_written} frames went with it); record into a folder nothing cleans "
                            "up") from None
        if size != self.bytes_complete:  # a fragment went out: everything before this frame is in the file
            self.bytes_complete, self.frames_complete = size, self.frames_written - 1
            self.bytes_pending = incoming
        else:
            self.bytes_pending += incoming

    def close(self) -> None:
        """Flush the encoder and close the file (a file that got no frame is removed). Idempotent."""
        if self._container is None:
            return
        container, self._container = self._container, None
        try:
            self._finalise(container)
        finally:
            self._claim.release()

    def _finalise(self, container: av.container.OutputContainer) -> None:
        """Flush the encoder into ``container``, close it, and check that the end of the file reached the disk."""
        try:
            try:
                if self._make_room is not None and self._stream is not None:
                    self._make_room(self.bytes_pending + MUXER_OVERHEAD_BYTES)  # the last fragment and the trailer
                if self._stream is not None:
                    container.mux(self._stream.encode(None))
            finally:
                container.close()
        except OSError as exc:
            if exc.errno in DISK_FULL_ERRORS:
                raise self._cut_after_disk_full(container, exc) from exc
            raise
        if self._stream is None:  # no frame: the muxer never opened the file; an earlier one stays as it was
            if not self._replaces:
                self.path.unlink(missing_ok=True)
        elif self._fragmented and self.path.exists() and not self._last_fragment_written():
            # FFmpeg's trailer does not report a failed write: a full disk shows only in the file.
            raise self._cut_after_disk_full(container, OSError(errno.ENOSPC, "the last fragment did not reach "
                                                               "the disk (no space left on device?)"))

    def _last_fragment_written(self) -> bool:
        """True if the file goes on from :attr:`bytes_complete` in whole boxes, with the frames still
        missing then (a fragment) among them."""
        with self.path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            offset, kinds = self.bytes_complete, set()
            while offset + 8 <= size:
                file.seek(offset)
                box_size, kind = struct.unpack(">I4s", file.read(8))
                if box_size == 1:  # a 64-bit size follows
                    box_size, = struct.unpack(">Q", file.read(8))
                if box_size < 8 or offset + box_size > size:
                    return False
                kinds.add(kind)
                offset += box_size
        return offset == size and (b"mdat" in kinds or self.frames_complete == self.frames_written)

    def _cut_after_disk_full(self, container: av.container.OutputContainer, exc: OSError) -> DiskFullError:
        """Close ``container`` without what did not fit and cut the file back to its last complete
        fragment (remove it if it has none); returns the error to raise."""
        self._container = None
        with contextlib.suppress(OSError):  # the rest of the fragment and the trailer do not fit either
            container.close()
        if self.bytes_complete:
            os.truncate(self.path, self.bytes_complete)
        else:
            self.path.unlink(missing_ok=True)
        return DiskFullError(f"{self.path}: {exc.strerror}; the file ends at its last complete fragment "
                             f"({self.frames_complete} frames, {self.bytes_complete / 1e6:.1f} MB)",
                             self.frames_written - self.frames_complete, file_limit=exc.errno == errno.EFBIG)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class VideoSink(Sink):
    """Pipeline sink writing fused frames with a :class:`VideoWriter` (see there for timing rules).

    A full disk does not stop the pipeline: the file is closed at its last complete fragment, the
    recording is *suspended* (logged as an error, ``state`` in :meth:`health`) while the other
    sinks go on, and it resumes in a new file (the next segment name) at the first frame that finds
    ``resume_free_mb`` free again.

    With ``max_segments`` or ``max_mb`` the segments form a ring: whenever a segment starts, the
    oldest finished ones of this run are deleted until the rest fit and ``resume_free_mb`` are free;
    before each write, more until what the write may put on the disk fits (a segment larger than
    the free space loses nothing); and a full disk all the same (another program writing) deletes the
    oldest at once, and more until ``resume_free_mb`` are free, so that recording goes on at the next frame.

    Args:
        path: Output video file (a name pattern when segmenting: see :func:`segment_path`).
        codec, crf, preset, fps, overwrite, fragmented, key: As for :class:`VideoWriter`.
        segment_minutes: Start a new file after this many minutes of video (by capture
            timestamps); None writes one file. A finished segment is closed (complete, playable)
            before the next one opens.
        resume_free_mb: Free space (MB) the folder needs before a suspended recording resumes.
        max_segments: Keep at most this many of this run's segments (None: no limit).
        max_mb: Keep this run's finished segments within this many MB (None: no limit); the one
            being written comes on top.
        queue_size: Fused frames buffered for this sink (the fusion thread waits when it is full).
        stats: Where write latency is recorded.
    """

    stage = "encode"

    def __init__(self, path: str | Path, *, codec: str = "h264", crf: int = 23, preset: str = "veryfast",
                 fps: float = 30.0, overwrite: bool = False, fragmented: bool = True,
                 segment_minutes: float | None = None, resume_free_mb: float = 100.0, max_segments: int | None = None,
                 max_mb: float | None = None, key: str = "sinks.video", queue_size: int = 16,
                 stats: PipelineStats | None = None) -> None:
        super().__init__(queue_size=queue_size, stats=stats)
        self.path = Path(path)
        self.segment_s = segment_minutes * 60.0 if segment_minutes else None
        self.resume_free_bytes = resume_free_mb * 1e6
        self.max_segments = max_segments
        self.max_bytes = max_mb * 1e6 if max_mb else None
        self._writer_options = {"codec": codec, "crf": crf, "preset": preset, "fps": fps,
                                "overwrite": overwrite, "fragmented": fragmented, "key": key}
        self.writer: VideoWriter | None = None
        self.segments: collections.deque[Path] = collections.deque()
        """This run's files still on disk, oldest first (one unless segmenting or resumed after a full disk)."""
        self._written: set[Path] = set()
        self.segments_started = 0
        self.segments_deleted = 0
        self._current = self.path
        self._segment_start: float | None = None
        self.state = "recording"
        """``recording``, ``suspended`` (disk full) or ``closed``."""
        self.suspensions = 0
        self.frames_lost = 0
        """Frames not recorded because the disk was full (cut from the last fragment, or arriving while suspended)."""
        self.last_error: str | None = None
        self._suspended_at = 0.0
        self._remind_at = 0.0

    def describe(self) -> str:
        return f"video sink {self.path}"

    def open(self) -> None:
        self._open_segment()
        if self.ring and self._free_bytes() < self.resume_free_bytes:
            log.warning("%s: the disk has %.0f MB free, less than resume_free_mb (%g): the ring keeps only the newest "
                        "segment; lower resume_free_mb for a small disk", self.describe(), self._free_bytes() / 1e6,
                        self.resume_free_bytes / 1e6)

    @property
    def ring(self) -> bool:
        """True when old segments are deleted to keep within ``max_segments`` / ``max_mb``."""
        return self.max_segments is not None or self.max_bytes is not None

    def _open_segment(self) -> None:
        index = self.segments_started
        self._current = self._free_name(segment_path(self.path, index) if self.segment_s or index else self.path,
                                        mid_run=index > 0)
        self.writer = VideoWriter(self._current, **self._writer_options,
                                  make_room=self._make_room if self.ring else None)
        self.segments_started += 1
        self.segments.append(self._current)
        self._segment_start = None
        while len(self.segments) > 1 and (reason := self._ring_too_big()):
            self._delete_oldest(reason)

    def _free_name(self, path: Path, mid_run: bool) -> Path:
        """``path``, or ``path`` with ``-1``, ``-2``, ... before its suffix when this run already wrote a file of
        that name (a clock-named pattern repeats when video comes in faster than real time, from files) or,
        ``mid_run`` (a new segment) without ``overwrite``, when a file of that name exists: another recorder's,
        or a clock stepped back. That stopped the whole pipeline at a segment change; the first file of a run
        is still refused at start."""
        def taken(candidate: Path) -> bool:
            exists = candidate.exists() or candidate.is_symlink()
            return candidate in self._written or (mid_run and (exists and not self._writer_options["overwrite"]
                                                               or OutputClaim.held_elsewhere(candidate)))

        candidate, number = path, 0
        while taken(candidate):
            number += 1
            candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
        if candidate != path and path not in self._written:
            why = ("is being written by another process" if OutputClaim.held_elsewhere(path) else
                   "already exists (not written by this run)")
            log.warning("%s: %s %s; the segment goes to %s instead", self.describe(), path, why, candidate.name)
        self._written.add(candidate)
        return candidate

    def _ring_too_big(self) -> str | None:
        """Why the ring must lose its oldest segment (None: it need not)."""
        if self.ring and self._free_bytes() < self.resume_free_bytes:
            return (f"less than resume_free_mb {self.resume_free_bytes / 1e6:g} MB free on the disk; lower it for a "
                    "small disk")
        if self.max_segments is not None and len(self.segments) > self.max_segments:
            return f"ring full: max_segments {self.max_segments}"
        if self.max_bytes is not None and sum(_file_size(path) for path in self.segments) > self.max_bytes:
            return f"ring full: max_mb {self.max_bytes / 1e6:g}"
        return None

    def _make_room(self, needed_bytes: int) -> None:
        """Delete the oldest finished segments until ``needed_bytes`` (what the writer may write next) fit:
        a ring on a full disk then loses no frame."""
        while len(self.segments) > 1 and self._free_bytes() < needed_bytes:
            self._delete_oldest("room for the next fragment")

    def _delete_oldest(self, reason: str) -> None:
        path = self.segments.popleft()
        path.unlink(missing_ok=True)
        self.segments_deleted += 1
        log.info("%s: deleted the oldest segment %s (%s)", self.describe(), path.name, reason)

    def write(self, frame: FusedFrame) -> None:
        try:
            if self.state == "recording" and self._segment_due(frame.timestamp):
                self.writer.close()
                log.info("%s: segment %s finished", self.describe(), self._current.name)
                self._open_segment()
        except DiskFullError as exc:  # the finished segment's last fragment did not fit
            self._suspend(exc)
        if self.state == "suspended" and not self._resumed():
            self.frames_lost += 1
            return
        if self._segment_start is None:
            self._segment_start = frame.timestamp
        try:
            self.writer.write(frame.image, frame.timestamp)
        except DiskFullError as exc:
            self._suspend(exc)

    def _segment_due(self, timestamp: float) -> bool:
        return (self.segment_s is not None and self._segment_start is not None
                and timestamp - self._segment_start >= self.segment_s)

    def _suspend(self, exc: DiskFullError) -> None:
        self.writer = None
        if exc.file_limit:  # the disk has room: no need to wait
            self.frames_lost += exc.frames_lost
            self.last_error = str(exc)
            self._open_segment()
            log.warning("%s: the file reached the largest size allowed here: %s; %d frames lost; recording goes on "
                        "in %s", self.describe(), exc, exc.frames_lost, self._current)
            return
        if not self._current.exists():  # cut back to nothing: not a segment of the ring
            self.segments.pop()
        if self.ring and self.segments and self.segments[0] != self._current:
            # The disk is full: make room there and then, even when what the cut freed is more than
            # ``resume_free_mb`` (smaller than a segment, that would resume only to fill up again).
            self._delete_oldest("disk full")
        self.state = "suspended"
        self.suspensions += 1
        self.frames_lost += exc.frames_lost
        self.last_error = str(exc)
        self._suspended_at = self._remind_at = time.monotonic()
        log.error("%s: DISK FULL, recording suspended (the other outputs go on): %s; %d frames lost; "
                  "recording resumes in a new file when %g MB are free", self.describe(), exc,
                  exc.frames_lost, self.resume_free_bytes / 1e6)

    def _resumed(self) -> bool:
        """Open the next file if the disk has room again, a ring deleting its oldest segments to make
        room (True); else remind the log once a minute."""
        now = time.monotonic()
        while self.ring and self.segments and self._free_bytes() < self.resume_free_bytes:
            self._delete_oldest("disk full")
        if self._free_bytes() < self.resume_free_bytes:
            if now - self._remind_at >= SUSPENDED_REMINDER_S:
                self._remind_at = now
                log.error("%s: recording still suspended (disk full) for %.0f s, %d frames not recorded",
                          self.describe(), now - self._suspended_at, self.frames_lost)
            return False
        self._open_segment()
        self.state = "recording"
        log.warning("%s: disk space is back; recording resumes in %s after %.1f s suspended (%d frames lost so far)",
                    self.describe(), self.writer.path, now - self._suspended_at, self.frames_lost)
        return True

    def _free_bytes(self) -> int:
        return shutil.disk_usage(self.path.parent).free

    def health(self) -> dict:
        return {"state": self.state, "file": str(self._current), "segments": self.segments_started,
                "segments_deleted": self.segments_deleted,
                "suspended_s": round(time.monotonic() - self._suspended_at, 3) if self.state == "suspended" else 0.0,
                "suspensions": self.suspensions, "frames_lost": self.frames_lost, "last_error": self.last_error}

    def close(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except DiskFullError as exc:
                self.frames_lost += exc.frames_lost
                log.error("%s: no room for the end of the file: %s; %d frames lost", self.describe(), exc,
                          exc.frames_lost)
        self.state = "closed"


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # a file that got no frame, or one removed by hand
        return 0


def segment_path(pattern: Path, index: int) -> Path:
    """The file name of segment ``index``: ``{segment}`` and strftime codes filled in (local time now);
    a pattern with neither gets ``-00000``-style numbers before its suffix."""
    name = pattern.name
    if "{segment" not in name and "%" not in name:
        name = f"{pattern.stem}-{{segment:05d}}{pattern.suffix}"
    return pattern.with_name(time.strftime(name).format(segment=index))


@SINKS.register("video", VideoSinkConfig)
def from_config(config: VideoSinkConfig, context: SinkContext) -> VideoSink:
    """An H.264 (or other codec) file, optionally in segments."""
    return VideoSink(config.path, codec=config.codec, crf=config.crf, preset=config.preset, fps=context.fps,
                     overwrite=config.overwrite, fragmented=config.fragmented, segment_minutes=config.segment_minutes,
                     resume_free_mb=config.resume_free_mb, max_segments=config.max_segments, max_mb=config.max_mb,
                     key=context.key, queue_size=config.queue_size,
                     stats=context.stats)
