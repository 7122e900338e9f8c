"""The Sink base class: consumes fused frames on its own thread."""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from streamfuse.errors import SinkError
from streamfuse.frames import FusedFrame
from streamfuse.queues import Closed, StageQueue
from streamfuse.stage import ThreadedStage
from streamfuse.stats import END_TO_END, PipelineStats

log = logging.getLogger(__name__)


def overwrite_hint(key: str) -> str:
    """How to let the output named by ``key`` (a config key, or a command-line flag such as ``--save``) replace
    files that exist."""
    if key.startswith("-"):
        return "pass -y/--overwrite to replace it"
    return (f"allow overwriting (the sink's overwrite: true, on the command line --set {key}.overwrite=true; "
            "fuse -y/--overwrite)")


@dataclass(frozen=True)
class SinkContext:
    """What :func:`~streamfuse.sinks.build_sink` hands every sink factory besides the sink's config.

    Attributes:
        key: The sink's config key path (``sinks.0``), for error messages.
        fps: Nominal frame rate of the stream (written in video headers).
        stats: Where the sink records latency.
    """

    key: str
    fps: float = 30.0
    stats: PipelineStats | None = None


class Sink(ThreadedStage):
    """An output of the pipeline (video file, image folder, ZeroMQ socket).

    Subclasses implement :meth:`open`, :meth:`write` and :meth:`close`. :meth:`open` runs on the
    caller's thread inside :meth:`start` (so an unwritable path or a busy port fails before any
    frame is processed); :meth:`write` runs on the sink's thread; :meth:`close` always runs when the
    thread ends, whatever the reason, so files are finalised on every exit path.

    The class attribute ``stage`` names the stage its write latency is reported under (``encode``,
    ``publish``, ``write``).

    Args:
        queue_size: Fused frames buffered for this sink.
        policy: When the buffer is full, ``wait`` (the fuser waits: nothing is lost) or ``drop_oldest``
            (a live view: the oldest frame is dropped, the fuser never waits).
        stats: Where latency is recorded.
    """

    stage = "sink"

    def __init__(self, *, queue_size: int = 16, policy: str = "wait", stats: PipelineStats | None = None) -> None:
        self.queue: StageQueue[FusedFrame] = StageQueue(queue_size, policy, name=f"sink {self.stage}")
        self.stats = stats or PipelineStats()
        self.error: Exception | None = None
        self.frames_written = 0
        self.reports_output = False
        self.thread_name = f"sink-{self.stage}"
        self.stop_requested: Callable[[], bool] = lambda: False
        """Whether the run was asked to stop (a signal) meanwhile: set by the pipeline, for a wait in :meth:`open`
        (which runs on the main thread, where the signal is only noted) to end early."""

    @abc.abstractmethod
    def open(self) -> None:
        """Acquire the output (create the folder, bind the socket); raise :class:`SinkError` on failure."""

    @abc.abstractmethod
    def write(self, frame: FusedFrame) -> None:
        """Deliver one fused frame."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush and release the output; must be safe to call after a failed :meth:`write`."""

    def describe(self) -> str:
        """A short human-readable description for logs."""
        return type(self).__name__

    def health(self) -> dict | None:
        """This output's part of the pipeline's health report, or None when it has nothing to report."""
        return None

    def finish_soon(self) -> None:  # noqa: B027 - optional hook
        """The pipeline was interrupted (a first Ctrl-C or SIGTERM): frames in flight are still written, but
        a write waiting on a slow consumer gives up after a bounded time. Called from another thread; the
        default does nothing (writes that do not wait)."""

    def interrupt(self) -> None:  # noqa: B027 - optional hook
        """Stop waiting on the output (an abort): a :meth:`write` blocked on a slow consumer returns soon.

        Called from another thread; the default does nothing (writes that do not wait).
        """

    def _run(self) -> None:
        try:
            while True:
                try:
                    frame = self.queue.get()
                except Closed:
                    break
                t0 = time.perf_counter()
                self.write(frame)
                done = time.perf_counter()
                self.frames_written += 1
                self.stats.record_latency(self.stage, (done - t0) * 1000.0)
                if self.reports_output:
                    self.stats.record_latency(END_TO_END, (done - frame.created) * 1000.0)
                    self.stats.record_output()
        except SinkError as exc:
            self.error = exc
        except Exception as exc:  # unexpected: this sink's failure, with the traceback in the log
            log.error("sink %s failed unexpectedly", self.stage, exc_info=exc)
            self.error = SinkError(f"{self.describe()}: write failed after {self.frames_written} frames: "
                                   f"{type(exc).__name__}: {exc}")
            self.error.__cause__ = exc
        finally:
            self.queue.abort()
            try:
                self.close()
            except Exception as exc:
                if self.error is None:
                    self.error = SinkError(f"{self.describe()}: could not be finalised: {exc}")
