"""A folder (or glob) of still images played as a video at a stated frame rate."""

from __future__ import annotations

from streamfuse.config import ImagesSourceConfig
from streamfuse.imageio import list_images, read_image
from streamfuse.registry import SOURCES
from streamfuse.sources.base import Capture, Source, SourceContext, SourceOptions


class ImagesSource(Source):
    """Frames from image files, sorted naturally by name; frame ``i`` has timestamp ``i / fps``.

    Args:
        name: Source name (``ir``/``vis``).
        path: A folder or a glob pattern.
        fps: The frame rate the sequence was captured at.
        realtime: Release frames at ``fps`` instead of as fast as they are consumed.
        options: Drop policy, queue size, statistics.
    """

    def __init__(self, name: str, path: str, *, fps: float = 25.0, realtime: bool = False,
                 options: SourceOptions | None = None) -> None:
        super().__init__(name, options=options, pace_fps=fps if realtime else None)
        self.path = path
        self.fps = fps
        self.files = []

    def open(self) -> None:
        self.files = list_images(self.path)

    def read(self) -> Capture | None:
        index = self.frames_read
        if index >= len(self.files):
            return None
        file = self.files[index]
        return Capture(read_image(file, keep_16bit=True), index / self.fps, {"name": file.stem, "path": str(file)})

    @property
    def expected_frames(self) -> int | None:
        return len(self.files) or None

    @property
    def nominal_fps(self) -> float | None:
        return self.fps

    def describe(self) -> str:
        return f"images {self.path}"


@SOURCES.register("images", ImagesSourceConfig)
def from_config(name: str, config: ImagesSourceConfig, context: SourceContext) -> ImagesSource:
    """A folder or pattern of images."""
    return ImagesSource(name, config.path, fps=config.fps, realtime=config.realtime,
                        options=context.options(config, live=False))
