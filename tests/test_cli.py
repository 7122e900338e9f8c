from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import REPO, free_ports, make_pair, python_env, shared_data
from media import read_video, write_video
from streamfuse.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_demo_runs_from_the_packaged_config(tmp_path):
    """`streamfuse run` with no config file, shortened, as a user would start it."""
    output = tmp_path / "demo.mp4"
    publish, control = free_ports(2)
    command = [sys.executable, "-m", "streamfuse", "run", "--no-progress", "--max-frames", "20",
               "--set", f"sinks.0.path={output}", "--set", f"sinks.1.endpoint=tcp://127.0.0.1:{publish}",
               "--set", f"control.endpoint=tcp://127.0.0.1:{control}"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env=python_env())
    assert result.returncode == 0, result.stderr
    assert "source ir: synthetic thermal camera" in result.stderr
    assert "prompt 'night, find the people' -> thermal_targets" in result.stderr
    assert "end_to_end" in result.stderr
    images, _ = read_video(output)
    assert len(images) == 20 and images[0].shape == (512, 640, 3)


def test_fuse_single_images(tmp_path, capsys):
    ir, vis = make_pair(1, (80, 60))
    cv2.imwrite(str(tmp_path / "ir.png"), ir)
    cv2.imwrite(str(tmp_path / "vis.jpg"), vis)
    code, _, err = run_cli(capsys, "fuse", "--ir", str(tmp_path / "ir.png"), "--vis", str(tmp_path / "vis.jpg"),
                           "-o", str(tmp_path / "out" / "fused.png"))
    assert code == 0, err
    assert cv2.imread(str(tmp_path / "out" / "fused.png")).shape == (60, 80, 3)
    code, _, err = run_cli(capsys, "fuse", "--ir", str(tmp_path / "ir.png"), "--vis", str(tmp_path / "vis.jpg"),
                           "-o", str(tmp_path / "out" / "fused.png"))
    assert code == 1 and f"-o {tmp_path / 'out' / 'fused.png'}: already exists; pass -y/--overwrite" in err
    assert "sinks.0" not in err and "folder" not in err  # the sink's words, about a config and a folder
    code, _, err = run_cli(capsys, "fuse", "--ir", str(tmp_path / "ir.png"), "--vis", str(tmp_path / "vis.jpg"),
                           "-o", str(tmp_path / "out" / "fused.pgm"))  # PGM holds gray: the fused luminance
    assert code == 0, err
    colour = cv2.imread(str(tmp_path / "out" / "fused.png"))
    gray = cv2.imread(str(tmp_path / "out" / "fused.pgm"), cv2.IMREAD_UNCHANGED)
    assert gray.shape == (60, 80) and np.abs(gray.astype(int) - cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)).max() <= 1


def test_fuse_weights_uses_trained_weights(tmp_path, capsys):
    """fuse had no --weights (eval has): 'unrecognized arguments'; --set fusion.weights=... was the only way."""
    import torch

    from streamfuse.models.checkpoint import save_weights
    from streamfuse.models.network import FusionNet
    from streamfuse.text import load_bank

    ir, vis = make_pair(1, (80, 64))
    cv2.imwrite(str(tmp_path / "ir.png"), ir)
    cv2.imwrite(str(tmp_path / "vis.png"), vis)
    torch.manual_seed(0)
    model = FusionNet(load_bank().ids, channels=8, token_dim=16, tokens_per_intent=2)
    with torch.no_grad():
        model.head.bias.fill_(3.0)  # inject much more infrared than the shipped network
    weights = save_weights(model, tmp_path / "mine.pt", {"steps": 1})
    inputs = ["--ir", str(tmp_path / "ir.png"), "--vis", str(tmp_path / "vis.png")]
    assert run_cli(capsys, "fuse", *inputs, "-o", str(tmp_path / "shipped.png"))[0] == 0
    assert run_cli(capsys, "fuse", *inputs, "-o", str(tmp_path / "mine.png"), "--weights", str(weights))[0] == 0
    assert not np.array_equal(cv2.imread(str(tmp_path / "mine.png")), cv2.imread(str(tmp_path / "shipped.png")))
    code, _, err = run_cli(capsys, "fuse", *inputs, "-o", str(tmp_path / "c.png"), "--weights", str(weights),
                           "--fuser", "classical")
    assert code == 2 and "--weights is the model fuser's weights" in err
    code, _, err = run_cli(capsys, "fuse", *inputs, "-o", str(tmp_path / "d.png"), "--weights", str(weights),
                           "--set", f"fusion.weights={weights}")
    assert code == 2 and "name the weights twice" in err  # --weights quietly won


def test_a_corrupt_image_is_streamfuses_one_error_without_opencvs_lines(tmp_path, capfd):
    """OpenCV printed '[ERROR:0@2.752] global grfmt_png.cpp:296 readHeader IHDR chunk shall be first' beside it."""
    ir, vis = make_pair(1, (80, 64))
    (tmp_path / "ir.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    cv2.imwrite(str(tmp_path / "vis.png"), vis)
    level_before = logging.getLogger("streamfuse").level
    code = main(["fuse", "--ir", str(tmp_path / "ir.png"), "--vis", str(tmp_path / "vis.png"), "-o",
                 str(tmp_path / "out.png"), "--fuser", "classical", "-q"])
    err = capfd.readouterr().err
    assert code == 1 and "ir.png: not a readable image" in err and "grfmt_png" not in err
    # -q stayed in force after main returned: a later in-process user (a test) lost streamfuse's information lines
    assert logging.getLogger("streamfuse").level == level_before


def test_a_dicom_or_a_points_file_given_as_an_input_is_named_as_such(tmp_path, capsys):
    """Anything not an image was taken for a video: 'cannot open video (Invalid data ...)', or for a DICOM slice
    renamed .png-less, 'a video input needs a video output'."""
    cv2.imwrite(str(tmp_path / "vis.png"), make_pair(1, (80, 64))[1])
    (tmp_path / "slice").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)  # a DICOM file by its mark, no extension
    (tmp_path / "points.csv").write_text("1,2,3,4\n")
    for name, message in (("slice", "a DICOM file; streamfuse does not read DICOM: convert the slices to 8-bit PNG"),
                          ("points.csv", "a CSV file, not an image or a video (clicked points go to 'streamfuse "
                                         "calibrate --points')")):
        code = main(["fuse", "--ir", str(tmp_path / name), "--vis", str(tmp_path / "vis.png"), "-o",
                     str(tmp_path / "out.png")])
        assert code == 1 and message in capsys.readouterr().err


def test_fuse_folders(image_folders, tmp_path, capsys):
    ir_dir, vis_dir = image_folders
    code, _, err = run_cli(capsys, "fuse", "--ir", str(ir_dir), "--vis", str(vis_dir), "-o", str(tmp_path / "fused"))
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "fused").iterdir()) == sorted(f"f{i}.png" for i in range(12))


def test_fuse_into_a_folder_that_holds_one_of_its_outputs_is_refused_before_any_work(image_folders, tmp_path, capsys):
    """The sink refused f11.png only when it came to it: on a large batch, after hours of work."""
    ir_dir, vis_dir = image_folders
    (tmp_path / "fused").mkdir()
    (tmp_path / "fused" / "f11.png").write_bytes(b"kept")
    code, _, err = run_cli(capsys, "fuse", "--ir", str(ir_dir), "--vis", str(vis_dir), "-o", str(tmp_path / "fused"),
                           "--fuser", "classical", "--no-progress")
    assert code == 1
    fused = tmp_path / "fused"
    assert f"-o {fused}: 1 of the 12 output file(s) already exist (e.g. {fused / 'f11.png'})" in err
    assert [p.name for p in (tmp_path / "fused").iterdir()] == ["f11.png"]
    assert (tmp_path / "fused" / "f11.png").read_bytes() == b"kept"
    (tmp_path / "fused" / "f3_fused.jpg").write_bytes(b"kept")  # a pattern given with --set: checked alike
    code, _, err = run_cli(capsys, "fuse", "--ir", str(ir_dir), "--vis", str(vis_dir), "-o", str(tmp_path / "fused"),
                           "--fuser", "classical", "--no-progress", "--set", "sinks.0.pattern={name}_fused.jpg")
    assert code == 1 and f"(e.g. {fused / 'f3_fused.jpg'})" in err
    assert sorted(p.name for p in (tmp_path / "fused").iterdir()) == ["f11.png", "f3_fused.jpg"]


def test_fuse_fps_sets_the_rate_of_a_folder_beside_a_video(image_folders, tmp_path, capsys):
    """--fps was refused as soon as one input was a video, although the folder beside it needs a rate."""
    ir_dir, vis_dir = image_folders
    write_video(tmp_path / "vis.mp4", [make_pair(i)[1] for i in range(12)], fps=10)
    code, _, err = run_cli(capsys, "fuse", "--ir", str(ir_dir), "--vis", str(tmp_path / "vis.mp4"), "-o",
                           str(tmp_path / "fused.mp4"), "--fuser", "classical", "--fps", "10", "--no-progress")
    assert code == 0, err
    assert len(read_video(tmp_path / "fused.mp4")[0]) == 12  # at the default 25 fps only some frames meet
    write_video(tmp_path / "ir.mp4", [make_pair(i)[1] for i in range(12)], fps=10)
    code, _, err = run_cli(capsys, "fuse", "--ir", str(tmp_path / "ir.mp4"), "--vis", str(tmp_path / "vis.mp4"),
                           "-o", str(tmp_path / "other.mp4"), "--fps", "10")
    assert code == 2 and "--fps: videos keep their own timing" in err


def test_infrared_as_primary_times_the_output_and_names_its_frames(tmp_path, capsys):
    """With sync.primary ir, every thermal frame is kept and the output takes its time and name (it took
    the reused visible frame's: a 30 fps thermal video beside a 10 fps visible one came out in bursts of
    three frames 1 ms apart, and an images sink's {name} repeated the visible frame's name)."""
    write_video(tmp_path / "ir.mp4", [make_pair(i)[0] for i in range(12)], fps=30)
    write_video(tmp_path / "vis.mp4", [make_pair(i)[1] for i in range(4)], fps=10)
    code, _, err = run_cli(capsys, "fuse", "--ir", str(tmp_path / "ir.mp4"), "--vis", str(tmp_path / "vis.mp4"),
                           "-o", str(tmp_path / "fused.mp4"), "--fuser", "classical", "--set", "sync.primary=ir",
                           "--no-progress")
    assert code == 0, err
    _, times = read_video(tmp_path / "fused.mp4")
    assert len(times) >= 10
    assert np.allclose(np.diff(times), 1 / 30, atol=0.002), times
    ir_dir, vis_dir = tmp_path / "ir", tmp_path / "vis"
    ir_dir.mkdir(), vis_dir.mkdir()
    for i in range(6):
        cv2.imwrite(str(ir_dir / f"t{i}.png"), make_pair(i)[0])
    for i in range(2):
        cv2.imwrite(str(vis_dir / f"v{i}.png"), make_pair(i)[1])
    config = tmp_path / "run.yaml"
    config.write_text(f"""
sources:
  ir: {{type: images, path: {ir_dir}, fps: 30}}
  vis: {{type: images, path: {vis_dir}, fps: 10}}
sync: {{primary: ir}}
fusion: {{fuser: classical}}
sinks: [{{type: images, path: {tmp_path / "out"}, pattern: "{{name}}.png"}}]
""")
    code, _, err = run_cli(capsys, "run", str(config))
    assert code == 0, err
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [f"t{i}.png" for i in range(6)]


def test_fuse_folders_into_a_video(image_folders, tmp_path, capsys):
    ir_dir, vis_dir = image_folders
    code, _, err = run_cli(capsys, "fuse", "--ir", str(ir_dir), "--vis", str(vis_dir), "-o",
                           str(tmp_path / "fused.mp4"), "--fuser", "classical", "--fps", "10")
    assert code == 0, err
    images, times = read_video(tmp_path / "fused.mp4")
    assert len(images) == 12 and times[-1] == pytest.approx(1.1, abs=0.002)  # frame 11 at 10 fps
    # one side's rate alone would pair frames by time across the two rates (frame 8 with frame 20)
    code, _, err = run_cli(capsys, "fuse", "--ir", str(ir_dir), "--vis", str(vis_dir), "-o",
                           str(tmp_path / "other.mp4"), "--fuser", "classical", "--set", "sources.ir.fps=10")
    assert code == 1 and "sources.ir.fps (10) and sources.vis.fps (25) differ" in err and "--fps" in err
    assert not (tmp_path / "other.mp4").exists()
    code, _, err = run_cli(capsys, "fuse", "--ir", str(ir_dir), "--vis", str(vis_dir), "-o", str(tmp_path / "x.png"))
    assert code == 2 and "give a folder path or a video file" in err


def test_fuse_videos(tmp_path, capsys):
    pairs = [make_pair(i, (64, 48)) for i in range(15)]
    write_video(tmp_path / "ir.mp4", [p[0] for p in pairs], fps=15)
    write_video(tmp_path / "vis.mp4", [p[1] for p in pairs], fps=15)
    code, _, err = run_cli(capsys, "fuse", "--ir", str(tmp_path / "ir.mp4"), "--vis", str(tmp_path / "vis.mp4"),
                           "-o", str(tmp_path / "fused.mkv"))
    assert code == 0, err
    images, times = read_video(tmp_path / "fused.mkv")
    assert len(images) == 15 and times[-1] == pytest.approx(14 / 15, abs=0.002)


def test_fuse_roadscene_from_shared_data(tmp_path, capsys):
    roadscene = shared_data("roadscene")
    code, _, err = run_cli(capsys, "fuse", "--ir", str(roadscene / "ir"), "--vis", str(roadscene / "vi"),
                           "-o", str(tmp_path / "fused"), "--no-progress")
    assert code == 0, err
    names = sorted(p.stem for p in (roadscene / "vi").iterdir() if p.suffix == ".jpg")
    written = sorted(p.stem for p in (tmp_path / "fused").iterdir())
    assert written == names
    first = cv2.imread(str(tmp_path / "fused" / f"{names[0]}.png"))
    assert first.shape == cv2.imread(str(roadscene / "vi" / f"{names[0]}.jpg")).shape


@pytest.mark.parametrize(("make_args", "message"), [
    (lambda t: ["fuse", "--ir", str(t / "missing.png"), "--vis", str(t / "vis.png"), "-o", str(t / "o.png")],
     "--ir {t}/missing.png: no such file or folder"),
    (lambda t: ["fuse", "--ir", str(t / "notes.png"), "--vis", str(t / "vis.png"), "-o", str(t / "o.png")],
     "notes.png: not a readable image"),
    (lambda t: ["fuse", "--ir", str(t / "small.png"), "--vis", str(t / "vis.png"), "-o", str(t / "o.png")],
     "infrared frames are 32x24 but visible frames are 64x48; set registration.mode"),
    (lambda t: ["fuse", "--ir", str(t / "ir.png"), "--vis", str(t / "vis.png"), "-o", str(t / "o.png"),
                "--fuser", "magic"], "fusion.fuser: unknown fuser 'magic'"),
    (lambda t: ["fuse", "--ir", str(t / "corrupt.mp4"), "--vis", str(t / "corrupt2.mp4"), "-o", str(t / "o.mp4")],
     "corrupt.mp4: cannot open video"),
    (lambda t: ["fuse", "--ir", str(t / "ir.png"), "--vis", str(t / "vis.png"), "-o", str(t / "o.png"),
                "--set", "registration.matrix=[[1,0,0],[0,0,0],[0,0,1]]"], "registration.matrix: matrix is singular"),
    (lambda t: ["fuse", "--ir", str(t / "ir.png"), "--vis", str(t / "vis.png"), "-o", str(t / "o.png"),
                "--set", "sinks.0.type=ftp"], "sinks.0.type: unknown type 'ftp'"),
    (lambda t: ["run", str(t / "nope.yaml")], "nope.yaml: config file not found"),
    (lambda t: ["bench", "--size", "big"], "--size big: expected WIDTHxHEIGHT"),
    (lambda t: ["bench", "--streams", "0"], "--streams: must be at least 1, got 0"),
    (lambda t: ["bench", "--frames", "1"], "--frames: must be at least 2 to measure a frame rate, got 1"),
    (lambda t: ["subscribe", "tcp://127.0.0.1:1", "--duration", "0"], "--duration: must be positive, got 0"),
    (lambda t: ["bench", "--live", "0"], "--live: must be a positive frame rate, got 0"),
    (lambda t: ["probe", str(t / "ir.png"), "--frames", "0"], "--frames: must be at least 1, got 0"),
    (lambda t: ["probe", ""], "probe: the input is empty"),
    (lambda t: ["fuse", "--ir", str(t / "ir.png"), "--vis", str(t / "vis.png"), "-o", str(t / "o.png"),
                "--set", "fusion.max_wait_ms=-1"], "fusion.max_wait_ms: must not be negative"),
    (lambda t: ["fuse", "--ir", str(t / "ir.png"), "--vis", str(t / "vis.png"), "-o", str(t / "o.png"),
                "--set", "stats.log_every_s=-1"], "stats.log_every_s: must not be negative"),
    (lambda t: ["bench", "--json", str(t / "nowhere" / "b.json")], "b.json: the folder {t}/nowhere does not exist"),
    (lambda t: ["eval", "--ir", str(t), "--vis", str(t), "--fuser", "classical", "--csv", str(t / "ir.png")],
     "--csv {t}/ir.png: would write over the input --ir {t}"),
    (lambda t: ["probe", str(t / "corrupt.mp4")], "corrupt.mp4: cannot open video"),
    (lambda t: ["fuse", "--ir", str(t / "corrupt.mp4"), "--vis", str(t / "corrupt2.mp4"), "-o", str(t / "o.mp4")],
     "--ir: {t}/corrupt.mp4: cannot open video"),
    (lambda t: ["run", "--set", "sources.ir={type: images, path: thermal, fps: 25}"],
     "sources.ir: thermal: no such folder (relative to the working directory "),
    (lambda t: ["run", "--set", "sources.vis={type: video, uri: visible.mp4}"],
     "sources.vis: visible.mp4: no such video file (relative to the working directory "),
])
def test_bad_input_gives_one_clear_line(tmp_path, capsys, monkeypatch, make_args, message):
    monkeypatch.chdir(tmp_path)  # the relative paths above name nothing there
    ir, vis = make_pair(0)
    cv2.imwrite(str(tmp_path / "ir.png"), ir)
    cv2.imwrite(str(tmp_path / "vis.png"), vis)
    cv2.imwrite(str(tmp_path / "small.png"), cv2.resize(ir, (32, 24)))
    (tmp_path / "notes.png").write_text("not an image")
    # fixed bytes: about 1 in 300 random ones open as a (lyrics) file
    (tmp_path / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    (tmp_path / "corrupt2.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    code, _, err = run_cli(capsys, *make_args(tmp_path))
    assert code != 0
    assert message.format(t=tmp_path) in err
    lines = [line for line in err.splitlines() if "streamfuse: error:" in line]
    assert len(lines) == 1 and "Traceback" not in err


def test_eval_with_nothing_scorable_fails_naming_the_file(tmp_path, capsys):
    ir, vis = make_pair(0)
    for folder, image in (("ir", ir), ("vi", vis)):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "01.png"), image)
    (tmp_path / "fused").mkdir()
    (tmp_path / "fused" / "01.png").write_text("not an image")
    code, out, err = run_cli(capsys, "eval", "--ir", str(tmp_path / "ir"), "--vis", str(tmp_path / "vi"),
                             "--fused", str(tmp_path / "fused"))
    assert code == 1 and "mean" not in out
    assert f"eval: no image pair could be scored for fused (first problem: {tmp_path}/fused/01.png: not a " in err


def test_endpoint_in_use_is_a_clear_error(tmp_path, capsys, free_port):
    import zmq

    context = zmq.Context()
    holder = context.socket(zmq.PUB)
    holder.bind(f"tcp://127.0.0.1:{free_port}")
    try:
        code, _, err = run_cli(capsys, "run", "--max-frames", "3", "--set", f"sinks.0.path={tmp_path / 'x.mp4'}",
                               "--set", f"sinks.1.endpoint=tcp://127.0.0.1:{free_port}",
                               "--set", "control.enabled=false")
    finally:
        holder.close(0)
        context.term()
    assert code == 1 and f"sinks.1.endpoint: tcp://127.0.0.1:{free_port} is already in use" in err


def test_probe_video_and_folder(tmp_path, capsys, image_folders):
    write_video(tmp_path / "v.mp4", [make_pair(i)[1] for i in range(10)], fps=10)
    code, out, _ = run_cli(capsys, "probe", str(tmp_path / "v.mp4"), "--json")
    report = json.loads(out)
    assert code == 0
    assert (report["codec"], report["resolution"], report["frame rate"]) == ("h264", "64x48", 10.0)
    assert report["frames"] == 10
    assert report["first timestamps"] == [0.0, 0.1, 0.2, 0.3, 0.4]
    code, out, _ = run_cli(capsys, "probe", str(image_folders[0]))
    assert code == 0 and "image sequence" in out and "12" in out
    one_image = sorted(image_folders[0].iterdir())[0]
    code, out, _ = run_cli(capsys, "probe", str(one_image), "--json")
    report = json.loads(out)  # a still image, not a 25 fps "video file" (FFmpeg's image reader)
    assert code == 0 and report["kind"] == "image" and report["frames"] == 1 and "frame rate" not in report
    assert report["resolution"] == "64x48" and report["bits"] == 8
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for index, size in enumerate([(64, 48), (32, 24), (64, 48)]):
        cv2.imwrite(str(mixed / f"m{index}.png"), np.zeros(size[::-1], np.uint8))
    code, out, _ = run_cli(capsys, "probe", str(mixed), "--json")  # it described the first file's size only
    assert code == 0 and json.loads(out)["resolution"] == "64x48 (2 files), 32x24 (1 file)"
    (mixed / "m0.png").write_bytes(b"damaged")  # a damaged first file: described from the next (it failed)
    code, out, _ = run_cli(capsys, "probe", str(mixed), "--json")
    assert code == 0 and json.loads(out)["bits"] == 8 and "unreadable (1 file)" in json.loads(out)["resolution"]
    cv2.imwrite(str(tmp_path / "thermal16.png"), np.full((48, 64), 7500, np.uint16))
    code, out, _ = run_cli(capsys, "probe", str(tmp_path / "thermal16.png"), "--json")
    assert code == 0 and json.loads(out)["bits"] == 16  # it said only "channels: 1"


def test_probe_counts_the_frames_of_a_recording_slower_than_its_stated_rate(tmp_path, capsys):
    """A live recording whose frames came at 8 fps into a file stating 30 fps: the header has no count
    (Matroska), so the estimate from the duration is ~3x too high; --count reads the packets through."""
    from streamfuse.sinks.video import VideoWriter

    with VideoWriter(tmp_path / "slow.mkv", fps=30) as writer:
        for i in range(12):
            writer.write(make_pair(i)[1], i / 8)
    code, out, _ = run_cli(capsys, "probe", str(tmp_path / "slow.mkv"), "--json")
    estimate = json.loads(out)
    assert code == 0 and estimate["frames"] > 30 and "--count" in estimate["frames from"]
    code, out, _ = run_cli(capsys, "probe", str(tmp_path / "slow.mkv"), "--json", "--count")
    counted = json.loads(out)
    assert code == 0 and counted["frames"] == 12 and counted["frames from"].startswith("counted")
    assert counted["average frame rate"] == pytest.approx(8, rel=0.1)
    assert counted["first timestamps"] == estimate["first timestamps"]


def test_probe_says_when_an_mp4_holds_less_than_its_index_lists(tmp_path, capsys):
    """An MP4 with its index at the front, copied half way: it opens and its header states every frame; probe
    gave that count as the file's without a word."""
    import av

    path = tmp_path / "whole.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(40):
            noise = np.random.default_rng(index).integers(0, 256, (48, 64, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(noise, format="bgr24")))
        container.mux(stream.encode())
    (tmp_path / "half.mp4").write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    code, out, _ = run_cli(capsys, "probe", str(path), "--json")
    assert code == 0 and json.loads(out)["frames from"] == "the header"
    code, out, _ = run_cli(capsys, "probe", str(tmp_path / "half.mp4"), "--json")
    report = json.loads(out)
    assert code == 0 and report["frames"] == 40
    assert "the file holds only about 5" in report["frames from"] and "--count" in report["frames from"]


def test_bench_prints_stage_table_and_json(tmp_path, capsys):
    report_path = tmp_path / "bench.json"
    code, out, _ = run_cli(capsys, "bench", "--size", "160x128", "--frames", "30", "--fuser", "classical",
                           "--json", str(report_path))
    assert code == 0
    assert "end-to-end:" in out and "fuse" in out
    report = json.loads(report_path.read_text())
    assert report["fps"] > 0 and report["frames"] == 30
    for stage in ("fuse", "encode", "end_to_end"):
        assert set(report["stages"][stage]) >= {"p50_ms", "p95_ms", "p99_ms"}
    assert report["machine"]["cores"] >= 1


def test_bench_model_with_parallel_streams(tmp_path, capsys):
    report_path = tmp_path / "bench.json"
    code, out, _ = run_cli(capsys, "bench", "--size", "160x128", "--frames", "12", "--streams", "3", "--batch", "3",
                           "--sink", "none", "--device", "cpu", "--threads", "1", "--json", str(report_path))
    assert code == 0 and "model only (cpu, fp32, 1 thread(s), balanced 1.00)" in out
    report = json.loads(report_path.read_text())
    assert report["frames"] == 36 and report["streams"] == 3 and report["mean_batch"] >= 1.0
    assert set(report["model_only"]["ms_per_frame_by_batch"]) == {"1", "4", "8"}
    assert report["model_only"]["threads"] == 1
    assert {"upload", "model", "download"} <= set(report["stages"])


def test_bench_times_the_model_alone_with_the_prompt_it_was_given(capsys):
    code, out, _ = run_cli(capsys, "bench", "--size", "160x128", "--frames", "4", "--sink", "none", "--device", "cpu",
                           "--set", "prompt=reduce the glare")
    assert code == 0 and "glare 1.00), ms per frame" in out  # a damage prompt runs part of the network twice


def test_subscribe_saves_what_it_receives(tmp_path, free_port):
    endpoint = f"tcp://127.0.0.1:{free_port}"
    env = python_env()
    subscriber = subprocess.Popen(
        [sys.executable, "-m", "streamfuse", "subscribe", endpoint, "--save", str(tmp_path / "rec.mp4"),
         "--frames", "15"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    publisher = subprocess.run(
        [sys.executable, "-m", "streamfuse", "run", "--no-progress", "--max-frames", "15",
         "--set", "sinks.0.path=" + str(tmp_path / "local.mp4"), "--set", f"sinks.1.endpoint={endpoint}",
         "--set", "sinks.1.lossless=true", "--set", "sinks.1.wait_for_subscribers=1", "--set", "control.enabled=false",
         "--set", "synthetic.width=160", "--set", "synthetic.height=128"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert publisher.returncode == 0, publisher.stderr
    out, err = subscriber.communicate(timeout=60)
    assert subscriber.returncode == 0, err
    assert "fps" in out and "received 15 frame(s)" in err
    assert len(read_video(tmp_path / "rec.mp4")[0]) == 15


def test_readme_python_example_runs_verbatim_in_an_empty_folder(tmp_path):
    readme = (REPO / "README.md").read_text()
    example = readme.split("## Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    result = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env=python_env())
    assert result.returncode == 0, result.stderr
    assert len(read_video(tmp_path / "out" / "python.mp4")[0]) == 30


def test_verbosity_flags_work_after_the_command(tmp_path):
    ir, vis = make_pair(0)
    cv2.imwrite(str(tmp_path / "ir.png"), ir)
    cv2.imwrite(str(tmp_path / "vis.png"), vis)

    def fuse(output: str, flag: str) -> str:
        result = subprocess.run([sys.executable, "-m", "streamfuse", "fuse", "--ir", "ir.png", "--vis", "vis.png",
                                 "--fuser", "classical", "-o", output, flag], cwd=tmp_path, capture_output=True,
                                text=True, timeout=120, env=python_env())
        assert result.returncode == 0, result.stderr
        return result.stderr

    assert fuse("a.png", "-q") == ""
    assert "pairing tolerance" in fuse("b.png", "-v")  # a debug line


def test_a_config_without_sinks_or_view_is_warned_about(tmp_path, capsys, caplog):
    (tmp_path / "empty.yaml").write_text("")  # ran the synthetic scene forever with no output, silently
    code, _, err = run_cli(capsys, "run", str(tmp_path / "empty.yaml"), "--max-frames", "2", "--no-progress",
                           "--set", "control.enabled=false", "--set", "fusion.fuser=classical")
    assert code == 0, err
    assert "no sinks and no view: the fused frames are neither written nor shown" in caplog.text


def test_packaged_configs_listed_shown_and_run_by_name_outside_the_repository(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "config", "list")
    assert code == 0 and {"demo", "files", "live", "train"} <= {line.split()[0] for line in out.splitlines()}
    descriptions = {line.split()[0]: line.index(line.split()[1]) for line in out.splitlines()}
    assert len(set(descriptions.values())) == 1  # one column, however long a name (medical_split)
    assert "(no data, no downloads)." in out  # the whole first sentence, not its first line
    code, out, _ = run_cli(capsys, "config", "show", "files")
    assert code == 0 and out == (REPO / "streamfuse" / "configs" / "files.yaml").read_text()
    code, _, err = run_cli(capsys, "config", "show", "nope")
    assert code == 2 and "packaged: demo, files" in err
    for folder, index in (("thermal", 0), ("visual", 1)):
        (tmp_path / folder).mkdir()
        for frame in range(3):
            cv2.imwrite(str(tmp_path / folder / f"{frame}.png"), make_pair(frame)[index])
    # the README's example, verbatim, in a folder without configs/
    command = "streamfuse run configs/files.yaml --set sources.ir.path=thermal/ --set sources.vis.path=visual/"
    assert command in (REPO / "README.md").read_text()
    run = subprocess.run([sys.executable, "-m", "streamfuse", *command.split()[1:], "--no-progress"], cwd=tmp_path,
                         capture_output=True, text=True, env=python_env(), timeout=120)
    assert run.returncode == 0, run.stderr
    assert len(read_video(tmp_path / "out" / "fused.mp4")[0]) == 3


@pytest.mark.parametrize("argv, message", [
    (["fuse", "--ir", "a", "--vis", "b", "-o", "c", "--pair-by", "bogus"],
     "streamfuse: error: fuse: argument --pair-by: invalid choice: 'bogus' (choose from 'stem', 'order') "
     "(see streamfuse fuse --help)\n"),
    (["prompt", "set"], "streamfuse: error: prompt set: the following arguments are required: text "
                        "(see streamfuse prompt set --help)\n"),
    (["run", "--max-frames", "0"], None),
])
def test_argument_errors_are_one_line_with_status_2(capsys, argv, message):
    """As the README says of every mistake: one ``streamfuse: error:`` line, status 2 for argument errors."""
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own checks end the parser
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("streamfuse: error: ") and err.count("\n") == 1
    if message is not None:
        assert err == message


@pytest.mark.parametrize("inputs, output, message", [
    (("ir.png", "vis.png"), "out.txt", "an image input needs an image output"),
    (("ir", "vis"), "out.avi", "a video format streamfuse reads but does not write"),
    (("ir.mp4", "vis.mp4"), "out.avi", "a video format streamfuse reads but does not write"),
    (("ir.mp4", "vis.mp4"), "out.txt", "a video input needs a video output"),
])
def test_an_output_of_the_wrong_kind_is_an_argument_error(tmp_path, capsys, inputs, output, message):
    """-o with an extension fuse cannot write exits 2 like the other argument errors (it exited 1)."""
    ir, vis = make_pair(1, (64, 48))
    for name, image in zip(inputs, (ir, vis), strict=True):
        if name.endswith(".png"):
            cv2.imwrite(str(tmp_path / name), image)
        elif name.endswith(".mp4"):
            write_video(tmp_path / name, [image] * 3)
        else:
            (tmp_path / name).mkdir()
            cv2.imwrite(str(tmp_path / name / "a.png"), image)
    code, _, err = run_cli(capsys, "fuse", "--ir", str(tmp_path / inputs[0]), "--vis", str(tmp_path / inputs[1]),
                           "-o", str(tmp_path / output))
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / output).exists()


def test_ctrl_c_while_the_command_is_still_loading_is_one_line_and_exit_130(monkeypatch, capsys):
    """The imports take a moment (torch, OpenCV); Ctrl-C then printed a traceback through them."""
    from streamfuse.__main__ import run

    class InterruptedImport:  # as if Ctrl-C arrived while streamfuse.cli was being imported
        def find_spec(self, name, path=None, target=None):
            if name == "streamfuse.cli":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "streamfuse.cli")
    monkeypatch.setattr(sys, "meta_path", [InterruptedImport(), *sys.meta_path])
    with pytest.raises(SystemExit) as exited:
        run()
    assert exited.value.code == 130
    assert capsys.readouterr().err == "streamfuse: interrupted\n"


def test_a_run_that_fuses_nothing_fails_and_leaves_the_earlier_output_as_it_was(tmp_path, capsys):
    """No pair within the tolerance (an offset set wrong): exit 0 with the previous run's video left in place
    looked like a new recording; now one error (exit 1) that says so."""
    output = tmp_path / "fused.mp4"
    output.write_bytes(b"an earlier recording")
    code, _, err = run_cli(capsys, "-q", "run", "--no-progress", "--set", "synthetic={width: 64, height: 64}",
                           "--set", "sources.ir={type: synthetic, frames: 5, realtime: false, time_offset_ms: 2000}",
                           "--set", "sources.vis={type: synthetic, frames: 5, realtime: false}",
                           "--set", f"sinks=[{{type: video, path: {output}, overwrite: true}}]",
                           "--set", "fusion.fuser=classical", "--set", "control.enabled=false")
    assert code == 1
    assert ("streamfuse: error: no frame pair was fused, so nothing was written (an output file already there is "
            "from before)") in err
    assert output.read_bytes() == b"an earlier recording"


def test_a_closed_stdout_ends_the_command_without_a_traceback(tmp_path):
    """`streamfuse probe video | head -1`: a BrokenPipeError traceback when head had gone."""
    write_video(tmp_path / "v.mp4", [make_pair(i)[1] for i in range(5)], fps=25)
    process = subprocess.Popen([sys.executable, "-m", "streamfuse", "probe", str(tmp_path / "v.mp4")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=python_env())
    process.stdout.close()  # the reader is gone before the first line
    _, err = process.communicate(timeout=120)
    assert process.returncode == 141 and b"Traceback" not in err, err.decode()


def test_other_libraries_information_lines_stay_out_of_the_log(tmp_path):
    """torch logs its cache statistics at exit at INFO level: they came out as 'streamfuse: FakeTensor cache
    stats' lines at the end of some runs."""
    write_video(tmp_path / "v.mp4", [make_pair(i)[1] for i in range(3)], fps=25)
    script = ("import atexit, logging, sys\n"
              "atexit.register(lambda: logging.getLogger('torch._subclasses').info('FakeTensor cache stats'))\n"
              "from streamfuse.cli import main\n"
              f"sys.exit(main(['probe', {str(tmp_path / 'v.mp4')!r}]))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env=python_env())
    assert result.returncode == 0, result.stderr
    assert "FakeTensor" not in result.stderr


def test_fuse_names_the_files_it_wrote(tmp_path, capsys, caplog):
    """Segmented output was reported as written to -o, a file that does not exist; a run that fused nothing
    said 'wrote 0 fused frame(s) to' a file it did not write, before its error."""
    caplog.set_level(logging.INFO)
    for name, index in (("ir", 0), ("vis", 1)):
        write_video(tmp_path / f"{name}.mp4", [make_pair(i)[index] for i in range(40)], fps=25)
    inputs = ("--ir", str(tmp_path / "ir.mp4"), "--vis", str(tmp_path / "vis.mp4"), "--fuser", "classical",
              "--no-progress")
    code, _, err = run_cli(capsys, "fuse", *inputs, "-o", str(tmp_path / "s.mp4"),
                           "--set", "sinks.0.segment_minutes=0.01")
    assert code == 0, err
    first, last = tmp_path / "s-00000.mp4", tmp_path / "s-00002.mp4"
    assert f"wrote 40 fused frame(s) to 3 files, {first} ... {last}" in caplog.text
    caplog.clear()
    code, _, err = run_cli(capsys, "fuse", *inputs, "-o", str(tmp_path / "none.mp4"),
                           "--set", "sources.ir.time_offset_ms=100000")
    assert code == 1 and "no frame pair was fused" in err and "wrote" not in caplog.text


def test_a_second_signal_while_the_summary_is_printed_keeps_the_first_ones_exit_status():
    """SIGINT, then SIGTERM 0.3 s later while the summary was printed: killed by the second (exit 143, not 130)."""
    import os
    import signal
    import types

    from streamfuse.cli import _signals_ignored_once_stopped

    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: received.append(signum))
    try:
        with _signals_ignored_once_stopped(types.SimpleNamespace(stop_signal=signal.SIGINT)):
            os.kill(os.getpid(), signal.SIGTERM)
        assert received == []
        with _signals_ignored_once_stopped(types.SimpleNamespace(stop_signal=None)):  # a run no signal stopped
            os.kill(os.getpid(), signal.SIGTERM)
        assert received == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_the_text_encoders_warm_up_does_not_stall_the_first_frames(tmp_path):
    """With the control socket on and the classical fuser, the warm-up imported torch on its own thread and held
    the interpreter for about 2 s: 6-13 of the first 90 pairs dropped, latency p95 about 100 ms. A fresh process,
    so that torch is not already imported; the second of two runs, whose prompt embedding is cached (the first
    one embeds it while the pipeline is built, which imports torch before any frame)."""
    env = {**os.environ, "STREAMFUSE_CACHE_DIR": str(tmp_path / "cache")}
    for _ in range(2):
        run = subprocess.run([sys.executable, "-m", "streamfuse", "run", "--max-frames", "90", "--no-progress",
                              "--set", "synthetic.width=160", "--set", "synthetic.height=128", "--set",
                              "fusion.fuser=classical", "--set", "sinks=[]", "--set", "control.enabled=true", "--set",
                              "control.endpoint=tcp://127.0.0.1:*"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
        assert run.returncode == 0, run.stderr
    done = next(line for line in run.stderr.splitlines() if "done: " in line)
    dropped = re.search(r"pairs=(\d+)", done)
    assert dropped is None or int(dropped.group(1)) <= 2, done


@pytest.mark.parametrize(("fuser", "stop"), [("classical", "SIGTERM"), ("model", "SIGINT")])
def test_bench_stopped_by_a_signal_cleans_up_and_says_only_interrupted(tmp_path, fuser, stop):
    """SIGTERM killed bench silently and left its temporary folder (a video) behind; Ctrl-C with the model
    closed the shared inference worker under the running pipelines: a traceback from the fuse stage."""
    import signal
    import time

    process = subprocess.Popen([sys.executable, "-m", "streamfuse", "bench", "--size", "96x64", "--frames", "100000",
                                "--fuser", fuser], stderr=subprocess.PIPE, text=True,
                               env=python_env(TMPDIR=str(tmp_path)))
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("streamfuse-bench-*/*")) and time.monotonic() < deadline:
        time.sleep(0.2)  # the benchmark's video is being written
    time.sleep(2)
    process.send_signal(getattr(signal, stop))
    try:
        err = process.communicate(timeout=30)[1]
    finally:
        process.kill()
    assert process.returncode == 128 + getattr(signal, stop), err
    assert "streamfuse: interrupted" in err and "Traceback" not in err and "failed" not in err, err
    assert not list(tmp_path.glob("streamfuse-bench-*"))


def test_log_lines_name_warnings_and_carry_the_date_in_a_file():
    """A service's log showed warnings exactly like information lines, and HH:MM:SS without the day."""
    from streamfuse.cli import LogFormatter

    def line(formatter: LogFormatter, level: int) -> str:
        record = logging.LogRecord("streamfuse", level, __file__, 1, "camera %s lost", ("ir",), None)
        return formatter.format(record)

    terminal, file = LogFormatter(dated=False), LogFormatter(dated=True)
    assert re.fullmatch(r"\d\d:\d\d:\d\d streamfuse: camera ir lost", line(terminal, logging.INFO))
    assert re.fullmatch(r"\d\d:\d\d:\d\d streamfuse: warning: camera ir lost", line(terminal, logging.WARNING))
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d streamfuse: error: camera ir lost", line(file, logging.ERROR))


def test_a_second_sigterm_while_a_command_stops_does_not_interrupt_its_finalising():
    """A supervisor and a shell both signalling the process group: the second SIGTERM, a few ms after the first,
    raised again inside the first one's clean-up (a recording left unfinished, exit -15)."""
    import signal
    import time

    from streamfuse.cli import Terminated, _sigterm_as_interrupt

    finalised = []
    with pytest.raises(Terminated) as stopped, _sigterm_as_interrupt():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the first signal raises here
        finally:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
            finalised.append("closed")
    assert stopped.value.status == 143 and finalised == ["closed"]
