"""16-bit thermal input: automatic gain control on real 16-bit PNG/TIFF folders, FFV1 gray16le video and Y16 cameras."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from streamfuse.config import GainConfig, config_from_dict
from streamfuse.errors import ConfigError
from streamfuse.gain import AutoGain, grey_levels
from streamfuse.pipeline import Pipeline
from streamfuse.queues import Closed
from streamfuse.sources import CameraSource, SourceOptions, VideoSource
from streamfuse.sources.synthetic_scene import PERSON, SyntheticScene

SIZE = (320, 256)
TIMES = (0.0, 0.5, 1.0)


def to_14bit(ir8: np.ndarray) -> np.ndarray:
    """The 8-bit thermal frame as a 14-bit camera would send it: values 7000-11080 (the issue's example)."""
    return (7000 + ir8.astype(np.uint16) * 16).astype(np.uint16)


def target_contrast(fused: np.ndarray, people: np.ndarray) -> float:
    """Mean grey level of the people minus that of the background ring around them (8 px wide)."""
    gray = cv2.cvtColor(fused, cv2.COLOR_BGR2GRAY).astype(np.float64)
    ring = cv2.dilate(people, np.ones((17, 17), np.uint8)) & ~people
    return float(gray[people > 0].mean() - gray[ring > 0].mean())


def fuse_folder(ir_dir: Path, vis_dir: Path, out: Path, fuser: str) -> list[np.ndarray]:
    config = config_from_dict({
        "sources": {"ir": {"type": "images", "path": str(ir_dir)}, "vis": {"type": "images", "path": str(vis_dir)}},
        "fusion": {"fuser": fuser}, "sinks": [{"type": "images", "path": str(out), "pattern": "{name}.png"}],
        "stats": {"log_every_s": 0}})
    Pipeline(config).run(install_signal_handlers=False)
    return [cv2.imread(str(out / f"t{i}.png")) for i in range(len(TIMES))]


@pytest.mark.parametrize(("fuser", "suffix"), [("classical", ".png"), ("classical", ".tiff"), ("model", ".png")])
def test_14bit_thermal_person_is_as_visible_as_from_the_8bit_frames(tmp_path, fuser, suffix):
    scene = SyntheticScene(*SIZE, seed=3, time_of_day="night", people=3, vehicles=0)
    folders = {name: tmp_path / name for name in ("ir8", "ir14", "vis")}
    for folder in folders.values():
        folder.mkdir()
    masks = []
    for index, t in enumerate(TIMES):
        ir8 = scene.render_ir(t)
        cv2.imwrite(str(folders["ir8"] / f"t{index}.png"), ir8)
        cv2.imwrite(str(folders["ir14"] / f"t{index}{suffix}"), to_14bit(ir8))
        cv2.imwrite(str(folders["vis"] / f"t{index}.png"), scene.render_vis(t))
        masks.append((scene.object_mask(t) == PERSON).astype(np.uint8))
    assert cv2.imread(str(folders["ir14"] / f"t0{suffix}"), cv2.IMREAD_UNCHANGED).dtype == np.uint16

    from8 = fuse_folder(folders["ir8"], folders["vis"], tmp_path / "out8", fuser)
    from14 = fuse_folder(folders["ir14"], folders["vis"], tmp_path / "out14", fuser)
    for fused8, fused14, people in zip(from8, from14, masks, strict=True):
        contrast8, contrast14 = target_contrast(fused8, people), target_contrast(fused14, people)
        assert contrast8 > 20  # the people stand out in the 8-bit fusion ...
        assert contrast14 >= 0.9 * contrast8, (contrast14, contrast8)  # ... and as much from 14 bits


def write_gray16_video(path: Path, frames: list[np.ndarray], fps: int = 30, pix_fmt: str = "gray16le") -> None:
    """FFV1 video of ``uint16`` gray frames, stored as ``pix_fmt`` (``gray12le``: the raw counts of a 12-bit
    camera, 0-4095, as they are, in its 12-bit samples)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=fps)
        stream.height, stream.width = frames[0].shape
        stream.pix_fmt = pix_fmt
        for image in frames:
            frame = av.VideoFrame(image.shape[1], image.shape[0], pix_fmt)
            rows = np.zeros((image.shape[0], frame.planes[0].line_size // 2), "<u2")
            rows[:, :image.shape[1]] = image
            frame.planes[0].update(rows.tobytes())
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def read_all(source) -> list[np.ndarray]:
    source.start()
    frames = []
    while True:
        try:
            frame = source.queue.get(timeout=5)
        except Closed:
            break
        if frame is not None:
            frames.append(frame.image)
    source.join(5)
    assert source.error is None
    return frames


def walking_person_video(frames: int = 90) -> tuple[list[np.ndarray], tuple[slice, slice]]:
    """A static 14-bit background (a gradient, 7000-8000) and a hot person (11000) walking in from the left
    and stopping, a seventh of the view; returns the frames and a background patch the person never covers."""
    height, width = 96, 128
    background = np.tile(np.linspace(7000, 8000, width), (height, 1)).astype(np.uint16)
    video = []
    for index in range(frames):
        image = background.copy()
        x = min(-40 + index * 2, 20)
        image[20:90, max(x, 0):max(x + 26, 0)] = 11000
        video.append(image)
    return video, (slice(0, 15), slice(60, 120))


def test_16bit_video_is_read_as_16_bits_and_the_gain_does_not_pump(tmp_path):
    video, patch = walking_person_video()
    write_gray16_video(tmp_path / "thermal.mkv", video)

    def background_levels(gain: GainConfig) -> np.ndarray:
        frames = read_all(VideoSource("ir", str(tmp_path / "thermal.mkv"), options=SourceOptions(gain=gain)))
        assert len(frames) == len(video) and frames[0].dtype == np.uint8
        return np.array([frame[patch].mean() for frame in frames])

    steady = background_levels(GainConfig())
    per_frame = background_levels(GainConfig(smoothing=0.0, max_change=1e6))
    # with a range per frame, the person entering makes the background jump by a hundred grey levels at once
    assert np.abs(np.diff(per_frame)).max() > 100
    # with the default gain it dims by a few levels per frame (no visible pumping) ...
    assert np.abs(np.diff(steady)).max() < 5
    # ... to the same level once the range has adapted
    assert abs(steady[-1] - per_frame[-1]) < 10


@pytest.mark.parametrize(("pix_fmt", "low", "high"), [("gray12le", 2000, 2400), ("gray10le", 600, 1000),
                                                      ("gray16le", 2000, 2400)])
def test_deep_gray_video_keeps_its_raw_counts_for_a_fixed_range(tmp_path, pix_fmt, low, high):
    """A 12-bit camera's counts 2000-2400 reached the gain as 32000-38000 (FFmpeg's conversion to gray16le scales
    12 bits up to 16), so a fixed range in raw counts washed the thermal image out to white."""
    ramp = np.tile(np.linspace(low, high, 64), (48, 1)).astype(np.uint16)
    write_gray16_video(tmp_path / "raw.mkv", [ramp] * 3, pix_fmt=pix_fmt)
    gain = GainConfig(mode="fixed", range=(low, high))
    frames = read_all(VideoSource("ir", str(tmp_path / "raw.mkv"), options=SourceOptions(gain=gain)))
    assert len(frames) == 3
    assert frames[0][:, 0].max() < 5 and frames[0][:, -1].min() > 250  # the ramp spans the 8 bits
    assert np.abs(np.diff(frames[0][0].astype(int))).max() <= 5


def test_a_scene_cut_restarts_the_range_at_once(tmp_path):
    first = [np.tile(np.linspace(7000, 8000, 128), (96, 1)).astype(np.uint16)] * 10
    second = [np.tile(np.linspace(12000, 12400, 128), (96, 1)).astype(np.uint16)] * 5
    gain = AutoGain(GainConfig(), "ir")
    outputs = [gain(frame) for frame in first + second]
    assert gain.scene_cuts == 1
    after_cut = outputs[len(first)]
    assert after_cut.min() <= 5 and after_cut.max() >= 250  # the new scene fills the range on its first frame


@pytest.mark.parametrize(("column", "value"), [(100, 0), (101, 0), (200, 16383)])
def test_a_dead_or_hot_column_does_not_set_the_range(column, value):
    """A column of 0 (dead) or 16383 (hot) in a 640x512 frame is 0.16 % of it, over the 0.1 % percentile; on a
    sampled column (x a multiple of 4) it was 1 % of the sample: the scene went to grey 208-255."""
    scene = np.tile(np.linspace(7000, 9000, 640), (512, 1)).astype(np.uint16)
    scene[:, column] = value
    out = AutoGain(GainConfig(), "ir")(scene)
    assert np.delete(out, column, axis=1).min() <= 2 and np.delete(out, column, axis=1).max() >= 253


def test_smoothing_0_gives_each_frame_its_own_range():
    """max_change still held each end of the range within 2 % of the previous frame's."""
    first = np.tile(np.linspace(7000, 8000, 128), (96, 1)).astype(np.uint16)
    second = np.tile(np.linspace(7200, 7600, 128), (96, 1)).astype(np.uint16)  # no scene cut: most pixels stay close
    gain = AutoGain(GainConfig(smoothing=0.0), "ir")
    gain(first)
    assert gain(second).min() <= 2 and gain.range[1] <= 7600


def test_fuse_gives_each_16bit_image_of_a_folder_its_own_gain(tmp_path, capsys):
    """A folder of unrelated images: the second one's range was smoothed from the first's (up to 176 grey levels
    from fusing it alone)."""
    from streamfuse.cli import main

    scene = SyntheticScene(*SIZE, seed=3, time_of_day="night", people=3, vehicles=0)
    for name in ("ir", "vis", "alone_ir", "alone_vis"):
        (tmp_path / name).mkdir()
    for index, (low, step) in enumerate(((7000, 16), (7400, 6))):  # two scenes, two ranges, no scene cut
        ir = (low + scene.render_ir(index).astype(np.uint16) * step).astype(np.uint16)
        cv2.imwrite(str(tmp_path / "ir" / f"t{index}.png"), ir)
        cv2.imwrite(str(tmp_path / "vis" / f"t{index}.png"), scene.render_vis(index))
    for side in ("ir", "vis"):
        (tmp_path / f"alone_{side}" / "t1.png").write_bytes((tmp_path / side / "t1.png").read_bytes())
    for ir, vis, out in (("ir", "vis", "both"), ("alone_ir", "alone_vis", "alone")):
        assert main(["fuse", "--ir", str(tmp_path / ir), "--vis", str(tmp_path / vis), "-o", str(tmp_path / out),
                     "--fuser", "classical", "--no-progress", "-q"]) == 0
    assert np.array_equal(cv2.imread(str(tmp_path / "both" / "t1.png")), cv2.imread(str(tmp_path / "alone" / "t1.png")))


@pytest.mark.parametrize(("config", "expected"), [
    (GainConfig(mode="fixed", range=[7000, 11080]), (0, 255)),
    # a radiometric camera in centikelvin: 10 C background, 30 C person, span 0-40 C
    (GainConfig(mode="radiometric", span_c=[0, 40]), (64, 191)),
])
def test_fixed_and_radiometric_ranges(config, expected):
    gain = AutoGain(config, "ir")
    if config.mode == "fixed":
        frame = np.array([[7000, 11080]], np.uint16)
    else:
        frame = np.array([[28315, 30315]], np.uint16)
    assert tuple(gain(frame)[0]) == expected


def test_8bit_frames_pass_through_unchanged():
    image = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert AutoGain(GainConfig(), "ir")(image) is image


def test_few_grey_levels_left_is_a_warning_naming_the_key(caplog):
    frame = to_14bit(np.tile(np.arange(256, dtype=np.uint8), (64, 1)))
    gain = AutoGain(GainConfig(mode="fixed", range=[0, 65535]), "ir")
    with caplog.at_level(logging.WARNING):
        out = gain(frame)
        gain(frame)
    assert grey_levels(out) < 64
    warnings = [r.getMessage() for r in caplog.records if "grey levels" in r.getMessage()]
    assert len(warnings) == 1 and "sources.ir.gain" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert grey_levels(AutoGain(GainConfig(), "ir")(frame)) > 200
    assert not caplog.records


@pytest.mark.parametrize(("gain", "message"), [
    ({"mode": "fixed"}, "sources.ir.gain.range: mode 'fixed' needs"),
    ({"mode": "radiometric"}, "sources.ir.gain.span_c: mode 'radiometric' needs"),
    ({"percentiles": [99, 1]}, "sources.ir.gain.percentiles"),
    ({"smoothing": 1.0}, "sources.ir.gain.smoothing"),
    ({"range": [7000, 9000]}, "sources.ir.gain.range: applies to mode 'fixed' only, and the mode is 'percentile'"),
    ({"mode": "fixed", "range": [0, 9], "span_c": [0, 40]}, "sources.ir.gain.span_c: applies to mode 'radiometric'"),
])
def test_bad_gain_settings_name_the_key(gain, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"sources": {"ir": {"type": "images", "path": "x", "gain": gain}}})


class FakeY16Camera:
    """Stands in for cv2.VideoCapture on a UVC thermal camera that sends Y16 as a raw byte buffer."""

    def __init__(self, *_args) -> None:
        self.props: dict[int, float] = {cv2.CAP_PROP_FRAME_WIDTH: 32, cv2.CAP_PROP_FRAME_HEIGHT: 24}

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return True

    def set(self, prop: int, value: float) -> bool:
        self.props[prop] = value
        return True

    def get(self, prop: int) -> float:
        return self.props.get(prop, 0.0)

    def read(self) -> tuple[bool, np.ndarray]:
        time.sleep(0.01)
        image = (7000 + np.arange(32 * 24, dtype=np.uint16) * 5).reshape(24, 32)
        raw = image.astype("<u2").view(np.uint8).reshape(1, -1) if self.props[cv2.CAP_PROP_CONVERT_RGB] == 0 else None
        return True, raw

    def release(self) -> None:
        pass


def test_y16_camera_frames_keep_16_bits_for_the_gain(tmp_path, monkeypatch):
    device = tmp_path / "video9"
    device.touch()
    monkeypatch.setattr("streamfuse.sources.camera.cv2.VideoCapture", FakeY16Camera)
    camera = CameraSource("ir", str(device), pixel_format="Y16")
    camera.open()
    assert camera._capture.props[cv2.CAP_PROP_FOURCC] == cv2.VideoWriter_fourcc(*"Y16 ")
    capture = camera.read()
    assert capture.image.dtype == np.uint16 and capture.image.shape == (24, 32)
    assert capture.image[0, 1] == 7005
    assert grey_levels(camera.gain(capture.image)) > 200


class FixedModeCamera(FakeY16Camera):
    """A camera that keeps its one mode, 32x24, whatever it is asked for."""

    def set(self, prop: int, value: float) -> bool:
        if prop in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT):
            return False
        return super().set(prop, value)


def test_a_camera_that_cannot_give_the_asked_size_is_warned_about(tmp_path, monkeypatch, caplog):
    """Only OpenCV's own warning said so, and the command line turns OpenCV's log off."""
    device = tmp_path / "video9"
    device.touch()
    monkeypatch.setattr("streamfuse.sources.camera.cv2.VideoCapture", FixedModeCamera)
    with caplog.at_level(logging.WARNING, logger="streamfuse"):
        CameraSource("ir", str(device), width=640, height=480, pixel_format="Y16").open()
    assert "camera '" in caplog.text and "runs at width 32 (asked 640), height 24 (asked 480)" in caplog.text
