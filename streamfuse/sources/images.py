"""A folder (or glob) of still images played as a video at a stated frame rate."""

from __future__ import annotations

import logging

from streamfuse.config import ImagesSourceConfig
from streamfuse.errors import SourceError
from streamfuse.imageio import list_images, read_image
from streamfuse.registry import SOURCES
from streamfuse.sources.base import Capture, Source, SourceContext, SourceOptions

log = logging.getLogger(__name__)


class ImagesSource(Source):
    """Frames from image files, sorted naturally by name; frame ``i`` has timestamp ``i / fps``.

    Args:
        name: Source name (``ir``/``vis``).
        path: A folder or a glob pattern.
        stems: Read only the files with these names (without suffix); None: all of them.
        fps: The frame rate the sequence was captured at.
        realtime: Release frames at ``fps`` instead of as fast as they are consumed.
        options: Drop policy, queue size, statistics.
    """

    def __init__(self, name: str, path: str, *, stems: list[str] | None = None, fps: float = 25.0,
                 realtime: bool = False, options: SourceOptions | None = None) -> None:
        super().__init__(name, options=options, pace_fps=fps if realtime else None)
        self.path = path
        self.stems = stems
        self.fps = fps
        self.files = []
        self._bits: int | None = None
        self._warned_of_depth = False

    def open(self) -> None:
        self.files = list_images(self.path)
        if self.stems is not None:
            wanted = set(self.stems)
            self.files = [file for file in self.files if file.stem in wanted]
            missing = wanted - {file.stem for file in self.files}
            if missing:
                raise SourceError(f"sources.{self.name}.stems: {self.path} has no image named "
                                  f"{', '.join(sorted(missing)[:5])}")

    def read(self) -> Capture | None:
        index = self.frames_read
        if index >= len(self.files):
            return None
        file = self.files[index]
        image = read_image(file, keep_16bit=True)
        bits = image.itemsize * 8
        if self._bits is None:
            self._bits = bits
        elif bits != self._bits and not self._warned_of_depth:  # an export mix-up, or two cameras in one folder
            self._warned_of_depth = True
            log.warning("sources.%s: %s is %d-bit, the folder's first image %d-bit (%s); each is used as it is "
                        "(a 16-bit one through sources.%s.gain): check the export", self.name, file, bits, self._bits,
                        self.files[0].name, self.name)
        return Capture(image, index / self.fps, {"name": file.stem, "path": str(file)})

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
    return ImagesSource(name, config.path, stems=config.stems, fps=config.fps, realtime=config.realtime,
                        options=context.options(config, live=False))
