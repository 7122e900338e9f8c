"""``streamfuse probe``: what is in a video, stream or image folder; and a description of this machine."""

from __future__ import annotations

import contextlib
import os
import platform
from collections import Counter
from pathlib import Path
from typing import Any

from streamfuse.errors import SourceError, UnreadableImageError
from streamfuse.imageio import IMAGE_EXTENSIONS, image_size, is_pattern, list_images, read_image
from streamfuse.sources.video import (
    duration_s,
    frame_count,
    is_url,
    nominal_rate,
    open_container,
    pixel_aspect,
    quarter_turns,
    redact,
)


def probe(uri: str, *, frames: int = 5, count: bool = False) -> dict[str, Any]:
    """Describe ``uri``: codec, resolution, frame rate, frame count or duration, first timestamps.

    Args:
        uri: A video file, a stream URL, an image file, or a folder/glob of images.
        frames: How many frames to decode for the first timestamps.
        count: Count a video file's frames by reading all its packets (the whole file, no decoding)
            instead of taking the header's count or estimating it from the duration.

    Raises:
        SourceError: The input cannot be opened or decoded.
    """
    path = Path(uri)
    one_image = path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS
    if not is_url(uri) and (one_image or path.is_dir() or is_pattern(uri)):
        files = list_images(uri)
        first = _first_readable(files)
        report = {"input": uri, "kind": "image" if one_image else "image sequence", "frames": len(files),
                  "resolution": f"{first.shape[1]}x{first.shape[0]}",
                  "channels": 1 if first.ndim == 2 else first.shape[2],
                  "bits": first.itemsize * 8}  # 8 or 16 (through sources.<name>.gain)
        if not one_image:  # a still image has no frame rate: FFmpeg's image reader would say 25
            sizes = Counter(image_size(f) or (None, None) for f in files)
            if len(sizes) > 1:  # the first file's size is not the folder's (fuse to a video refuses such a folder)
                report["resolution"] = ", ".join(
                    f"{f'{w}x{h}' if w is not None else 'unreadable'} ({n} file{'s' if n > 1 else ''})"
                    for (w, h), n in sorted(sizes.items(), key=lambda item: -item[1]))
            report["first files"] = ", ".join(f.name for f in files[:frames])
        return report
    container = open_container(uri)
    try:
        stream = container.streams.video[0]
        rate = nominal_rate(stream)
        duration = (float(container.duration) / 1e6 if container.duration else None) if is_url(uri) else \
            duration_s(container, stream)
        timestamps, rotation = [], 0
        try:
            for frame in container.decode(stream):
                rotation = rotation or quarter_turns(frame.rotation) * 90
                timestamps.append(round(float(frame.time), 6) if frame.time is not None else None)
                if len(timestamps) >= frames:
                    break
        except Exception as exc:
            raise SourceError(f"{redact(uri)}: the video opens but its frames do not decode ({exc})") from None
        if count and not is_url(uri):
            container.seek(0)
            times = [packet.pts for packet in container.demux(stream) if packet.size]
            counted = len(times)
            stamped = [pts for pts in times if pts is not None]
            span = float((max(stamped) - min(stamped)) * stream.time_base) if len(stamped) > 1 else 0.0
        report = {
            "input": redact(uri),
            "kind": "stream" if is_url(uri) else "video file",
            "container": container.format.name,
            "codec": stream.codec_context.name,
            "resolution": f"{stream.codec_context.width}x{stream.codec_context.height}",
            "pixel format": stream.codec_context.pix_fmt,
            "frame rate": float(rate) if rate else None,
            "frames": None if is_url(uri) else counted if count else frame_count(container, stream, duration),
            "frames from": None if is_url(uri) else "counted (every packet read)" if count else
            _header_source(container, path) if stream.frames else
            "duration x frame rate (an estimate: wrong for a variable rate or a recording with pauses; "
            "--count counts them)",
            "video streams": len(container.streams.video),
            "pixel aspect": f"{aspect.numerator}:{aspect.denominator}" if (aspect := pixel_aspect(stream)) else "1:1",
            "rotation": rotation,
            "duration s": round(duration, 3) if duration else None,
            "time base": str(stream.time_base),
            "first timestamps": timestamps,
        }
        if count and not is_url(uri) and span > 0:  # from the frames' own times (a cut file keeps its header's length)
            report["average frame rate"] = round((len(stamped) - 1) / span, 3)
        return report
    finally:
        container.close()


def _header_source(container: Any, path: Path) -> str:
    """Where a frame count stated by an MP4/MOV header comes from, and whether the file holds what that header
    indexes: a file copied part of the way with its index at the front opens and states its full count."""
    rates = [stream.bit_rate for stream in container.streams]
    if "mov" not in container.format.name or not container.duration or not all(rates):
        return "the header"
    indexed = sum(rates) * container.duration / 1e6 / 8  # the bytes of all the samples the index lists
    share = path.stat().st_size / indexed
    if share >= 0.95:
        return "the header"
    return (f"the header, but the file holds only about {share:.0%} of the data its index lists (copied part of "
            "the way, or cut off?); --count counts the frames it holds")


def _first_readable(files: list[Path]) -> Any:
    """The first of ``files`` that reads (as 8 or 16 bits): a damaged first file is skipped, as sources skip it.

    Raises:
        UnreadableImageError: None of them reads (the last one's error).
    """
    for path in files[:-1]:
        with contextlib.suppress(UnreadableImageError):
            return read_image(path, keep_16bit=True)
    return read_image(files[-1], keep_16bit=True)


def describe_machine() -> dict[str, Any]:
    """CPU model and core count (and GPU name when torch sees one), for benchmark reports."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": cores, "python": platform.python_version(), "platform": platform.platform()}
