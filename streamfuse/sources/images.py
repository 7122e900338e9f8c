"""A folder (or glob) of still images played as a video at a stated frame rate."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from streamfuse.config import ImagesSourceConfig
from streamfuse.errors import SourceError, UnreadableImageError
from streamfuse.imageio import list_images, read_image, stem_of
from streamfuse.registry import SOURCES
from streamfuse.sources.base import MAX_CONSECUTIVE_DECODE_ERRORS, Capture, Source, SourceContext, SourceOptions

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
        self.unreadable = 0
        """Files skipped as unreadable (corrupt, or not an image) with a warning."""
        self._bits: int | None = None
        self._warned_of_depth = False

    def open(self) -> None:
        self.files = list_images(self.path)
        if self.stems is not None:
            wanted = set(self.stems)
            self.files = [file for file in self.files if stem_of(file) in wanted]
            missing = wanted - {stem_of(file) for file in self.files}
            if missing:
                raise SourceError(f"sources.{self.name}.stems: {self.path} has no image named "
                                  f"{', '.join(sorted(missing)[:5])}")

    def read(self) -> Capture | None:
        in_a_row = 0
        while (index := self.frames_read + self.unreadable) < len(self.files):
            file = self.files[index]
            try:
                return self._capture(index, file, read_image(file, keep_16bit=True))
            except UnreadableImageError as exc:
                if len(self.files) == 1:  # one image given: nothing else to fuse
                    raise
                in_a_row += 1
                if in_a_row >= MAX_CONSECUTIVE_DECODE_ERRORS:
                    raise SourceError(f"sources.{self.name}: {in_a_row} images in a row cannot be read, the last "
                                      f"{exc}") from None
                log.warning("sources.%s: %s; skipped", self.name, exc)
                self.unreadable += 1
                self.stats.count(f"undecodable.{self.name}")
        return None

    def _capture(self, index: int, file: Path, image: np.ndarray) -> Capture:
        """The frame of the folder's ``index``-th file (its time ``index / fps``, so that a skipped file leaves
        its partner unpaired instead of shifting every later pair)."""
        bits = image.itemsize * 8
        if self._bits is None:
            self._bits = bits
        elif bits != self._bits and not self._warned_of_depth:  # an export mix-up, or two cameras in one folder
            self._warned_of_depth = True
            log.warning("sources.%s: %s is %d-bit, the folder's first image %d-bit (%s); each is used as it is "
                        "(a 16-bit one through sources.%s.gain): check the export", self.name, file, bits, self._bits,
                        self.files[0].name, self.name)
        return Capture(image, index / self.fps, {"name": stem_of(file), "path": str(file)})

    @property
    def expected_frames(self) -> int | None:
        return len(self.files) or None

    @property
    def frames_short(self) -> int:
        return max(0, len(self.files) - self.frames_read - self.unreadable)

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
