from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from conftest import REPO, python_env, shared_data, wait_until
from media import read_video
from streamfuse.config import config_from_dict
from streamfuse.errors import PipelineError, SourceError
from streamfuse.fusers import ClassicalFuser
from streamfuse.pipeline import Pipeline
from streamfuse.sinks import Subscriber


def synthetic(frames: int = 20, size=(96, 64), sinks=None, **extra) -> dict:
    data = {
        "synthetic": {"width": size[0], "height": size[1], "seed": 2},
        "sources": {"ir": {"type": "synthetic", "realtime": False, "frames": frames},
                    "vis": {"type": "synthetic", "realtime": False, "frames": frames}},
        "sinks": sinks or [],
        "fusion": {"fuser": "classical"},
        "stats": {"log_every_s": 0},
    }
    data.update(extra)
    return data


def test_synthetic_to_video_and_zmq_end_to_end(tmp_path, free_port):
    endpoint = f"tcp://127.0.0.1:{free_port}"
    config = config_from_dict(synthetic(25, sinks=[
        {"type": "video", "path": str(tmp_path / "out.mp4")},
        {"type": "zmq", "endpoint": endpoint, "encoding": "raw", "lossless": True, "wait_for_subscribers": 1},
    ]))
    with Subscriber(endpoint, keep="all") as subscriber:
        stats = Pipeline(config).run(install_signal_handlers=False)
        received = []
        while (frame := subscriber.receive(timeout=2)) is not None:
            received.append(frame)
    assert stats.frames_out == 25
    images, times = read_video(tmp_path / "out.mp4")
    assert len(images) == 25 and all(b > a for a, b in zip(times, times[1:], strict=False))
    assert times[-1] == pytest.approx(24 / 30, abs=0.002)
    assert [f.header["seq"] for f in received] == list(range(25))
    assert {"sync", "warp", "fuse"} <= set(received[0].header["latency_ms"])
    stages = stats.stages()
    assert {"capture_ir", "capture_vis", "sync", "warp", "fuse", "encode", "end_to_end"} <= set(stages)
    assert stages["fuse"].count == 25


def test_output_equals_direct_fusion_of_the_same_frames(tmp_path):
    config = config_from_dict(synthetic(6, sinks=[{"type": "images", "path": str(tmp_path / "png")}]))
    pipeline = Pipeline(config)
    pipeline.run(install_signal_handlers=False)
    scene = pipeline.sources["vis"].scene
    for i in range(6):
        expected = ClassicalFuser().fuse(scene.render_ir(i / 30), scene.render_vis(i / 30))
        assert np.array_equal(cv2.imread(str(tmp_path / "png" / f"{i:06d}.png")), expected)


def test_image_folders_pair_by_index(image_folders, tmp_path):
    ir_dir, vis_dir = image_folders
    config = config_from_dict({
        "sources": {"ir": {"type": "images", "path": str(ir_dir)}, "vis": {"type": "images", "path": str(vis_dir)}},
        "sinks": [{"type": "images", "path": str(tmp_path / "out"), "pattern": "{name}.png"}],
    })
    stats = Pipeline(config).run(install_signal_handlers=False)
    assert stats.frames_out == 12
    assert stats.skew().p99_ms == 0.0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f"f{i}.png" for i in range(12))


def test_misaligned_lower_resolution_ir_with_ground_truth_homography(tmp_path):
    h = [[2.0, 0.0, 3.0], [0.0, 2.0, -2.0], [0.0, 0.0, 1.0]]
    data = synthetic(3, size=(128, 96))
    data["synthetic"].update({"ir_size": [64, 48], "ir_homography": h})
    with pytest.raises(PipelineError, match="infrared frames are 64x48 but visible frames are 128x96"):
        Pipeline(config_from_dict(data)).run(install_signal_handlers=False)
    data["registration"] = {"matrix": h}
    pipeline = Pipeline(config_from_dict(data))
    assert pipeline.run(install_signal_handlers=False).frames_out == 3


def test_max_frames_stops_an_endless_source():
    data = synthetic(None)
    stats = Pipeline(config_from_dict(data), max_frames=7).run(install_signal_handlers=False)
    assert stats.frames_out == 7


def test_thermal_at_lower_rate_is_reused():
    data = synthetic(28)  # visible 0 .. 0.9 s at 30 fps, thermal 0 .. 0.9 s at 10 fps
    data["sources"]["ir"].update({"fps": 10, "frames": 10})
    data["sync"] = {"tolerance_ms": 50}
    stats = Pipeline(config_from_dict(data)).run(install_signal_handlers=False)
    assert stats.frames_out == 28
    assert stats.counters().get("unpaired", 0) == 0


def test_source_error_stops_with_message_and_keeps_written_output(image_folders, tmp_path):
    ir_dir, vis_dir = image_folders
    for index in range(6, 36):  # the copy broke off after f5: every later file is garbage
        (vis_dir / f"f{index}.png").write_bytes(b"broken")
        (ir_dir / f"f{index}.png").write_bytes((ir_dir / "f0.png").read_bytes())
    config = config_from_dict({
        "sources": {"ir": {"type": "images", "path": str(ir_dir)}, "vis": {"type": "images", "path": str(vis_dir)}},
        "sinks": [{"type": "video", "path": str(tmp_path / "out.mp4")}],
    })
    with pytest.raises(SourceError, match="25 images in a row cannot be read, the last .*f30.png: not a readable"):
        Pipeline(config).run(install_signal_handlers=False)
    assert len(read_video(tmp_path / "out.mp4")[0]) == 6


def test_failing_sink_open_closes_sources(tmp_path):
    (tmp_path / "taken.mp4").write_bytes(b"x")
    config = config_from_dict(synthetic(5, sinks=[{"type": "video", "path": str(tmp_path / "taken.mp4")}]))
    pipeline = Pipeline(config)
    with pytest.raises(Exception, match="already exists"):
        pipeline.run(install_signal_handlers=False)
    wait_until(lambda: not pipeline.running, 5, "every stage to end")


def test_a_failing_sink_does_not_cut_off_the_frames_the_others_still_get(tmp_path):
    """``all(put ...)`` stopped at the failed sink: the others missed that frame, and the frames in flight were
    thrown away. Now every fused frame reaches the healthy sink while the run drains."""
    sinks = [{"type": "images", "path": str(tmp_path / "one"), "pattern": "x.png"},  # fails at its second frame
             {"type": "video", "path": str(tmp_path / "kept.mp4")}]
    pipeline = Pipeline(config_from_dict(synthetic(200, sinks=sinks)))
    with pytest.raises(Exception, match="gives every frame the same file name"):
        pipeline.run(install_signal_handlers=False)
    assert pipeline.frames_fused >= 2
    assert len(read_video(tmp_path / "kept.mp4")[0]) == pipeline.frames_fused


def test_tno_sequence_from_shared_data(tmp_path):
    sequence = shared_data("tno_video_sequences", "Nato_camp_sequence")
    config = config_from_dict({
        "sources": {"ir": {"type": "images", "path": str(sequence / "thermal")},
                    "vis": {"type": "images", "path": str(sequence / "visual")}},
        "sinks": [{"type": "video", "path": str(tmp_path / "nato.mp4")}],
    })
    stats = Pipeline(config).run(install_signal_handlers=False)
    count = len(list((sequence / "visual").iterdir()))
    assert stats.frames_out == count
    images, _ = read_video(tmp_path / "nato.mp4")
    assert len(images) == count and images[0].shape[:2] == (270, 360)


@pytest.mark.parametrize(("stop_signal", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_stop_signal_leaves_a_playable_file_and_exits_128_plus_the_signal(tmp_path, stop_signal, status):
    output = tmp_path / "live.mp4"
    command = [sys.executable, "-m", "streamfuse", "run", "--no-progress",
               "--set", "sources.ir.frames=null", "--set", "sources.vis.frames=null",
               "--set", "synthetic.width=160", "--set", "synthetic.height=128",
               "--set", f"sinks=[{{type: video, path: '{output}'}}]", "--set", "control.enabled=false"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=python_env())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not output.exists() or output.stat().st_size < 2000):
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(stop_signal)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == status, stderr.decode()
    images, times = read_video(output)
    assert len(images) >= 10
    assert all(b > a for a, b in zip(times, times[1:], strict=False))


def test_the_signal_handler_only_notes_the_signal_and_the_main_thread_stops():
    """The handler stopped the pipeline itself, taking locks: a second signal while the first one's handler
    held a source queue's lock re-entered it in the same thread, which then waited for that lock for ever
    (`timeout` sends its signal twice; so does a double Ctrl-C): only SIGKILL ended the run, its recording
    unfinalised. Now the handler takes no lock, even with the queues' locks held where the signal lands."""
    pipeline = Pipeline(config_from_dict(synthetic()))
    with pipeline._signals_handled(True):
        handler = signal.getsignal(signal.SIGINT)
        queue_lock = pipeline.sources["ir"].queue._lock
        queue_lock.acquire()  # as the interrupted code may hold it
        watchdog = threading.Timer(5, queue_lock.release)  # a handler waiting for it fails the test, not hangs
        watchdog.start()
        try:
            handler(signal.SIGINT, None)
            handler(signal.SIGTERM, None)
        finally:
            watchdog.cancel()
            if queue_lock.locked():
                queue_lock.release()
        assert not pipeline._stopping.is_set() and pipeline.stop_signal == signal.SIGINT
        pipeline._act_on_signals()  # the main thread's supervision loop, next poll
        assert pipeline._stopping.is_set() and not pipeline._signals_pending


def test_one_signal_after_max_frames_is_a_first_interrupt_not_a_second(caplog):
    """--max-frames (or the end of input) stops the run; one Ctrl-C while it finishes was taken for a second
    one: 'dropping frames in flight', the lossless subscriber's frames given up at once."""
    pipeline = Pipeline(config_from_dict(synthetic()))
    pipeline.stop()  # what reaching --max-frames does
    with pipeline._signals_handled(True), caplog.at_level("WARNING"):
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        pipeline._act_on_signals()
        assert "interrupted: finishing frames in flight" in caplog.text and "second interrupt" not in caplog.text
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        pipeline._act_on_signals()
        assert "second interrupt: dropping frames in flight" in caplog.text


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_first_signal_stops_gently_and_tells_the_sinks_to_finish_soon(caplog, signum):
    """SIGTERM said 'interrupted ... (interrupt again to stop now)'; and a lossless publisher must get the
    signal's deadline for a stuck subscriber on either signal."""
    from streamfuse.sinks.zmq import ZmqSink

    pipeline = Pipeline(config_from_dict(synthetic()))
    publisher = ZmqSink("tcp://127.0.0.1:5599", lossless=True)  # not started: only its deadline is looked at
    pipeline.sinks.append(publisher)
    with pipeline._signals_handled(True), caplog.at_level("WARNING"):
        signal.getsignal(signum)(signum, None)
        pipeline._act_on_signals()
    assert pipeline._stopping.is_set() and publisher._give_up_at is not None
    if signum == signal.SIGTERM:
        assert "SIGTERM: finishing frames in flight (send it again, or Ctrl-C, to stop now)" in caplog.text
        assert "interrupted" not in caplog.text
    else:
        assert "interrupted: finishing frames in flight (interrupt again to stop now)" in caplog.text


@pytest.mark.parametrize("fusion", [{"fuser": "model", "device": "cpu", "max_batch": 4}, {"fuser": "classical"}],
                         ids=["model", "classical"])
def test_abort_drops_the_fusers_frames_in_flight_without_an_error(tmp_path, fusion):
    """A second Ctrl-C while the fuser holds frames (the model's worker, the classical fuser's pool): they are
    cancelled and dropped, not a stage failure."""
    data = synthetic(None, size=(160, 128), sinks=[{"type": "video", "path": str(tmp_path / "out.mp4")}])
    data["fusion"] = fusion
    with Pipeline(config_from_dict(data)) as pipeline:
        pipeline.start()
        wait_until(lambda: pipeline.frames_fused >= 3, 60, "the first fused frames")
        pipeline.abort()
        pipeline.join(60)
    assert pipeline.errors() == []
    assert len(read_video(tmp_path / "out.mp4")[0]) >= 1  # playable; frames still queued for it were dropped too


def test_model_fuser_runs_in_the_worker_with_warp_on_its_side(tmp_path):
    """The model path: frames go through the inference worker (which also warps), in order, none lost."""
    h = [[2.0, 0.0, 3.0], [0.0, 2.0, -2.0], [0.0, 0.0, 1.0]]
    data = synthetic(6, size=(128, 96), sinks=[{"type": "images", "path": str(tmp_path / "png")}])
    data["synthetic"].update({"ir_size": [64, 48], "ir_homography": h})
    data["registration"] = {"matrix": h}
    # no temporal smoothing: each written frame must equal that frame fused on its own
    data["fusion"] = {"fuser": "model", "device": "cpu", "threads": 1, "temporal_smoothing": 0}
    pipeline = Pipeline(config_from_dict(data))
    assert pipeline.fuser.warps(pipeline.registrar.transform)
    stats = pipeline.run(install_signal_handlers=False)
    assert pipeline.fuser.worker is not None and pipeline.fuser.worker.closed
    assert stats.frames_out == 6 and {"upload", "model", "download"} <= set(stats.stages())
    scene = pipeline.sources["vis"].scene
    from streamfuse.registration import HomographyRegistrar

    fuser = pipeline.fuser
    for i in (0, 5):
        warped, valid = HomographyRegistrar(h).apply(scene.render_ir(i / 30), (96, 128))
        expected = fuser.fuse(warped, scene.render_vis(i / 30), valid)
        written = cv2.imread(str(tmp_path / "png" / f"{i:06d}.png"))
        assert np.abs(written.astype(int) - expected.astype(int)).max() <= 2  # same frame, same order


def test_video_segments_are_each_complete_and_continue_the_timeline(tmp_path):
    pattern = tmp_path / "cam-{segment:03d}.mp4"
    sinks = [{"type": "video", "path": str(pattern), "segment_minutes": 1 / 60}]  # 1 s of video per file
    stats = Pipeline(config_from_dict(synthetic(75, sinks=sinks))).run(install_signal_handlers=False)
    assert stats.frames_out == 75
    files = sorted(tmp_path.glob("cam-*.mp4"))
    assert [f.name for f in files] == ["cam-000.mp4", "cam-001.mp4", "cam-002.mp4"]
    decoded = [read_video(f) for f in files]
    assert [len(images) for images, _ in decoded] == [30, 30, 15]  # 30 fps synthetic cameras
    for _, times in decoded:
        assert times[0] == 0.0 and times == sorted(times)


def test_clock_named_segments_of_faster_than_real_time_input_never_overwrite_each_other(tmp_path):
    """Files play faster than real time: a name from the wall clock repeats, and each repeat gets a number."""
    sinks = [{"type": "video", "path": str(tmp_path / "cam-%Y.mp4"), "segment_minutes": 1 / 60, "overwrite": True}]
    stats = Pipeline(config_from_dict(synthetic(75, sinks=sinks))).run(install_signal_handlers=False)
    assert stats.frames_out == 75
    year = time.strftime("%Y")
    files = [tmp_path / f"cam-{year}{suffix}.mp4" for suffix in ("", "-1", "-2")]
    assert sorted(tmp_path.glob("cam-*.mp4")) == sorted(files)
    assert [len(read_video(f)[0]) for f in files] == [30, 30, 15]


def test_frames_an_overwriting_run_did_not_replace_are_reported(tmp_path, caplog):
    """A 10-frame run over a 20-frame run's folder (overwrite: true) left frames 10-19 of the earlier run
    beside its own without a word: two runs mixed in one folder."""
    sinks = [{"type": "images", "path": str(tmp_path / "frames"), "overwrite": True}]
    Pipeline(config_from_dict(synthetic(20, sinks=sinks))).run(install_signal_handlers=False)
    Pipeline(config_from_dict(synthetic(10, sinks=sinks))).run(install_signal_handlers=False)
    assert "10 file(s) of an earlier run are still there (000010.png, ...)" in caplog.text
    caplog.clear()
    Pipeline(config_from_dict(synthetic(20, sinks=sinks))).run(install_signal_handlers=False)
    assert "earlier run" not in caplog.text  # all replaced


def test_a_segment_whose_name_exists_goes_to_a_numbered_name_and_the_run_goes_on(tmp_path):
    """Another recorder's file (or a clock stepped back) at the next segment's name stopped the whole pipeline
    mid-run ('already exists'), live outputs included; the existing file is kept and the segment numbered."""
    (tmp_path / "cam-001.mp4").write_bytes(b"another camera's footage")
    sinks = [{"type": "video", "path": str(tmp_path / "cam-{segment:03d}.mp4"), "segment_minutes": 1 / 60}]
    stats = Pipeline(config_from_dict(synthetic(75, sinks=sinks))).run(install_signal_handlers=False)
    assert stats.frames_out == 75
    assert (tmp_path / "cam-001.mp4").read_bytes() == b"another camera's footage"
    files = [tmp_path / name for name in ("cam-000.mp4", "cam-001-1.mp4", "cam-002.mp4")]
    assert [len(read_video(f)[0]) for f in files] == [30, 30, 15]


@pytest.mark.parametrize(("limit", "kept"), [({"max_segments": 2}, ["cam-003.mp4", "cam-004.mp4"]),
                                             ({"max_mb": 0.001}, ["cam-004.mp4"])])
def test_a_ring_of_segments_deletes_the_oldest_first(tmp_path, limit, kept, caplog):
    pattern = tmp_path / "cam-{segment:03d}.mp4"
    sinks = [{"type": "video", "path": str(pattern), "segment_minutes": 1 / 60, **limit}]  # 1 s of video per file
    with Pipeline(config_from_dict(synthetic(150, sinks=sinks))) as pipeline, caplog.at_level(logging.INFO):
        pipeline.run(install_signal_handlers=False)
    assert sorted(f.name for f in tmp_path.glob("cam-*.mp4")) == kept
    key, value = next(iter(limit.items()))
    assert f"deleted the oldest segment cam-000.mp4 (ring full: {key} {value:g})" in caplog.text
    assert pipeline.health()["recording"]["sinks.0"]["segments_deleted"] == 5 - len(kept)
    assert all(len(read_video(tmp_path / name)[0]) == 30 for name in kept)


def test_a_transform_swapped_mid_run_applies_on_the_model_path(tmp_path):
    """set_matrix while running: earlier frames keep the old homography, later ones (warped in the worker) the new."""
    old = [[2.0, 0.0, 3.0], [0.0, 2.0, -2.0], [0.0, 0.0, 1.0]]
    new = [[2.0, 0.0, 13.0], [0.0, 2.0, -2.0], [0.0, 0.0, 1.0]]
    data = synthetic(30, size=(128, 96), sinks=[{"type": "images", "path": str(tmp_path / "png")}])
    for camera in data["sources"].values():  # paced at 30 fps (the swap lands mid-run), every frame kept
        camera.update(realtime=True, drop_policy="wait")
    data["synthetic"].update({"ir_size": [64, 48], "ir_homography": old})
    data["registration"] = {"matrix": old}
    data["fusion"] = {"fuser": "model", "device": "cpu", "temporal_smoothing": 0}
    with Pipeline(config_from_dict(data)) as pipeline:
        assert pipeline.fuser.warps(pipeline.registrar.transform)
        pipeline.start()
        wait_until(lambda: pipeline.frames_fused >= 2, 30, "the first fused frames")
        pipeline.registrar.set_matrix(new)
        pipeline.join(60)
    assert not pipeline.errors() and pipeline.frames_fused == 30
    scene, fuser = pipeline.sources["vis"].scene, pipeline.fuser
    from streamfuse.registration import Homography

    def fused_with(matrix, i: int) -> np.ndarray:
        warped, valid = Homography(matrix).apply(scene.render_ir(i / 30), (96, 128))
        return fuser.fuse(warped, scene.render_vis(i / 30), valid).astype(int)

    first, last = (cv2.imread(str(tmp_path / "png" / f"{i:06d}.png")).astype(int) for i in (0, 29))
    assert np.abs(first - fused_with(old, 0)).max() <= 2
    assert np.abs(last - fused_with(new, 29)).max() <= 2
    assert np.abs(last - fused_with(old, 29)).max() > 10  # the two homographies give visibly different frames


def test_the_model_fuser_warms_up_on_the_first_pair_of_a_live_feed_too():
    """Live cameras (drop_oldest) get the warm-up; the pair that waited for it is skipped for a fresher one."""
    data = synthetic(12, size=(64, 48))
    for camera in data["sources"].values():
        camera["realtime"] = True  # paced and drop_oldest, as a live camera
    data["fusion"] = {"fuser": "model", "device": "cpu", "temporal_smoothing": 0}
    pipeline = Pipeline(config_from_dict(data))
    assert pipeline.live
    stats = pipeline.run(install_signal_handlers=False)
    assert stats.counters()["drops.warm_up"] == 1
    assert pipeline.fuser.worker.stats.frames == pipeline.frames_fused  # the warm-up frame is no sample of its stages


def test_realtime_files_stay_on_one_timeline_across_a_pause_in_one_of_them(tmp_path):
    """The visible file, held back while pairing waited out the thermal file's pause, re-started its clock at its
    late frame: every later frame came that much late (a 2 s pause: p95 latency about 1 s for the rest of the run)."""
    from conftest import make_pair
    from media import write_video

    ir_times = [i / 10 for i in range(6)] + [3.0 + i / 10 for i in range(6)]
    vis_times = [i / 10 for i in range(36)]
    write_video(tmp_path / "ir.mkv", [cv2.cvtColor(make_pair(i)[0], cv2.COLOR_GRAY2BGR) for i in range(12)],
                fps=10, times=ir_times)
    write_video(tmp_path / "vis.mkv", [make_pair(i)[1] for i in range(36)], fps=10, times=vis_times)
    config = config_from_dict({
        "sources": {"ir": {"type": "video", "uri": str(tmp_path / "ir.mkv"), "realtime": True},
                    "vis": {"type": "video", "uri": str(tmp_path / "vis.mkv"), "realtime": True}},
        "fusion": {"fuser": "classical"}, "sinks": [], "stats": {"log_every_s": 0}})
    started = time.monotonic()
    stats = Pipeline(config).run(install_signal_handlers=False)
    assert stats.frames_out == 12
    assert time.monotonic() - started < 4.3  # 3.5 s of recording
    assert stats.stages()["end_to_end"].p95_ms < 300


def test_a_live_thermal_camera_slower_than_the_visible_one_loses_no_pair():
    """Visible frames wait for the thermal frame after them, then go to the fuser together: three at a time from a
    15 fps visible camera beside a 5 fps thermal one. The one-slot live queue kept the last of each three (57 of 90
    pairs dropped, blamed on the fuser falling behind)."""
    camera = {"type": "synthetic", "frames": None, "realtime": True}
    config = {"synthetic": {"width": 160, "height": 128}, "sources": {"ir": {**camera, "fps": 5},
                                                                      "vis": {**camera, "fps": 15}},
              "sync": {"tolerance_ms": None}, "fusion": {"fuser": "classical"}, "sinks": [],
              "stats": {"log_every_s": 0}}
    pipeline = Pipeline(config_from_dict(config))
    runner = threading.Thread(target=pipeline.run, kwargs={"install_signal_handlers": False})
    runner.start()
    time.sleep(4)
    pipeline.stop()
    runner.join(30)
    assert pipeline.frames_fused >= 45  # 4 s of a 15 fps camera, less the start
    assert pipeline.stats.counters().get("drops.pairs", 0) <= 2
