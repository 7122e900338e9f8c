"""Helpers for tests that write and read real video files with PyAV."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_video(path: Path, frames: list[np.ndarray], fps: int = 25, codec: str = "libx264") -> Path:
    """Encode BGR or gray ``uint8`` frames into a video file."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for image in frames:
            fmt = "gray" if image.ndim == 2 else "bgr24"
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format=fmt)))
        container.mux(stream.encode(None))
    return path


def read_video(path: Path) -> tuple[list[np.ndarray], list[float]]:
    """Decode every frame (BGR) and its presentation time in seconds."""
    images, times = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            images.append(frame.to_ndarray(format="bgr24"))
            times.append(float(frame.time))
    return images, times
