"""Typed configuration: YAML in, dataclasses out, errors that name the key.

A config file is the user interface of a deployment. :func:`load_config` reads it with
:func:`parse_yaml` (safe YAML, numbers like ``1e3`` read as numbers), substitutes ``${ENV_VAR}`` (or
``${ENV_VAR:-default}``) in strings, applies ``--set key.path=value`` overrides and builds the dataclasses
below. Every mistake is reported as one :class:`~streamfuse.errors.ConfigError` line that starts with the
key path, for example ``sources.ir.uri: expected a string, got 5``.

Sources and sinks are tagged unions: the ``type`` key picks the dataclass.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
import yaml

from streamfuse.errors import ConfigError
from streamfuse.registry import REGISTRATIONS, SINKS, SOURCES, Registry

log = logging.getLogger(__name__)

DropPolicy = Literal["wait", "drop_oldest"]


# --------------------------------------------------------------------------------------------- sources
@dataclass
class ReconnectConfig:
    """How a live source survives a camera that drops, stalls or restarts (see docs/live.md)."""

    enabled: bool | None = None
    """Rebuild the source after a disconnect or stall; null: on for stream URLs and cameras, off for
    files, folders and the synthetic scene (whose end is the end of the run)."""
    open_timeout_s: float = 5.0
    """Give up one connection attempt after this long (a camera that is down, a hanging connect)."""
    stall_timeout_s: float = 2.0
    """No frame for this long on a running source is a stall: the watchdog counts it and the source reconnects."""
    grace_s: float = 5.0
    """After each (re)start, time allowed for the first frame before the watchdog calls it a stall."""
    backoff_initial_s: float = 0.25
    backoff_max_s: float = 2.0
    """Retry delays double from ``backoff_initial_s`` up to this cap (then +-``jitter`` at random)."""
    jitter: float = 0.2
    max_attempts: int | None = None
    """Consecutive failed attempts before the source is declared failed; null: retry forever."""

    def _check(self, path: str) -> None:
        for name in ("open_timeout_s", "stall_timeout_s", "backoff_initial_s", "backoff_max_s"):
            _positive(getattr(self, name), f"{path}.{name}")
        if self.grace_s < 0:
            raise ConfigError(f"{path}.grace_s: must be >= 0, got {self.grace_s}")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ConfigError(f"{path}.backoff_max_s: must be >= backoff_initial_s ({self.backoff_initial_s}), "
                              f"got {self.backoff_max_s}")
        if not 0 <= self.jitter < 1:
            raise ConfigError(f"{path}.jitter: must be in [0, 1), got {self.jitter}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ConfigError(f"{path}.max_attempts: must be at least 1 (or null for forever), got {self.max_attempts}")


@dataclass
class GainConfig:
    """How a source's 16-bit frames (radiometric or raw thermal cameras) become the pipeline's 8 bits.

    8-bit frames pass through unchanged. See :mod:`streamfuse.gain`.
    """

    mode: Literal["percentile", "fixed", "radiometric"] = "percentile"
    """``percentile``: automatic, the robust range of each frame (smoothed over time); ``fixed``: the
    raw values ``range`` map to 0-255; ``radiometric``: the temperatures ``span_c`` do."""
    percentiles: list[float] = field(default_factory=lambda: [0.1, 99.9])
    """``percentile`` mode: the low and high percentile of a frame's values that map to 0 and 255 (a
    warm target is often under 1 % of the view: a tighter high percentile would clip it flat)."""
    range: list[float] | None = None
    """``fixed`` mode: ``[low, high]`` raw values mapped to 0 and 255."""
    span_c: list[float] | None = None
    """``radiometric`` mode: ``[coldest, hottest]`` temperature in degrees Celsius mapped to 0 and 255."""
    counts_per_kelvin: float = 100.0
    """``radiometric`` mode: raw value per kelvin (100 for cameras that send centikelvin, e.g. FLIR TLinear)."""
    smoothing: float = 0.95
    """``percentile`` mode: weight of the previous frames' range in each frame's range (0: each frame's
    own range, ``max_change`` then does not apply: ``fuse`` uses it for images; higher: steadier, slower to
    adapt). A scene cut restarts it."""
    max_change: float = 0.02
    """``percentile`` mode: the most each end of the range moves per frame, as a share of the range (a
    warm object entering the view then dims the background gradually instead of at once)."""
    scene_cut: float = 0.5
    """``percentile`` mode: share of pixels that must change by more than a quarter of the range for a
    frame to count as a new scene (the range then restarts from that frame)."""
    min_levels: int = 64
    """Warn when a frame uses fewer grey levels than this after the gain."""

    def _check(self, path: str) -> None:
        if self.mode == "percentile":
            if len(self.percentiles) != 2 or not 0 <= self.percentiles[0] < self.percentiles[1] <= 100:
                raise ConfigError(f"{path}.percentiles: expected [low, high] with 0 <= low < high <= 100, "
                                  f"got {self.percentiles}")
        elif self.mode == "fixed":
            if self.range is None or len(self.range) != 2 or not self.range[0] < self.range[1]:
                raise ConfigError(f"{path}.range: mode 'fixed' needs [low, high] raw values with low < high, "
                                  f"got {self.range}")
        elif self.span_c is None or len(self.span_c) != 2 or not self.span_c[0] < self.span_c[1]:
            raise ConfigError(f"{path}.span_c: mode 'radiometric' needs [coldest, hottest] in degrees Celsius, "
                              f"got {self.span_c}")
        for key, mode in (("range", "fixed"), ("span_c", "radiometric")):
            if getattr(self, key) is not None and self.mode != mode:  # set, and silently ignored
                raise ConfigError(f"{path}.{key}: applies to mode '{mode}' only, and the mode is '{self.mode}': set "
                                  f"{path}.mode to {mode}, or leave {key} out")
        _positive(self.counts_per_kelvin, f"{path}.counts_per_kelvin")
        if not 0.0 <= self.smoothing < 1.0:
            raise ConfigError(f"{path}.smoothing: must be in [0, 1), got {self.smoothing}")
        _positive(self.max_change, f"{path}.max_change")
        if not 0.0 < self.scene_cut <= 1.0:
            raise ConfigError(f"{path}.scene_cut: must be in (0, 1], got {self.scene_cut}")
        if not 2 <= self.min_levels <= 256:
            raise ConfigError(f"{path}.min_levels: must be between 2 and 256, got {self.min_levels}")


@dataclass
class SourceConfig:
    """Options every source has; each kind subclasses it with a ``type`` tag (see :mod:`streamfuse.registry`)."""

    drop_policy: DropPolicy | None = None
    """``wait`` never drops (files, folders); ``drop_oldest`` keeps the freshest (live). None: by type."""
    queue_size: int | None = None
    """Frames buffered between the capture thread and the sync stage; null: 8 (wait) or 2 (drop_oldest)."""
    time_offset_ms: float = 0.0
    """Added to this source's timestamps before pairing (positive = this camera's clock is behind)."""
    reconnect: ReconnectConfig = field(default_factory=ReconnectConfig)
    gain: GainConfig = field(default_factory=GainConfig)
    """How 16-bit frames become 8-bit (thermal cameras); 8-bit frames are not touched."""

    def _check(self, path: str) -> None:
        if self.queue_size is not None and self.queue_size < 1:
            raise ConfigError(f"{path}.queue_size: must be at least 1, got {self.queue_size}")


@dataclass
class SyntheticSourceConfig(SourceConfig):
    """One camera of the procedural scene described by the top-level ``synthetic`` section."""

    type: Literal["synthetic"] = "synthetic"
    fps: float = 30.0
    frames: int | None = None
    """Number of frames to produce; None runs until stopped."""
    realtime: bool = True
    """Pace frames at ``fps`` like a live camera; false renders as fast as the pipeline consumes."""

    def _check(self, path: str) -> None:
        super()._check(path)
        _positive(self.fps, f"{path}.fps")
        if self.frames is not None and self.frames < 1:
            raise ConfigError(f"{path}.frames: must be at least 1 (or null for endless), got {self.frames}")


@dataclass
class VideoSourceConfig(SourceConfig):
    """A video file or stream URL opened with PyAV (mp4, mkv, avi, rtsp://, http://)."""

    type: Literal["video"] = "video"
    uri: str = ""
    realtime: bool = False
    """Pace a file at its own frame rate (live URLs are paced by the camera anyway)."""

    def _check(self, path: str) -> None:
        super()._check(path)
        if not self.uri:
            raise ConfigError(f"{path}.uri: missing required value (a file path or stream URL)")


@dataclass
class ImagesSourceConfig(SourceConfig):
    """A folder of frames (sorted naturally by name) or a glob pattern, played at ``fps``."""

    type: Literal["images"] = "images"
    path: str = ""
    stems: list[str] | None = None
    """Read only the files with these names (without suffix); null: every image of ``path``."""
    fps: float = 25.0
    realtime: bool = False

    def _check(self, path: str) -> None:
        super()._check(path)
        if not self.path:
            raise ConfigError(f"{path}.path: missing required value (a folder or a glob such as 'ir/*.png')")
        _positive(self.fps, f"{path}.fps")


@dataclass
class CameraSourceConfig(SourceConfig):
    """A local camera opened with OpenCV: an index (0) or a device path (/dev/video2)."""

    type: Literal["camera"] = "camera"
    device: int | str = 0
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    pixel_format: Literal["Y16"] | None = None
    """``Y16``: ask the driver for raw 16-bit gray (UVC thermal cameras) and keep the 16 bits for
    ``gain``; null: the driver's default, converted to 8-bit BGR by OpenCV."""




@dataclass
class SourcesConfig:
    """The two cameras."""

    ir: SourceConfig = field(default_factory=SyntheticSourceConfig)
    vis: SourceConfig = field(default_factory=SyntheticSourceConfig)


#: Largest side of the synthetic cameras' frames (8K): beyond it a frame no longer fits in memory.
MAX_SYNTHETIC_SIDE = 8192
#: Most people (and vehicles) in the synthetic scene: a crowd for a test, not a slideshow.
MAX_SYNTHETIC_OBJECTS = 1000


@dataclass
class SyntheticConfig:
    """The procedural scene shared by ``synthetic`` sources (see :mod:`streamfuse.sources.synthetic`)."""

    width: int = 640
    height: int = 512
    seed: int = 0
    time_of_day: Literal["day", "night"] = "day"
    fog: float = 0.0
    noise: float = 0.0
    people: int = 4
    vehicles: int = 2
    ir_size: list[int] | None = None
    """``[width, height]`` of the infrared camera; null = same as visible."""
    ir_homography: list[list[float]] | None = None
    """Ground-truth 3x3 misalignment mapping infrared pixels onto the visible grid."""

    def _check(self, path: str) -> None:  # the scene's own limits, so that a bad value is a config error
        if self.width < 32 or self.height < 32:
            raise ConfigError(f"{path}: width and height must be at least 32, got {self.width}x{self.height}")
        if self.width > MAX_SYNTHETIC_SIDE or self.height > MAX_SYNTHETIC_SIDE:
            raise ConfigError(f"{path}: width and height must be at most {MAX_SYNTHETIC_SIDE} (8K), got "
                              f"{self.width}x{self.height}")
        for name in ("seed", "people", "vehicles"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{path}.{name}: must not be negative, got {getattr(self, name)}")
        for name in ("people", "vehicles"):  # each is drawn in every frame of both cameras
            if getattr(self, name) > MAX_SYNTHETIC_OBJECTS:
                raise ConfigError(f"{path}.{name}: at most {MAX_SYNTHETIC_OBJECTS}, got {getattr(self, name)}")
        for name in ("fog", "noise"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{path}.{name}: must be between 0 and 1, got {value}")
        if self.ir_size is not None and (len(self.ir_size) != 2 or min(self.ir_size) < 16):
            raise ConfigError(f"{path}.ir_size: expected [width, height] of at least 16, got {self.ir_size}")
        if self.ir_homography is not None:
            check_homography(self.ir_homography, f"{path}.ir_homography")


# ------------------------------------------------------------------------------------ other stages
@dataclass
class SyncConfig:
    """Pairing of infrared and visible frames by timestamp."""

    primary: Literal["vis", "ir"] = "vis"
    """Each primary frame is paired with the nearest frame of the other source."""
    tolerance_ms: float | None = None
    """A primary frame with no partner within this skew is dropped (and counted as unpaired); null:
    three quarters of the slower camera's frame interval (83 ms for a 9 fps thermal camera), 40 ms
    when neither camera states its rate."""
    on_camera_loss: Literal["pause", "passthrough"] = "pause"
    """While one camera is reconnecting: ``pause`` publishes nothing; ``passthrough`` publishes the
    surviving camera's frames, marked ``"mode": "passthrough_ir"`` / ``"passthrough_vis"``."""

    def _check(self, path: str) -> None:
        if self.tolerance_ms is not None and self.tolerance_ms < 0:
            raise ConfigError(f"{path}.tolerance_ms: must be >= 0, got {self.tolerance_ms}")


@dataclass
class RegistrationConfig:
    """How the infrared frame is mapped onto the visible image grid."""

    mode: str | None = None
    """A registered registration method: ``identity``, ``resize`` or ``homography``; None picks
    ``homography`` when a matrix is given, else ``identity``."""
    matrix: list[list[float]] | None = None
    """3x3 homography mapping infrared pixel coordinates to visible pixel coordinates."""
    calibration: str | None = None
    """A calibration file written by ``streamfuse calibrate``; its ``matrix`` is used (instead of
    ``matrix``, which must then be absent)."""
    refine_every_s: float | None = None
    """Online refinement (off when None): re-estimate from live frames every this many seconds in a
    background thread, and move toward an accepted estimate (see docs/registration.md)."""
    refine_pairs: int = 4
    """Frame pairs (spread over the interval) each re-estimate uses."""
    refine_max_change_px: float = 10.0
    """An accepted estimate further than this (mean px over the image) from the current transform
    is not applied (a moved camera needs a new calibration)."""
    refine_smoothing: float = 0.5
    """How far (0-1] toward an accepted estimate each update moves."""

    @property
    def method(self) -> str:
        """``mode``, or when it is None the one it implies."""
        calibrated = self.matrix is not None or self.calibration is not None
        return self.mode or ("homography" if calibrated else "identity")

    def _check(self, path: str) -> None:
        if self.calibration is not None:
            if self.matrix is not None:
                raise ConfigError(f"{path}.matrix: give either matrix or calibration (a file), not both")
            self.matrix = read_calibration(self.calibration, f"{path}.calibration").tolist()
        self.mode = self.method
        if self.refine_every_s is not None:
            _positive(self.refine_every_s, f"{path}.refine_every_s")
            _positive(self.refine_max_change_px, f"{path}.refine_max_change_px")
            if self.refine_pairs < 1:
                raise ConfigError(f"{path}.refine_pairs: must be at least 1, got {self.refine_pairs}")
            if not 0 < self.refine_smoothing <= 1:
                raise ConfigError(f"{path}.refine_smoothing: must be in (0, 1], got {self.refine_smoothing}")
        REGISTRATIONS.find(self.mode, key=f"{path}.mode", message="expected one of {names}; got {name!r}")
        if self.mode == "homography":
            if self.matrix is None:
                raise ConfigError(f"{path}.matrix: required when mode is 'homography' (a 3x3 list of numbers)")
            check_homography(self.matrix, f"{path}.matrix")
        elif self.matrix is not None:
            given = f"{path}.calibration" if self.calibration is not None else f"{path}.matrix"
            raise ConfigError(f"{given}: only used with mode 'homography' (mode is '{self.mode}')")


#: Most frames one forward pass may take (the worker preallocates buffers of ``max_batch`` frames).
MAX_BATCH = 64


@dataclass
class FusionConfig:
    """Which fuser combines each pair."""

    fuser: str = "model"
    """A registered fuser name: ``model`` (the text-guided network) or ``classical``."""
    weights: str | None = None
    """Checkpoint of the ``model`` fuser; null uses the weights shipped in the package."""
    device: str = "auto"
    """Where the ``model`` fuser runs: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``."""
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    """Network precision: ``auto`` = fp16 on CUDA, fp32 on the CPU."""
    max_batch: int = 1
    """Frames per forward pass when several streams share the worker (1 to :data:`MAX_BATCH`)."""
    max_wait_ms: float = 4.0
    """Longest a frame waits for its batch to fill."""
    cuda_graphs: bool = True
    """Replay CUDA graphs for fixed frame sizes (GPU only)."""
    threads: int | None = None
    """Torch CPU threads for the ``model`` fuser; null = all cores but one (the pipeline's other threads need it).
    Process-wide: applied by :func:`streamfuse.runtime.setup_runtime` (the CLI calls it)."""
    temporal_smoothing: float = 0.5
    """Video: weight of the previous frame in the ``model`` fuser's per-pixel decisions (0 = none);
    steadies the output of a steady scene, restarts at scene cuts. Per stream, in the inference worker
    on the CPU and the GPU alike."""

    def _check(self, path: str) -> None:
        if not 0.0 <= self.temporal_smoothing < 1.0:
            raise ConfigError(f"{path}.temporal_smoothing: must be in [0, 1), got {self.temporal_smoothing}")
        if not (self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device)):
            raise ConfigError(f"{path}.device: expected auto, cpu, cuda or cuda:N, got {self.device!r}")
        if not 1 <= self.max_batch <= MAX_BATCH:
            raise ConfigError(f"{path}.max_batch: must be 1 to {MAX_BATCH} (frames per forward pass, one per stream "
                              f"sharing the worker; its buffers hold that many frames), got {self.max_batch}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"{path}.threads: must be at least 1, got {self.threads}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"{path}.max_wait_ms: must not be negative, got {self.max_wait_ms}")


# ---------------------------------------------------------------------------------------------- sinks
@dataclass
class SinkConfig:
    """Base of the sink sections; each kind subclasses it with a ``type`` tag (see :mod:`streamfuse.registry`).

    Every kind has a ``queue_size`` (fused frames waiting for it), checked here.
    """

    def _check(self, path: str) -> None:
        if self.queue_size < 1:
            raise ConfigError(f"{path}.queue_size: must be at least 1, got {self.queue_size}")


#: The image files streamfuse reads (sources, ``fuse``) and writes (the images sink, ``fuse``).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")

#: x264's speed presets (the video sink's ``preset``), fastest first.
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")

#: The containers a video sink writes: they hold H.264 / FFV1 / MPEG-4 with capture timestamps. AVI and WebM
#: are read but not written (AVI stores a frame rate, not timestamps: players showed 1000 fps; WebM needs VP8/VP9).
OUTPUT_VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".m4v", ".ts")
#: The containers that carry a codec as video, where not all of them do: FFmpeg refuses FFV1 in MOV and M4V
#: and stores it in MPEG-TS as a data stream that nothing plays.
CODEC_CONTAINERS = {"ffv1": (".mkv", ".mp4")}


def codec_container_problem(codec: str, path: str | Path) -> str | None:
    """Why a ``codec`` video cannot be written to ``path`` (by its extension), or None when it can."""
    suffix = Path(path).suffix.lower()
    containers = CODEC_CONTAINERS.get(codec)
    if containers is None or suffix not in OUTPUT_VIDEO_EXTENSIONS or suffix in containers:
        return None
    return f"a {suffix} file cannot hold {codec} video; end the path in {' or '.join(containers)}"


@dataclass
class VideoSinkConfig(SinkConfig):
    """Encode the fused frames into a video file with PyAV."""

    type: Literal["video"] = "video"
    path: str = ""
    codec: Literal["h264", "ffv1", "mpeg4"] = "h264"
    """``h264`` (yuv420p, plays in browsers), ``ffv1`` (lossless; .mkv or .mp4 only) or ``mpeg4``."""
    crf: int = 23
    """H.264 quality (lower = better, larger files)."""
    preset: str = "veryfast"
    """x264 speed preset (``h264`` only): ultrafast ... placebo."""
    overwrite: bool = False
    fragmented: bool = True
    """MP4/MOV/M4V only: write a fragmented MP4 (a fragment per keyframe interval), which plays up to
    its last fragment even after a crash or power loss and keeps no growing index in memory. false
    writes a classic MP4, whose index is written on close (a killed process leaves no playable file)."""
    queue_size: int = 16
    segment_minutes: float | None = None
    """Start a new file every this many minutes of video (null: one file). For long live runs: each
    finished segment is complete and playable and stays a manageable size. File
    names: ``path`` with ``{segment}`` (0, 1, ...) and strftime codes (``%Y%m%d-%H%M%S``, local
    time at the segment's start) filled in; without either, ``-00000``, ``-00001``, ... go before the suffix."""
    resume_free_mb: float = 100.0
    """After the disk filled up (recording suspended, other outputs still running), recording resumes
    in a new file (the next segment name) once the folder has this much free space (MB)."""
    max_segments: int | None = None
    """With ``segment_minutes``: keep at most this many of this run's segments, deleting the oldest
    (a ring); null keeps all."""
    max_mb: float | None = None
    """With ``segment_minutes``: keep this run's finished segments within this many MB, deleting the
    oldest (the one being written comes on top); null: no limit. With either limit, the oldest are
    also deleted while less than ``resume_free_mb`` is free when a segment starts, and a full disk
    deletes them until it is, instead of waiting."""

    def _check(self, path: str) -> None:
        super()._check(path)
        if not self.path:
            raise ConfigError(f"{path}.path: missing required value (the output video file)")
        if Path(self.path).suffix.lower() not in OUTPUT_VIDEO_EXTENSIONS:
            raise ConfigError(f"{path}.path: {self.path}: not a video file streamfuse writes; end it in one of "
                              f"{', '.join(OUTPUT_VIDEO_EXTENSIONS)}")
        problem = codec_container_problem(self.codec, self.path)
        if problem:
            raise ConfigError(f"{path}.codec: {problem} (or choose codec h264 or mpeg4)")
        if not 0 <= self.crf <= 51:
            raise ConfigError(f"{path}.crf: must be between 0 and 51, got {self.crf}")
        if self.preset not in X264_PRESETS:
            raise ConfigError(f"{path}.preset: unknown x264 preset {self.preset!r} (expected one of: "
                              f"{', '.join(X264_PRESETS)})")
        if self.segment_minutes is not None:
            _positive(self.segment_minutes, f"{path}.segment_minutes")
        if self.resume_free_mb < 0:
            raise ConfigError(f"{path}.resume_free_mb: must be 0 or more, got {self.resume_free_mb}")
        for name in ("max_segments", "max_mb"):
            if getattr(self, name) is None:
                continue
            if self.segment_minutes is None:
                raise ConfigError(f"{path}.{name}: needs segment_minutes (a ring of segments)")
            _positive(getattr(self, name), f"{path}.{name}")
        codes = re.compile(r"%[A-Za-z]|\{segment")
        if codes.search(str(Path(self.path).parent)):
            raise ConfigError(f"{path}.path: {self.path}: date codes and {{segment}} fill in the file name only, "
                              "not its folders (a folder was created with them as they are)")
        if self.segment_minutes is None and codes.search(Path(self.path).name):
            raise ConfigError(f"{path}.path: {self.path}: date codes and {{segment}} name the files of a recording "
                              "in segments; set segment_minutes too (the file was named with them as they are)")
        if self.segment_minutes is not None:
            try:  # the name is filled in with str.format at each segment: cam{1}.mp4 failed there with a traceback
                Path(self.path).name.format(segment=0)
            except (KeyError, IndexError, ValueError) as exc:
                raise ConfigError(f"{path}.path: {self.path}: braces in a segmented file name hold {{segment}} (or "
                                  f"{{segment:05d}}); write others doubled, {{{{ and }}}} ({type(exc).__name__}: "
                                  f"{exc})") from None
        if self.codec == "mpeg4" and self.crf != 23:
            raise ConfigError(f"{path}.crf: sets H.264's quality; codec mpeg4 does not read it (it was ignored)")


@dataclass
class ImagesSinkConfig(SinkConfig):
    """Write each fused frame as a PNG file in a folder."""

    type: Literal["images"] = "images"
    path: str = ""
    pattern: str = "{index:06d}.png"
    """File name; fields: ``index``, ``seq``, ``name`` (the visible input's file stem, if any); it may name
    sub-folders. The extension picks the format."""
    overwrite: bool = False
    queue_size: int = 16

    def _check(self, path: str) -> None:
        super()._check(path)
        if not self.path:
            raise ConfigError(f"{path}.path: missing required value (the output folder)")
        try:
            self.pattern.format(index=0, seq=0, name="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"{path}.pattern: invalid pattern {self.pattern!r} ({exc})") from None
        if ".." in Path(self.pattern).parts or Path(self.pattern).is_absolute():
            raise ConfigError(f"{path}.pattern: {self.pattern!r} leaves the output folder; name files inside it "
                              "(sub-folders allowed) and choose the folder with path")
        if Path(self.pattern).suffix.lower() not in IMAGE_EXTENSIONS:
            raise ConfigError(f"{path}.pattern: {self.pattern!r} does not end in an image extension (one of "
                              f"{', '.join(IMAGE_EXTENSIONS)}), which picks the format")


@dataclass
class CurveConfig:
    """ZeroMQ CURVE encryption and authentication (key files made by ``streamfuse keys``)."""

    server_secret_key: str | None = None
    """This server's ``.key_secret`` file; null: no encryption."""
    authorized_keys: str | None = None
    """Folder of client public ``.key`` files allowed to connect (required with a server key)."""

    @property
    def enabled(self) -> bool:
        """True when a server key is configured."""
        return self.server_secret_key is not None

    def _check(self, path: str) -> None:
        if (self.server_secret_key is None) != (self.authorized_keys is None):
            raise ConfigError(f"{path}: set both server_secret_key and authorized_keys (a CURVE server without an "
                              "allow-list would accept any client key), or neither")


@dataclass
class ZmqSinkConfig(SinkConfig):
    """Publish fused frames on a ZeroMQ PUB socket as ``[topic, JSON header, payload]``."""

    type: Literal["zmq"] = "zmq"
    endpoint: str = "tcp://127.0.0.1:5555"
    bind: bool = True
    """Bind the endpoint (subscribers connect) or connect to a subscriber/proxy that binds."""
    topic: str = "fused"
    encoding: Literal["raw", "jpeg"] = "jpeg"
    jpeg_quality: int = 90
    hwm: int = 4
    """Send high-water mark: frames queued per subscriber before they are dropped (and counted)."""
    lossless: bool = False
    """Block instead of dropping when a subscriber is slow (recording, tests); never for live use."""
    wait_for_subscribers: int = 0
    """Before the first frame, wait (up to ``subscriber_timeout_s``) until this many subscribers joined."""
    subscriber_timeout_s: float = 5.0
    queue_size: int = 4
    curve: CurveConfig = field(default_factory=CurveConfig)

    def _check(self, path: str) -> None:
        super()._check(path)
        check_zmq_endpoint(self.endpoint, f"{path}.endpoint", "tcp://127.0.0.1:5555", binds=self.bind)
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"{path}.jpeg_quality: must be between 1 and 100, got {self.jpeg_quality}")
        if self.hwm < 1:
            raise ConfigError(f"{path}.hwm: must be at least 1, got {self.hwm}")
        if self.wait_for_subscribers < 0:
            raise ConfigError(f"{path}.wait_for_subscribers: must be 0 or more, got {self.wait_for_subscribers}")
        _positive(self.subscriber_timeout_s, f"{path}.subscriber_timeout_s")




@dataclass
class RtspSinkConfig(SinkConfig):
    """Serve the fused frames as H.264 over RTSP (VLC, ffplay, video management systems; docs/view.md)."""

    type: Literal["rtsp"] = "rtsp"
    bind: str = "127.0.0.1"
    """Address to listen on; a non-loopback address needs ``user`` and ``password``."""
    port: int = 8554
    path: str = "fused"
    """The stream's name: ``rtsp://HOST:PORT/PATH``."""
    crf: int = 23
    """H.264 quality (lower = better, more bits)."""
    keyframe_interval_s: float = 1.0
    """At most this long until a client that joins sees a picture."""
    user: str | None = None
    password: str | None = None
    """With ``user``: clients must log in (RTSP Basic authentication; use ``${ENV}`` to keep it out of the file)."""
    max_clients: int = 16
    queue_size: int = 2

    def _check(self, path: str) -> None:
        super()._check(path)
        check_port(self.port, f"{path}.port")
        if not self.path or not self.path.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"{path}.path: expected a name of letters, digits, '-' or '_', got {self.path!r}")
        if not 0 <= self.crf <= 51:
            raise ConfigError(f"{path}.crf: must be between 0 and 51, got {self.crf}")
        _positive(self.keyframe_interval_s, f"{path}.keyframe_interval_s")
        _positive(self.max_clients, f"{path}.max_clients")
        if (self.user is None) != (self.password is None):
            raise ConfigError(f"{path}: set both user and password, or neither")
        if self.password is not None and not self.password:
            raise ConfigError(f"{path}.password: must not be empty (anyone who knows the user name would get in)")
        if not is_loopback(self.bind) and self.password is None:
            raise ConfigError(f"{path}.bind: {self.bind} is reachable from the network; set {path}.user and "
                              f"{path}.password, or bind 127.0.0.1")


@dataclass
class OpenClipConfig:
    """Which CLIP text tower open_clip loads (weights only from local files or caches)."""

    model: str = "ViT-B-32"
    pretrained: str = "openai"
    """An open_clip tag found in the local Hugging Face cache, or a weights file (.bin/.safetensors/.pt)."""
    model_config: str | None = None
    """A JSON model config to register first (custom or small models)."""


@dataclass
class TextConfig:
    """Text encoder, prompt bank and routing."""

    encoder: Literal["auto", "open_clip", "minilm", "hashing"] = "auto"
    """``auto``: CLIP if its weights are on this machine, else all-MiniLM-L6-v2 (installed with streamfuse), else
    the offline keyword encoder (with a warning); ``open_clip`` / ``minilm``: that encoder or an error;
    ``hashing``: always the keyword encoder."""
    open_clip: OpenClipConfig = field(default_factory=OpenClipConfig)
    bank: str | None = None
    """A prompt bank YAML file; null uses the packaged bank."""
    floor: float | None = None
    """Routing floor (similarity above the median intent needed to activate an intent); null: per encoder."""
    cache_dir: str | None = "default"
    """Disk cache for embeddings and routings: ``default`` (~/.cache/streamfuse), a folder, or null (memory only)."""

    def _check(self, path: str) -> None:
        if self.cache_dir is not None and not self.cache_dir.strip():  # it filled the working directory
            raise ConfigError(f"{path}.cache_dir: empty; give default (~/.cache/streamfuse), a folder, or null "
                              "(memory only)")


@dataclass
class ControlConfig:
    """The control socket (ZeroMQ REP): set_prompt, get_prompt, get_stats."""

    enabled: bool = False
    endpoint: str = "tcp://127.0.0.1:5556"
    """Bound on localhost by default; binding elsewhere needs ``curve`` keys or ``allow_insecure_remote``."""
    curve: CurveConfig = field(default_factory=CurveConfig)
    allow_insecure_remote: bool = False
    """Allow binding a non-local endpoint without CURVE (anyone who can connect can change the prompt)."""
    max_requests_per_s: float = 20.0
    """Requests beyond this rate get an error reply without being executed."""

    def _check(self, path: str) -> None:
        check_zmq_endpoint(self.endpoint, f"{path}.endpoint", "tcp://127.0.0.1:5556")
        if not is_local_endpoint(self.endpoint) and not self.curve.enabled and not self.allow_insecure_remote:
            raise ConfigError(f"{path}.endpoint: {self.endpoint} is reachable from the network; configure "
                              f"{path}.curve keys (streamfuse keys), bind 127.0.0.1, or set "
                              f"{path}.allow_insecure_remote: true")
        _positive(self.max_requests_per_s, f"{path}.max_requests_per_s")


def check_zmq_endpoint(endpoint: str, key: str, example: str, *, binds: bool = True) -> None:
    """Refuse anything but ``transport://address``, and a TCP port outside 1-65535 (or ``*``, any free port, where
    the endpoint ``binds``): ZeroMQ takes a larger number modulo 65536 and binds another port without a word.

    Raises:
        ConfigError: Naming ``key`` and an ``example`` of a valid endpoint.
    """
    transport, separator, address = endpoint.partition("://")
    if not (transport and separator and address):
        raise ConfigError(f"{key}: expected a ZeroMQ endpoint such as {example}, got {endpoint!r}")
    port = address.rpartition(":")[2]
    if transport == "tcp" and not (port == "*" and binds) and not (port.isdigit() and 1 <= int(port) <= 65535):
        free = " (or * for any free port)" if binds else " to connect to"
        raise ConfigError(f"{key}: {endpoint!r} needs a TCP port from 1 to 65535{free}, e.g. {example}")


def is_local_endpoint(endpoint: str) -> bool:
    """True for ZeroMQ endpoints only this host can reach (loopback TCP, ipc, inproc)."""
    return endpoint.startswith(("tcp://127.", "tcp://localhost:", "tcp://[::1]", "ipc://", "inproc://"))


@dataclass
class HealthConfig:
    """The HTTP health endpoint: ``GET /health`` (JSON) and, with the ``metrics`` extra, ``GET /metrics``."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8080
    metrics: bool = False
    """Serve Prometheus metrics at /metrics (needs ``pip install streamfuse[metrics]``)."""

    def _check(self, path: str) -> None:
        check_port(self.port, f"{path}.port")


@dataclass
class ViewConfig:
    """The web view: live streams, the prompt box, stage latencies and camera health in a browser (docs/view.md)."""

    enabled: bool = False
    bind: str = "127.0.0.1"
    """Address to listen on; a non-loopback address needs ``token``."""
    port: int = 8090
    token: str | None = None
    """A secret every request must carry (``?token=``); without it, or with another, the answer is 403.
    Required (16 characters or more) when ``bind`` is not loopback; use ``${ENV}`` to keep it out of the file."""
    jpeg_quality: int = 80
    max_requests_per_s: float = 5.0
    """Prompt changes from the page beyond this rate get an error reply without being executed."""
    max_viewers: int = 16
    """Picture streams served at once (each holds a thread); a further one is answered 503."""

    def _check(self, path: str) -> None:
        check_port(self.port, f"{path}.port")
        if self.max_viewers < 1:
            raise ConfigError(f"{path}.max_viewers: must be at least 1, got {self.max_viewers}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"{path}.jpeg_quality: must be between 1 and 100, got {self.jpeg_quality}")
        _positive(self.max_requests_per_s, f"{path}.max_requests_per_s")
        if self.token is not None and len(self.token) < 16:
            raise ConfigError(f"{path}.token: must be at least 16 characters (e.g. from `python -c "
                              f"\"import secrets; print(secrets.token_urlsafe())\"`), got {len(self.token)}")
        if self.token is not None and not re.fullmatch(r"[A-Za-z0-9._~-]+", self.token):
            raise ConfigError(f"{path}.token: use letters, digits and . _ ~ - only (it goes into the page's URL as "
                              "?token=, where + / = and others change meaning); e.g. `python -c \"import secrets; "
                              "print(secrets.token_urlsafe())\"`")
        if not is_loopback(self.bind) and self.token is None:
            raise ConfigError(f"{path}.bind: {self.bind} is reachable from the network; set {path}.token "
                              "(16 characters or more), or bind 127.0.0.1")


def is_loopback(host: str) -> bool:
    """True for a listening address only this host can reach."""
    return host.startswith("127.") or host in ("localhost", "::1")


def check_port(port: int, path: str) -> None:
    """Refuse a value that is not a TCP port (0 picks a free one)."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"{path}: must be a TCP port (0-65535; 0 picks a free one), got {port}")


@dataclass
class StatsConfig:
    """Periodic statistics log line."""

    log_every_s: float = 5.0
    """Seconds between log lines; 0 disables them."""

    def _check(self, path: str) -> None:
        if self.log_every_s < 0:
            raise ConfigError(f"{path}.log_every_s: must not be negative (0 disables the log lines), "
                              f"got {self.log_every_s}")


@dataclass
class Config:
    """A whole pipeline."""

    sources: SourcesConfig = field(default_factory=SourcesConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    sinks: list[SinkConfig] = field(default_factory=list)
    prompt: str = ""
    """What the fusion should favour, in words; empty = the bank's default (balanced)."""
    text: TextConfig = field(default_factory=TextConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    view: ViewConfig = field(default_factory=ViewConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)

    def _check(self, path: str) -> None:
        check_prompt(self.prompt, _join(path, "prompt"))
        _refuse_shared_outputs(self.sinks)
        _refuse_shared_ports(self)


#: The longest prompt taken (from a config, the command line, the control socket or the web view).
MAX_PROMPT_CHARS = 1000


def check_prompt(prompt: str, key: str) -> None:
    """Refuse a prompt longer than :data:`MAX_PROMPT_CHARS` (a file pasted by mistake, or a flood)."""
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ConfigError(f"{key}: at most {MAX_PROMPT_CHARS} characters, got {len(prompt)}; say in a sentence what "
                          "the fusion should favour")


def _refuse_shared_outputs(sinks: list[SinkConfig]) -> None:
    """Two sinks writing one file or folder would write over each other's output."""
    owners: dict[Path, int] = {}
    for index, sink in enumerate(sinks):
        if isinstance(sink, (VideoSinkConfig, ImagesSinkConfig)):
            where = Path(os.path.abspath(Path(sink.path).expanduser()))
            first = owners.setdefault(where, index)
            if first != index:
                raise ConfigError(f"sinks.{index}.path: {sink.path} is written by sinks.{first} too; give each sink "
                                  "its own file or folder")


def _refuse_shared_ports(config: Config) -> None:
    """Two listeners of one config on one TCP port: the second would fail to start, blaming the port's
    other user; say which two keys they are instead."""
    listeners = [(f"sinks.{i}.endpoint", _tcp_port(sink.endpoint)) for i, sink in enumerate(config.sinks)
                 if isinstance(sink, ZmqSinkConfig) and sink.bind]
    listeners += [(f"sinks.{i}.port", sink.port) for i, sink in enumerate(config.sinks)
                  if isinstance(sink, RtspSinkConfig)]
    if config.control.enabled:
        listeners.append(("control.endpoint", _tcp_port(config.control.endpoint)))
    if config.view.enabled:
        listeners.append(("view.port", config.view.port))
    if config.health.enabled:
        listeners.append(("health.port", config.health.port))
    owners: dict[int, str] = {}
    for key, port in listeners:
        if port:  # None: not TCP or any free port; 0: any free port
            first = owners.setdefault(port, key)
            if first != key:
                raise ConfigError(f"{key}: port {port} is also {first}'s; give each its own port")


def _tcp_port(endpoint: str) -> int | None:
    """The port of a ``tcp://host:port`` endpoint (None for other transports and ``*``)."""
    transport, _, address = endpoint.partition("://")
    port = address.rpartition(":")[2]
    return int(port) if transport == "tcp" and port.isdigit() else None


# ------------------------------------------------------------------------------------------- loading
class _Loader(yaml.SafeLoader):
    """Safe YAML, except that ``1e3`` and ``5E-4`` are numbers, as in YAML 1.2 (PyYAML's YAML 1.1 reads
    an exponent without a decimal point as a string, and the error then said "expected a number, got '1e3'")."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
                              list("-+0123456789."))


def _mapping_without_repeated_keys(loader: _Loader, node: yaml.MappingNode) -> dict:
    """A mapping in which no key is written twice: YAML keeps the last silently, so a second ``sinks:`` or
    ``fps:`` further down a file would replace the first without a word."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            line = seen.get(key)
        except TypeError:  # an unhashable key: the mapping constructor says what is wrong with it
            continue
        seen[key] = key_node.start_mark.line
        if line is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {_shown(key)} is written twice (also on line {line + 1}); keep one",
                key_node.start_mark)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor("tag:yaml.org,2002:map", _mapping_without_repeated_keys)


def parse_yaml(text: str) -> Any:
    """Parse config YAML safely (:class:`_Loader`); raises ``yaml.YAMLError``."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a YAML error: ``line L, column C: problem (while context)`` (PyYAML's own text spans lines
    and names ``"<unicode string>"`` instead of the file)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}" + (f" ({context})" if context else "")


def default_config_path() -> Path:
    """Path of the packaged demo config (``configs/demo.yaml``), used by ``streamfuse run``."""
    return Path(str(resources.files("streamfuse") / "configs" / "demo.yaml"))


def packaged_configs() -> dict[str, Path]:
    """The config files shipped in the package, by name: ``demo``, ``files``, ``live``, ``train``, ..."""
    folder = resources.files("streamfuse") / "configs"
    return {Path(entry.name).stem: Path(str(entry)) for entry in sorted(folder.iterdir(), key=lambda e: e.name)
            if entry.name.endswith(".yaml")}


def config_path(name_or_path: str | os.PathLike) -> Path:
    """A config file: the path itself, or the packaged config of that name when no such file exists here (a
    folder of that name, such as a training run's ``output_dir: train``, is not a config file)."""
    path = Path(name_or_path)
    if not path.is_file() and path.stem in packaged_configs() and path.suffix in ("", ".yaml"):
        if path.parent == Path(".") or path.parent.name == "configs":
            return packaged_configs()[path.stem]
    return path


#: Top-level keys only a training config has (``threads``, ``model``, ``seed`` could be a pipeline key misplaced).
TRAINING_ONLY_KEYS = frozenset({"data_root", "learning_rate", "batch_size", "checkpoint_every", "head_decay",
                                "mix_with_balanced", "init_weights"})


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                *, env: dict[str, str] | None = None) -> Config:
    """Read a YAML config file into a :class:`Config`.

    Args:
        path: The YAML file, or the name of a packaged config (:func:`config_path`); None loads the
            packaged demo config.
        overrides: ``key.path=value`` strings applied after loading (values parsed as YAML).
        env: Environment for ``${VAR}`` substitution (default: ``os.environ``).

    Raises:
        ConfigError: A missing/unreadable file, invalid YAML, unknown key, wrong type or bad value.
    """
    given = path
    path = config_path(path) if path is not None else default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc})") from None
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {yaml_problem(exc)}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level (key: value lines), got {type(data).__name__}")
    _refuse_a_data_split(data, path)
    training_keys = sorted(set(data or {}) & TRAINING_ONLY_KEYS)
    if training_keys:
        raise ConfigError(f"{path}: a training config (it sets {', '.join(training_keys[:3])}); train with it: "
                          f"streamfuse train {given}")
    return config_from_dict(data if data is not None else {}, overrides, env=env)


def config_from_dict(data: dict[str, Any], overrides: list[str] | None = None,
                     *, env: dict[str, str] | None = None) -> Config:
    """Build a :class:`Config` from plain data (as parsed from YAML); see :func:`load_config`."""
    if not isinstance(data, dict):
        raise ConfigError(f"<config>: expected a mapping at the top level, got {type(data).__name__}")
    data = copy.deepcopy(data)  # the overrides change it in place
    for override in overrides or []:
        apply_override(data, override)
    data = _substitute_env(data, "", os.environ if env is None else env)  # in --set values too
    return _build(Config, data, "")


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply one ``key.path=value`` override in place (list items by index: ``sinks.0.path=x``)."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {override!r}: expected key.path=value")
    try:
        value = parse_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {where}: no list item {part!r} (the list has {len(node)} items)")
            index = int(part)
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise ConfigError(f"--set {where}: {'.'.join(parts[:depth])} is a value, not a section")


_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}$]*))?\}")


class _FromEnvironment(str):
    """A value that was one ``${VAR}`` as a whole: read as a number or true/false where the key wants one
    (``port: ${PORT}``), as the text it is elsewhere."""


def _substitute_env(node: Any, path: str, env: typing.Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: _substitute_env(value, _join(path, key), env) for key, value in node.items()}
    if isinstance(node, list):
        return [_substitute_env(value, _join(path, str(i)), env) for i, value in enumerate(node)]
    if isinstance(node, str):
        def replace(match: re.Match) -> str:
            name, default = match.group(1), match.group(2)
            if default is not None and not env.get(name):  # as in a shell: unset or empty (OUTDIR= in an env file)
                return default
            if name in env:
                if not env[name]:
                    log.warning("%s: environment variable %s is set but empty; write ${%s:-default} for a value "
                                "to use then", path, name, name)
                return env[name]
            raise ConfigError(f"{path}: environment variable {name} is not set (used as ${{{name}}}); "
                              f"export it or write ${{{name}:-default}}")
        if "${" in _ENV_PATTERN.sub("", node):
            raise ConfigError(f"{path}: {node!r} has a placeholder streamfuse cannot read; write ${{NAME}} or "
                              "${NAME:-default} (a name of letters, digits and _, a default without $ or })")
        value = _ENV_PATTERN.sub(replace, node)
        return _FromEnvironment(value) if _ENV_PATTERN.fullmatch(node) else value
    return node


def _environment_scalar(value: _FromEnvironment) -> Any:
    """What a ``${VAR}`` value means where a number or true/false is expected (its YAML reading)."""
    try:
        return parse_yaml(value) if value.strip() else value
    except yaml.YAMLError:
        return value


def _shown(key: Any) -> str:
    """A key as written in messages: as is when printable, else quoted (a key with a newline stays one line)."""
    return key if isinstance(key, str) and key.isprintable() and key else repr(key)


#: Config bases whose concrete dataclass is chosen by the ``type`` key, through their registry.
_TAGGED: dict[type, Registry] = {SourceConfig: SOURCES, SinkConfig: SINKS}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)


def _build(cls: type, data: Any, path: str) -> Any:
    """Build dataclass ``cls`` from ``data``, checking keys and types; ``path`` names the node."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or '<config>'}: expected a mapping, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise ConfigError(f"{_join(path, _shown(key))}: unknown key (expected one of: {', '.join(names)})")
    values = {key: _convert(hints[key], value, _join(path, key)) for key, value in data.items()}
    for name in names:  # absent sections get their defaults, checked like written ones
        if name not in values and dataclasses.is_dataclass(hints[name]) and hints[name] not in _TAGGED:
            values[name] = _build(hints[name], {}, _join(path, name))
    obj = cls(**values)
    check = getattr(obj, "_check", None)
    if check is not None:
        check(path)
    return obj


def _convert(hint: Any, value: Any, path: str) -> Any:
    if isinstance(value, _FromEnvironment) and typing.get_origin(hint) not in (Union, types.UnionType):
        value = _environment_scalar(value) if hint in (bool, int, float) else str(value)
    if hint in _TAGGED:
        return _build_tagged(_TAGGED[hint], value, path)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{path}: missing required value")
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, path)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0] if len(errors) == 1 else ConfigError(
            f"{path}: expected {' or '.join(_name(o) for o in options)}, got {_describe(value)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: expected one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {_describe(value)}")
        return {str(k): _convert(args[1], v, f"{path}.{_shown(k)}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {_describe(value)}")
        return [_convert(args[0], item, f"{path}.{i}") for i, item in enumerate(value)]
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, float) and value.is_integer():  # 1e3, 100.0
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {_describe(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{path}: expected a number, got {_describe(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            quote = "; quote it ('...') if it is a name" if isinstance(value, (bool, int, float)) else ""
            raise ConfigError(f"{path}: expected a string, got {_describe(value)}{quote}")
        return value
    raise TypeError(f"unsupported config type {hint!r} at {path}")  # a bug in this module, not user error


def _build_tagged(registry: Registry, value: Any, path: str) -> Any:
    """Build the config dataclass registered for the mapping's ``type``."""
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a mapping with a 'type' key, got {_describe(value)}")
    entry = registry.find(value.get("type"), key=f"{path}.type",
                          message="unknown type {name!r} (expected one of: {names})")
    _refuse_keys_of_other_types(registry, entry.name, entry.config, value, path)
    return _build(entry.config, value, path)


def _refuse_keys_of_other_types(registry: Registry, name: str, config: type, value: dict, path: str) -> None:
    """A key that belongs to another type of the same extension point (left over from the file after
    ``--set path.type=...``, say) gets an error that says how to change the type."""
    own = {field.name for field in dataclasses.fields(config)}
    unknown = [key for key in value if key not in own]
    configs = {other: registry.find(other, key=path).config for other in registry if other != name} if unknown else {}
    for key in unknown:
        owners = [other for other, other_config in configs.items()
                  if other_config is not None and key in {field.name for field in dataclasses.fields(other_config)}]
        if owners:
            raise ConfigError(
                f"{_join(path, _shown(key))}: a key of {', '.join(map(repr, owners))} {registry.kind}s, not of "
                f"type {name!r}; to change a {registry.kind}'s type, give the whole {registry.kind} "
                f"(on the command line: --set '{path}={{type: {name}, ...}}', or --set "
                f"'{path}={{type: {owners[0]}, ...}}' for a {owners[0]} {registry.kind})")


def _name(hint: Any) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _describe(value: Any) -> str:
    if isinstance(value, _FromEnvironment):
        value = str(value)  # its class is an implementation detail: 'got '' (str)', not '(_FromEnvironment)'
    text = repr(value)
    return f"{text if len(text) <= 40 else text[:37] + '...'} ({type(value).__name__})"


def _positive(value: float, path: str) -> None:
    if value <= 0:
        raise ConfigError(f"{path}: must be positive, got {value}")


def check_homography(matrix: Any, path: str) -> np.ndarray:
    """Validate a 3x3 homography and return it as a float64 array normalised so that ``H[2, 2] == 1``."""
    try:
        array = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: expected a 3x3 list of numbers") from None
    if array.shape != (3, 3):
        raise ConfigError(f"{path}: expected a 3x3 matrix, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ConfigError(f"{path}: matrix contains a non-finite value")
    if abs(array[2, 2]) < 1e-12:
        raise ConfigError(f"{path}: H[2][2] must not be 0 (a homography is normalised so that H[2][2] = 1)")
    array = array / array[2, 2]
    if abs(np.linalg.det(array)) < 1e-9 or np.linalg.cond(array) > 1e12:
        raise ConfigError(f"{path}: matrix is singular (not invertible); check the calibration")
    return array


def read_calibration(path: str | Path, key: str) -> np.ndarray:
    """The homography stored in a calibration file (``matrix:``, as written by ``streamfuse calibrate``).

    Raises:
        ConfigError: The file is missing, not YAML, refused, or holds no valid 3x3 ``matrix``.
    """
    return check_homography(_calibration_content(path, key)["matrix"], f"{key}: {path}: matrix")


def calibrated_frame_sizes(path: str | Path, key: str) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The infrared and visible frame sizes ``((width, height), (width, height))`` a calibration file was
    made with (``ir_size``, ``vis_size``), or None when it does not say (points files, older files)."""
    content = _calibration_content(path, key)
    given = [name for name in ("ir_size", "vis_size") if content.get(name) is not None]
    if not given:
        return None
    if len(given) == 1:
        raise ConfigError(f"{key}: {path}: {given[0]} without {({'ir_size', 'vis_size'} - set(given)).pop()}; a "
                          "calibration states both frame sizes or neither (calibrate again, or remove it)")
    for name in given:
        size = content[name]
        if not (isinstance(size, list) and len(size) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
            raise ConfigError(f"{key}: {path}: {name}: expected [width, height] in pixels, got {_describe(size)}")
    return tuple(content["ir_size"]), tuple(content["vis_size"])


def _calibration_content(path: str | Path, key: str) -> dict:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{key}: {path}: a folder; name the calibration file in it (written by 'streamfuse "
                          "calibrate', e.g. calibration.yaml)")
    if not path.is_file():
        raise ConfigError(f"{key}: {path}: no such file (write one with 'streamfuse calibrate')")
    try:
        content = parse_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key}: {path}: not a YAML calibration file ({yaml_problem(exc)})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{key}: {path}: not a YAML calibration file ({exc})") from None
    if not isinstance(content, dict) or "matrix" not in content:
        raise ConfigError(f"{key}: {path}: no 'matrix' in it (expected a file written by 'streamfuse calibrate')")
    if not isinstance(content.get("accepted", True), bool):
        raise ConfigError(f"{key}: {path}: accepted: expected true or false, got {_describe(content['accepted'])}")
    if content.get("accepted") is False:
        raise ConfigError(f"{key}: {path}: this calibration was refused (accepted: false); calibrate again")
    return content


# ------------------------------------------------------------------------------------------ training
@dataclass
class ModelConfig:
    """Size of the fusion network."""

    channels: int = 16
    token_dim: int = 32
    tokens_per_intent: int = 4
    trunk_scale: int = 8
    """Resolution of the network's trunk as a divisor of the frame's: 8 (the shipped network), or 4 (four
    times the trunk's cost)."""

    def _check(self, path: str) -> None:
        for name in ("channels", "token_dim", "tokens_per_intent"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{_join(path, name)}: must be at least 1, got {getattr(self, name)}")
        if self.trunk_scale not in (4, 8):
            raise ConfigError(f"{_join(path, 'trunk_scale')}: must be 4 or 8, got {self.trunk_scale}")


@dataclass
class RefineConfig:
    """How ``streamfuse train`` refines ``init_weights`` (see streamfuse/train/distill.py)."""

    intent: str = "low_contrast_thermal"
    """The intent whose target blends its own output with the balanced fusion of the range-restored thermal image."""
    own_share: float = 0.5
    """Share of the teacher's own output for that intent in its target."""
    thermal_gain: float = 2.0
    """Stretch of the thermal image's range around its mean."""
    thermal_sigma: float = 3.0
    """Spatial width (pixels) of the edge-preserving smoothing that is stretched."""
    thermal_sigma_range: float = 0.03
    """Intensity depth (in [0, 1] units) of that smoothing: differences well above it are edges and kept."""
    trainable: list[str] = field(default_factory=lambda: ["tokens", "iti", "low"])
    """Parameter name prefixes that are trained; the rest of the network stays frozen."""

    def _check(self, path: str) -> None:
        if not 0.0 <= self.own_share <= 1.0:
            raise ConfigError(f"{_join(path, 'own_share')}: must be between 0 and 1, got {self.own_share}")
        if self.thermal_gain < 1.0:
            raise ConfigError(f"{_join(path, 'thermal_gain')}: must be at least 1, got {self.thermal_gain}")
        _positive(self.thermal_sigma, _join(path, "thermal_sigma"))
        _positive(self.thermal_sigma_range, _join(path, "thermal_sigma_range"))
        if not self.trainable:
            raise ConfigError(f"{_join(path, 'trainable')}: name at least one parameter prefix (e.g. tokens)")


@dataclass
class TrainConfig:
    """``streamfuse train``: unsupervised training of the fusion network (see docs/model.md)."""

    data_root: str = "../shared/data"
    """Folder holding the registered pair sets (tno_cddfuse is always held out for evaluation)."""
    crop: int = 128
    batch_size: int = 12
    steps: int = 3000
    learning_rate: float = 0.002
    seed: int = 0
    threads: int = 2
    intents: dict[str, float] = field(default_factory=lambda: {
        "balanced": 2.0, "thermal_targets": 1.0, "visible_detail": 1.0, "low_light": 1.5, "glare": 1.0,
        "fog": 1.5, "noise": 1.0, "low_contrast_thermal": 1.0})
    """Sampling weight of each intent (the sample's inputs get that intent's degradation)."""
    mix_with_balanced: float = 0.25
    """Share of samples whose intent weights are blended with balanced (teaches partial prompts)."""
    head_decay: float = 0.01
    """Weight decay of the network's head: pulls the learned maps towards the fixed band rule."""
    output_dir: str = "out/train"
    checkpoint_every: int = 250
    log_every: int = 50
    export: str | None = None
    """Where the final weights are written (the shipped file is streamfuse/models/weights/fusionnet.pt);
    ``{output_dir}`` stands for ``output_dir`` (the packaged train config's ``{output_dir}/fusionnet.pt``
    follows ``--set output_dir=...``, so a second run does not replace the first one's weights)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Size of a network trained from scratch (ignored with ``init_weights``: the checkpoint's size is used)."""
    init_weights: str | None = None
    """Refine these weights by self-distillation (``refine``) instead of training a new network."""
    refine: RefineConfig = field(default_factory=RefineConfig)

    def _check(self, path: str) -> None:
        for name in ("crop", "batch_size", "steps", "threads", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{_join(path, name)}: must be at least 1, got {getattr(self, name)}")
        if self.crop % 8:
            raise ConfigError(f"{_join(path, 'crop')}: must be a multiple of 8, got {self.crop}")
        if not 0.0 <= self.mix_with_balanced <= 1.0:
            raise ConfigError(f"{_join(path, 'mix_with_balanced')}: must be between 0 and 1")
        if not self.learning_rate > 0:
            raise ConfigError(f"{_join(path, 'learning_rate')}: must be positive, got {self.learning_rate}")
        if not self.intents or min(self.intents.values()) < 0 or sum(self.intents.values()) <= 0:
            raise ConfigError(f"{_join(path, 'intents')}: needs non-negative weights with a positive sum")
        if self.seed < 0:
            raise ConfigError(f"{_join(path, 'seed')}: must be 0 or more, got {self.seed}")
        if Path(self.output_dir).exists() and not Path(self.output_dir).is_dir():
            raise ConfigError(f"{_join(path, 'output_dir')}: {self.output_dir} is a file; name a folder")


def load_train_config(path: str | os.PathLike, overrides: list[str] | None = None) -> TrainConfig:
    """Read a training config (YAML) with the same rules as :func:`load_config`; a pipeline config given
    instead is named as one."""
    try:
        data = parse_yaml(config_path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        data = None  # load_dataclass says what is wrong with the file
    _refuse_a_data_split(data, config_path(path))
    if isinstance(data, dict):
        pipeline_keys = sorted(set(data) & PIPELINE_ONLY_KEYS)
        if pipeline_keys:
            raise ConfigError(f"{config_path(path)}: a pipeline config (it sets {', '.join(pipeline_keys[:3])}), not a "
                              f"training one; run it with: streamfuse run {path} (training configs: streamfuse config "
                              "show train)")
    return load_dataclass(TrainConfig, path, overrides)


def _refuse_a_data_split(data: Any, path: Path) -> None:
    """A data split (``medical_split``: ``data:`` and per task its ``train`` / ``test`` file stems) is no config."""
    parts = [value for key, value in data.items() if key != "data"] if isinstance(data, dict) and "data" in data else []
    if parts and all(isinstance(value, dict) and set(value) <= {"train", "test"} for value in parts):
        raise ConfigError(f"{path}: a data split (the files of each part), not a config to run or train with; "
                          "tools/medical_split.py makes the folders it lists (docs/medical.md)")


#: Top-level keys only a pipeline config has.
PIPELINE_ONLY_KEYS = frozenset({"sources", "synthetic", "sync", "registration", "fusion", "sinks", "prompt", "text",
                                "control", "health", "view", "stats"})


def load_dataclass(cls: type, path: str | os.PathLike, overrides: list[str] | None = None) -> Any:
    """Read a YAML file into the config dataclass ``cls`` with the rules of :func:`load_config`:
    ``${ENV}`` substitution, ``key.path=value`` overrides, every error naming its key."""
    path = config_path(path)
    try:
        data = parse_yaml(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    for override in overrides or []:
        apply_override(data, override)
    data = _substitute_env(data, "", os.environ)
    return _build(cls, data, "")
