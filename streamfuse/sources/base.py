"""The Source base class: a capture thread feeding a bounded queue with a drop policy."""

from __future__ import annotations

import abc
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamfuse.errors import SourceError
from streamfuse.frames import Frame
from streamfuse.queues import StageQueue
from streamfuse.stage import ThreadedStage
from streamfuse.stats import PipelineStats

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Capture:
    """What :meth:`Source.read` returns for one frame."""

    image: np.ndarray
    timestamp: float
    meta: dict[str, Any] = field(default_factory=dict)


class Source(ThreadedStage):
    """A camera, file or generator producing timestamped frames on its own thread.

    Subclasses implement :meth:`open`, :meth:`read` and :meth:`close`; this class runs them on a
    capture thread, numbers the frames, applies real-time pacing if asked, and puts them in
    :attr:`queue` according to the drop policy. :meth:`open` runs on the caller's thread inside
    :meth:`start`, so a missing file or device fails fast with a :class:`SourceError`.
    :meth:`join` waits for the capture thread; :attr:`running` tells whether it is alive.

    Args:
        name: ``"ir"`` or ``"vis"``; used in messages and statistics.
        drop_policy: ``wait`` or ``drop_oldest``; None uses :attr:`default_drop_policy`.
        queue_size: Capacity of the output queue; None: 8 for ``wait``, 2 for ``drop_oldest`` (a live
            source's queue is its latency: a deep one would hand out frames that are seconds old).
        pace_fps: If set, frames are released no faster than this rate (simulating a live camera
            or playing a file at its own speed).
        stats: Where capture latency and drops are recorded.
    """

    #: ``wait`` for finite inputs (never lose a frame), ``drop_oldest`` for live ones.
    default_drop_policy = "wait"

    def __init__(self, name: str, *, drop_policy: str | None = None, queue_size: int | None = None,
                 pace_fps: float | None = None, stats: PipelineStats | None = None) -> None:
        self.name = name
        self.drop_policy = drop_policy or self.default_drop_policy
        if queue_size is None:
            queue_size = 2 if self.drop_policy == "drop_oldest" else 8
        self.queue: StageQueue[Frame] = StageQueue(queue_size, self.drop_policy, name=f"source {name}")
        self.pace_fps = pace_fps
        self.stats = stats or PipelineStats()
        self.error: Exception | None = None
        self.frames_read = 0
        self.thread_name = f"capture-{name}"
        self._stop = threading.Event()

    # ----------------------------------------------------------------------------- for subclasses
    @abc.abstractmethod
    def open(self) -> None:
        """Open the underlying file/device; raise :class:`SourceError` with a clear message if it fails."""

    @abc.abstractmethod
    def read(self) -> Capture | None:
        """Return the next frame, or None at the end of the input."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the underlying file/device (called on the capture thread when it ends)."""

    @property
    def expected_frames(self) -> int | None:
        """Number of frames a finite input will produce, if known (for progress bars)."""
        return None

    @property
    def nominal_fps(self) -> float | None:
        """The input's nominal frame rate, if known."""
        return self.pace_fps

    def describe(self) -> str:
        """A short human-readable description for logs."""
        return type(self).__name__

    # --------------------------------------------------------------------------------- lifecycle
    def stop(self) -> None:
        """Ask the capture thread to end; frames already queued stay available to the consumer."""
        self._stop.set()
        self.queue.close()

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            while not self._stop.is_set():
                if self.pace_fps:
                    delay = started + self.frames_read / self.pace_fps - time.perf_counter()
                    if delay > 0 and self._stop.wait(delay):
                        break
                t0 = time.perf_counter()
                capture = self.read()
                if capture is None:
                    break
                now = time.perf_counter()
                self.stats.record_latency(f"capture_{self.name}", (now - t0) * 1000.0)
                frame = Frame(capture.image, capture.timestamp, self.frames_read, self.name, now, capture.meta)
                self.frames_read += 1
                while not self.queue.put(frame, timeout=0.1):
                    if self._stop.is_set() or self.queue.closed:
                        return
                self.stats.set_counter(f"drops.{self.name}", self.queue.dropped)
        except SourceError as exc:
            self.error = exc
        except Exception as exc:  # a library error while reading: report it as this source's failure
            log.debug("source %s failed", self.name, exc_info=True)
            self.error = SourceError(f"sources.{self.name}: {self.describe()} failed after "
                                     f"{self.frames_read} frames: {exc}")
        finally:
            try:
                self.close()
            finally:
                self.queue.close()
