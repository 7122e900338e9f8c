from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time

import cv2
import numpy as np
import pytest

from conftest import make_pair, wait_until
from media import write_png_mov, write_video
from streamfuse.errors import SourceError
from streamfuse.probe import probe
from streamfuse.queues import Closed
from streamfuse.sources import (
    CameraSource,
    Capture,
    ImagesSource,
    Source,
    SourceOptions,
    SyntheticScene,
    SyntheticSource,
    VideoSource,
)
from streamfuse.sources.video import redact


def drain(source, timeout: float = 10.0) -> list:
    frames = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            frame = source.queue.get(timeout=0.5)
        except Closed:
            break
        if frame is not None:
            frames.append(frame)
    source.join(2)
    return frames


def test_images_source_sorts_naturally_and_stamps_by_fps(image_folders):
    ir_dir, _ = image_folders
    source = ImagesSource("ir", str(ir_dir), fps=10)
    source.start()
    frames = drain(source)
    assert [f.meta["name"] for f in frames] == [f"f{i}" for i in range(12)]
    assert [f.seq for f in frames] == list(range(12))
    assert np.allclose([f.timestamp for f in frames], np.arange(12) / 10)
    assert np.array_equal(frames[5].image, make_pair(5)[0])
    assert source.error is None


def test_images_source_glob(image_folders):
    ir_dir, _ = image_folders
    source = ImagesSource("ir", str(ir_dir / "f1*.png"))
    source.start()
    assert [f.meta["name"] for f in drain(source)] == ["f1", "f10", "f11"]


@pytest.mark.parametrize(("setup", "message"), [
    (lambda tmp: tmp / "nope", "no such folder"),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "holds no image files"),
    (lambda tmp: str(tmp / "*.png"), "matches no image files"),
])
def test_images_source_open_errors(tmp_path, setup, message):
    with pytest.raises(SourceError, match=message):
        ImagesSource("ir", str(setup(tmp_path))).start()


def test_a_folder_mixing_8_and_16_bit_images_is_warned_about_once(tmp_path, caplog):
    for index in range(4):
        depth = np.uint16 if index % 2 == 0 else np.uint8  # it was accepted without a word
        cv2.imwrite(str(tmp_path / f"f{index}.png"), np.arange(64).reshape(8, 8).astype(depth) * 3)
    with caplog.at_level(logging.WARNING, logger="streamfuse"):
        source = ImagesSource("ir", str(tmp_path))
        source.start()
        assert len(drain(source)) == 4
    warnings = [r.getMessage() for r in caplog.records if "the folder's first image" in r.getMessage()]
    assert len(warnings) == 1 and "f1.png is 8-bit, the folder's first image 16-bit (f0.png)" in warnings[0]


def test_an_unreadable_image_in_a_folder_is_skipped_with_a_warning(image_folders, caplog):
    """One corrupt file stopped a batch part-way (the rest never fused); the ._NAME files macOS writes beside
    each image on a USB drive stopped it at the first file."""
    ir_dir, _ = image_folders
    (ir_dir / "f5.png").write_bytes(b"this is not a png")
    (ir_dir / "._f0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    source = ImagesSource("ir", str(ir_dir), fps=10)
    with caplog.at_level(logging.WARNING, logger="streamfuse"):
        source.start()
        frames = drain(source)
    assert source.error is None
    assert [f.meta["name"] for f in frames] == [f"f{i}" for i in range(12) if i != 5]
    assert frames[5].timestamp == pytest.approx(0.6)  # f6 keeps its time: its partner still pairs with it
    assert source.unreadable == 1 and source.stats.counters()["undecodable.ir"] == 1 and source.frames_short == 0
    assert "f5.png: not a readable image" in caplog.text and "skipped" in caplog.text
    assert "._f0" not in caplog.text


def test_a_folder_of_unreadable_images_stops_the_source_with_a_clear_error(tmp_path):
    for index in range(30):
        (tmp_path / f"f{index}.png").write_bytes(b"not a png")
    source = ImagesSource("ir", str(tmp_path))
    source.start()
    assert drain(source) == []
    assert isinstance(source.error, SourceError) and "25 images in a row cannot be read" in str(source.error)


def test_video_source_reads_frames_and_pts(tmp_path):
    frames = [make_pair(i, (64, 48))[1] for i in range(20)]
    path = write_video(tmp_path / "vis.mp4", frames, fps=20)
    source = VideoSource("vis", str(path))
    source.start()
    assert source.nominal_fps == 20 and source.expected_frames == 20
    got = drain(source)
    assert len(got) == 20
    assert np.allclose([f.timestamp for f in got], np.arange(20) / 20)
    assert got[0].image.shape == (48, 64, 3)
    for index in (0, 7, 19):  # each decoded frame is closest to the frame encoded at its position
        errors = [np.abs(got[index].image.astype(int) - f.astype(int)).mean() for f in frames]
        assert int(np.argmin(errors)) == index


def test_a_realtime_video_file_plays_at_its_recorded_timing(tmp_path):
    """A recording stating 20 fps whose frames came in bursts with a pause: each frame is released when its own
    timestamp is due (it was released on the 20 fps grid: the 0.5 s pause vanished and the frames after it came
    0.5 s early against the other camera's file)."""
    times = [0.0, 0.05, 0.1, 0.6, 0.65, 0.7]
    path = write_video(tmp_path / "paused.mkv", [make_pair(i, (64, 48))[1] for i in range(6)], fps=20, times=times)
    source = VideoSource("vis", str(path), realtime=True)
    source.start()
    got = drain(source)
    assert [round(f.timestamp, 3) for f in got] == times
    released = np.array([f.created for f in got]) - got[0].created
    assert np.allclose(released, times, atol=0.04), released


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_a_recording_whose_timestamps_start_late_counts_its_own_frames(tmp_path, suffix):
    """Matroska states when the file ends, not its length: 20 frames from 60 s were counted as 1,220 (probe
    said 61 s) before; the source still decodes every frame from the first."""
    frames = [make_pair(i, (64, 48))[1] for i in range(20)]
    path = write_video(tmp_path / f"vis{suffix}", frames, fps=20, start_s=60)
    report = probe(str(path))
    assert report["frames"] == 20 and report["duration s"] == pytest.approx(1.0, abs=0.06)
    assert report["first timestamps"][0] == pytest.approx(60.0)
    source = VideoSource("vis", str(path))
    source.start()
    assert source.expected_frames == 20
    got = drain(source)
    assert len(got) == 20 and got[0].timestamp == pytest.approx(0.0)


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such video file"),
    (b"\x00garbage" * 100, "cannot open video"),
])
def test_video_source_open_errors(tmp_path, content, message):
    path = tmp_path / "broken.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SourceError, match=message):
        VideoSource("ir", str(path)).start()


def test_truncated_video_is_an_error_not_a_hang(tmp_path):
    frames = [make_pair(i, (64, 48))[1] for i in range(30)]
    good = write_video(tmp_path / "good.mp4", frames)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(SourceError, match="cut.mp4: cannot open video"):
        VideoSource("ir", str(cut)).start()


def test_a_corrupt_frame_mid_file_is_a_warning_naming_the_frame_and_reading_goes_on(tmp_path, caplog):
    source = VideoSource("vis", str(write_png_mov(tmp_path / "broken.mov", 40, broken=(20,))))
    with caplog.at_level(logging.WARNING):
        source.start()
        got = drain(source, timeout=20)
    assert source.error is None
    assert len(got) == 39 and source.decode_errors == 1
    assert got[20].timestamp == pytest.approx(21 / 25)  # the skipped frame leaves a gap in time
    assert "sources.vis: " in caplog.text and "broken.mov: frame 20 cannot be decoded" in caplog.text


def test_a_video_whose_frames_all_fail_ends_with_an_error_naming_the_file_and_the_frames_read(tmp_path):
    path = write_png_mov(tmp_path / "broken.mov", 60, broken=tuple(range(10, 60)))
    source = VideoSource("vis", str(path))
    source.start()
    got = drain(source, timeout=20)
    assert len(got) == 10
    assert isinstance(source.error, SourceError)
    assert "broken.mov: corrupt or broken video after 10 frames" in str(source.error)


def test_urls_are_live_and_credentials_are_redacted():
    source = VideoSource("ir", "rtsp://admin:secret@10.1.2.3:554/stream1")
    assert source.drop_policy == "drop_oldest"
    assert "secret" not in source.describe()
    assert redact("rtsp://admin:secret@cam/x") == "rtsp://***@cam/x"
    assert redact("/videos/a@b.mp4") == "/videos/a@b.mp4"


def test_missing_camera_is_a_clear_error():
    with pytest.raises(SourceError, match="sources.ir.device: no camera at /dev/video-streamfuse-missing"):
        CameraSource("ir", "/dev/video-streamfuse-missing").start()
    with pytest.raises(SourceError, match="sources.vis.device: no camera at /dev/video97"):
        CameraSource("vis", 97).start()


def test_drop_oldest_counts_drops_with_a_slow_consumer():
    scene = SyntheticScene(64, 48, seed=1)
    source = SyntheticSource("vis", scene, fps=200, frames=60, realtime=True, options=SourceOptions(queue_size=2))
    assert source.drop_policy == "drop_oldest"
    source.start()
    source.join(5)
    kept = drain(source)
    assert source.queue.dropped == 58
    assert [f.seq for f in kept] == [58, 59]  # the freshest frames survive, sequence numbers show the gap


class StallingSource(Source):
    """Blank frames paced at ``fps``; reading frame ``stall_at`` takes ``stall_s`` (a busy host)."""

    def __init__(self, fps: float, frames: int, stall_at: int, stall_s: float) -> None:
        super().__init__("ir", pace_fps=fps, options=SourceOptions(queue_size=64))
        self.frames, self.stall_at, self.stall_s = frames, stall_at, stall_s

    def open(self) -> None:
        pass

    def read(self) -> Capture | None:
        if self.frames_read >= self.frames:
            return None
        if self.frames_read == self.stall_at:
            time.sleep(self.stall_s)
        return Capture(np.zeros((4, 4), np.uint8), float(self.frames_read))


def test_a_paced_source_that_fell_behind_goes_on_at_its_pace_without_a_burst_of_late_frames():
    source = StallingSource(fps=20, frames=10, stall_at=3, stall_s=0.4)
    source.start()
    created = [frame.created for frame in drain(source)]
    assert len(created) == 10
    gaps_after_the_stall = np.diff(created[3:])
    assert np.count_nonzero(gaps_after_the_stall < 0.03) <= 1  # the next frame at once, then 0.05 s apart;
    # catching up, the 8 frames that were due came at once


def test_a_paced_source_whose_reads_are_slower_than_its_pace_reads_back_to_back():
    """Re-anchoring after every late read added a whole interval to each (60 ms reads at 20 fps: 14 fps)."""
    source = StallingSource(fps=20, frames=10, stall_at=-1, stall_s=0.0)
    read = source.read

    def slow_read():
        time.sleep(0.06)
        return read()

    source.read = slow_read
    started = time.perf_counter()
    source.start()
    assert len(drain(source)) == 10
    assert time.perf_counter() - started < 0.95  # 10 reads of 60 ms back to back; 1.1 s with a wait after each


class ResizingSource(Source):
    """Frames of the given ``(width, height)`` sizes, one each, each filled with its index."""

    def __init__(self, sizes: list[tuple[int, int]], *, live: bool) -> None:
        super().__init__("ir", live=live, options=SourceOptions(drop_policy="wait", queue_size=64))
        self.sizes = sizes

    def open(self) -> None:
        pass

    def read(self) -> Capture | None:
        if self.frames_read >= len(self.sizes):
            return None
        width, height = self.sizes[self.frames_read]
        return Capture(np.full((height, width), self.frames_read, np.uint8), float(self.frames_read))


def test_a_live_source_that_changes_aspect_ratio_is_scaled_back_with_a_warning_to_recalibrate(caplog):
    source = ResizingSource([(64, 48), (64, 36), (64, 36), (64, 48)], live=True)
    source.start()
    frames = drain(source)
    assert [f.image.shape for f in frames] == [(48, 64)] * 4 and [int(f.image[0, 0]) for f in frames] == [0, 1, 2, 3]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "now delivers 64x36 frames where it started at 64x48" in warnings[0]
    assert "the aspect ratio changed too" in warnings[0] and "calibrate at the new size" in warnings[0]
    assert source.stats.counters()["rescaled.ir"] == 2


def test_a_recorded_input_keeps_the_sizes_it_has():
    """Only live inputs are scaled back; a file's size change is its reader's to refuse."""
    source = ResizingSource([(64, 48), (32, 24)], live=False)
    source.start()
    assert [f.image.shape for f in drain(source)] == [(48, 64), (24, 32)]


def test_live_synthetic_cameras_started_apart_take_their_frames_of_one_moment_together():
    """Each camera paced from its own start: a camera started 60 ms late delivered every frame 60 ms after
    its partner's frame of the same time, and pairing held the early camera's frames (a constant extra latency
    that changed from run to run with the threads' start order)."""
    scene = SyntheticScene(96, 64, seed=3)
    options = SourceOptions(queue_size=64)
    ir = SyntheticSource("ir", scene, fps=20, frames=8, realtime=True, options=options)
    vis = SyntheticSource("vis", scene, fps=20, frames=8, realtime=True, options=options)
    ir.start()
    time.sleep(0.06)
    vis.start()
    ir_frames, vis_frames = drain(ir), drain(vis)
    vis_by_time = {round(f.timestamp, 6): f for f in vis_frames}
    together = [(f, vis_by_time[round(f.timestamp, 6)]) for f in ir_frames if round(f.timestamp, 6) in vis_by_time]
    assert len(together) >= 5
    assert max(abs(a.created - b.created) for a, b in together) < 0.025  # half an interval: the same moment


def test_a_live_synthetic_camera_after_a_stall_shows_the_present_not_the_frames_it_missed():
    scene = SyntheticScene(96, 64, seed=3)
    ir = SyntheticSource("ir", scene, fps=20, frames=8, realtime=True, options=SourceOptions(queue_size=64))
    render = scene.render_ir

    def render_slowly_once(t):
        if t == 0.1:
            time.sleep(0.3)
        return render(t)

    scene.render_ir = render_slowly_once
    ir.start()
    frames = drain(ir)
    times = [f.timestamp for f in frames]
    assert times[:3] == [0.0, 0.05, 0.1] and times[3] >= 0.35  # the frames of the stall were never taken
    lag = [f.created - scene.live_start() - f.timestamp for f in frames[3:]]
    assert max(lag) < 0.05  # then on time again: no lag carried behind the live scene

    # The pacing grid can be a slot ahead of the clock after a late wake-up (its slot is counted when it wakes,
    # the frame's moment read just after): that frame was then delivered an interval early, and every one after
    # it too, for good (its partner's frames waited: an interval of extra latency until restart).
    ahead = SyntheticSource("ir", scene, fps=20, frames=5, realtime=True, options=SourceOptions(queue_size=64))
    ahead._next_index = int((time.perf_counter() - scene.live_start()) * 20) + 2
    capture = ahead.read()
    assert time.perf_counter() - scene.live_start() >= capture.timestamp - 0.001

    every_frame = SyntheticSource("ir", scene, fps=20, frames=5, realtime=True,
                                  options=SourceOptions(queue_size=64, drop_policy="wait"))
    every_frame.start()
    assert [f.timestamp for f in drain(every_frame)] == [0.0, 0.05, 0.1, 0.15, 0.2]  # 'wait': none skipped


def test_synthetic_pair_and_masks():
    scene = SyntheticScene(96, 64, seed=3)
    ir = SyntheticSource("ir", scene, fps=10, frames=3, realtime=False)
    vis = SyntheticSource("vis", scene, fps=10, frames=3, realtime=False, with_masks=True)
    assert ir.drop_policy == "wait"
    ir.start()
    vis.start()
    ir_frames, vis_frames = drain(ir), drain(vis)
    assert [f.timestamp for f in ir_frames] == [f.timestamp for f in vis_frames] == [0.0, 0.1, 0.2]
    assert ir_frames[0].image.ndim == 2 and vis_frames[0].image.shape == (64, 96, 3)
    assert vis_frames[1].meta["mask"].shape == (64, 96)
    assert np.array_equal(ir_frames[2].image, scene.render_ir(0.2))


def test_an_mkv_whose_sound_goes_on_after_the_video_is_not_said_to_be_cut_off(tmp_path):
    """The container's length is its longest stream's: 1 s of video beside 3 s of sound was '20 missing at its
    end (cut off?)'."""
    import av

    path = tmp_path / "with_sound.mkv"
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        sound = container.add_stream("aac", rate=8000)
        for index in range(10):
            container.mux(video.encode(av.VideoFrame.from_ndarray(make_pair(index, (64, 48))[1], format="bgr24")))
        container.mux(video.encode())
        for start in range(0, 24000, 1024):
            chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 8000, start
            container.mux(sound.encode(chunk))
        container.mux(sound.encode())
    assert probe(str(path))["duration s"] < 1.5
    source = VideoSource("vis", str(path))
    source.start()
    assert len(drain(source)) == 10 and source.reached_end
    assert source.frames_short == 0


def test_an_mpeg_ts_cut_before_a_keyframe_keeps_its_frames_times(tmp_path, caplog):
    """A transport stream cut mid-stream (a recording started or copied from the middle): the frames before its first
    keyframe cannot be decoded. Its frames were timed from the first decodable one, so they came that much early
    against the other camera's file, and the frames missing at its start were reported as 'missing at its end'."""
    whole = write_video(tmp_path / "whole.ts", [make_pair(i, (64, 48))[1] for i in range(60)], fps=10, gop=20)
    data = whole.read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[(len(data) // 2) // 188 * 188:])  # whole 188-byte packets, in the middle of a group
    source = VideoSource("ir", str(cut))
    source.start()
    with caplog.at_level(logging.INFO, logger="streamfuse"):
        times = [capture.timestamp for capture in drain(source)]
    assert times[0] >= 0.15 and np.allclose(np.diff(times), 0.1)
    assert "before its first decodable frame: it was cut mid-stream" in caplog.text
    assert source.reached_end and source.frames_short == 0


@contextlib.contextmanager
def camera_that_never_streams(*, hang_up: bool):
    """A TCP server on a free loopback port that accepts every connection and then says nothing (``hang_up``:
    closes it at once); yields the port and the list of connections it accepted."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    accepted, stop = [], threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                continue
            accepted.append(connection)
            if hang_up:
                connection.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        server.close()


@pytest.mark.parametrize("scheme", ["http", "rtsp"])
def test_a_server_that_accepts_but_never_answers_is_said_to_time_out(scheme):
    """FFmpeg's words for the timeout were 'Immediate exit requested' (HTTP) or 'Invalid data found when processing
    input' (RTSP)."""
    from streamfuse.errors import TransientSourceError
    from streamfuse.sources.video import open_container

    with camera_that_never_streams(hang_up=False) as (port, _), \
            pytest.raises(TransientSourceError, match=r"cannot open video \(no answer within 1 s\)"):
        open_container(f"{scheme}://127.0.0.1:{port}/camera", timeout=(1.0, 1.0))


def test_max_attempts_is_the_number_of_attempts_made(tmp_path):
    """With max_attempts 2 the camera was tried three times, and the error said 'after 2 failed attempts'."""
    from streamfuse.config import ReconnectConfig

    reconnect = ReconnectConfig(enabled=True, max_attempts=2, backoff_initial_s=0.05, backoff_max_s=0.1)
    with camera_that_never_streams(hang_up=True) as (port, attempts):
        source = VideoSource("ir", f"http://127.0.0.1:{port}/camera", options=SourceOptions(reconnect=reconnect))
        try:
            source.start()
            wait_until(lambda: source.error is not None, 30, "the source to give up")
            time.sleep(0.3)
            assert len(attempts) == 2
            assert "gave up after 2 failed attempt(s) in a row" in str(source.error)
            assert "reconnect.max_attempts" in str(source.error)
        finally:
            source.stop()


def test_a_camera_host_name_that_does_not_resolve_is_said_so():
    """FFmpeg said only 'Input/output error', and the supervised source retried it for ever in those words."""
    from streamfuse.errors import TransientSourceError
    from streamfuse.sources.video import open_container

    with pytest.raises(TransientSourceError, match="the host name camera-typo.invalid does not resolve"):
        open_container("rtsp://camera-typo.invalid:8554/stream1", timeout=(2.0, 2.0))
