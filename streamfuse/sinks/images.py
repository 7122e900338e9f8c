"""Write fused frames as numbered PNG files."""

from __future__ import annotations

import glob
import logging
import re
import string
import tempfile
from pathlib import Path

import cv2

from streamfuse.config import ImagesSinkConfig
from streamfuse.errors import SinkError
from streamfuse.frames import FusedFrame
from streamfuse.registry import SINKS
from streamfuse.sinks.base import Sink, SinkContext, overwrite_hint
from streamfuse.stats import PipelineStats

#: Image formats with a single channel: a colour fused frame is written as its luminance.
GRAY_ONLY_EXTENSIONS = (".pgm",)

log = logging.getLogger(__name__)


def _digits(spec: str | None) -> str:
    """The regular expression of a number formatted with ``spec`` (``06d``: at least six digits; ``6d`` pads with
    spaces)."""
    padded = re.fullmatch(r"0(\d+)d", spec or "")
    return rf"-?\d{{{max(1, int(padded.group(1)))},}}" if padded else r" *-?\d+"


class ImagesSink(Sink):
    """Writes each fused frame as an image file in a folder.

    Args:
        path: Output folder (created if missing).
        pattern: File name pattern with fields ``index``, ``seq`` and ``name`` (the primary input's
            file stem when the input is a folder of images, otherwise the index). The extension
            picks the format (.png by default).
        overwrite: Replace existing files of the same name.
        key: Config key path used in error messages.
        queue_size: Fused frames buffered for this sink (the fusion thread waits when it is full).
        stats: Where write latency is recorded.
    """

    stage = "write"

    def __init__(self, path: str | Path, *, pattern: str = "{index:06d}.png", overwrite: bool = False,
                 key: str = "sinks.images", queue_size: int = 16,
                 stats: PipelineStats | None = None) -> None:
        super().__init__(queue_size=queue_size, stats=stats)
        self.path = Path(path)
        self.pattern = pattern
        self.overwrite = overwrite
        self.key = key
        self._last_written: Path | None = None
        self._not_replaced: set[Path] = set()
        """Files of an earlier run that this run's frames have not replaced (yet)."""

    def describe(self) -> str:
        return f"image sink {self.path}"

    def open(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise SinkError(f"{self.key}.path: {self.path} is a file; the images sink writes into a folder")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"{self.key}.path: cannot create folder {self.path} ({exc.strerror})") from None
        try:  # find out now, not at the first frame
            tempfile.TemporaryFile(dir=self.path).close()
        except OSError as exc:
            raise SinkError(f"{self.key}.path: cannot write into {self.path} ({exc.strerror}); choose a place you "
                            "may write to") from None
        earlier = self._earlier_frames()
        if earlier and not self.overwrite:
            raise SinkError(f"{self.key}: {self.path} already holds {len(earlier)} file(s) named like "
                            f"{self.pattern!r} ({earlier[0].name}, ...); choose another folder, move them away or "
                            f"{overwrite_hint(self.key)}")
        self._not_replaced = set(earlier)

    def _earlier_frames(self) -> list[Path]:
        """Files in the folder already named like a numbered pattern (an earlier run's frames). Without
        ``overwrite`` they are refused before any output is written: the run would stop at the first name it
        meets, with other outputs replaced. (Names from ``{name}`` depend on the input, and ``fuse`` checks
        those itself; a fixed name is checked as it is written.)"""
        parts = list(string.Formatter().parse(self.pattern))
        fields = [name for _, name, _, _ in parts if name is not None]
        if "name" in fields or not fields:
            return []
        shape = "".join(glob.escape(text) + ("*" if name is not None else "") for text, name, _, _ in parts)
        # Numbers as the pattern writes them ({index:06d}: six digits or more): not any file of that extension.
        names = re.compile("".join(re.escape(text) + (_digits(spec) if name is not None else "")
                                   for text, name, spec, _ in parts))
        return sorted(path for path in self.path.glob(shape) if names.fullmatch(path.relative_to(self.path).as_posix()))

    def file_for(self, frame: FusedFrame) -> Path:
        """The output path of ``frame``."""
        name = frame.pair.timed_by.meta.get("name", f"{frame.index:06d}")
        return self.path / self.pattern.format(index=frame.index, seq=frame.pair.seq, name=name)

    def write(self, frame: FusedFrame) -> None:
        target = self.file_for(frame)
        if target == self._last_written:  # a pattern without a field: one file, each frame replacing the last
            raise SinkError(f"{self.key}.pattern: {self.pattern!r} gives every frame the same file name ({target}); "
                            "put {index}, {seq} or {name} in it (e.g. {index:06d}.png)")
        if target.exists() or target.is_symlink():
            if not self.overwrite:
                raise SinkError(f"{self.key}: {target} already exists; choose another folder or "
                                f"{overwrite_hint(self.key)}")
            try:  # a new file in its place: written through, a (hard or symbolic) link's target would change
                target.unlink()
            except OSError as exc:
                raise SinkError(f"{self.key}: cannot replace {target} ({exc.strerror})") from None
        if target.parent != self.path:  # a pattern with sub-folders
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SinkError(f"{self.key}: cannot create folder {target.parent} ({exc.strerror})") from None
        image = frame.image
        if image.ndim == 3 and target.suffix.lower() in GRAY_ONLY_EXTENSIONS:  # PGM holds one channel: the luminance
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if not cv2.imwrite(str(target), image):
            raise SinkError(f"{self.key}: could not write {target} ({_why_not_written(target)})")
        self._last_written = target
        self._not_replaced.discard(target)

    def close(self) -> None:
        """Every file is complete when written; says so when an earlier run's frames remain beside this run's."""
        if self._not_replaced:
            left = sorted(self._not_replaced)
            log.warning("%s: %d file(s) of an earlier run are still there (%s, ...), named like this run's: "
                        "overwrite replaces the files it writes and deletes none", self.describe(), len(left),
                        left[0].name)


def _why_not_written(target: Path) -> str:
    """Why OpenCV could not write ``target`` (it only says that it failed)."""
    existed = target.exists()
    try:
        with target.open("ab"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    if not existed:
        target.unlink(missing_ok=True)
    return "unknown image extension or disk full"


@SINKS.register("images", ImagesSinkConfig)
def from_config(config: ImagesSinkConfig, context: SinkContext) -> ImagesSink:
    """A folder of image files."""
    return ImagesSink(config.path, pattern=config.pattern, overwrite=config.overwrite, key=context.key,
                      queue_size=config.queue_size, stats=context.stats)
