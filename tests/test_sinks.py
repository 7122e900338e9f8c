from __future__ import annotations

import contextlib
import json
import logging
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import av
import numpy as np
import pytest
import zmq

from conftest import make_pair, wait_until
from media import read_video
from streamfuse.config import config_from_dict
from streamfuse.errors import ConfigError, SinkError
from streamfuse.frames import Frame, FramePair, FusedFrame
from streamfuse.sinks import ImagesSink, Subscriber, VideoSink, VideoWriter, ZmqSink
from streamfuse.sources import VideoSource


def fused(index: int, timestamp: float | None = None, image: np.ndarray | None = None, name: str | None = None):
    ir, vis = make_pair(index)
    t = index / 25 if timestamp is None else timestamp
    meta = {"name": name} if name else {}
    pair = FramePair(Frame(ir, t, index, "ir"), Frame(vis, t, index, "vis", meta=meta), 0.0)
    return FusedFrame(vis if image is None else image, index, pair, "test", {"fuse": 1.0})


def run_sink(sink, frames) -> None:
    sink.start()
    for frame in frames:
        assert sink.queue.put(frame)
    sink.queue.close()
    sink.join(10)
    assert sink.error is None, sink.error


def test_video_sink_writes_every_frame_with_increasing_pts(tmp_path):
    path = tmp_path / "out.mp4"
    run_sink(VideoSink(path, fps=25), [fused(i) for i in range(30)])
    images, times = read_video(path)
    assert len(images) == 30
    assert all(b > a for a, b in zip(times, times[1:], strict=False))
    assert times[-1] == pytest.approx(29 / 25, abs=0.002)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_run_without_frames_keeps_the_file_it_would_have_replaced(tmp_path, suffix):
    """overwrite: true and then no frame (a busy port, a size error, Ctrl-C while a camera starts): the old
    recording stays as it was (it was deleted)."""
    path = tmp_path / f"old{suffix}"
    path.write_bytes(b"an earlier recording")
    VideoWriter(path, overwrite=True).close()
    assert path.read_bytes() == b"an earlier recording"
    VideoWriter(tmp_path / f"new{suffix}").close()
    assert not (tmp_path / f"new{suffix}").exists()  # and none is left behind where there was none


def test_an_encoder_refusing_its_settings_keeps_the_earlier_recording(tmp_path):
    """An x264 option it does not know (a preset set in code; configs check it at load) fails at the first frame:
    one SinkError, and the file it would have replaced is left as it was (it was deleted first)."""
    path = tmp_path / "old.mp4"
    path.write_bytes(b"an earlier recording")
    writer = VideoWriter(path, overwrite=True, preset="superfast2")
    with pytest.raises(SinkError, match=r"the h264 encoder refused its settings or frame .*superfast2.*an earlier "
                                        r"old\.mp4 is left as it was"):
        writer.write(np.zeros((32, 32, 3), np.uint8), 0.0)
    writer.close()
    assert path.read_bytes() == b"an earlier recording"


@pytest.mark.parametrize("suffix", [".avi", ".webm"])
def test_containers_that_cannot_hold_the_stream_are_refused_before_writing(tmp_path, suffix):
    """AVI stores a frame rate, not timestamps (players saw 1000 fps); WebM takes no H.264 (a traceback at frame 1)."""
    with pytest.raises(SinkError, match=rf"cannot create video .*{suffix} \(a format streamfuse reads but does not "
                                        r"write\); use one of \.mp4, \.mkv, \.mov"):
        VideoWriter(tmp_path / f"out{suffix}")
    assert not (tmp_path / f"out{suffix}").exists()


@pytest.mark.parametrize("suffix", [".mov", ".m4v", ".ts"])
def test_lossless_video_in_a_container_that_cannot_carry_it_is_refused_before_writing(tmp_path, suffix):
    """MOV and M4V refused FFV1 at the first frame (a traceback); MPEG-TS stored it as a data stream that nothing
    plays, and the run reported success."""
    with pytest.raises(SinkError, match=rf"codec: .*out{suffix}: a {suffix} file cannot hold ffv1 video; end the "
                                        r"path in \.mkv or \.mp4"):
        VideoWriter(tmp_path / f"out{suffix}", codec="ffv1")
    assert not (tmp_path / f"out{suffix}").exists()
    with pytest.raises(ConfigError, match=rf"sinks.0.codec: a {suffix} file cannot hold ffv1 video"):
        config_from_dict({"sinks": [{"type": "video", "path": f"out{suffix}", "codec": "ffv1"}]})


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_lossless_video_round_trips_in_the_containers_that_carry_it(tmp_path, suffix):
    path = tmp_path / f"lossless{suffix}"
    frames = [make_pair(k)[1] for k in range(3)]
    with VideoWriter(path, codec="ffv1", fps=30) as writer:
        for k, frame in enumerate(frames):
            writer.write(frame, k / 30)
    with av.open(str(path)) as container:
        decoded = [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]
    assert len(decoded) == 3 and np.array_equal(decoded[2], frames[2])


def test_video_pts_follow_capture_time_across_drops(tmp_path):
    """Frames 10..19 were dropped upstream: the file keeps real time instead of speeding up."""
    stamps = [i / 30 for i in range(10)] + [i / 30 for i in range(20, 30)]
    path = tmp_path / "gaps.mkv"
    with VideoWriter(path, fps=30) as writer:
        for k, t in enumerate(stamps):
            writer.write(make_pair(k)[1], t)
    _, times = read_video(path)
    assert len(times) == 20
    assert times[10] - times[9] == pytest.approx(11 / 30, abs=0.002)
    assert times[-1] == pytest.approx(29 / 30, abs=0.002)


KILLED_WRITER = """
import os, signal, sys
import numpy as np
from streamfuse.sinks import VideoWriter
writer = VideoWriter(sys.argv[1], fps=25, fragmented=sys.argv[2] == "yes")
scene = np.random.default_rng(0).integers(0, 256, (96, 128, 3), np.uint8)
for i in range(int(sys.argv[3])):  # a keyframe every 2 s (50 frames); the texture pans, no scene cut
    writer.write(np.roll(scene, i, axis=1), i / 25)
os.kill(os.getpid(), signal.SIGKILL)
"""


def kill_a_writer(path, fragmented: bool, frames: int) -> None:
    writer = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED_WRITER), str(path),
                             "yes" if fragmented else "no", str(frames)], capture_output=True, timeout=60)
    assert writer.returncode == -9, writer.stderr.decode()


def test_a_killed_classic_mp4_does_not_play(tmp_path):
    kill_a_writer(tmp_path / "killed.mp4", False, 300)
    with pytest.raises(av.error.InvalidDataError):  # the classic MP4 index is written on close
        read_video(tmp_path / "killed.mp4")


@pytest.mark.parametrize(("frames", "suffix"), [(300, ".mp4"), (301, ".mp4"), (302, ".mp4"), (310, ".mp4"),
                                                (320, ".mp4"), (349, ".mp4"), (310, ".m4v"), (310, ".mov")])
def test_a_killed_fragmented_mp4_loses_at_most_its_last_two_seconds(tmp_path, frames, suffix):
    """Killed at every phase of the 2 s fragment: what the encoder still holds must not add to the loss.
    Every MP4-family extension is fragmented (a killed .m4v did not play at all)."""
    kill_a_writer(tmp_path / f"killed{suffix}", True, frames)
    images, times = read_video(tmp_path / f"killed{suffix}")
    assert (frames - len(images)) / 25 <= 2.0, f"{len(images)} of {frames} frames play"
    assert times == pytest.approx([i / 25 for i in range(len(images))], abs=0.002)


@pytest.mark.parametrize("suffix", [".mkv", ".ts"])
def test_a_killed_mkv_or_ts_recording_loses_at_most_its_last_two_seconds(tmp_path, suffix):
    """They stayed empty for 15-25 s (the muxer's 256 KiB write buffer) and a kill lost everything."""
    kill_a_writer(tmp_path / f"killed{suffix}", False, 160)
    images, _ = read_video(tmp_path / f"killed{suffix}")
    assert (160 - len(images)) / 25 <= 2.0, f"{len(images)} of 160 frames play"


def test_a_second_writer_of_a_file_being_recorded_is_refused(tmp_path, capsys):
    """Two runs writing one file (an overlapping cron job, a restart while the old run still finalises): the second
    replaced the file under the first, which blamed a full disk, and both recordings were lost."""
    import os

    path = tmp_path / "same.mp4"
    first = VideoWriter(path, fps=20)
    for index in range(5):
        first.write(make_pair(index)[1], index / 20)
    with pytest.raises(SinkError, match=rf"same.mp4 is being written by another process \(pid {os.getpid()}\)"):
        VideoWriter(path, fps=20, overwrite=True)
    from streamfuse.cli import main
    from streamfuse.imageio import encode_image

    folders = [tmp_path.parent / f"{tmp_path.name}-{name}" for name in ("ir", "vis")]  # fuse into it: refused
    for folder, image in zip(folders, make_pair(0), strict=True):  # in fuse's words (-o), not the sink's (sinks.0)
        folder.mkdir()
        (folder / "a.png").write_bytes(encode_image(image, ".png"))
    assert main(["fuse", "--ir", str(folders[0]), "--vis", str(folders[1]), "-o", str(path), "-y", "--fuser",
                 "classical"]) == 1
    assert f"-o {path}: is being written by another process" in capsys.readouterr().err
    first.close()
    assert len(read_video(path)[0]) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.mp4"]  # the lock file went with the writer
    second = VideoWriter(path, fps=20, overwrite=True)  # the recording is finished: it may be replaced now
    second.write(make_pair(0)[1], 0.0)
    second.close()
    assert len(read_video(path)[0]) == 1


def test_a_segment_whose_name_another_run_records_goes_to_the_next_name(tmp_path, caplog):
    """Two segmenting runs on one pattern (overwrite: true): the second replaced the first's finished segments and
    then died on the one being recorded ('is being written by another process')."""
    from streamfuse.sinks.video import OutputClaim

    other = OutputClaim(tmp_path / "x-00001.mp4", "another run")
    try:
        sink = VideoSink(tmp_path / "x.mp4", fps=25, segment_minutes=0.01, overwrite=True)
        with caplog.at_level(logging.WARNING, logger="streamfuse"):
            run_sink(sink, [fused(i) for i in range(40)])
        assert sink.error is None, sink.error
        assert [p.name for p in sink.segments] == ["x-00000.mp4", "x-00001-1.mp4", "x-00002.mp4"]
        assert "x-00001.mp4 is being written by another process; the segment goes to x-00001-1.mp4" in caplog.text
    finally:
        other.release()


def test_a_name_too_long_for_its_lock_file_still_records(tmp_path):
    """A 252-character file name worked until the lock file (.NAME.lock, 6 more) was too long for the file system."""
    path = tmp_path / ("x" * 248 + ".mp4")
    with VideoWriter(path, fps=20) as writer:
        writer.write(make_pair(0)[1], 0.0)
        assert len([p for p in tmp_path.iterdir() if p.name.endswith(".lock")]) == 1
    assert len(read_video(path)[0]) == 1 and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_fragmented_mp4_reports_its_length(tmp_path):
    """Its header holds no frame count: the duration gives it (progress bars, probe)."""
    path = tmp_path / "frag.mp4"
    with VideoWriter(path, fps=20) as writer:
        for i in range(40):
            writer.write(make_pair(i)[1], i / 20)
    source = VideoSource("vis", str(path))
    source.open()
    try:
        assert source.expected_frames == 40
    finally:
        source.close()


def test_ffv1_is_lossless_and_odd_sizes_work_in_h264(tmp_path):
    frames = [np.random.default_rng(i).integers(0, 255, (33, 47, 3), dtype=np.uint8) for i in range(5)]
    with VideoWriter(tmp_path / "a.mkv", codec="ffv1") as lossless:
        for i, image in enumerate(frames):
            lossless.write(image, i / 10)
    images, _ = read_video(tmp_path / "a.mkv")
    assert all(np.array_equal(a, b) for a, b in zip(images, frames, strict=True))
    with VideoWriter(tmp_path / "b.mp4") as h264:
        for i, image in enumerate(frames):
            h264.write(image, i / 10)
    images, _ = read_video(tmp_path / "b.mp4")
    assert len(images) == 5 and images[0].shape == (34, 48, 3)


def test_video_sink_refuses_to_overwrite_and_bad_paths(tmp_path):
    existing = tmp_path / "keep.mp4"
    existing.write_bytes(b"precious")
    with pytest.raises(SinkError, match="already exists"):
        VideoSink(existing).start()
    assert existing.read_bytes() == b"precious"
    with pytest.raises(SinkError, match="is a folder"):
        VideoSink(tmp_path).start()
    with pytest.raises(SinkError, match="cannot create video"):
        VideoSink(tmp_path / "out.unknownext").start()


def test_video_size_change_fails_but_keeps_written_frames(tmp_path):
    path = tmp_path / "out.mp4"
    sink = VideoSink(path)
    sink.start()
    for i in range(5):  # odd sides, as given: the message names them, not the encoder's even padding
        sink.queue.put(fused(i, image=np.zeros((47, 63, 3), np.uint8)))
    sink.queue.put(fused(5, image=np.zeros((21, 21, 3), np.uint8)))
    sink.queue.close()
    sink.join(10)
    assert "frame size changed from 63x47 to 21x21" in str(sink.error)
    assert "it keeps the 5 frame(s) before" in str(sink.error)
    assert len(read_video(path)[0]) == 5


def test_images_sink_names_and_overwrite(tmp_path):
    run_sink(ImagesSink(tmp_path / "out"), [fused(i) for i in range(3)])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    run_sink(ImagesSink(tmp_path / "named", pattern="{name}_fused.png"), [fused(0, name="FLIR_01")])
    assert (tmp_path / "named" / "FLIR_01_fused.png").is_file()
    sink = ImagesSink(tmp_path / "named", pattern="{name}_fused.png")  # names from the input: refused as they come
    sink.start()
    sink.queue.put(fused(0, name="FLIR_01"))
    sink.queue.close()
    sink.join(5)
    assert "already exists" in str(sink.error)
    run_sink(ImagesSink(tmp_path / "sub", pattern="{name}/{index:03d}.png"), [fused(0, name="a"), fused(1, name="b")])
    assert (tmp_path / "sub" / "a" / "000.png").is_file() and (tmp_path / "sub" / "b" / "001.png").is_file()
    for overwrite in (False, True):  # the second frame said "already exists" of the file the run had just written
        sink = ImagesSink(tmp_path / "one", pattern="x.png", overwrite=overwrite)
        sink.start()
        sink.queue.put(fused(0))
        sink.queue.put(fused(1))
        sink.queue.close()
        sink.join(5)
        assert "pattern: 'x.png' gives every frame the same file name" in str(sink.error)


def test_an_images_sink_refuses_a_folder_of_earlier_frames_before_any_output(tmp_path):
    """An earlier run's numbered frames: refused at open, before the other sinks replace their files (it
    failed at the first clashing frame, after a video sink had replaced its recording)."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "000005.png").write_bytes(b"an earlier frame")
    with pytest.raises(SinkError, match=r"out already holds 1 file\(s\) named like '\{index:06d\}\.png' "
                                        r"\(000005\.png, \.\.\.\); choose another folder"):
        ImagesSink(tmp_path / "out").open()
    run_sink(ImagesSink(tmp_path / "out", overwrite=True), [fused(i) for i in range(6)])
    assert (tmp_path / "out" / "000005.png").read_bytes() != b"an earlier frame"
    ImagesSink(tmp_path / "out", pattern="run2_{index:06d}.png").open()  # another pattern's names do not clash
    (tmp_path / "notes").mkdir()  # any .png was refused: names the pattern never writes clash with nothing
    for name in ("notes.png", "123.png", "4900v.png"):
        (tmp_path / "notes" / name).write_bytes(b"not a frame")
    ImagesSink(tmp_path / "notes").open()


@pytest.fixture
def immutable(tmp_path):
    """Make a path immutable (chattr +i: refused even to root) for the test; undone after it."""
    made = []

    def make(path):
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.fail(f"chattr +i {path} failed: this test needs a file system with immutable files (ext4, xfs)")
        made.append(path)

    yield make
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], check=False)


def test_an_images_sink_says_why_it_cannot_write(tmp_path, immutable):
    """A folder or file it may not write: said with the system's reason, the folder at open (before any work);
    OpenCV only reports failure, which read 'unknown image extension or disk full'."""
    locked = tmp_path / "locked"
    locked.mkdir()
    immutable(locked)
    with pytest.raises(SinkError, match=r"cannot write into .*locked \(Operation not permitted\)"):
        ImagesSink(locked).open()
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "000000.png").write_bytes(b"old")
    immutable(folder / "000000.png")
    sink = ImagesSink(folder, overwrite=True)
    sink.start()
    sink.queue.put(fused(0))
    sink.queue.close()
    sink.join(5)
    assert "cannot replace" in str(sink.error) and "Operation not permitted" in str(sink.error)


def test_zmq_lossless_subscriber_gets_every_frame_with_header(free_port):
    endpoint = f"tcp://127.0.0.1:{free_port}"
    sink = ZmqSink(endpoint, encoding="raw", hwm=2, lossless=True, wait_for_subscribers=1)
    with Subscriber(endpoint, keep="all", hwm=2) as subscriber:
        starter = threading.Thread(target=run_sink, args=(sink, [fused(i) for i in range(40)]))
        starter.start()
        received = []
        while len(received) < 40:
            frame = subscriber.receive(timeout=5)
            assert frame is not None, f"timed out after {len(received)} frames"
            received.append(frame)
            time.sleep(0.002)  # slower than the publisher: lossless mode must wait, not drop
        starter.join(10)
    assert [f.header["index"] for f in received] == list(range(40))
    header = received[7].header
    assert header["seq"] == 7 and header["timestamp_vis"] == header["timestamp"] == pytest.approx(7 / 25)
    assert (header["width"], header["height"], header["channels"], header["dtype"]) == (64, 48, 3, "uint8")
    assert header["encoding"] == "raw" and header["fuser"] == "test" and "fuse" in header["latency_ms"]
    assert header["published_at"] >= header["captured_at"]
    assert np.array_equal(received[7].image, make_pair(7)[1])
    assert sink.dropped == 0


@contextlib.contextmanager
def stalled_subscriber(endpoint: str):
    """A subscriber that never reads (receive high-water mark 1): the publisher's pipe to it fills up."""
    context = zmq.Context()
    stalled = context.socket(zmq.SUB)
    stalled.setsockopt(zmq.RCVHWM, 1)
    stalled.setsockopt(zmq.SUBSCRIBE, b"")
    stalled.connect(endpoint)
    try:
        yield stalled
    finally:
        stalled.close(0)
        context.term()


def test_waiting_for_subscribers_ends_when_the_run_is_asked_to_stop(free_port):
    """The wait (in open(), on the main thread, where a signal is only noted) held Ctrl-C and SIGTERM until
    subscriber_timeout_s had passed (60 s: a supervisor's SIGKILL came first, the recording unfinalised)."""
    sink = ZmqSink(f"tcp://127.0.0.1:{free_port}", encoding="raw", wait_for_subscribers=1, subscriber_timeout_s=60)
    asked_at = time.monotonic() + 0.3
    sink.stop_requested = lambda: time.monotonic() >= asked_at  # what the pipeline sets: a signal was noted
    sink.start()
    assert time.monotonic() - asked_at < 1 and sink.subscribers == 0
    sink.queue.close()
    sink.join(5)
    assert not sink.running and sink.error is None


def test_sigterm_while_waiting_for_subscribers_stops_the_run_at_once(tmp_path, free_port):
    """The wait (in the sink's open, on the main thread) held SIGTERM until subscriber_timeout_s had passed: 60 s,
    and a supervisor's SIGKILL came first."""
    import signal

    from conftest import python_env

    sink = (f'[{{type: zmq, endpoint: "tcp://127.0.0.1:{free_port}", wait_for_subscribers: 1, '
            'subscriber_timeout_s: 60}]')
    run = subprocess.Popen([sys.executable, "-m", "streamfuse", "run", "--set", "synthetic.width=96", "--set",
                            "synthetic.height=64", "--set", "fusion.fuser=classical", "--set", "control.enabled=false",
                            "--set", f"sinks={sink}"], cwd=tmp_path, stderr=subprocess.PIPE, text=True,
                           env=python_env())
    lines = []
    while not any("sink 0: zmq" in line for line in lines):  # the sink is opening: the wait begins
        lines.append(run.stderr.readline())
        assert lines[-1] or run.poll() is None, "".join(lines)
    time.sleep(0.5)
    run.send_signal(signal.SIGTERM)
    try:
        rest = run.communicate(timeout=10)[1]
    finally:
        run.kill()
    assert run.returncode == 143, "".join(lines) + rest
    assert "stopped waiting for subscribers (0 of 1 joined): the run was interrupted" in rest


def test_zmq_live_mode_drops_and_counts(free_port):
    endpoint = f"tcp://127.0.0.1:{free_port}"
    sink = ZmqSink(endpoint, encoding="raw", hwm=1, wait_for_subscribers=1, subscriber_timeout_s=5)
    with stalled_subscriber(endpoint):
        big = np.zeros((600, 800, 3), np.uint8)
        run_sink(sink, [fused(i, image=big) for i in range(60)])
        assert sink.dropped > 0
        assert sink.stats.counters()["drops.zmq"] == sink.dropped


def test_zmq_live_mode_a_stalled_subscriber_does_not_starve_a_healthy_one(free_port):
    """The frames a full subscriber cannot take are counted as dropped, and the others still get every
    frame and the end-of-stream message (before, a frame was skipped for everyone, end message included)."""
    endpoint = f"tcp://127.0.0.1:{free_port}"
    sink = ZmqSink(endpoint, encoding="raw", hwm=1, wait_for_subscribers=2, subscriber_timeout_s=5)
    received, ended = [], []
    with stalled_subscriber(endpoint), Subscriber(endpoint, keep="all") as healthy:
        def read() -> None:
            while (frame := healthy.receive(timeout=10)) is not None:
                received.append(frame.header["index"])
            ended.append(healthy.ended)

        reader = threading.Thread(target=read)
        reader.start()
        big = np.zeros((600, 800, 3), np.uint8)
        sink.start()
        for index in range(60):  # paced, so that the healthy subscriber keeps up
            assert sink.queue.put(fused(index, image=big))
            time.sleep(0.02)
        sink.queue.close()
        sink.join(10)
        assert sink.error is None, sink.error
        reader.join(15)
    assert sink.dropped > 0 and sink.stats.counters()["drops.zmq"] == sink.dropped
    assert received == list(range(60))
    assert ended and ended[0] is not None and ended[0]["frames"] == 60


def test_zmq_lossless_stuck_subscriber_interrupted_run_finishes_without_spinning(free_port, monkeypatch, caplog):
    """A lossless publisher whose subscriber stopped reading: after an interrupt (finish_soon) it gives the
    stuck subscriber up after the wait and closes; meanwhile it sleeps (it spun a core polling the socket).
    The stall is said in the log (the pipeline stood still without a word), and so is the wait at the end."""
    monkeypatch.setattr("streamfuse.sinks.zmq.LOSSLESS_END_WAIT_S", 1.0)
    monkeypatch.setattr("streamfuse.sinks.zmq.LOSSLESS_STUCK_WARNING_S", 0.3)
    endpoint = f"tcp://127.0.0.1:{free_port}"
    sink = ZmqSink(endpoint, encoding="raw", hwm=1, lossless=True, wait_for_subscribers=1, subscriber_timeout_s=5)
    with stalled_subscriber(endpoint):
        sink.start()
        big = np.zeros((600, 800, 3), np.uint8)
        index = 0
        while sink.queue.put(fused(index, image=big), timeout=0.5):  # until the sink is blocked and its queue full
            index += 1
        sink.queue.close()
        cpu = time.process_time()
        time.sleep(1.0)
        assert time.process_time() - cpu < 0.5  # a spinning loop uses the whole second
        assert "a subscriber has taken no frame for 0.3 s; with lossless: true the pipeline waits for it" in caplog.text
        assert sink.stats.counters()["stalls.zmq"] == 1
        started = time.monotonic()
        sink.finish_soon()
        sink.join(10)
        assert not sink.running and time.monotonic() - started < 5
        assert sink.error is None and sink.dropped > 0
    assert "waiting up to 1 s for a slow subscriber to take the frames still queued" in caplog.text


def test_zmq_latest_mode_and_jpeg(free_port):
    endpoint = f"tcp://127.0.0.1:{free_port}"
    sink = ZmqSink(endpoint, encoding="jpeg", lossless=True, wait_for_subscribers=1)
    smooth = [np.dstack([np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (48, 1))] * 3) // (i + 1) for i in range(10)]
    with Subscriber(endpoint, keep="latest") as subscriber:
        run_sink(sink, [fused(i, image=smooth[i]) for i in range(10)])
        frame = subscriber.latest(timeout=5)
        assert frame is not None
        wait_until(lambda: subscriber.received == 10, 5, "all ten messages")
        newest = subscriber.latest(timeout=0.5) or frame
        assert newest.header["index"] == 9
        assert newest.header["encoding"] == "jpeg" and newest.image.shape == (48, 64, 3)
        assert np.abs(newest.image.astype(int) - smooth[9].astype(int)).mean() < 3
        assert subscriber.received == 10


SLOW_LIVE_SUBSCRIBER = """
import json, sys, time
from streamfuse.sinks import Subscriber

def hold_the_gil(seconds):  # busy inside one C call that keeps the GIL, as many C extensions do
    t0 = time.perf_counter()
    sum(range(200_000))
    sum(range(int(200_000 * seconds / (time.perf_counter() - t0))))

ages = []
with Subscriber(sys.argv[1], keep="latest") as subscriber:
    for _ in range(5):
        frame = subscriber.latest(timeout=10)
        ages.append(time.time() - frame.header["captured_at"])
        hold_the_gil(1.2)
print(json.dumps({"ages": ages, "skipped": subscriber.skipped}))
"""


def test_a_slow_live_subscriber_never_gets_a_frame_older_than_a_second(free_port):
    """30 fps of 640x512 JPEG from a live publisher to a reader (another process) that holds its GIL
    1.2 s per frame: its receiving thread stops while frames pile up in the socket buffers."""
    endpoint = f"tcp://127.0.0.1:{free_port}"
    sink = ZmqSink(endpoint, encoding="jpeg")
    noise = np.random.default_rng(0).integers(0, 256, (512, 640, 3), np.uint8)  # slow to decode
    sink.start()
    reader = subprocess.Popen([sys.executable, "-c", textwrap.dedent(SLOW_LIVE_SUBSCRIBER), endpoint],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        index = 0
        next_frame = time.monotonic()
        while reader.poll() is None and index < 30 * 30:
            next_frame += 1 / 30
            sink.queue.put(fused(index, image=noise))
            index += 1
            time.sleep(max(0.0, next_frame - time.monotonic()))  # a 30 fps camera
        output, errors = reader.communicate(timeout=30)
    finally:
        reader.kill()
        sink.queue.close()
        sink.join(10)
    assert reader.returncode == 0, errors
    result = json.loads(output)
    # latest() keeps frames at most max_age_s (1 s) old when it picks them; the age here is taken after it
    # returned (decoding included), which on a loaded 2-core host added a few ms (1.0016 and 1.0019 s seen).
    assert max(result["ages"]) < 1.05, result["ages"]
    assert result["skipped"] > 0 and sink.error is None


def test_zmq_endpoint_on_a_host_that_is_not_this_one_says_what_to_bind_to():
    with pytest.raises(SinkError, match="sinks.zmq.endpoint: cannot bind tcp://nohost.invalid:5555: no such address "
                                        "or interface on this host; bind to one of its addresses"):
        ZmqSink("tcp://nohost.invalid:5555").start()


def test_zmq_endpoint_in_use(free_port):
    endpoint = f"tcp://127.0.0.1:{free_port}"
    first = ZmqSink(endpoint)
    first.start()
    try:
        with pytest.raises(SinkError, match=f"sinks.zmq.endpoint: {endpoint} is already in use"):
            ZmqSink(endpoint).start()
    finally:
        first.queue.close()
        first.join(5)


def test_header_is_json_with_topic_frame(free_port):
    endpoint = f"tcp://127.0.0.1:{free_port}"
    sink = ZmqSink(endpoint, topic="cam7", encoding="raw", lossless=True, wait_for_subscribers=1)
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"cam7")
    sub.connect(endpoint)
    try:
        run_sink(sink, [fused(0)])
        assert sub.poll(5000)
        topic, header, payload = sub.recv_multipart()
        assert topic == b"cam7" and json.loads(header)["topic"] == "cam7" and len(payload) == 64 * 48 * 3
    finally:
        sub.close(0)
        context.term()


def test_a_recording_whose_file_is_deleted_stops_with_one_clear_error(tmp_path):
    """A cleanup job (or rm -rf of the folder) under a running recording: a traceback through os.stat before."""
    folder = tmp_path / "gone"
    sink = VideoSink(folder / "x.mp4", fps=25)
    sink.start()
    assert sink.queue.put(fused(0))
    wait_until(lambda: (folder / "x.mp4").exists(), 10, "the recording to start")
    shutil.rmtree(folder)  # the recording and its lock file (.x.mp4.lock)
    for index in range(1, 5):
        sink.queue.put(fused(index))
    sink.queue.close()
    sink.join(10)
    assert isinstance(sink.error, SinkError)
    assert "x.mp4 was deleted or moved while being recorded" in str(sink.error)


FILE_SIZE_LIMIT = """
import resource, sys
import numpy as np
from streamfuse.frames import Frame, FramePair, FusedFrame
from streamfuse.sinks import VideoSink
resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))  # as `ulimit -f`, or a FAT32 drive's 4 GiB
rng = np.random.default_rng(0)
sink = VideoSink(sys.argv[1], fps=25, crf=0)
sink.open()
for index in range(150):
    image = rng.integers(0, 256, (64, 64, 3), np.uint8)
    pair = FramePair(Frame(image, index / 25, index, "ir"), Frame(image, index / 25, index, "vis"), 0.0)
    sink.write(FusedFrame(image, index, pair, "test", {}))
sink.close()
print(sink.segments_started, sink.frames_lost)
"""


def test_a_file_at_the_largest_size_allowed_goes_on_in_a_new_file(tmp_path):
    """EFBIG (``ulimit -f``, a FAT32 drive's 4 GiB): was a traceback, and "DISK FULL" while the disk had room."""
    done = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMIT, str(tmp_path / "rec.mp4")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    segments, lost = map(int, done.stdout.split())
    assert segments >= 2 and lost <= 2 * 25 + 1, done.stdout
    assert "the file reached the largest size allowed here" in done.stderr and "Traceback" not in done.stderr
    files = sorted(tmp_path.glob("rec*.mp4"))
    assert len(files) == segments
    assert sum(len(read_video(path)[0]) for path in files) == 150 - lost


def test_keyframes_come_every_two_seconds_of_the_frames_own_time(tmp_path):
    """A live sink opens before the cameras state their rate and assumes 30 fps: the encoder's keyframe every 60
    frames came every 4 s from a 15 fps camera, so a fragmented MP4 cut by a crash lost up to 4 s, not 2."""
    from streamfuse.config import SyntheticConfig
    from streamfuse.sources.synthetic import build_scene

    scene = build_scene(SyntheticConfig(width=160, height=128))
    with VideoWriter(tmp_path / "live.mp4", fps=30, codec="h264") as writer:
        for index in range(90):  # 6 s at 15 fps
            writer.write(scene.render_vis(index / 15), index / 15)
    with av.open(str(tmp_path / "live.mp4")) as container:
        keyframes = [round(float(frame.time), 2) for frame in container.decode(video=0)
                     if frame.pict_type == av.video.frame.PictureType.I]
    assert keyframes == [0.0, 2.0, 4.0]
