"""`streamfuse subscribe` as a recorder: end of stream, idle timeout, SIGTERM, nothing received, unwritable --save."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import python_env, wait_until
from media import read_video
from streamfuse.cli import main
from streamfuse.config import config_from_dict
from streamfuse.pipeline import Pipeline
from streamfuse.sinks import Subscriber


def publisher(endpoint: str, frames: int | None, fps: float = 40, **zmq_sink) -> Pipeline:
    camera = {"type": "synthetic", "fps": fps, "frames": frames, "realtime": True, "drop_policy": "wait"}
    return Pipeline(config_from_dict({
        "synthetic": {"width": 96, "height": 64}, "sources": {"ir": dict(camera), "vis": dict(camera)},
        "fusion": {"fuser": "classical"}, "stats": {"log_every_s": 0},
        "sinks": [{"type": "zmq", "endpoint": endpoint, "encoding": "raw", "lossless": True,
                   "wait_for_subscribers": 1, "subscriber_timeout_s": 30, **zmq_sink}]}))


def subscribe(tmp_path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "streamfuse", "subscribe", *args], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=python_env())


def test_the_client_sees_the_end_of_the_stream(free_port):
    endpoint = f"tcp://127.0.0.1:{free_port}"
    pipeline = publisher(endpoint, frames=12)
    with Subscriber(endpoint, keep="all") as subscriber:
        runner = threading.Thread(target=pipeline.run, kwargs={"install_signal_handlers": False})
        runner.start()
        frames = []
        while (frame := subscriber.receive(timeout=10)) is not None:
            frames.append(frame)
        runner.join(10)
    assert len(frames) == 12 and frames[0].header["type"] == "frame"
    assert subscriber.ended == {"version": 1, "topic": "fused", "type": "end", "frames": 12}


@pytest.mark.parametrize("keep", ["all", "latest"])
def test_a_subscriber_of_two_publishers_ends_when_both_have_ended(free_port, keep):
    """Two cameras' pipelines connect to one binding subscriber, each on its own topic: the first one's end
    ended the subscriber, which then missed most of the other's frames."""
    endpoint = f"tcp://127.0.0.1:{free_port}"
    pipelines = [publisher(endpoint, frames=frames, bind=False, topic=topic)
                 for frames, topic in ((8, "cam1"), (24, "cam2"))]
    with Subscriber(endpoint, keep=keep, bind=True, topic="cam", max_age_s=None) as subscriber:
        runners = [threading.Thread(target=p.run, kwargs={"install_signal_handlers": False}) for p in pipelines]
        for runner in runners:
            runner.start()
        frames = []
        while (frame := (subscriber.receive if keep == "all" else subscriber.latest)(timeout=10)) is not None:
            frames.append(frame.header)
        for runner in runners:
            runner.join(10)
    if keep == "all":
        assert [h["topic"] for h in frames].count("cam1") == 8 and [h["topic"] for h in frames].count("cam2") == 24
    else:  # the newest frame at each call: cam2's last ones come after cam1 has ended
        assert frames[-1]["topic"] == "cam2" and frames[-1]["index"] >= 20
    assert subscriber.ended == {"version": 1, "topic": "cam2", "type": "end", "frames": 24}


def test_a_recorder_ends_with_the_stream_and_its_file_is_complete(tmp_path, free_port):
    endpoint = f"tcp://127.0.0.1:{free_port}"
    recorder = subscribe(tmp_path, endpoint, "--save", str(tmp_path / "rec.mp4"))
    publisher(endpoint, frames=20).run(install_signal_handlers=False)
    out, err = recorder.communicate(timeout=60)  # no --frames, no --duration: it ends by itself
    assert recorder.returncode == 0, err
    assert "the publisher ended the stream (it sent 20 frame(s))" in err and "received 20 frame(s)" in err
    assert len(read_video(tmp_path / "rec.mp4")[0]) == 20


def test_sigterm_finalises_the_recording(tmp_path, free_port):
    endpoint = f"tcp://127.0.0.1:{free_port}"
    recorder = subscribe(tmp_path, endpoint, "--save", str(tmp_path / "rec.mkv"))
    pipeline = publisher(endpoint, frames=None, fps=20)  # endless: only the signal stops the recorder
    runner = threading.Thread(target=pipeline.run, kwargs={"install_signal_handlers": False})
    runner.start()
    try:
        wait_until(lambda: "received" in (recorder.stdout.readline() or ""), 60, "the recorder's first report")
        recorder.send_signal(signal.SIGTERM)
        _, err = recorder.communicate(timeout=30)
    finally:
        pipeline.stop()
        runner.join(30)
    assert recorder.returncode == 143, err  # 128 + SIGTERM, as the README says
    received = int(re.search(r"received (\d+) frame\(s\)", err).group(1))
    assert received >= 10
    assert len(read_video(tmp_path / "rec.mkv")[0]) == received  # flushed and closed: nothing lost


def test_a_recorder_stopped_before_any_frame_exits_as_stopped_and_says_no_frames_once(tmp_path, free_port):
    """SIGTERM to a recorder whose publisher was down: exit 1 'received no frames' (a supervised recorder stopped by
    its operator reported as failed), after a 'no frames ... in the last second' line every second."""
    recorder = subscribe(tmp_path, f"tcp://127.0.0.1:{free_port}", "--save", str(tmp_path / "rec.mp4"))
    started = recorder.stderr.readline()  # "subscribed to ...": the signal handlers are in place
    time.sleep(3)
    recorder.send_signal(signal.SIGTERM)
    out, err = recorder.communicate(timeout=30)
    err = started + err
    assert "subscribed to" in started and recorder.returncode == 143, err
    assert "received 0 frame(s)" in err and "error" not in err
    assert (out + err).count("no frames from") == 1


def test_idle_timeout_with_nothing_received_is_an_error(tmp_path, capsys, caplog, free_port):
    caplog.set_level(logging.INFO)
    target = tmp_path / "new" / "rec.mp4"
    code = main(["subscribe", f"tcp://127.0.0.1:{free_port}", "--idle-timeout", "0.5", "--save", str(target)])
    err = capsys.readouterr().err
    assert code == 1
    assert f"streamfuse: error: tcp://127.0.0.1:{free_port}: received no frames" in err
    assert "saved to" not in caplog.text and not target.exists()  # nothing was saved, and it does not say so


@pytest.fixture
def unwritable_folder(tmp_path) -> Path:
    """A folder in which creating a file fails (root ignores permissions: then a sysfs folder)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if not os.access(folder, os.W_OK):
        return folder
    try:
        (Path("/sys") / "streamfuse-probe").touch()
    except OSError:
        return Path("/sys")
    pytest.skip("no folder that refuses writes here")


def test_save_to_an_unwritable_place_is_one_clear_error(unwritable_folder, capsys, free_port):
    target = unwritable_folder / "rec.mp4"
    code = main(["subscribe", f"tcp://127.0.0.1:{free_port}", "--save", str(target), "--duration", "0.2"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"streamfuse: error: --save: cannot write {target} (" in err and "Traceback" not in err


def test_save_to_an_image_file_name_is_one_clear_error(tmp_path, capsys, free_port):
    target = tmp_path / "rec.png"  # PyAV opens it (an image muxer) and failed at the first frame
    code = main(["subscribe", f"tcp://127.0.0.1:{free_port}", "--save", str(target), "--duration", "0.2"])
    err = capsys.readouterr().err
    assert code == 1 and not target.exists()
    assert f"streamfuse: error: --save: cannot create video {target} (not a video file name)" in err


def test_save_onto_an_existing_file_points_to_subscribes_own_flag(tmp_path, capsys, free_port):
    """It advised '--set --save.overwrite=true', an option subscribe does not have."""
    target = tmp_path / "rec.mp4"
    target.write_bytes(b"an earlier recording")
    code = main(["subscribe", f"tcp://127.0.0.1:{free_port}", "--save", str(target), "--duration", "0.2"])
    err = capsys.readouterr().err
    assert code == 1 and target.read_bytes() == b"an earlier recording"
    assert f"--save: {target} already exists; choose another path or pass -y/--overwrite to replace it" in err


def test_a_recording_goes_on_at_real_speed_across_a_publisher_restart(tmp_path, free_port):
    """A publisher killed and started again begins its timestamps at 0 again: the recorder squeezed all of its
    frames into 1 ms steps (370 frames, 12 s, played in 0.37 s); now they keep their spacing after the gap."""
    endpoint = f"tcp://127.0.0.1:{free_port}"
    recorder = subscribe(tmp_path, endpoint, "--save", str(tmp_path / "rec.mp4"))
    first = subprocess.Popen(
        [sys.executable, "-m", "streamfuse", "run", "--no-progress", "--set", "sinks.0.path=first.mp4",
         "--set", f"sinks.1.endpoint={endpoint}", "--set", "control.enabled=false",
         "--set", "synthetic={width: 96, height: 64}", "--set", "fusion.fuser=classical"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=python_env())
    try:  # two reports, a second apart: the first publisher's clock is past 1 s, well beyond jitter
        for which in ("first", "second"):
            wait_until(lambda: "received" in (recorder.stdout.readline() or ""), 60, f"the recorder's {which} report")
    finally:
        first.kill()  # no end-of-stream message: the recorder waits for the next publisher
        first.wait(10)
    publisher(endpoint, frames=20).run(install_signal_handlers=False)
    _, err = recorder.communicate(timeout=60)
    assert recorder.returncode == 0, err
    assert "the publisher's timestamps went back by" in err
    _, times = read_video(tmp_path / "rec.mp4")
    steps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(steps) > 0
    assert sorted(steps[-19:])[9] == pytest.approx(1 / 40, abs=0.006)  # the second publisher's 40 fps, not 1 ms
    assert max(steps) > 0.1  # the gap while no publisher ran is in the timeline
