"""The data that flows between pipeline stages.

Images are numpy arrays in OpenCV's conventions: colour frames are ``uint8`` BGR ``(H, W, 3)``,
infrared frames are ``uint8`` single channel ``(H, W)``. A frame keeps its capture timestamp and
sequence number from the source to the sink.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from streamfuse.registration import Transform
    from streamfuse.text.prompts import Routing


@dataclass(slots=True)
class Frame:
    """One image from one source.

    Attributes:
        image: The pixels (``uint8``; BGR ``(H, W, 3)`` or gray ``(H, W)``).
        timestamp: Capture time in seconds, in the source's clock (stream pts for files, host
            monotonic time for cameras), before the per-source ``time_offset_ms`` is applied.
        seq: Sequence number assigned by the source, starting at 0, counting every frame read
            (including frames later dropped), so gaps reveal drops.
        source: Name of the source (``"ir"`` or ``"vis"``).
        created: Host ``time.perf_counter()`` when the frame entered the pipeline, for latency.
        meta: Extra per-frame data (file name, ground-truth masks, ...).
    """

    image: np.ndarray
    timestamp: float
    seq: int
    source: str
    created: float = field(default_factory=time.perf_counter)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class FramePair:
    """An infrared and a visible frame matched by time.

    Attributes:
        ir: The infrared frame, gray; after registration on the visible grid (unless ``transform`` is set).
        vis: The visible frame (the output's grid, whichever camera is ``sync.primary``).
        skew: ``ir.timestamp - vis.timestamp`` in seconds, after time offsets.
        valid: ``uint8`` mask (1 where the registered infrared image has data), or None when all
            pixels are valid.
        latency: Milliseconds spent in each stage so far, by stage name.
        mode: ``fused``; or, while one camera is lost and ``sync.on_camera_loss`` is
            ``passthrough``, ``passthrough_ir`` / ``passthrough_vis``: then ``ir`` and ``vis`` are
            the same frame of the surviving camera, already in output form (BGR, output size),
            and it is published as it is.
        transform: The registration still to apply to ``ir`` (a
            :class:`~streamfuse.registration.Transform` the fuser applies on its device, next to
            the fusion); None when ``ir`` is already on the visible grid.
        registration_quality: The registrar's quality when the pair was made (online refinement's
            alignment score; None without it).
        primary: The camera whose frames are all kept and that times the output (``sync.primary``):
            ``"vis"`` or ``"ir"``.
    """

    ir: Frame
    vis: Frame
    skew: float
    valid: np.ndarray | None = None
    latency: dict[str, float] = field(default_factory=dict)
    mode: str = "fused"
    transform: Transform | None = None
    registration_quality: float | None = None
    primary: str = "vis"

    @property
    def timed_by(self) -> Frame:
        """The primary frame: its timestamp, sequence number and name are the output frame's."""
        return self.ir if self.primary == "ir" else self.vis

    @property
    def seq(self) -> int:
        """The sequence number of the primary frame."""
        return self.timed_by.seq


@dataclass(slots=True)
class FusedFrame:
    """The output of the fusion stage, sent to every sink.

    Attributes:
        image: Fused pixels, same size and type as the visible input.
        index: Position in the output stream (0, 1, 2, ...).
        pair: The input pair it was made from (timestamps, sequence numbers, metadata).
        fuser: Name of the fuser that produced it.
        latency: Milliseconds spent in each stage, by stage name.
        routing: The prompt routing the frame was fused with (None when the run has no prompt).
    """

    image: np.ndarray
    index: int
    pair: FramePair
    fuser: str
    latency: dict[str, float] = field(default_factory=dict)
    routing: Routing | None = None

    @property
    def timestamp(self) -> float:
        """Capture timestamp of the primary frame (``sync.primary``), which drives output timing."""
        return self.pair.timed_by.timestamp

    @property
    def created(self) -> float:
        """Host time the oldest of the two input frames entered the pipeline."""
        return min(self.pair.vis.created, self.pair.ir.created)
