"""The newest fused frame and its pictures, shared by every viewer."""

from __future__ import annotations

import threading

import numpy as np

from streamfuse.frames import FusedFrame
from streamfuse.imageio import encode_image

#: The pictures of a frame a viewer can watch: the fused image and the two camera images it was made from.
KINDS = ("fused", "ir", "vis")


def picture(frame: FusedFrame, kind: str) -> np.ndarray:
    """The ``kind`` image of ``frame`` (``fused``, ``ir``: the infrared frame as paired, registered unless the
    fuser warps it itself, ``vis``)."""
    if kind == "fused":
        return frame.image
    return frame.pair.ir.image if kind == "ir" else frame.pair.vis.image


class FrameBoard:
    """Holds the newest fused frame; encodes each of its pictures at most once, when a viewer first asks.

    The fusion thread only swaps a reference (:meth:`publish`); the JPEG work happens on the
    viewers' threads, once per frame and picture whatever the number of viewers, and not at all for
    a picture nobody watches.

    Args:
        jpeg_quality: 1..100.
    """

    def __init__(self, jpeg_quality: int = 80) -> None:
        self.jpeg_quality = jpeg_quality
        self.encoded = dict.fromkeys(KINDS, 0)
        """JPEG pictures made so far, by kind."""
        self._frame: FusedFrame | None = None
        self._closed = False
        self._changed = threading.Condition()
        self._encoding = {kind: threading.Lock() for kind in KINDS}
        self._jpegs: dict[str, tuple[int, bytes]] = {}

    def publish(self, frame: FusedFrame) -> None:
        """Make ``frame`` the newest (called by the fusion thread; cheap)."""
        with self._changed:
            self._frame = frame
            self._changed.notify_all()

    def close(self) -> None:
        """End every viewer's wait: the stream is over."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    @property
    def latest(self) -> FusedFrame | None:
        """The newest frame (None before the first)."""
        return self._frame

    def wait_newer(self, index: int, timeout: float) -> FusedFrame | None:
        """The newest frame if its index is above ``index``, waiting up to ``timeout`` s; None on timeout or close."""
        with self._changed:
            self._changed.wait_for(lambda: self._closed or (self._frame is not None and self._frame.index > index),
                                   timeout)
            frame = self._frame
            return None if self._closed or frame is None or frame.index <= index else frame

    def jpeg(self, frame: FusedFrame, kind: str) -> bytes:
        """The ``kind`` picture of ``frame`` as JPEG, encoded by the first viewer that asks for it."""
        with self._encoding[kind]:
            cached = self._jpegs.get(kind)
            if cached is not None and cached[0] == frame.index:
                return cached[1]
            data = encode_image(picture(frame, kind), ".jpg", self.jpeg_quality)
            self.encoded[kind] += 1
            self._jpegs[kind] = (frame.index, data)
            return data
