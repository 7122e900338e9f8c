"""Local cameras opened with OpenCV (V4L2 devices on Linux)."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from streamfuse.config import CameraSourceConfig
from streamfuse.errors import SourceError, TransientSourceError
from streamfuse.registry import SOURCES
from streamfuse.sources.base import Capture, Source, SourceContext, SourceOptions

log = logging.getLogger(__name__)


class CameraSource(Source):
    """Frames from an OpenCV capture device, stamped with the host's monotonic clock.

    Args:
        name: Source name (``ir``/``vis``).
        device: A device index (``0``) or path (``/dev/video2``).
        width, height, fps: Requested capture mode (the driver may pick the nearest it supports).
        pixel_format: ``"Y16"`` for raw 16-bit gray (UVC thermal cameras; the source's gain maps it
            to 8 bits), None for the driver's default converted to BGR.
        options: Drop policy (None: ``drop_oldest``), queue size, statistics, supervision.
    """

    def __init__(self, name: str, device: int | str = 0, *, width: int | None = None,
                 height: int | None = None, fps: float | None = None, pixel_format: str | None = None,
                 options: SourceOptions | None = None) -> None:
        super().__init__(name, options=options, live=True)
        self.device = device
        self.pixel_format = pixel_format
        self.requested = {cv2.CAP_PROP_FRAME_WIDTH: width, cv2.CAP_PROP_FRAME_HEIGHT: height, cv2.CAP_PROP_FPS: fps}
        self._capture: cv2.VideoCapture | None = None

    def open(self) -> None:
        device = int(self.device) if isinstance(self.device, str) and self.device.isdigit() else self.device
        if sys.platform.startswith("linux"):
            path = Path(f"/dev/video{device}" if isinstance(device, int) else device)
            if not path.exists():  # unplugged: may come back
                raise TransientSourceError(f"sources.{self.name}.device: no camera at {path}; list cameras with "
                                  "'ls /dev/video*' (or v4l2-ctl --list-devices)")
            capture = cv2.VideoCapture(str(path), cv2.CAP_V4L2)
        else:
            capture = cv2.VideoCapture(device)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"sources.{self.name}.device: cannot open camera {self.device!r}; check that it is "
                              "connected, not used by another program, and that you may read it (group 'video')")
        if self.pixel_format == "Y16":
            capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"Y16 "))
            capture.set(cv2.CAP_PROP_CONVERT_RGB, 0)
        for prop, value in self.requested.items():
            if value is not None:
                capture.set(prop, value)
        names = {cv2.CAP_PROP_FRAME_WIDTH: "width", cv2.CAP_PROP_FRAME_HEIGHT: "height", cv2.CAP_PROP_FPS: "fps"}
        actual = {prop: capture.get(prop) for prop in names}
        differ = [f"{names[prop]} {actual[prop]:g} (asked {value:g})" for prop, value in self.requested.items()
                  if value is not None and abs(actual[prop] - value) > 0.5]
        if differ:  # the driver picked its nearest mode (OpenCV's own warning is off outside -v)
            log.warning("sources.%s: camera %r runs at %s; list the modes it supports with "
                        "'v4l2-ctl --list-formats-ext'", self.name, self.device, ", ".join(differ))
        self._capture = capture

    def read(self) -> Capture | None:
        ok, image = self._capture.read()
        if not ok:
            raise TransientSourceError(f"camera {self.device!r} stopped delivering frames")
        if self.pixel_format == "Y16":
            image = self._y16(image)
        return Capture(image, time.monotonic(), {})

    def _y16(self, image: np.ndarray) -> np.ndarray:
        """A Y16 frame as ``uint16`` (H, W): OpenCV returns it so, or as the raw buffer (one row of bytes)."""
        if image.dtype == np.uint16 and image.ndim == 2:
            return image
        width = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if image.dtype == np.uint8 and image.size == width * height * 2:
            return image.reshape(-1).view("<u2").reshape(height, width)
        raise SourceError(f"sources.{self.name}.pixel_format: camera {self.device!r} did not deliver Y16 frames "
                          f"(got {image.dtype} {image.shape}); check the formats it supports with "
                          "'v4l2-ctl --list-formats-ext' or remove pixel_format")

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    @property
    def nominal_fps(self) -> float | None:
        if self._capture is not None:
            return self._capture.get(cv2.CAP_PROP_FPS) or None
        return self.requested[cv2.CAP_PROP_FPS]

    def describe(self) -> str:
        return f"camera {self.device}"


@SOURCES.register("camera", CameraSourceConfig)
def from_config(name: str, config: CameraSourceConfig, context: SourceContext) -> CameraSource:
    """A local capture device (live)."""
    return CameraSource(name, config.device, width=config.width, height=config.height, fps=config.fps,
                        pixel_format=config.pixel_format, options=context.options(config, live=True))
