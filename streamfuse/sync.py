"""Approximate-time pairing of infrared and visible frames.

Every primary frame (the visible one by default) is paired with the secondary frame whose
timestamp, after each source's ``time_offset_ms``, is nearest, provided the skew is within the
tolerance. A secondary frame may be reused by several primary frames (a 9 Hz thermal camera with a
30 Hz visible camera); a primary frame without a partner is dropped and counted as ``unpaired``.
For two finite inputs at the same rate and with equal frame counts this gives exactly the pairs
(0, 0), (1, 1), ... that pairing by index would.

:class:`PairMatcher` is the rule without threads; :class:`PairingStage` is the pipeline stage that
runs it on two sources, registers each pair and handles a lost camera.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from streamfuse.colour import as_gray
from streamfuse.config import SyncConfig
from streamfuse.errors import PipelineError
from streamfuse.frames import Frame, FramePair
from streamfuse.queues import Closed, StageQueue
from streamfuse.registration import Registrar, Transform
from streamfuse.stats import PipelineStats

if TYPE_CHECKING:
    from streamfuse.sources import Source

log = logging.getLogger(__name__)

#: How long the stage waits on one queue before looking at the sources' state again.
POLL_S = 0.1

#: The pairing tolerance when it is not configured and neither camera states its frame rate.
FALLBACK_TOLERANCE_S = 0.040

#: The pairing tolerance when it is not configured, in frame intervals of the slower camera: the
#: nearest frame of a regular camera is at most half an interval away; the rest absorbs jitter
#: without reaching the neighbouring frame of a camera at the same rate.
TOLERANCE_INTERVALS = 0.75


def pairing_tolerance_s(tolerance_ms: float | None, *rates: float | None) -> float:
    """The pairing tolerance in seconds: ``tolerance_ms`` (``sync.tolerance_ms``) when set, else
    :data:`TOLERANCE_INTERVALS` frame intervals of the slowest of the cameras' nominal ``rates`` (fps;
    unknown ones None or 0), else :data:`FALLBACK_TOLERANCE_S`."""
    if tolerance_ms is not None:
        return tolerance_ms / 1000.0
    known = [float(rate) for rate in rates if rate]
    return TOLERANCE_INTERVALS / min(known) if known else FALLBACK_TOLERANCE_S


@dataclass(frozen=True)
class Match:
    """Result of matching one primary frame: the partner (or None) and the skew in seconds."""

    partner: Frame | None
    skew: float


#: Timestamps closer than this are the same moment (an offset of whole frame intervals, 0.1 s at 30 fps, gives
#: sums that differ in the last bits: the matcher waited a frame more for a partner it had, and paired in bursts).
SAME_TIME_S = 1e-6

#: The frame rate assumed for a live source that states none before it is opened, when sizing its queue.
ASSUMED_LIVE_FPS = 30.0


class PairMatcher:
    """The pairing rule without threads: feed secondary frames, then match primary frames in order.

    Args:
        tolerance_s: Largest accepted ``|secondary - primary|`` timestamp difference.
        primary_offset_s: Added to primary timestamps.
        secondary_offset_s: Added to secondary timestamps.
    """

    def __init__(self, tolerance_s: float, primary_offset_s: float = 0.0, secondary_offset_s: float = 0.0) -> None:
        self.tolerance_s = tolerance_s
        self.primary_offset_s = primary_offset_s
        self.secondary_offset_s = secondary_offset_s
        self._buffer: collections.deque[Frame] = collections.deque()

    def add_secondary(self, frame: Frame) -> None:
        """Buffer a secondary frame (frames must arrive in timestamp order)."""
        self._buffer.append(frame)

    def primary_time(self, frame: Frame) -> float:
        """The primary frame's timestamp on the common clock."""
        return frame.timestamp + self.primary_offset_s

    def secondary_time(self, frame: Frame) -> float:
        """A secondary frame's timestamp on the common clock."""
        return frame.timestamp + self.secondary_offset_s

    def ready(self, primary: Frame) -> bool:
        """True when no secondary frame still to come can be nearer to ``primary`` than a buffered one."""
        return bool(self._buffer) and (self.secondary_time(self._buffer[-1])
                                       >= self.primary_time(primary) - SAME_TIME_S)

    def exhausted(self, primary: Frame) -> bool:
        """True when no buffered secondary frame can be the partner of ``primary`` or of a later primary frame
        (once the secondary stream has ended, nothing more will pair)."""
        return not self._buffer or self.secondary_time(self._buffer[-1]) < self.primary_time(primary) - self.tolerance_s

    def match(self, primary: Frame) -> Match:
        """Pair ``primary`` with the nearest buffered secondary frame within tolerance.

        Call when :meth:`ready` is true or the secondary stream has ended. Buffered frames that
        can no longer be the nearest partner of a later primary frame are discarded.
        """
        t = self.primary_time(primary)
        best_index, best_skew = None, None
        for index, frame in enumerate(self._buffer):
            skew = self.secondary_time(frame) - t
            if best_skew is None or abs(skew) < abs(best_skew):
                best_index, best_skew = index, skew
        if best_index is None or abs(best_skew) > self.tolerance_s:
            while self._buffer and self.secondary_time(self._buffer[0]) < t - self.tolerance_s:
                self._buffer.popleft()
            return Match(None, 0.0 if best_skew is None else best_skew)
        for _ in range(best_index):
            self._buffer.popleft()
        return Match(self._buffer[0], best_skew)


class PairingStage:
    """The pairing stage: matches the two sources' frames, registers each pair, and queues it for fusion.

    Runs :meth:`run` on its own thread. Per pair, the infrared frame is reduced to gray once and the
    registrar's current transform is read once: it is applied here, or, when ``defer_warp`` says the
    fuser warps with it on its device, carried in :attr:`FramePair.transform`. Either way a transform
    swapped while running applies from the next pair on.

    **Camera loss** (supervised sources only). While a source is lost, :attr:`state` is
    ``sync.on_camera_loss``: ``pause`` queues nothing (the surviving camera's frames are read and
    dropped, counted as unpaired); ``passthrough`` queues the surviving camera's
    frames, in output form, as ``passthrough_*`` pairs (infrared alone only once an earlier pair
    gave the output size). When both deliver again, pairing starts afresh (counted as ``resyncs``).

    Args:
        primary: The source every output frame is timed by.
        secondary: The other source.
        config: The ``sync`` config section.
        offsets_s: Each source's ``time_offset_ms``, in seconds, by source name.
        registrar: Holds the current IR->VIS transform.
        defer_warp: True for a transform the fuser applies itself.
        output: Where pairs go; closed when the stage ends.
        stats: Where skew, stage latencies and counters are recorded.
        stopping: Set when the pipeline stops (ends waits early).
    """

    def __init__(self, primary: Source, secondary: Source, *, config: SyncConfig, offsets_s: dict[str, float],
                 registrar: Registrar, defer_warp: Callable[[Transform], bool], output: StageQueue[FramePair],
                 stats: PipelineStats, stopping: threading.Event) -> None:
        self.primary = primary
        self.secondary = secondary
        self.config = config
        self.offsets_s = offsets_s
        self.registrar = registrar
        self.defer_warp = defer_warp
        self.output = output
        self.stats = stats
        self.stopping = stopping
        self.sample: Callable[[np.ndarray, np.ndarray], None] | None = None
        """Called with each pair's unwarped gray infrared and visible image (online registration refinement)."""
        self.state = "paired"
        """``paired``; or while a camera is lost, ``pause`` or ``passthrough`` (``sync.on_camera_loss``)."""
        self._output_shape: tuple[int, int] | None = None
        spread_s = abs(offsets_s[primary.name] - offsets_s[secondary.name])
        # The camera with the larger offset delivers each moment spread_s before the other: its frames wait in its
        # queue for their partners, so a live (drop_oldest) one gets room for them (it dropped half of them with
        # an offset of 0.1 s). A camera that states no rate before it opens is taken for 30 fps.
        earlier = max((primary, secondary), key=lambda source: offsets_s[source.name])
        if spread_s and earlier.queue.policy == "drop_oldest":
            earlier.queue.maxsize += math.ceil(spread_s * (earlier.nominal_fps or ASSUMED_LIVE_FPS) - SAME_TIME_S)
        self._paired_once = False
        self._output_size = output.maxsize
        self._last_paired: dict[str, int] = {}
        self._lost_names: list[str] = []

    def tolerance_s(self) -> float:
        """``sync.tolerance_ms`` in seconds, or when it is null :data:`TOLERANCE_INTERVALS` frame
        intervals of the slower camera (:data:`FALLBACK_TOLERANCE_S` when neither states its rate)."""
        return pairing_tolerance_s(self.config.tolerance_ms, self.primary.nominal_fps, self.secondary.nominal_fps)

    def _new_matcher(self) -> PairMatcher:
        return PairMatcher(self.tolerance_s(), self.offsets_s[self.primary.name], self.offsets_s[self.secondary.name])

    def run(self) -> None:
        """Pair until either input ends (or the output is aborted); then close the output."""
        primary, secondary = self.primary, self.secondary
        matcher = self._new_matcher()
        log.debug("pairing tolerance %.1f ms", matcher.tolerance_s * 1000)
        secondary_done = False
        try:
            while True:
                lost = [source for source in (primary, secondary) if source.lost]
                if lost:
                    if not self._while_lost(lost):
                        return
                    continue
                if self.state != "paired" and not (primary.ended or secondary.ended):  # both back: pair afresh
                    matcher = self._new_matcher()
                    self.state = "paired"
                    if self._paired_once:
                        self.stats.count("resyncs")
                        log.info("both cameras delivering again: pairing resumed")
                try:
                    frame = primary.queue.get(timeout=POLL_S)
                except Closed:
                    return
                if frame is None:
                    continue
                while not secondary_done and not secondary.lost and not matcher.ready(frame):
                    try:
                        other = secondary.queue.get(timeout=POLL_S)
                    except Closed:
                        secondary_done = True
                        break
                    if other is not None:
                        matcher.add_secondary(other)
                if secondary.lost:  # lost while this frame waited for its partner
                    self.stats.count("unpaired")
                    continue
                if secondary_done and matcher.exhausted(frame):
                    log.info("input %s ended: pairing ends (no %s frame after it has a partner)", secondary.name,
                             primary.name)
                    self.stats.count("unpaired")
                    return
                t0 = time.perf_counter()
                match = matcher.match(frame)
                if match.partner is None:
                    self.stats.count("unpaired")
                    continue
                if not self._put(self._register(frame, match, t0)):
                    return
        finally:
            self.output.close()
            primary.queue.abort()
            secondary.queue.abort()

    def _put(self, pair: FramePair) -> bool:
        """Queue a pair for fusion (False: the output stopped accepting pairs); counts the pairs it dropped."""
        self._fit_output_to_rates()
        accepted = self.output.put(pair)
        if self.output.dropped:
            self.stats.set_counter("drops.pairs", self.output.dropped)
        return accepted

    def _fit_output_to_rates(self) -> None:
        """Make room in a live output for the pairs released together when the secondary camera is the slower one:
        primary frames wait for the secondary frame after them, then go at once (a 15 fps visible camera beside a
        5 fps thermal one: three at a time; the one-slot queue kept the last, two thirds of the pairs dropped)."""
        if self.output.policy != "drop_oldest":
            return
        primary, secondary = self.primary.nominal_fps, self.secondary.nominal_fps
        together = math.ceil(primary / secondary - SAME_TIME_S) if primary and secondary else 1
        self.output.maxsize = max(self._output_size, together)

    def _register(self, primary: Frame, match: Match, t0: float) -> FramePair:
        """The registered pair of a match (``t0``: when matching began)."""
        if primary.source == "vis":
            ir, vis, skew = match.partner, primary, match.skew
        else:
            ir, vis, skew = primary, match.partner, -match.skew
        self._output_shape = vis.image.shape[:2]
        t1 = time.perf_counter()
        ir_gray = as_gray(ir.image)
        if self.sample is not None:
            self.sample(ir_gray, vis.image)
        try:
            transform = self.registrar.transform_for(ir_gray.shape[:2], vis.image.shape[:2])
            if self.defer_warp(transform):
                warped, valid, deferred = ir_gray, None, transform
            else:
                (warped, valid), deferred = transform.apply(ir_gray, vis.image.shape[:2]), None
        except PipelineError as exc:
            files = [frame.meta.get("path") for frame in (ir, vis)]
            if None in files:
                raise
            raise PipelineError(f"{files[0]} and {files[1]}: {exc}") from None
        t2 = time.perf_counter()
        registered = Frame(warped, ir.timestamp, ir.seq, ir.source, ir.created, ir.meta)
        for frame in (ir, vis):  # a reused secondary frame is counted once (reuse is consecutive)
            if self._last_paired.get(frame.source) != frame.seq:
                self._last_paired[frame.source] = frame.seq
                self.stats.count(f"paired.{frame.source}")
        pair = FramePair(registered, vis, skew, valid, {"sync": (t1 - t0) * 1000, "warp": (t2 - t1) * 1000},
                         transform=deferred, registration_quality=self.registrar.quality, primary=primary.source)
        self._paired_once = True
        self.stats.record_pair(skew)
        self.stats.record_latency("sync", pair.latency["sync"])
        self.stats.record_latency("warp", pair.latency["warp"])
        return pair

    def _while_lost(self, lost: list[Source]) -> bool:
        """One step while a camera is lost; False when the output stopped accepting pairs."""
        names = [source.name for source in lost]
        survivor = next((s for s in (self.primary, self.secondary) if s not in lost), None)
        # the output is on the visible grid: infrared alone needs its size from an earlier pair
        alone = self.config.on_camera_loss == "passthrough" and survivor is not None and (
            survivor.name == "vis" or self._output_shape is not None)
        if survivor is not None and survivor.ended and not len(survivor.queue):
            # A file, folder or synthetic camera ended (its frames published alone or dropped): that ends
            # the run, as it does with both cameras up; waiting for the lost one kept the run going for ever.
            how = "failed" if survivor.error is not None else "ended"  # (a configuration error: the failure says it)
            where = "is still starting" if all(source.frames_read == 0 for source in lost) else "is lost"
            log.info("input %s %s while camera %s %s: the run ends", survivor.name, how, " and ".join(names), where)
            return False
        if self.state == "paired" or names != self._lost_names:  # log every change of which cameras are down
            self.state = "passthrough" if alone else "pause"
            self._lost_names = names
            waiting = "output paused until both cameras deliver"
            if self.config.on_camera_loss == "passthrough" and survivor is not None and not alone:
                waiting = ("output paused until the visible camera delivers (infrared alone is published only "
                           "after a first pair has given the output size)")
            log.log(logging.WARNING if self._paired_once else logging.INFO, "camera %s %s: %s", " and ".join(names),
                    "lost" if self._paired_once else "not delivering yet",
                    "publishing the other camera alone" if alone else waiting)
        if survivor is None:
            self.stopping.wait(POLL_S)
            return True
        frame = self._next_frame(survivor)
        if frame is None:
            return True
        if self.state == "passthrough":
            return self._put(self._passthrough_pair(survivor, frame))
        # Paused: the survivor's frames have no partner. Read and drop them, as a live camera's queue would,
        # so that a file or folder reaches its end (which ends the run) instead of waiting on a full queue.
        self.stats.count("unpaired")
        return True

    def _next_frame(self, survivor: Source) -> Frame | None:
        """The surviving camera's next frame (None: none within a poll)."""
        try:
            return survivor.queue.get(timeout=POLL_S)
        except Closed:
            self.stopping.wait(POLL_S)  # the input or the pipeline is ending; the main loop notices
            return None

    def _passthrough_pair(self, survivor: Source, frame: Frame) -> FramePair:
        """The surviving camera's ``frame`` in output form, as a ``passthrough_*`` pair."""
        image = frame.image
        if survivor.name == "ir":
            image, _ = self.registrar.apply(as_gray(image), self._output_shape or image.shape[:2])
        elif self._output_shape is not None and image.shape[:2] != self._output_shape:
            image = cv2.resize(image, self._output_shape[::-1], interpolation=cv2.INTER_AREA)
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image
        output = Frame(image, frame.timestamp, frame.seq, frame.source, frame.created, frame.meta)
        self.stats.count(f"passthrough.{survivor.name}")
        return FramePair(output, output, 0.0, None, {}, mode=f"passthrough_{survivor.name}")
