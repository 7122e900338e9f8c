"""A full disk under a recording: real tmpfs, real PyAV writer, real ZeroMQ and HTTP on loopback.

The disk is a small tmpfs mounted for the test (as root, or with passwordless sudo); where none can
be mounted the tests are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import threading
import time
from pathlib import Path

import av
import av.logging
import pytest

from conftest import free_ports, http_get, wait_until
from streamfuse.config import config_from_dict
from streamfuse.pipeline import Pipeline
from streamfuse.sinks import Subscriber, VideoWriter
from streamfuse.sinks.video import DiskFullError
from streamfuse.sources.synthetic import SyntheticScene

FPS = 15


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 2 MiB tmpfs folder owned by this user; unmounted afterwards."""
    folder = tmp_path / "disk"
    folder.mkdir()
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    mount = sudo + ["mount", "-t", "tmpfs", "-o", f"size=2m,uid={os.getuid()},gid={os.getgid()}", "tmpfs",
                    str(folder)]
    try:
        done = subprocess.run(mount, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs to fill up ({exc})")
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs to fill up (needs root or passwordless sudo): {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(sudo + ["umount", "-l", str(folder)], check=True, timeout=10)


def fill(folder: Path, leave_bytes: int) -> Path:
    """A ballast file that leaves about ``leave_bytes`` free in ``folder``'s file system."""
    ballast = folder / "ballast"
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    ballast.write_bytes(b"\xff" * (free - leave_bytes))
    return ballast


def top_level_boxes(path: Path) -> list[tuple[str, int]]:
    """The MP4 boxes at the top of ``path`` as (type, size); fails if the last one is cut short."""
    data = path.read_bytes()
    boxes, offset = [], 0
    while offset < len(data):
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        assert size >= 8 and offset + size <= len(data), f"{path.name}: box {kind} at {offset} is cut short"
        boxes.append((kind.decode(), size))
        offset += size
    return boxes


def decode_cleanly(path: Path) -> list[float]:
    """Presentation times of every frame of ``path``; fails on any decoder or demuxer error."""
    with av.logging.Capture() as logs, av.open(str(path)) as container:
        times = [float(frame.time) for frame in container.decode(video=0)]
    errors = [message for level, _name, message in logs if level <= av.logging.ERROR]
    assert not errors, f"{path.name}: {errors}"
    return times


def test_a_full_disk_cuts_the_file_at_its_last_complete_fragment(small_disk):
    fill(small_disk, 300_000)
    scene = SyntheticScene(320, 256)
    path = small_disk / "rec.mp4"
    writer = VideoWriter(path, fps=FPS, crf=0)
    with pytest.raises(DiskFullError, match="No space left on device") as caught:
        for index in range(100 * FPS):
            writer.write(scene.render_vis(index / FPS), index / FPS)
    written, kept = writer.frames_written, writer.frames_complete
    assert kept > 0 and caught.value.frames_lost == written - kept
    assert caught.value.frames_lost <= 2 * FPS + 1  # at most the fragment being written, and the frame that failed
    assert path.stat().st_size == writer.bytes_complete
    boxes = top_level_boxes(path)
    assert boxes[-2][0] == "moof" and boxes[-1][0] == "mdat"
    times = decode_cleanly(path)
    assert len(times) == kept and times[-1] == pytest.approx((kept - 1) / FPS, abs=0.002)
    writer.close()  # already closed by the error: nothing more happens


def test_live_output_survives_a_full_disk_and_recording_resumes_when_space_returns(small_disk):
    ballast = fill(small_disk, 700_000)  # room for one or two 2 s fragments
    zmq_port, = free_ports(1)
    camera = {"type": "synthetic", "fps": FPS, "realtime": True}
    pipeline = Pipeline(config_from_dict({
        "synthetic": {"width": 320, "height": 256},
        "sources": {"ir": dict(camera), "vis": dict(camera)},
        "fusion": {"fuser": "classical"},
        "sinks": [{"type": "video", "path": str(small_disk / "rec.mp4"), "crf": 0, "resume_free_mb": 0.4},
                  {"type": "zmq", "endpoint": f"tcp://127.0.0.1:{zmq_port}", "encoding": "raw"}],
        "health": {"enabled": True, "port": 0, "metrics": True},
        "stats": {"log_every_s": 0},
    }))
    runner = threading.Thread(target=pipeline.run, kwargs={"install_signal_handlers": False})
    subscriber = Subscriber(f"tcp://127.0.0.1:{zmq_port}", max_age_s=None)
    runner.start()
    try:
        wait_until(lambda: pipeline.health_server is not None and len(pipeline.sinks) == 2, 10,
                   "the health endpoint and the sinks")
        url = pipeline.health_server.url
        def recording() -> dict:
            return json.loads(http_get(f"{url}/health")[1])["recording"]["sinks.0"]

        wait_until(lambda: recording()["state"] == "suspended", 30, "the disk to fill up")
        health = json.loads(http_get(f"{url}/health")[1])
        assert health["status"] == "degraded" and "No space left" in health["recording"]["sinks.0"]["last_error"]
        metrics = http_get(f"{url}/metrics")[1]
        assert 'streamfuse_recording_suspended{sink="sinks.0"} 1.0' in metrics
        assert 'streamfuse_recording_suspensions_total{sink="sinks.0"} 1.0' in metrics

        # The live feed goes on: a real subscriber receives frames fused after the disk filled.
        full_at = pipeline.frames_fused
        received = []
        def fresh_frames() -> bool:
            frame = subscriber.latest(timeout=0.5)
            if frame is not None and frame.header["seq"] > full_at:
                received.append(frame.header["seq"])
            return len(received) >= 10
        wait_until(fresh_frames, 20, "10 live frames after the disk filled")
        assert recording()["state"] == "suspended" and recording()["frames_lost"] > 0

        ballast.unlink()
        space_back = time.monotonic()
        resumed = wait_until(lambda: recording()["state"] == "recording", 10, "recording to resume")
        assert resumed - space_back < 1.0  # the first frame after the space came back resumes it
        assert recording()["segments"] == 2
        assert 'streamfuse_recording_suspended{sink="sinks.0"} 0.0' in http_get(f"{url}/metrics")[1]
        frames_then = pipeline.frames_fused
        wait_until(lambda: pipeline.frames_fused >= frames_then + FPS, 10, "a second of recording after resuming")
    finally:
        subscriber.close()
        pipeline.stop()
        runner.join(30)
    assert not runner.is_alive() and pipeline.errors() == []
    first, second = small_disk / "rec.mp4", small_disk / "rec-00001.mp4"
    assert top_level_boxes(first)[-1][0] == "mdat"
    assert len(decode_cleanly(first)) > 0 and len(decode_cleanly(second)) >= FPS


@pytest.mark.parametrize("keep_free_mb", [0.4, 0.02, 0])
def test_a_ring_of_segments_on_a_full_disk_records_on_and_loses_nothing(small_disk, keep_free_mb):
    """Segments are about 0.2 MB on a 2 MiB disk. Keeping 0.4 MB free at each new segment, the disk never
    fills; keeping less, it would: before each fragment goes out (and before the last one as a segment
    closes) the ring deletes its oldest segments until the fragment fits, so no frame is lost. (Before,
    the disk filled and the segment being finished was lost, eight times in 30 segments with 0.1 MB.)"""
    segment_frames = FPS  # 1 s segments, each a single fragment
    camera = {"type": "synthetic", "fps": FPS, "realtime": False, "frames": 30 * FPS}
    sink = {"type": "video", "path": str(small_disk / "cam-{segment:03d}.mp4"), "crf": 0, "segment_minutes": 1 / 60,
            "max_segments": 1000, "resume_free_mb": keep_free_mb}  # the ring is there; its count limit never bites
    with Pipeline(config_from_dict({
        "synthetic": {"width": 320, "height": 256},
        "sources": {"ir": dict(camera), "vis": dict(camera)},
        "fusion": {"fuser": "classical"},
        "sinks": [sink],
        "stats": {"log_every_s": 0},
    })) as pipeline:
        pipeline.run(install_signal_handlers=False)
    recording = pipeline.health()["recording"]["sinks.0"]
    assert pipeline.frames_fused == 30 * FPS and recording["segments"] == 30
    assert recording["segments_deleted"] > 0
    assert (recording["suspensions"], recording["frames_lost"]) == (0, 0)
    files = sorted(small_disk.glob("cam-*.mp4"))
    assert files[-1].name == "cam-029.mp4" and len(files) == 30 - recording["segments_deleted"]
    recorded = [len(decode_cleanly(path)) for path in files]
    assert recorded == [segment_frames] * len(files)  # every kept segment whole, the last one too
