"""Approximate-time pairing of infrared and visible frames.

Every primary frame (the visible one by default) is paired with the secondary frame whose
timestamp, after each source's ``time_offset_ms``, is nearest, provided the skew is within the
tolerance. A secondary frame may be reused by several primary frames (a 9 Hz thermal camera with a
30 Hz visible camera); a primary frame without a partner is dropped and counted as ``unpaired``.
For two finite inputs at the same rate and with equal frame counts this gives exactly the pairs
(0, 0), (1, 1), ... that pairing by index would.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from streamfuse.frames import Frame


@dataclass(frozen=True)
class Match:
    """Result of matching one primary frame: the partner (or None) and the skew in seconds."""

    partner: Frame | None
    skew: float


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
        return bool(self._buffer) and self.secondary_time(self._buffer[-1]) >= self.primary_time(primary)

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
