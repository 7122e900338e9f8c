"""streamfuse on Ray: archive jobs (segments, resume, corrupt inputs) and a fleet of live camera pairs.

One local Ray cluster (2 CPUs, a small object store, usage stats off) serves every test here.
"""

from __future__ import annotations

import copy
import csv
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import make_pair, python_env, wait_until
from media import read_video, write_png_mov, write_video

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
import ray  # noqa: E402 - after the environment that turns usage statistics off

from streamfuse.cli import main  # noqa: E402
from streamfuse.cluster import require_ray  # noqa: E402
from streamfuse.cluster.archive import (  # noqa: E402
    MANIFEST_FIELDS,
    ArchiveJob,
    Manifest,
    Recording,
    Segment,
    _decode_range,
    find_recordings,
    job_summary_lines,
    manifest_row,
    plan_segments,
)  # noqa: E402
from streamfuse.cluster.fleet import FusionActor, GroupConfig, controller, load_fleet  # noqa: E402
from streamfuse.config import FusionConfig, config_from_dict, load_config  # noqa: E402
from streamfuse.errors import ConfigError, StreamfuseError  # noqa: E402
from streamfuse.frames import Frame, FramePair  # noqa: E402
from streamfuse.pipeline import Pipeline  # noqa: E402
from streamfuse.sources.video import open_container  # noqa: E402

CLASSICAL = config_from_dict({"fusion": {"fuser": "classical"}, "sinks": []})


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster of 2 CPUs shared by the whole test session."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=300 * 1024 ** 2,
             log_to_driver=False)
    yield
    ray.shutdown()


# ------------------------------------------------------------------------------------------- archive
def write_recording(folder: Path, name: str, frames: int = 30) -> None:
    """A recording pair at 10 fps with a keyframe every second (three 1-second segments for 30 frames)."""
    pairs = [make_pair(i, (64, 48)) for i in range(frames)]
    for side, images in (("ir", [ir for ir, _ in pairs]), ("vis", [vis for _, vis in pairs])):
        (folder / side).mkdir(parents=True, exist_ok=True)
        write_video(folder / side / f"{name}.mp4", images, fps=10, gop=10)


def test_segments_start_at_keyframes(tmp_path):
    write_recording(tmp_path, "walk", frames=35)
    [recording] = find_recordings(tmp_path)
    segments = plan_segments(recording, 1.0)
    assert [(s.start_s, s.end_s) for s in segments] == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, None)]
    assert plan_segments(recording, 1.5)[1].start_s == 2.0  # the first keyframe at least 1.5 s later


def test_recordings_from_csv_name_the_problem(tmp_path):
    (tmp_path / "list.csv").write_text("ir,vis,name\nir/a.mp4,vis/a.mp4,first\n")
    [recording] = find_recordings(tmp_path / "list.csv")
    assert recording.name == "first" and recording.ir == str(tmp_path / "ir" / "a.mp4")
    (tmp_path / "bad.csv").write_text("infrared,vis\nx,y\n")
    with pytest.raises(StreamfuseError, match="missing column.*ir"):
        find_recordings(tmp_path / "bad.csv")


def test_a_segment_that_cannot_be_decoded_names_its_file(tmp_path):
    broken = write_png_mov(tmp_path / "vis.mov", 40, broken=(20,))  # a segment has two videos: which one?
    container = open_container(str(broken))
    with pytest.raises(StreamfuseError, match=rf"{broken} \(vis\): cannot decode: InvalidDataError"):
        list(_decode_range(container, "vis", 0.0, None))
    container.close()


def test_manifest_skips_only_the_same_finished_segment(tmp_path):
    recording, video = Recording("r", "ir.mp4", "vis.mp4"), tmp_path / "r_00000.mp4"
    video.write_bytes(b"fused")
    settings = "fuser classical, codec h264"
    Manifest(tmp_path / "manifest.csv").record(manifest_row(Segment(recording, 0, 0.0, 1.0), {
        "status": "done", "frames": 10, "output": str(video), "seconds": 1.0, "error": "", "settings": settings}))
    with (tmp_path / "manifest.csv").open("a") as file:
        file.write("r/00001,r,1,ir.mp4")  # a row cut short by a kill
    manifest = Manifest(tmp_path / "manifest.csv")
    assert manifest.done(Segment(recording, 0, 0.0, 1.0), settings) and list(manifest.rows) == ["r/00000"]
    assert not manifest.done(Segment(recording, 0, 0.0, 1.0), "fuser model, codec h264")  # made otherwise: redo
    assert not manifest.done(Segment(recording, 0, 0.0, 2.0), settings)  # --segment-s changed: other boundaries
    assert not manifest.done(Segment(Recording("r", "ir.mp4", "other.mp4"), 0, 0.0, 1.0), settings)
    video.unlink()
    assert not manifest.done(Segment(recording, 0, 0.0, 1.0), settings)


def test_a_manifest_without_settings_is_redone_and_rewritten_with_them(tmp_path):
    """An older streamfuse's manifest did not say how a segment was made: its segments are fused again."""
    recording, video = Recording("r", "ir.mp4", "vis.mp4"), tmp_path / "r_00000.mp4"
    video.write_bytes(b"fused")
    old_fields = [field for field in MANIFEST_FIELDS if field != "settings"]
    row = manifest_row(Segment(recording, 0, 0.0, 1.0), {"status": "done", "frames": 10, "output": str(video),
                                                         "seconds": 1.0, "error": ""})
    (tmp_path / "manifest.csv").write_text(",".join(old_fields) + "\n" + ",".join(str(row[f]) for f in old_fields)
                                           + "\n")
    manifest = Manifest(tmp_path / "manifest.csv")
    assert not manifest.done(Segment(recording, 0, 0.0, 1.0), "fuser model")
    manifest.record({**row, "segment": "r/00001", "settings": "fuser model"})
    rows = list(csv.DictReader((tmp_path / "manifest.csv").open()))
    assert [r["segment"] for r in rows] == ["r/00000", "r/00001"]
    assert [r["settings"] for r in rows] == ["", "fuser model"]


def test_archive_job_resumes_and_reports_a_corrupt_recording(tmp_path, ray_cluster):
    archive, out = tmp_path / "archive", tmp_path / "out"
    for name in ("day", "night"):
        write_recording(archive, name)
    for side in ("ir", "vis"):
        (archive / side / "broken.mp4").write_bytes(b"not a video at all" * 100)
    recordings = find_recordings(archive)

    over = ArchiveJob(recordings, tmp_path / "strict", CLASSICAL, segment_s=1.0, actors=2, max_errors=0).run()
    assert over.over_budget and over.done == 0 and [key for key, _ in over.failed] == ["broken/plan"]

    first = ArchiveJob(recordings, out, CLASSICAL, segment_s=1.0, actors=2, max_errors=1)
    first_rows = []

    def interrupt_after_first(row: dict) -> None:
        first_rows.append(row)
        if row["status"] == "done":
            first.stop()

    interrupted = first.run(on_result=interrupt_after_first)
    assert interrupted.stopped and not interrupted.over_budget
    assert 1 <= interrupted.done < 6 and [key for key, _ in interrupted.failed] == ["broken/plan"]
    assert interrupted.not_started == 6 - interrupted.done  # said in the summary, not silently left out
    assert f"{interrupted.not_started} not started" in job_summary_lines(interrupted, first.manifest.path)[0]
    finished = {row["segment"]: Path(row["output"]) for row in first_rows if row["status"] == "done"}
    stamps = {key: path.stat().st_mtime_ns for key, path in finished.items()}
    leftover = out / "day" / "day_00002.part.mp4"  # what a killed worker leaves behind
    leftover.write_bytes(b"partial")

    resumed = ArchiveJob(recordings, out, CLASSICAL, segment_s=1.0, actors=2, max_errors=1).run()
    assert (resumed.skipped, resumed.done) == (interrupted.done, 6 - interrupted.done)
    assert not leftover.exists()
    assert {key: path.stat().st_mtime_ns for key, path in finished.items()} == stamps  # not redone

    rows = Manifest(out / "manifest.csv").rows
    done = sorted(key for key, row in rows.items() if row["status"] == "done")
    assert done == [f"{name}/{i:05d}" for name in ("day", "night") for i in range(3)]
    assert rows["broken/plan"]["status"] == "failed" and "broken.mp4" in rows["broken/plan"]["error"]
    for key in done:
        images, times = read_video(Path(rows[key]["output"]))
        assert len(images) == 10 and int(rows[key]["frames"]) == 10
        assert times == sorted(times)
    # made with other settings: fused again, not skipped (a rerun with another codec or fuser mixed them)
    recoded = ArchiveJob(recordings, out, CLASSICAL, segment_s=1.0, actors=2, max_errors=1, codec="mpeg4").run()
    assert (recoded.skipped, recoded.done) == (0, 6)
    assert all("codec mpeg4" in row["settings"] for key, row in Manifest(out / "manifest.csv").rows.items()
               if key in done)


def test_cluster_fuse_command(tmp_path, ray_cluster, caplog):
    caplog.set_level(logging.INFO)
    write_recording(tmp_path / "archive", "day", frames=20)
    (tmp_path / "archive" / "vis" / "broken.mp4").write_bytes(b"\0" * 2000)
    (tmp_path / "archive" / "ir" / "broken.mp4").write_bytes(b"\0" * 2000)
    command = ["cluster", "fuse", str(tmp_path / "archive"), "-o", str(tmp_path / "out"), "--fuser", "classical",
               "--segment-s", "1", "--actors", "1"]
    assert main(command) == 1  # over the default budget of 0 errors
    assert main([*command, "--max-errors", "1"]) == 0
    assert "2 segment(s) fused (20 frames" in caplog.text and "failed: broken/plan" in caplog.text
    assert sorted(p.name for p in (tmp_path / "out" / "day").iterdir()) == ["day_00000.mp4", "day_00001.mp4"]


def test_cluster_fuse_with_relative_paths_from_another_folder_than_the_clusters(tmp_path, ray_cluster, monkeypatch):
    """The workers' working directory is the cluster's: 'archive/ir/day.mp4: no such video file (relative to the
    working directory /)' for every recording of a job started from the archive's folder."""
    write_recording(tmp_path / "archive", "day", frames=10)
    monkeypatch.chdir(tmp_path)
    assert main(["cluster", "fuse", "archive", "-o", "out", "--fuser", "classical", "--actors", "1"]) == 0
    assert [p.name for p in (tmp_path / "out" / "day").iterdir()] == ["day_00000.mp4"]


def test_more_actors_than_cpus_fuse_on_as_many_as_there_are(tmp_path, ray_cluster, caplog):
    """Each worker holds a CPU: with --actors above the cluster's CPUs a segment went to a worker that was never
    scheduled, and the job waited for ever (SIGTERM too)."""
    write_recording(tmp_path / "archive", "day", frames=30)
    caplog.set_level(logging.WARNING)
    assert main(["cluster", "fuse", str(tmp_path / "archive"), "-o", str(tmp_path / "out"), "--fuser", "classical",
                 "--segment-s", "1", "--actors", "5"]) == 0
    assert "--actors 5: the cluster has 2 CPU(s), one per worker; fusing on 2" in caplog.text
    assert len(list((tmp_path / "out" / "day").iterdir())) == 3


def test_another_segment_length_into_the_same_output_is_refused(tmp_path, ray_cluster, capsys):
    """--segment-s 1, then 10, into one -o: the new 0-3 s segment was written beside the old 1-2 s and 2-3 s ones,
    which stayed as 'done' in the manifest: the footage twice."""
    write_recording(tmp_path / "archive", "day", frames=30)
    command = ["cluster", "fuse", str(tmp_path / "archive"), "-o", str(tmp_path / "out"), "--fuser", "classical"]
    assert main([*command, "--segment-s", "1"]) == 0
    before = sorted(p.name for p in (tmp_path / "out" / "day").iterdir())
    assert main([*command, "--segment-s", "10"]) == 2
    assert "holds 2 segment(s) of these recordings cut at other times" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out" / "day").iterdir()) == before


def test_fleet_paths_are_read_from_the_commands_working_directory(tmp_path, monkeypatch):
    """A pair's relative sink path was resolved in its Ray worker: out/west.mp4 became /out/west.mp4."""
    path = write_fleet(tmp_path, {"a": {"type": "video", "path": "out/a.mp4"}}, realtime=False, frames=5)
    monkeypatch.chdir(tmp_path)
    assert load_fleet(path).pipelines["a"].sinks[0].path == str(tmp_path / "out" / "a.mp4")


def test_a_gpu_share_no_node_has_is_refused_instead_of_waiting_for_ever(tmp_path, ray_cluster, capsys):
    """Ray's autoscaler repeated 'No available node types can fulfill resource request' without end."""
    write_recording(tmp_path / "archive", "day", frames=4)
    code = main(["cluster", "fuse", str(tmp_path / "archive"), "-o", str(tmp_path / "out"), "--fuser", "classical",
                 "--gpu-share", "2"])
    assert code == 2
    assert "--gpu-share 2: no node of this cluster has 2 GPU for one worker (the most on one node: 0)" in \
        capsys.readouterr().err


def test_cluster_fuse_refuses_settings_it_would_ignore_and_an_output_inside_the_archive(tmp_path, capsys):
    write_recording(tmp_path / "archive", "day", frames=4)
    archive = str(tmp_path / "archive")
    assert main(["cluster", "fuse", archive, "-o", str(tmp_path / "out"), "--set", "view.enabled=true"]) == 2
    assert "--set view...: cluster fuse takes only sync, registration, fusion, prompt, text settings" in \
        capsys.readouterr().err
    assert main(["cluster", "fuse", archive, "-o", archive]) == 2  # it wrote its manifest into the archive
    assert f"-o {archive}: inside the archive {archive}" in capsys.readouterr().err


def test_an_address_nothing_answers_at_is_one_error_at_once():
    """Ray retried for ever, printing only its own warnings. In a process of its own: this one may have joined
    the session's local cluster already."""
    run = subprocess.run([sys.executable, "-m", "streamfuse", "cluster", "status", "--address", "127.0.0.1:1"],
                         capture_output=True, text=True, timeout=60, env=python_env())
    assert run.returncode == 1 and "--address 127.0.0.1:1: nothing answers there" in run.stderr, run.stderr
    run = subprocess.run([sys.executable, "-m", "streamfuse", "cluster", "status", "--address", "garbage"],
                         capture_output=True, text=True, timeout=60, env=python_env())  # Ray's ValueError traceback
    assert run.returncode == 1 and "--address garbage: not a Ray address" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("cpus", ["0", "-1"])  # 0 waited forever for a CPU, -1 was Ray's traceback
def test_cluster_cpu_count_is_checked_before_starting_ray(tmp_path, capsys, cpus):
    write_recording(tmp_path / "archive", "day", frames=4)
    assert main(["cluster", "fuse", str(tmp_path / "archive"), "-o", str(tmp_path / "out"), "--num-cpus", cpus]) == 2
    assert f"streamfuse: error: --num-cpus: must be at least 1, got {cpus}" in capsys.readouterr().err
    code = main(["cluster", "fuse", str(tmp_path / "archive"), "-o", str(tmp_path / "out"), "--segment-s", "0"])
    assert code == 2 and "--segment-s: must be positive" in capsys.readouterr().err  # argument errors exit 2


def test_an_unknown_fuser_is_one_error_before_starting_ray(tmp_path, capsys):
    """It was a Ray worker traceback per segment, each segment recorded as failed in the manifest."""
    write_recording(tmp_path / "archive", "day", frames=4)
    code = main(["cluster", "fuse", str(tmp_path / "archive"), "-o", str(tmp_path / "out"), "--fuser", "Classical"])
    assert code == 2
    assert "streamfuse: error: fusion.fuser: unknown fuser 'Classical'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_deploying_an_empty_fleet_is_an_error(tmp_path, capsys):
    (tmp_path / "fleet.yaml").write_text("")
    assert main(["cluster", "run", str(tmp_path / "fleet.yaml"), "--detach", "--address", "auto"]) == 1
    assert "fleet.yaml: no camera pairs (pairs: [...]); nothing to deploy" in capsys.readouterr().err


def test_detaching_from_a_cluster_the_command_starts_is_refused(tmp_path, capsys):
    """It said "deployed", and the fleet ended with the command (the local cluster it had started)."""
    path = write_fleet(tmp_path, {"a": {"type": "video", "path": str(tmp_path / "a.mkv")}}, realtime=True,
                       frames=None)
    assert main(["cluster", "run", str(path), "--detach"]) == 2
    assert "--detach: needs --address of a running Ray cluster" in capsys.readouterr().err


def test_a_foreground_fleet_stopped_by_sigterm_exits_143(tmp_path):
    path = write_fleet(tmp_path, {"a": {"type": "video", "path": str(tmp_path / "a.mp4")}}, realtime=True,
                       frames=None)
    process = subprocess.Popen([sys.executable, "-m", "streamfuse", "cluster", "run", str(path), "--num-cpus", "2"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    wait_until(lambda: (tmp_path / "a.mp4").exists() and (tmp_path / "a.mp4").stat().st_size > 2000, 120,
               "the pair to record")
    # An edit no node can hold is refused before anything stops (it waited 60 s for a placement, with the pair
    # already stopped: the fleet was left empty), and said in words, not as a Ray traceback.
    original = path.read_text()
    edited = yaml.safe_load(original)
    edited["groups"][0]["cpus_per_pair"] = 4
    path.write_text(yaml.safe_dump(edited))
    time.sleep(4)
    # The file gone for a while (an editor or a ConfigMap update replacing it): a FileNotFoundError traceback ended
    # the command, leaving the recording unfinished.
    path.unlink()
    time.sleep(2.5)
    path.write_text(original)
    recorded = (tmp_path / "a.mp4").stat().st_size
    wait_until(lambda: (tmp_path / "a.mp4").stat().st_size > recorded, 30, "the pair still recording")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=90)
    log = stderr.decode()
    assert process.returncode == 143, log[-2000:]
    assert "Traceback" not in log, log[-3000:]
    refused = next(line for line in log.splitlines() if "fleet file not applied" in line)
    assert "(the running fleet is unchanged): groups.cpu: no node can hold" in refused and "ray::" not in refused
    assert "is gone; the fleet runs on as applied" in log
    images, _ = read_video(tmp_path / "a.mp4")
    assert len(images) > 5


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(StreamfuseError, match=r'pip install "streamfuse\[ray\]"'):
        require_ray()


# --------------------------------------------------------------------------------------------- fleet
def write_fleet(folder: Path, pairs: dict[str, dict], *, realtime: bool, frames: int | None) -> Path:
    """A fleet file of one CPU group and a synthetic camera pair per entry of ``pairs`` (name -> sink)."""
    entries = []
    for index, (name, sink) in enumerate(pairs.items()):
        config = {
            "sources": {side: {"type": "synthetic", "fps": 15, "frames": frames, "realtime": realtime}
                        for side in ("ir", "vis")},
            "synthetic": {"width": 96, "height": 80, "seed": index, "people": 2, "vehicles": 1},
            "sinks": [sink], "stats": {"log_every_s": 0},
        }
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(config))
        entries.append({"name": name, "group": "cpu", "config": f"{name}.yaml"})
    fleet = {"groups": [{"name": "cpu", "slots": 2, "cpus_per_pair": 0.5, "batch": 8, "wait_ms": 30,
                         "fusion": {"fuser": "classical"}}], "pairs": entries}
    path = folder / "fleet.yaml"
    path.write_text(yaml.safe_dump(fleet))
    return path


def test_fleet_file_errors_name_the_pair(tmp_path):
    path = write_fleet(tmp_path, {"a": {"type": "video", "path": str(tmp_path / "a.mkv")}}, realtime=False, frames=5)
    fleet = yaml.safe_load(path.read_text())
    fleet["pairs"][0]["group"] = "gpu9"
    path.write_text(yaml.safe_dump(fleet))
    with pytest.raises(ConfigError, match="pairs.0.group: no group 'gpu9'"):
        load_fleet(path)
    fleet["pairs"][0].update(group="cpu", set=["sync.tolerance_ms=-1x"])
    path.write_text(yaml.safe_dump(fleet))
    with pytest.raises(ConfigError, match=r"pairs.0.config \(a\): sync.tolerance_ms"):
        load_fleet(path)


def frame_pair(index: int) -> FramePair:
    ir, vis = make_pair(index)
    return FramePair(Frame(ir, index / 30, index, "ir"), Frame(vis, index / 30, index, "vis"), 0.0)


def test_a_released_pair_leaves_nothing_behind_in_the_fusion_actor():
    """A pair the controller stops has its fuser closed (the classical pool's threads end), and a pair
    that starts later gets a stream of its own in the model's shared worker, not the temporal memory of
    another pair's stream."""
    def pool_threads() -> int:
        return sum(t.name.startswith("classical-fuse") for t in threading.enumerate())

    classical = FusionActor(GroupConfig(name="cpu", wait_ms=0, fusion=FusionConfig(fuser="classical")))
    before = pool_threads()
    classical.fuse("a", frame_pair(0), None)
    classical.fuse("a", frame_pair(1), None)
    assert pool_threads() > before
    classical.release("a")
    wait_until(lambda: pool_threads() == before, 10, "the released pair's fusing threads to end")
    assert classical.fuse("a", frame_pair(2), None).shape[:2] == (48, 64)  # and it can come back

    model = GroupConfig(name="cpu", wait_ms=0, fusion=FusionConfig(fuser="model", temporal_smoothing=0.5))
    fresh, actor = FusionActor(model), FusionActor(model)
    try:
        first_frame = fresh.fuse("x", frame_pair(5), None)
        actor.fuse("a", frame_pair(3), None)
        actor.fuse("b", frame_pair(4), None)
        actor.release("a")
        assert np.array_equal(actor.fuse("c", frame_pair(5), None), first_frame)
    finally:
        fresh.close()
        actor.close()
        classical.close()
    assert not [t.name for t in threading.enumerate() if t.name.startswith(("inference-", "classical-fuse"))]


def test_controller_reconciles_without_touching_unchanged_pairs(tmp_path, ray_cluster):
    sinks = {name: {"type": "video", "path": str(tmp_path / f"{name}.mkv"), "codec": "ffv1"} for name in ("a", "b")}
    both = load_fleet(write_fleet(tmp_path, sinks, realtime=False, frames=5))
    only_a = copy.deepcopy(both)
    only_a.config.pairs = only_a.config.pairs[:1]
    changed_b = copy.deepcopy(both)
    changed_b.config.pairs = changed_b.config.pairs[1:]
    changed_b.config.pairs[0].set = ["synthetic.seed=7"]
    changed_b.pipelines["b"].synthetic.seed = 7
    fleet_controller = controller()
    try:
        assert ray.get(fleet_controller.apply.remote(only_a))["started"] == ["a"]
        actor_a = ray.get(fleet_controller.pair_actor.remote("a"))
        report = ray.get(fleet_controller.apply.remote(both))
        assert (report["started"], report["kept"]) == (["b"], ["a"])
        assert ray.get(fleet_controller.pair_actor.remote("a")) == actor_a
        report = ray.get(fleet_controller.apply.remote(changed_b))
        assert (report["stopped"], report["restarted"]) == (["a"], ["b"])
        assert list(ray.get(fleet_controller.health.remote())["pairs"]) == ["b"]
        actor_b = ray.get(fleet_controller.pair_actor.remote("b"))
        ray.get(fleet_controller.restart.remote("b"))
        assert ray.get(fleet_controller.pair_actor.remote("b")) != actor_b
        with pytest.raises(ray.exceptions.RayTaskError, match="no pair 'a'"):
            ray.get(fleet_controller.restart.remote("a"))
    finally:
        ray.get(fleet_controller.shutdown.remote())
        ray.kill(fleet_controller)


def test_a_pair_whose_pipeline_cannot_be_built_is_failed_with_why(tmp_path, ray_cluster):
    """It showed as {'status': 'unreachable', 'error': 'ActorDiedError'} for ever: nothing said the file was
    missing, and 'unreachable' is documented as not answering within 2 s."""
    path = write_fleet(tmp_path, {"a": {"type": "video", "path": str(tmp_path / "a.mkv"), "codec": "ffv1"}},
                       realtime=False, frames=5)
    fleet = yaml.safe_load(path.read_text())
    fleet["pairs"][0]["set"] = [f"sources.vis={{type: video, uri: {tmp_path / 'nosuch.mp4'}}}"]
    path.write_text(yaml.safe_dump(fleet))
    fleet_controller = controller()
    try:
        ray.get(fleet_controller.apply.remote(load_fleet(path)))
        wait_until(lambda: ray.get(fleet_controller.health.remote())["pairs"]["a"]["status"] == "failed", 60,
                   "the pair reported failed")
        health = ray.get(fleet_controller.health.remote())
        error = health["pairs"]["a"]["error"]
        assert error.startswith("SourceError: ") and "nosuch.mp4" in error, error
        assert health["status"] == "failed"
    finally:
        ray.get(fleet_controller.shutdown.remote())
        ray.kill(fleet_controller)


def test_two_pairs_share_a_batching_fusion_actor(tmp_path, ray_cluster):
    sinks = {name: {"type": "video", "path": str(tmp_path / f"{name}.mkv"), "codec": "ffv1"} for name in ("a", "b")}
    path = write_fleet(tmp_path, sinks, realtime=False, frames=40)
    fleet = load_fleet(path)
    fleet_controller = controller()
    try:
        assert ray.get(fleet_controller.apply.remote(fleet))["started"] == ["a", "b"]
        wait_until(lambda: all(p["status"] == "finished" for p in ray.get(fleet_controller.health.remote())["pairs"]
                               .values()), 90, "both pairs to finish")
        stats = ray.get(fleet_controller.health.remote())["groups"]["cpu"]
    finally:
        ray.get(fleet_controller.shutdown.remote())
        ray.kill(fleet_controller)
    assert stats["frames"] == 80 and max(stats["batch_sizes"]) > 1, stats
    outputs = {}
    for name, sink in sinks.items():  # the same pair run alone, here: identical frames, in order
        alone = load_config(tmp_path / f"{name}.yaml", [f"sinks.0.path={tmp_path / (name + '_alone.mkv')}",
                                                        "fusion.fuser=classical"])
        Pipeline(alone).run(install_signal_handlers=False)
        expected, _ = read_video(Path(alone.sinks[0].path))
        outputs[name], times = read_video(Path(sink["path"]))
        assert len(outputs[name]) == len(expected) == 40
        assert times == sorted(times)
        assert all(np.array_equal(got, want) for got, want in zip(outputs[name], expected, strict=True))
    assert not np.array_equal(outputs["a"][5], outputs["b"][5])  # two different scenes, never mixed up


def test_killed_pair_restarts_while_the_other_keeps_going(tmp_path, ray_cluster):
    sinks = {name: {"type": "video", "path": str(tmp_path / f"{name}.mp4")} for name in ("a", "b")}
    fleet = load_fleet(write_fleet(tmp_path, sinks, realtime=True, frames=None))
    fleet_controller = controller()

    def frames(name: str) -> int:
        return ray.get(fleet_controller.health.remote())["pairs"][name].get("frames", 0)

    try:
        ray.get(fleet_controller.apply.remote(fleet))
        wait_until(lambda: frames("a") > 10 and frames("b") > 10, 60, "both pairs to fuse frames")
        b_counts: list[tuple[float, int]] = []
        watching = threading.Event()
        pair_b = ray.get(fleet_controller.pair_actor.remote("b"))

        def watch_b() -> None:  # straight from b's actor: the controller's report waits on a restarting a
            while not watching.is_set():
                b_counts.append((time.monotonic(), ray.get(pair_b.health.remote())["frames"]))
                time.sleep(0.2)

        watcher = threading.Thread(target=watch_b)
        watcher.start()
        killed_at = time.monotonic()
        ray.kill(ray.get(fleet_controller.pair_actor.remote("a")), no_restart=False)

        def a_resumed() -> bool:
            pair = ray.get(fleet_controller.health.remote())["pairs"]["a"]
            return bool(pair.get("restarted")) and pair.get("frames", 0) > 0

        resumed_at = wait_until(a_resumed, 10, "pair a to restart and fuse again")
        time.sleep(1.0)
        watching.set()
        watcher.join()
        health = ray.get(fleet_controller.health.remote())["pairs"]["a"]
    finally:
        ray.get(fleet_controller.shutdown.remote())
        ray.kill(fleet_controller)
    assert resumed_at - killed_at < 10
    assert health["outputs"] == [str(tmp_path / "a.1.mp4")]  # a new file next to the first incarnation's
    counts = [count for _, count in b_counts]
    assert counts == sorted(counts) and counts[-1] > counts[0]
    last_change, longest_stall = b_counts[0][0], 0.0
    for (t, count), (_, before) in zip(b_counts[1:], b_counts, strict=False):
        last_change = t if count != before else last_change
        longest_stall = max(longest_stall, t - last_change)
    assert longest_stall < 1.0, b_counts  # pair b never stopped (15 fps, polled every 0.2 s)
    images, _ = read_video(tmp_path / "a.1.mp4")
    assert images
