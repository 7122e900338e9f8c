"""The Source base class: a capture thread feeding a bounded queue with a drop policy."""

from __future__ import annotations

import abc
import collections
import dataclasses
import enum
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from streamfuse.config import GainConfig, ReconnectConfig, SourceConfig, SyntheticConfig
from streamfuse.errors import SourceError, TransientSourceError
from streamfuse.frames import Frame
from streamfuse.gain import AutoGain
from streamfuse.queues import StageQueue
from streamfuse.stage import ThreadedStage
from streamfuse.stats import PipelineStats, recent_rate

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Capture:
    """What :meth:`Source.read` returns for one frame."""

    image: np.ndarray
    timestamp: float
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceOptions:
    """What every source takes besides its own settings (the common keys of a source's config section).

    Attributes:
        drop_policy: ``wait`` or ``drop_oldest``; None: ``drop_oldest`` for a live input, else ``wait``.
        queue_size: Capacity of the output queue; None: 8 for ``wait``, 2 for ``drop_oldest`` (a live
            source's queue is its latency: a deep one would hand out frames that are seconds old).
        stats: Where capture latency and drops are recorded.
        reconnect: Supervision settings; None (or ``enabled: false``) runs the source once.
        gain: How 16-bit frames become 8-bit (None: the default automatic gain).
    """

    drop_policy: str | None = None
    queue_size: int | None = None
    stats: PipelineStats | None = None
    reconnect: ReconnectConfig | None = None
    gain: GainConfig | None = None


@dataclass(frozen=True)
class SourceContext:
    """What :func:`~streamfuse.sources.build_source` hands every source factory besides the source's config.

    Attributes:
        stats: Where the source records capture latency and drops.
        synthetic: The top-level ``synthetic`` section (scene settings).
        scene: A scene already built, shared by the two synthetic cameras.
    """

    stats: PipelineStats | None = None
    synthetic: SyntheticConfig | None = None
    scene: Any = None

    def options(self, config: SourceConfig, *, live: bool) -> SourceOptions:
        """The :class:`SourceOptions` of a source's section.

        Args:
            config: The source's section.
            live: The input is live: reconnecting is on unless the config says otherwise.
        """
        reconnect = config.reconnect
        if reconnect.enabled is None:
            reconnect = dataclasses.replace(reconnect, enabled=live)
        return SourceOptions(config.drop_policy, config.queue_size, self.stats, reconnect, config.gain)


class SourceState(enum.StrEnum):
    """Life cycle of a source; a supervised (reconnecting) source moves between all of them."""

    STARTING = "starting"
    """Opening for the first time (a supervised source keeps retrying here while the camera is down)."""
    RUNNING = "running"
    """Delivering frames."""
    RECONNECTING = "reconnecting"
    """Lost after having run (disconnect, end of a live stream, stall); retrying with backoff."""
    STOPPED = "stopped"
    """Ended: stopped on request, or a finite input finished."""
    FAILED = "failed"
    """Ended with an error (configuration error, fatal error, or out of reconnect attempts)."""


#: States in which a source delivers no frames but may come back.
LOST_STATES = (SourceState.STARTING, SourceState.RECONNECTING)
#: A file whose frames (or a folder whose images) fail to decode this many times in a row is broken, not damaged in
#: places.
MAX_CONSECUTIVE_DECODE_ERRORS = 25
MAX_TIMESTAMP_GAP_S = 10.0
"""A file played at its recorded timing waits at most this long for one frame (a longer gap is a clock jump or
a recording resumed much later, not worth waiting for)."""


class Source(ThreadedStage):
    """A camera, file or generator producing timestamped frames on its own thread.

    Subclasses implement :meth:`open`, :meth:`read` and :meth:`close`; this class runs them on a
    capture thread, numbers the frames, maps 16-bit frames to 8 bits (:attr:`gain`), applies
    real-time pacing if asked, and puts them in :attr:`queue` according to the drop policy.

    Without ``reconnect``, :meth:`open` runs on the caller's thread inside :meth:`start`, so a
    missing file or device fails fast with a :class:`SourceError`, and the end of the input or any
    error ends the source. With ``reconnect`` (live streams and cameras), the capture thread opens
    the source itself and *supervises* it: a :class:`TransientSourceError` (refused or timed-out
    connection, end of stream, stall) closes it and retries with capped exponential backoff and
    jitter, forever by default; any other :class:`SourceError` is a configuration error and fails
    the source at once. A watchdog thread counts a stall when a running source delivers no frame for
    ``stall_timeout_s`` (or a (re)started one none within ``grace_s``); a stalled running source
    is marked lost at once and, when its blocking read returns (bounded by the subclass's own read
    timeout), reconnects: whatever that connection still delivers is discarded as stale, so one
    stall is one stall, one disconnect and one reconnect.

    Args:
        name: ``"ir"`` or ``"vis"``; used in messages and statistics.
        options: Drop policy, queue size, statistics and supervision (defaults if None).
        pace_fps: If set, frames are released no faster than this rate (simulating a live camera
            or playing a file at its own speed), on the grid that :meth:`pace_start` starts; after
            a delay the frame due now comes at once and the pace goes on, without a burst of the
            frames that were due meanwhile.
        live: The input is live: without a drop policy in ``options``, ``drop_oldest`` (the
            freshest frame matters) instead of ``wait`` (never lose a frame); and a frame size that
            changes part-way (a camera switched to another resolution) is scaled back to the first
            frame's size, which registration was set up for, with a warning per new size.
    """

    def __init__(self, name: str, *, options: SourceOptions | None = None, pace_fps: float | None = None,
                 live: bool = False) -> None:
        options = options or SourceOptions()
        self.name = name
        self.live = live
        self.drop_policy = options.drop_policy or ("drop_oldest" if live else "wait")
        queue_size = options.queue_size or (2 if self.drop_policy == "drop_oldest" else 8)
        self.queue: StageQueue[Frame] = StageQueue(queue_size, self.drop_policy, name=f"source {name}")
        self.pace_fps = pace_fps
        self.paces_by_timestamp = False
        """Release each frame when its own timestamp is due (a file played at its recorded timing, pauses and
        a variable rate included) instead of on the ``pace_fps`` grid, which is then only the nominal rate."""
        self._timestamp_clock: float | None = None
        self.stats = options.stats or PipelineStats()
        reconnect = options.reconnect
        self.reconnect = reconnect if reconnect is not None and reconnect.enabled else None
        self.gain = AutoGain(options.gain or GainConfig(), name)
        """Maps the 16-bit frames that :meth:`read` may return to 8 bits (16-bit thermal cameras)."""
        self.error: Exception | None = None
        self.frames_read = 0
        self.reached_end = False
        """True once a finite input delivered its last frame (it ended on its own, not stopped)."""
        self.thread_name = f"capture-{name}"
        self.state = SourceState.STARTING
        self.last_error: str | None = None
        self.disconnects = 0
        """Times a running source was lost (error, end of a live stream, stall)."""
        self.reconnects = 0
        """Times a lost source delivered frames again."""
        self.stalls = 0
        """Times the watchdog found a source silent for too long."""
        self._started_at = time.monotonic()
        self._state_since = self._started_at
        self._opened_at: float | None = None
        self._last_frame_at: float | None = None
        self._recent_frames: collections.deque[float] = collections.deque(maxlen=32)
        self._state_lock = threading.Lock()
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._stalled = threading.Event()
        """Set by the watchdog when it finds the open connection silent: that connection is abandoned."""
        self.first_size: tuple[int, int] | None = None
        """``(width, height)`` of the first frame delivered (a live source delivers all of its frames at it)."""
        self._other_size: tuple[int, int] | None = None
        """The size a live source last switched to, once warned about."""

    # ----------------------------------------------------------------------------- for subclasses
    @abc.abstractmethod
    def open(self) -> None:
        """Open the underlying file/device; raise :class:`SourceError` with a clear message if it fails."""

    @abc.abstractmethod
    def read(self) -> Capture | None:
        """Return the next frame (``uint8``, or ``uint16`` for the gain to map), or None at the end of the input."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the underlying file/device (called on the capture thread when it ends)."""

    def validate(self) -> None:  # noqa: B027 - optional hook
        """Check the configuration without connecting (a supervised source's fail-fast part of :meth:`open`)."""

    @property
    def expected_frames(self) -> int | None:
        """Number of frames a finite input will produce, if known (for progress bars)."""
        return None

    @property
    def frames_short(self) -> int:
        """Frames of a finite input of known length that it has not delivered (nor skipped as undecodable): not
        read yet, or, once it has reached its end, missing from it (a file cut off)."""
        return max(0, (self.expected_frames or 0) - self.frames_read)

    @property
    def nominal_fps(self) -> float | None:
        """The input's nominal frame rate, if known."""
        return self.pace_fps

    def describe(self) -> str:
        """A short human-readable description for logs (never with credentials)."""
        return type(self).__name__

    # --------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Open (or, when supervised, validate) on the caller's thread, then start the capture thread."""
        if self.reconnect is None:
            super().start()
            return
        self.validate()
        self._start_thread()
        self._watchdog = threading.Thread(target=self._watch, name=f"watchdog-{self.name}", daemon=True)
        self._watchdog.start()

    def stop(self) -> None:
        """Ask the capture thread to end; frames already queued stay available to the consumer."""
        self._stop.set()
        self.queue.close()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the capture thread (and the watchdog) to finish."""
        super().join(timeout)
        if self._watchdog is not None:
            self._watchdog.join(timeout)

    @property
    def lost(self) -> bool:
        """True while a supervised source is down but may come back (starting or reconnecting)."""
        return self.reconnect is not None and not self._stop.is_set() and self.state in LOST_STATES

    @property
    def ended(self) -> bool:
        """True once the source stopped for good: its input finished, it was stopped, or it gave up."""
        return self.state in (SourceState.STOPPED, SourceState.FAILED)

    def health(self) -> dict[str, Any]:
        """State and counters for the health endpoint (JSON-ready)."""
        now = time.monotonic()
        fps = recent_rate(list(self._recent_frames), now)
        hours = max(now - self._started_at, 1.0) / 3600.0
        return {
            "state": self.state.value, "since_s": round(now - self._state_since, 3), "source": self.describe(),
            "fps": round(fps, 2), "frames": self.frames_read, "drops": self.queue.dropped,
            "disconnects": self.disconnects, "reconnects": self.reconnects, "stalls": self.stalls,
            "stalls_per_hour": round(self.stalls / hours, 3), "last_error": self.last_error,
            "last_frame_age_s": None if self._last_frame_at is None else round(now - self._last_frame_at, 3),
        }

    # -------------------------------------------------------------------------------- internals
    def _set_state(self, state: SourceState, error: str | None = None) -> None:
        """Move to ``state``; log the change, or a new error in the same lost state (a camera down at start)."""
        with self._state_lock:
            previous, previous_error = self.state, self.last_error
            if error is not None:
                self.last_error = error
            if state is not previous:
                self.state, self._state_since = state, time.monotonic()
        if state is previous:
            if error is not None and error != previous_error and self.reconnect is not None and state in LOST_STATES:
                log.warning("source %s (%s): still %s (%s); retrying", self.name, self.describe(), state.value, error)
            return
        level = logging.WARNING if state in (SourceState.RECONNECTING, SourceState.FAILED) else logging.INFO
        if self.reconnect is not None:  # an unsupervised source's failure ends the run, which reports its error
            log.log(level, "source %s (%s): %s -> %s%s", self.name, self.describe(), previous.value, state.value,
                    f" ({error})" if error else "")

    def _run(self) -> None:
        try:
            if self.reconnect is None:
                self._pump()
            else:
                self._supervise()
        except TransientSourceError as exc:  # not supervised: a lost stream ends the source
            self.error = SourceError(f"sources.{self.name}: {exc}")
        except SourceError as exc:  # a camera's named by its key (a 401, an unknown scheme were not); a file's names it
            named = str(exc).startswith("sources.") or not self.live
            self.error = exc if named else SourceError(f"sources.{self.name}: {exc}")
        except Exception as exc:  # unexpected (a library error while reading): this source's failure, traceback logged
            log.error("source %s failed unexpectedly", self.name, exc_info=exc)
            self.error = SourceError(f"sources.{self.name}: {self.describe()} failed after "
                                     f"{self.frames_read} frames: {type(exc).__name__}: {exc}")
            self.error.__cause__ = exc
        finally:
            try:
                self.close()
            finally:
                self._set_state(SourceState.FAILED if self.error else SourceState.STOPPED,
                                str(self.error) if self.error else None)
                self.queue.close()

    def _pump(self) -> None:
        """Read and queue frames until the input ends (returns) or fails (raises)."""
        started = self.pace_start()
        count = 0
        self._timestamp_clock = None
        while not self._stop.is_set():
            if self.pace_fps and not self.paces_by_timestamp:
                interval = 1.0 / self.pace_fps
                delay = started + count * interval - time.perf_counter()
                if delay < -interval:  # fell behind (a slow read, a busy host): this frame now, then on at the
                    count = int((time.perf_counter() - started) / interval)  # pace, no burst of those due meanwhile
                elif delay > 0 and self._stop.wait(delay):
                    return
            t0 = time.perf_counter()
            capture = self.read()
            if self._stalled.is_set():
                raise TransientSourceError("stalled: reconnecting (frames the silent connection still "
                                           "delivers are stale)")
            if capture is None:
                self.reached_end = True
                return
            if self.paces_by_timestamp:
                read_s = time.perf_counter() - t0
                if self._wait_until_due(capture.timestamp):
                    return
                t0 = time.perf_counter() - read_s  # the wait is not capture time
            image = self._at_first_size(self.gain(capture.image))
            now = time.perf_counter()
            self._last_frame_at = time.monotonic()
            self._recent_frames.append(self._last_frame_at)
            if self.state is not SourceState.RUNNING:
                if self.state is SourceState.RECONNECTING:
                    self.reconnects += 1
                self._set_state(SourceState.RUNNING)
            self.stats.record_latency(f"capture_{self.name}", (now - t0) * 1000.0)
            frame = Frame(image, capture.timestamp, self.frames_read, self.name, now, capture.meta)
            self.frames_read += 1
            count += 1
            while not self.queue.put(frame, timeout=0.1):
                if self._stop.is_set() or self.queue.closed:
                    return
            self.stats.set_counter(f"drops.{self.name}", self.queue.dropped)

    def _at_first_size(self, image: np.ndarray) -> np.ndarray:
        """A live source's frame at the size of its first frame (see ``live``); other inputs' frames as read."""
        size = (image.shape[1], image.shape[0])
        if self.first_size is None:
            self.first_size = size
        if not self.live:
            return image
        if size == self.first_size:
            if self._other_size is not None:
                self._other_size = None
                log.info("source %s (%s) is back at %dx%d", self.name, self.describe(), *size)
            return image
        if size != self._other_size:
            self._other_size = size
            (width, height), (new_width, new_height) = self.first_size, size
            stretched = abs(new_width * height - width * new_height) > max(width, height)
            log.warning("source %s (%s) now delivers %dx%d frames where it started at %dx%d; scaling them to %dx%d "
                        "for the registration set up at that size%s", self.name, self.describe(), new_width,
                        new_height, width, height, width, height,
                        ": the aspect ratio changed too, so the picture is stretched and the registration may no "
                        "longer hold; restart the run (and calibrate at the new size)" if stretched else "")
        self.stats.count(f"rescaled.{self.name}")
        shrink = size[0] * size[1] > self.first_size[0] * self.first_size[1]
        return cv2.resize(image, self.first_size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)

    def _wait_until_due(self, timestamp: float) -> bool:
        """Wait until ``timestamp`` is due on the wall clock that the first frame started (True when stopped
        meanwhile). A late frame goes at once, and the ones after it until the clock is caught up: a file held back
        (the pairing waits for the other camera's file, which paused) stays on the other file's timeline. A jump of
        more than ``MAX_TIMESTAMP_GAP_S`` in the timestamps, either way, re-starts the clock (with a note ahead)."""
        now = time.perf_counter()
        if self._timestamp_clock is None:
            self._timestamp_clock = now - timestamp
        delay = self._timestamp_clock + timestamp - now
        if abs(delay) > MAX_TIMESTAMP_GAP_S:
            if delay > 0:
                log.info("source %s (%s): its timestamps jump %.1f s ahead at frame %d; playing on without the "
                         "pause", self.name, self.describe(), delay, self.frames_read)
            self._timestamp_clock = now - timestamp
            return False
        return delay > 0 and self._stop.wait(delay)

    def pace_start(self) -> float:
        """When the pacing grid starts (``time.perf_counter()``): frame k is due ``k / pace_fps`` later.

        Now, for a source paced on its own; a camera pair sharing a clock returns the shared start,
        so that both take their frames at the same moments.
        """
        return time.perf_counter()

    def _supervise(self) -> None:
        """Open, pump, and on a transient loss close and retry with backoff, until stopped or failed."""
        settings = self.reconnect
        failures = 0
        while not self._stop.is_set():
            frames_before = self.frames_read
            try:
                self._opened_at = None
                self._stalled.clear()
                self.open()
                self._opened_at = time.monotonic()
                self._pump()
                if self._stop.is_set():
                    return
                raise TransientSourceError("the stream ended (a live source ending is a disconnect)")
            except TransientSourceError as exc:
                reason = str(exc)
            finally:
                self._safe_close()
            if self._stop.is_set():
                return
            if self.frames_read > frames_before:
                failures = 0
            if self.state is SourceState.RUNNING and not self._stalled.is_set():  # a stall is counted by the watchdog
                self._count_disconnect()
            failures += 1
            if settings.max_attempts is not None and failures >= settings.max_attempts:
                raise SourceError(f"sources.{self.name}: {self.describe()} gave up after {failures} failed attempt(s) "
                                  f"in a row (last: {reason}); check the camera (address, power, network), or raise "
                                  f"sources.{self.name}.reconnect.max_attempts (null: retry for ever)")
            self._set_state(SourceState.STARTING if self.frames_read == 0 else SourceState.RECONNECTING, reason)
            self.stats.set_counter(f"disconnects.{self.name}", self.disconnects)
            delay = min(settings.backoff_max_s, settings.backoff_initial_s * 2 ** (failures - 1))
            delay *= 1 + random.uniform(-settings.jitter, settings.jitter)
            if self._stop.wait(delay):
                return

    def _safe_close(self) -> None:
        try:
            self.close()
        except Exception:  # closing a broken connection may fail too; the next open starts clean
            log.debug("source %s: close failed", self.name, exc_info=True)

    def _watch(self) -> None:
        """The watchdog: count a stall when no frame arrives in time, and mark the source lost."""
        settings = self.reconnect
        period = min(0.25, settings.stall_timeout_s / 4)
        while not self._stop.wait(period):
            now = time.monotonic()
            opened_at, last_frame_at = self._opened_at, self._last_frame_at
            if self.state is SourceState.RUNNING and last_frame_at is not None:
                if now - last_frame_at > settings.stall_timeout_s:
                    self._stalled.set()
                    self._record_stall()
                    self._count_disconnect()
                    self._set_state(SourceState.RECONNECTING, f"stalled: no frame for {now - last_frame_at:.1f} s")
            elif opened_at is not None and (last_frame_at or 0.0) < opened_at and now - opened_at > settings.grace_s:
                self._opened_at = None  # one stall per silent connection
                self._record_stall()
                self._set_state(self.state, f"stalled: connected {now - opened_at:.1f} s without a frame")

    def _count_disconnect(self) -> None:
        """Count a loss; the capture thread and the watchdog both do, so under the state lock."""
        with self._state_lock:
            self.disconnects += 1

    def _record_stall(self) -> None:
        self.stalls += 1
        self.stats.set_counter(f"stalls.{self.name}", self.stalls)
