"""Helpers for tests that write and read real video files with PyAV."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_video(path: Path, frames: list[np.ndarray], fps: int = 25, codec: str = "libx264",
                gop: int | None = None, start_s: float = 0.0, *, times: list[float] | None = None,
                rotation: int = 0, pixel_aspect: Fraction | None = None) -> Path:
    """Encode BGR or gray ``uint8`` frames into a video file (a keyframe every ``gop`` frames if given; the
    first frame's timestamp at ``start_s``, as a recorder that keeps a camera's clock writes it; or each
    frame at its ``times`` in seconds: a variable rate, pauses). ``rotation``: the display rotation the file
    states (degrees counter-clockwise); ``pixel_aspect``: its sample aspect ratio."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.height, stream.width = frames[0].shape[:2]
        if rotation:
            stream.set_display_rotation(rotation)
        if pixel_aspect is not None:
            stream.codec_context.sample_aspect_ratio = pixel_aspect
        if gop is not None:
            stream.codec_context.gop_size = gop
            stream.options = {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        stream.pix_fmt = "yuv420p"
        first = round(start_s * fps)
        for index, image in enumerate(frames):
            fmt = "gray" if image.ndim == 2 else "bgr24"
            frame = av.VideoFrame.from_ndarray(image, format=fmt)
            if times is not None:
                frame.pts, frame.time_base = round(times[index] * 1000), Fraction(1, 1000)
            elif first:
                frame.pts, frame.time_base = first + index, Fraction(1, fps)
            container.mux(stream.encode(frame))
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


def write_png_mov(path: Path, frames: int, broken: tuple[int, ...] = ()) -> Path:
    """PNG frames in a MOV; the frames ``broken`` get their PNG signature destroyed (the decoder cannot conceal it)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("png", rate=25)
        stream.height, stream.width, stream.pix_fmt = 48, 64, "rgb24"
        for i in range(frames):
            image = np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        container.mux(stream.encode(None))
    data = bytearray(path.read_bytes())
    starts = [m.start() for m in re.finditer(b"\x89PNG\r\n\x1a\n", bytes(data))]
    for index in broken:
        data[starts[index]:starts[index] + 8] = b"garbage!"
    path.write_bytes(bytes(data))
    return path
