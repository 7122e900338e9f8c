"""The embedded demo camera pair: the procedural scene of :mod:`streamfuse.sources.synthetic_scene`."""

from __future__ import annotations

import time

import numpy as np

from streamfuse.config import SyntheticConfig, SyntheticSourceConfig
from streamfuse.registry import SOURCES
from streamfuse.sources.base import Capture, Source, SourceContext, SourceOptions
from streamfuse.sources.synthetic_scene import SyntheticScene


def build_scene(config: SyntheticConfig) -> SyntheticScene:
    """The scene described by a ``synthetic`` config section (deterministic for its seed)."""
    return SyntheticScene(
        config.width, config.height, seed=config.seed, time_of_day=config.time_of_day, fog=config.fog,
        noise=config.noise, people=config.people, vehicles=config.vehicles,
        ir_size=tuple(config.ir_size) if config.ir_size else None,
        ir_homography=np.asarray(config.ir_homography, dtype=np.float64) if config.ir_homography else None,
    )


class SyntheticSource(Source):
    """One camera (``ir`` or ``vis``) of a :class:`SyntheticScene`; frame ``i`` shows time ``i / fps``.

    A ``realtime`` camera is live: it takes its frames on the scene's shared clock
    (:meth:`SyntheticScene.live_start`), so both cameras' frames of one moment carry the same time,
    and a frame it had no time to deliver (a read more than an interval late) is skipped as a real
    camera's would be, unless its drop policy is ``wait`` (every frame, however late).

    The visible camera attaches the ground-truth object mask (0 background, 1 person, 2 vehicle,
    visible-grid coordinates) as ``frame.meta["mask"]`` when ``with_masks`` is set.

    Args:
        name: ``ir`` renders the thermal camera, anything else the visible one.
        scene: The shared scene.
        fps: Frame rate of this camera.
        frames: How many frames to produce; None for an endless stream.
        realtime: Pace frames at ``fps`` like a live camera (and drop the oldest frame when the
            pipeline falls behind, unless a drop policy is given).
        with_masks: Attach ground-truth masks to visible frames.
        options: Drop policy (None: ``drop_oldest`` when ``realtime``), queue size, statistics.
    """

    def __init__(self, name: str, scene: SyntheticScene, *, fps: float = 30.0, frames: int | None = None,
                 realtime: bool = True, with_masks: bool = False, options: SourceOptions | None = None) -> None:
        super().__init__(name, options=options, pace_fps=fps if realtime else None, live=realtime)
        self.scene = scene
        self.fps = fps
        self.frames = frames
        self.with_masks = with_masks and name != "ir"
        self._next_index = 0

    def open(self) -> None:
        """Nothing to open: the scene is procedural."""

    def pace_start(self) -> float:
        return self.scene.live_start()

    def read(self) -> Capture | None:
        if self.frames is not None and self.frames_read >= self.frames:
            return None
        index = self.frames_read
        if self.pace_fps and self.drop_policy != "wait":  # live: the frame of this moment (a stall's are gone)
            start = self.scene.live_start()
            index = max(self._next_index, int((time.perf_counter() - start) * self.fps))
            # ... and never before its moment: after a late wake-up the pacing grid can run a slot ahead of the
            # clock, and the camera then delivered every frame one interval early for good (its partner waited).
            early_s = start + index / self.fps - time.perf_counter()
            if early_s > 0:
                self._stop.wait(early_s)
        self._next_index = index + 1
        t = index / self.fps
        if self.name == "ir":
            return Capture(self.scene.render_ir(t), t, {})
        meta = {"mask": self.scene.object_mask(t)} if self.with_masks else {}
        return Capture(self.scene.render_vis(t), t, meta)

    @property
    def expected_frames(self) -> int | None:
        return self.frames

    @property
    def nominal_fps(self) -> float | None:
        return self.fps

    def describe(self) -> str:
        return f"synthetic {'thermal' if self.name == 'ir' else 'visible'} camera"


@SOURCES.register("synthetic", SyntheticSourceConfig)
def from_config(name: str, config: SyntheticSourceConfig, context: SourceContext) -> SyntheticSource:
    """The camera of the context's shared scene (or of a new one from its ``synthetic`` settings)."""
    scene = context.scene or build_scene(context.synthetic or SyntheticConfig())
    return SyntheticSource(name, scene, fps=config.fps, frames=config.frames, realtime=config.realtime,
                           options=context.options(config, live=False))
