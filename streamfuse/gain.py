"""Automatic gain control: 16-bit frames (radiometric or raw thermal cameras) to the pipeline's 8 bits.

A 14-bit thermal camera sends values such as 7000-11080. Scaling the whole 16-bit range to 8 bits
(dividing by 257) leaves 17 grey levels and a warm person a few levels above the background; the
fusion then sees a flat thermal image. :class:`AutoGain` maps a *range* of raw values to 0-255
instead:

- ``percentile`` (default): the range between two percentiles of each frame (0.1 % and 99.9 %) after a
  3x3 median, so hot or dead pixels, and hot or dead columns or rows one pixel wide, do not set it
  while a warm person covering 1 % of the view keeps its detail.
  Over a video the range is smoothed (an exponential moving average whose ends move by at most
  ``max_change`` of the range per frame), so a warm object entering the view dims the background
  gradually instead of making the image jump from frame to frame ("pumping"); a scene cut (most
  pixels changing at once) restarts it.
- ``fixed``: a configured raw range, the same for every frame.
- ``radiometric``: a temperature span, for cameras whose values are temperatures (``counts_per_kelvin``
  raw units per kelvin).

When a frame uses fewer than ``min_levels`` grey levels after the gain (a range much wider than the
scene, or a nearly flat sensor), a warning says so once per source.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from streamfuse.config import GainConfig

log = logging.getLogger(__name__)

#: Zero degrees Celsius in kelvin.
KELVIN_AT_0C = 273.15

#: Pixels sampled for the percentiles and the scene-cut test: every STRIDE-th row and column.
_STRIDE = 4


def percentile_range(image: np.ndarray, low: float = 0.1, high: float = 99.9) -> tuple[float, float]:
    """The ``low`` and ``high`` percentiles of a 16-bit image's values, as ``(low, high)``: of a 3x3 median of
    the image (sampled on a grid), so that single defective pixels, and defective columns or rows one pixel
    wide, do not count (one dead column is 0.16 % of a 640x512 sensor: it set the low end)."""
    cleaned = cv2.medianBlur(image, 3) if min(image.shape[:2]) >= 3 else image
    sample = cleaned[::_STRIDE, ::_STRIDE] if min(image.shape[:2]) >= 16 * _STRIDE else cleaned
    counts = np.cumsum(np.bincount(sample.ravel(), minlength=1))
    total = counts[-1]
    lo = int(np.searchsorted(counts, total * low / 100.0, side="left"))
    hi = int(np.searchsorted(counts, total * high / 100.0, side="left"))
    return float(lo), float(max(hi, lo + 1))


def apply_range(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map raw values ``low..high`` linearly to 0..255 (clipped), as ``uint8``."""
    lut = np.clip((np.arange(65536, dtype=np.float32) - low) * (255.0 / (high - low)) + 0.5, 0, 255)
    return lut.astype(np.uint8)[image]


def stretch(image: np.ndarray) -> np.ndarray:
    """One 16-bit image to 8 bits over its 0.1-99.9 percentile range (still images; no temporal state)."""
    return apply_range(image, *percentile_range(image))


def grey_levels(image: np.ndarray) -> int:
    """How many distinct grey levels an 8-bit image uses."""
    return int(np.count_nonzero(np.bincount(image.ravel(), minlength=256)))


class AutoGain:
    """The gain of one source: call it on each frame, in order; 8-bit frames are returned as they are.

    Args:
        config: The source's ``gain`` section.
        name: The source name, for the warning (``sources.<name>.gain``).
    """

    def __init__(self, config: GainConfig, name: str) -> None:
        self.config = config
        self.name = name
        self.range: tuple[float, float] | None = None
        """The raw range the last frame was mapped with."""
        self.scene_cuts = 0
        """Times the percentile range restarted because the scene changed."""
        self._previous: np.ndarray | None = None
        self._warned = False
        self.frames = 0
        """16-bit frames seen (the warning names the frame it fired on, counting from 0)."""

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """``image`` in 8 bits: ``uint16`` frames through the gain, ``uint8`` unchanged."""
        if image.dtype == np.uint8:
            return image
        if image.dtype != np.uint16:
            raise ValueError(f"sources.{self.name}: unsupported pixel type {image.dtype} (expected 8 or 16 bits)")
        self.range = self._next_range(image)
        out = apply_range(image, *self.range)
        self.frames += 1
        if not self._warned and grey_levels(out) < self.config.min_levels:
            self._warned = True
            low, high = self.range
            advice = ("the scene fills a small part of the range between the percentiles: pixels outside the "
                      "scene's values (a defect wider than one pixel, a hot lamp) set an end; narrow "
                      f"sources.{self.name}.gain.percentiles or use mode fixed" if self.config.mode == "percentile"
                      else f"check sources.{self.name}.gain ({self.config.mode} range wider than the scene?; mode "
                      "percentile adapts to each frame)")
            log.warning("sources.%s: the 16-bit frames keep only %d grey levels after the gain (%s range %.0f-%.0f, "
                        "frame %d); warm targets may vanish: %s", self.name, grey_levels(out), self.config.mode, low,
                        high, self.frames - 1, advice)
        return out

    def _next_range(self, image: np.ndarray) -> tuple[float, float]:
        config = self.config
        if config.mode == "fixed":
            return float(config.range[0]), float(config.range[1])
        if config.mode == "radiometric":
            coldest, hottest = config.span_c
            return ((coldest + KELVIN_AT_0C) * config.counts_per_kelvin,
                    (hottest + KELVIN_AT_0C) * config.counts_per_kelvin)
        measured = percentile_range(image, *config.percentiles)
        if config.smoothing == 0:  # each frame's own range (still images)
            return measured
        sample = image[::_STRIDE, ::_STRIDE].astype(np.int32)
        previous, self._previous = self._previous, sample
        if self.range is None or previous is None or previous.shape != sample.shape:
            return measured
        if self._scene_cut(previous, sample):
            self.scene_cuts += 1
            log.debug("sources.%s: scene cut, gain range restarts", self.name)
            return measured
        keep, step = config.smoothing, config.max_change * (self.range[1] - self.range[0])
        return tuple(float(np.clip(keep * old + (1 - keep) * new, old - step, old + step))
                     for old, new in zip(self.range, measured, strict=True))

    def _scene_cut(self, previous: np.ndarray, current: np.ndarray) -> bool:
        """True when most sampled pixels changed by more than a quarter of the current range."""
        quarter = (self.range[1] - self.range[0]) / 4
        changed = np.count_nonzero(np.abs(current - previous) > quarter)
        return changed > self.config.scene_cut * current.size
