"""`streamfuse fuse` on real files: outputs never overwrite inputs, losses are reported, folders pair by stem."""

from __future__ import annotations

import hashlib
import logging
import re
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from conftest import make_pair
from media import read_video, write_png_mov, write_video
from streamfuse.cli import main
from streamfuse.config import config_from_dict
from streamfuse.errors import ConfigError, SourceError
from streamfuse.fusers import ClassicalFuser
from streamfuse.imageio import image_size, read_image
from streamfuse.pipeline import Pipeline


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture
def inputs(tmp_path, image_folders) -> dict[str, Path]:
    """Folders, single images and videos of the same small pairs."""
    ir_dir, vis_dir = image_folders
    frames = [make_pair(i) for i in range(6)]
    write_video(tmp_path / "ir.mp4", [cv2.cvtColor(ir, cv2.COLOR_GRAY2BGR) for ir, _ in frames], fps=10)
    write_video(tmp_path / "vis.mp4", [vis for _, vis in frames], fps=10)
    return {"ir_dir": ir_dir, "vis_dir": vis_dir, "ir_png": ir_dir / "f0.png", "vis_png": vis_dir / "f0.png",
            "ir_mp4": tmp_path / "ir.mp4", "vis_mp4": tmp_path / "vis.mp4"}


@pytest.mark.parametrize(("ir", "vis", "output", "flag"), [
    ("ir_dir", "vis_dir", "ir_dir", "--ir"),
    ("ir_dir", "vis_dir", "vis_dir", "--vis"),
    ("ir_png", "vis_png", "vis_png", "--vis"),
    ("ir_mp4", "vis_mp4", "vis_mp4", "--vis"),
    ("ir_mp4", "vis_mp4", "ir_mp4", "--ir"),
])
@pytest.mark.parametrize("overwrite", [[], ["-y"]])
def test_an_output_that_is_an_input_is_refused_even_with_y(inputs, capsys, ir, vis, output, flag, overwrite):
    before = {key: digest(path) if path.is_dir() else path.read_bytes() for key, path in inputs.items()}
    code, _, err = run_cli(capsys, "fuse", "--ir", str(inputs[ir]), "--vis", str(inputs[vis]),
                           "-o", str(inputs[output]), "--fuser", "classical", "--no-progress", *overwrite)
    assert code == 2
    assert f"-o {inputs[output]}: would write over the input {flag} {inputs[output].resolve()}" in err
    assert "-y" not in err and "overwrite" not in err.replace("overwritten", "")
    after = {key: digest(path) if path.is_dir() else path.read_bytes() for key, path in inputs.items()}
    assert after == before


@pytest.mark.parametrize("input_key", ["vis_mp4", "vis_png"])
def test_an_output_hard_linked_to_an_input_is_refused_even_with_y(inputs, capsys, tmp_path, input_key):
    """Another name for the same file: -y truncated the input before."""
    link = tmp_path / f"link{inputs[input_key].suffix}"
    link.hardlink_to(inputs[input_key])
    before = inputs[input_key].read_bytes()
    ir = inputs["ir_mp4"] if input_key == "vis_mp4" else inputs["ir_png"]
    code, _, err = run_cli(capsys, "fuse", "--ir", str(ir), "--vis", str(inputs[input_key]), "-o", str(link),
                           "--fuser", "classical", "--no-progress", "-y")
    assert code == 2 and f"-o {link}: would write over the input --vis" in err
    assert inputs[input_key].read_bytes() == before


def test_overwriting_replaces_links_in_the_output_never_what_they_point_to(inputs, capsys, tmp_path):
    """-y into a folder or onto a video whose entries are links to other files (inputs included): the entries
    are replaced, the files they pointed to keep their contents (written through before)."""
    outputs = tmp_path / "fused"
    outputs.mkdir()
    (outputs / "f0.png").symlink_to(inputs["vis_png"])
    (outputs / "f1.png").hardlink_to(inputs["vis_dir"] / "f1.png")
    kept = tmp_path / "kept.mp4"
    kept.write_bytes(inputs["vis_mp4"].read_bytes())
    (tmp_path / "fused.mp4").hardlink_to(kept)
    before = digest(inputs["vis_dir"]), kept.read_bytes()
    for output in (outputs, tmp_path / "fused.mp4"):
        ir, vis = (inputs["ir_dir"], inputs["vis_dir"]) if output == outputs else (inputs["ir_mp4"], inputs["vis_mp4"])
        code, _, err = run_cli(capsys, "fuse", "--ir", str(ir), "--vis", str(vis), "-o", str(output),
                               "--fuser", "classical", "--no-progress", "-y")
        assert code == 0, err
    assert (digest(inputs["vis_dir"]), kept.read_bytes()) == before
    assert not (outputs / "f0.png").is_symlink() and cv2.imread(str(outputs / "f0.png")) is not None


def test_output_reached_through_another_spelling_is_refused(inputs, capsys, monkeypatch):
    monkeypatch.chdir(inputs["ir_dir"].parent)
    code, _, err = run_cli(capsys, "fuse", "--ir", "ir/../ir/*.png", "--vis", str(inputs["vis_dir"]), "-o", "./ir/",
                           "--fuser", "classical", "-y")
    assert code == 2 and "would write over the input --ir" in err


def test_a_run_config_that_writes_into_an_input_folder_is_refused(inputs):
    config = config_from_dict({
        "sources": {"ir": {"type": "images", "path": str(inputs["ir_dir"])},
                    "vis": {"type": "images", "path": str(inputs["vis_dir"])}},
        "sinks": [{"type": "images", "path": str(inputs["vis_dir"]), "pattern": "{name}.png", "overwrite": True}]})
    with pytest.raises(ConfigError, match=r"sinks.0.path .*: would write over the input sources.vis.path"):
        Pipeline(config)


def test_an_images_pattern_with_a_sub_folder_into_an_input_is_refused(inputs):
    config = config_from_dict({
        "sources": {"ir": {"type": "images", "path": str(inputs["ir_dir"])},
                    "vis": {"type": "images", "path": str(inputs["vis_dir"])}},
        "sinks": [{"type": "images", "path": str(inputs["ir_dir"].parent),
                   "pattern": f"{inputs['ir_dir'].name}/{{name}}.png", "overwrite": True}]})
    with pytest.raises(ConfigError, match=r"sinks.0.path .*: would write over the input sources.ir.path"):
        Pipeline(config)


def test_an_output_next_to_a_single_input_image_is_allowed(inputs, capsys, tmp_path):
    output = inputs["vis_dir"] / "fused.png"
    code, _, err = run_cli(capsys, "fuse", "--ir", str(inputs["ir_png"]), "--vis", str(inputs["vis_png"]),
                           "-o", str(output), "--fuser", "classical", "--no-progress")
    assert code == 0, err
    assert cv2.imread(str(output)) is not None


def fuse_videos(capsys, caplog, ir: Path, vis: Path, output: Path) -> tuple[int, str]:
    with caplog.at_level(logging.INFO, logger="streamfuse"):
        code, _, err = run_cli(capsys, "fuse", "--ir", str(ir), "--vis", str(vis), "-o", str(output),
                               "--fuser", "classical", "--no-progress")
    return code, caplog.text + err


def test_9fps_thermal_with_30fps_visible_fuses_every_visible_frame(tmp_path, capsys, caplog):
    write_video(tmp_path / "ir.mp4", [cv2.cvtColor(make_pair(i)[0], cv2.COLOR_GRAY2BGR) for i in range(29)], fps=9)
    write_video(tmp_path / "vis.mp4", [make_pair(i)[1] for i in range(96)], fps=30)
    code, log = fuse_videos(capsys, caplog, tmp_path / "ir.mp4", tmp_path / "vis.mp4", tmp_path / "out.mp4")
    assert code == 0
    images, _ = read_video(tmp_path / "out.mp4")
    assert len(images) == 96  # with a fixed 40 ms tolerance, 67
    assert "input vis (video " in log and "96 read, 96 paired, 0 unpaired, 0 dropped" in log
    assert "29 read, 29 paired, 0 unpaired, 0 dropped" in log
    assert "not every input frame was fused" not in log


def test_inputs_of_different_lengths_are_reported_not_cut_silently(tmp_path, capsys, caplog):
    write_video(tmp_path / "ir.mp4", [cv2.cvtColor(make_pair(i)[0], cv2.COLOR_GRAY2BGR) for i in range(10)], fps=10)
    write_video(tmp_path / "vis.mp4", [make_pair(i)[1] for i in range(40)], fps=10)
    code, log = fuse_videos(capsys, caplog, tmp_path / "ir.mp4", tmp_path / "vis.mp4", tmp_path / "out.mp4")
    assert code == 0
    assert len(read_video(tmp_path / "out.mp4")[0]) == 10
    # Pairing ends at the first visible frame after the last thermal one (the rest is not read); the frames the
    # visible input had read ahead meanwhile (up to its queue, 8, and the one in hand: how many depends on the
    # threads' timing, so 16 frames could all be read ahead) count as unpaired.
    line = next(line for line in log.splitlines() if "input vis (video " in line)
    read, unpaired, not_read = (int(re.search(rf"(\d+) {word}", line).group(1)) for word in ("read,", "unpaired",
                                                                                            "not read"))
    assert "10 paired" in line and read + not_read == 40 and unpaired == read - 10 and not_read >= 15, line
    assert "not every input frame was fused (vis: " in log and "not read (the other input ended)" in log


def test_a_cut_off_file_is_said_to_be_short_not_blamed_on_the_other_input(tmp_path, capsys, caplog):
    """A recording cut off half way (its header still gives the full length): its missing frames were
    reported as 'not read (the other input ended)', although the other input was read to its end."""
    path = write_video(tmp_path / "ir.mkv", [cv2.cvtColor(make_pair(i)[0], cv2.COLOR_GRAY2BGR) for i in range(60)],
                       fps=10)
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    write_video(tmp_path / "vis.mp4", [make_pair(i)[1] for i in range(60)], fps=10)
    code, log = fuse_videos(capsys, caplog, path, tmp_path / "vis.mp4", tmp_path / "out.mp4")
    assert code == 0
    line = next(line for line in log.splitlines() if "input ir (video " in line)
    assert "missing at its end (it ends before the length its header states: cut off?)" in line, line
    assert "not read" not in line


@pytest.mark.parametrize("times", [[i / 10 for i in range(10)] + [6 + i / 10 for i in range(10)],  # a pause
                                   [i / 10 + (0.03 if i % 3 else 0) for i in range(20)]],  # a variable rate
                         ids=["paused", "variable-rate"])
def test_an_intact_recording_with_pauses_or_a_variable_rate_is_not_called_cut_off(tmp_path, capsys, caplog, times):
    """Matroska states no frame count: the count estimated from its length at the nominal rate said 60 frames
    of a 20-frame recording with a pause were 'missing at its end (cut off?)'."""
    for side, index in (("ir", 0), ("vis", 1)):
        frames = [cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame
                  for frame in (make_pair(i)[index] for i in range(20))]
        write_video(tmp_path / f"{side}.mkv", frames, fps=10, times=times)
    code, log = fuse_videos(capsys, caplog, tmp_path / "ir.mkv", tmp_path / "vis.mkv", tmp_path / "out.mp4")
    assert code == 0
    assert "20 read, 20 paired, 0 unpaired, 0 dropped\n" in log.replace("dropped ", "dropped\n")
    assert "missing" not in log and "not every input frame was fused" not in log


def test_undecodable_frames_are_counted_once(tmp_path, capsys, caplog):
    """Skipped frames of a file whose header counts them were reported as dropped and, again, as missing."""
    ir = write_png_mov(tmp_path / "ir.mov", 12, broken=(4, 5))
    write_video(tmp_path / "vis.mp4", [make_pair(i)[1] for i in range(12)], fps=25)
    code, log = fuse_videos(capsys, caplog, ir, tmp_path / "vis.mp4", tmp_path / "out.mp4")
    assert code == 0
    line = next(line for line in log.splitlines() if "input ir (video " in line)
    assert "10 read" in line and "2 dropped" in line and "missing" not in line, line
    assert "or frames were undecodable (see the warnings above)" in log


def test_a_rotated_or_non_square_pixel_recording_is_fused_as_players_show_it(tmp_path, capsys, caplog):
    """The display rotation a phone or a turned camera records, and non-square pixels, were ignored: a sideways
    picture, or one squeezed to half its width, with no word about it."""
    frames = [np.full((48, 64, 3), 40, np.uint8) for _ in range(5)]
    for frame in frames:
        frame[:16, :16] = 230  # a bright block in the top left corner
    for name, options, size in (("turned", {"rotation": 90}, (48, 64)), ("wide", {"pixel_aspect": Fraction(2)},
                                                                            (128, 48))):
        ir = write_video(tmp_path / f"{name}_ir.mkv", frames, fps=10, **options)
        vis = write_video(tmp_path / f"{name}_vis.mkv", frames, fps=10, **options)
        code, log = fuse_videos(capsys, caplog, ir, vis, tmp_path / f"{name}.mp4")
        assert code == 0, log
        images, _ = read_video(tmp_path / f"{name}.mp4")
        assert images[0].shape[1::-1] == size, name
        assert f"{name}_ir.mkv is to be shown" in log
    fused = cv2.cvtColor(read_video(tmp_path / "turned.mp4")[0][2], cv2.COLOR_BGR2GRAY)
    assert fused[52:, :12].min() > 180 and fused[:12, :12].max() < 90  # counter-clockwise, as FFmpeg's players turn it


def test_a_file_with_two_video_streams_is_warned_about_and_cannot_be_both_inputs(tmp_path, capsys, caplog):
    path = tmp_path / "both.mkv"
    with av.open(str(path), "w") as container:
        streams = [container.add_stream("libx264", rate=10) for _ in range(2)]
        for stream in streams:
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            for stream, index in zip(streams, (1, 0), strict=True):
                image = make_pair(i)[index]
                frame = av.VideoFrame.from_ndarray(image, format="gray" if image.ndim == 2 else "bgr24")
                container.mux(stream.encode(frame))
        for stream in streams:
            container.mux(stream.encode(None))
    code, _, err = run_cli(capsys, "fuse", "--ir", str(path), "--vis", str(path), "-o", str(tmp_path / "out.mp4"))
    assert code == 2 and f"--ir and --vis both name {path}" in err
    write_video(tmp_path / "ir.mp4", [make_pair(i)[1] for i in range(5)], fps=10)
    code, log = fuse_videos(capsys, caplog, tmp_path / "ir.mp4", path, tmp_path / "out.mp4")
    assert code == 0 and "both.mkv has 2 video streams; streamfuse reads the first (64x48)" in log


def test_a_video_whose_size_changes_part_way_is_refused_at_that_frame(tmp_path, capsys, caplog):
    """Two recordings joined into one MPEG-TS file: the error came from registration ('infrared frames are
    80x60 but ...') without saying which file or frame."""
    first = write_video(tmp_path / "a.ts", [make_pair(i)[0] for i in range(5)], fps=10)
    second = write_video(tmp_path / "b.ts", [cv2.resize(make_pair(i)[0], (80, 60)) for i in range(5)], fps=10,
                         start_s=0.5)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(first.read_bytes() + second.read_bytes())  # MPEG-TS files concatenate into one
    vis = write_video(tmp_path / "vis.ts", [make_pair(i)[1] for i in range(10)], fps=10)
    code, log = fuse_videos(capsys, caplog, joined, vis, tmp_path / "out.mp4")
    assert code == 1
    assert "joined.ts: frame 5 is 80x60 where the frames before it are 64x48; re-encode the file" in log


def test_frames_of_the_longer_input_never_read_are_counted(tmp_path, capsys, caplog):
    """The run ends with the shorter input: the longer one's remaining frames were in no count."""
    write_video(tmp_path / "ir.mp4", [cv2.cvtColor(make_pair(i)[0], cv2.COLOR_GRAY2BGR) for i in range(100)], fps=10)
    write_video(tmp_path / "vis.mp4", [make_pair(0)[1]], fps=10)
    code, log = fuse_videos(capsys, caplog, tmp_path / "ir.mp4", tmp_path / "vis.mp4", tmp_path / "out.mp4")
    assert code == 0
    read = int(log.split("input ir (video ")[1].split(" read, ")[0].rsplit(" ", 1)[-1])
    assert f"{100 - read} not read (the other input ended)" in log and read < 100
    lost = f"ir: {read - 1} unpaired, 0 dropped of {read} read, {100 - read} not read"
    assert f"not every input frame was fused ({lost})" in log


def test_frames_read_ahead_of_max_frames_are_not_blamed_on_the_inputs(tmp_path, capsys, caplog):
    for side, index in (("ir", 0), ("vis", 1)):
        write_video(tmp_path / f"{side}.mp4", [cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame
                                              for frame in (make_pair(i)[index] for i in range(40))], fps=10)
    with caplog.at_level(logging.INFO, logger="streamfuse"):
        code, _, err = run_cli(capsys, "run", "files",
                               "--set", f"sources.ir={{type: video, uri: '{tmp_path / 'ir.mp4'}'}}",
                               "--set", f"sources.vis={{type: video, uri: '{tmp_path / 'vis.mp4'}'}}",
                               "--set", f"sinks.0.path={tmp_path / 'out.mp4'}", "--set", "fusion.fuser=classical",
                               "--max-frames", "5", "--no-progress")
    assert code == 0, err
    assert "unpaired or read ahead of the stop" in caplog.text
    assert "not every input frame was fused" not in caplog.text


def test_pairs_dropped_because_fusion_fell_behind_live_cameras_are_reported(tmp_path, capsys, caplog):
    """The inputs' lines said "300 paired, 0 dropped" while a fifth of the pairs never reached the output."""
    camera = "{type: synthetic, fps: 2000, frames: 400}"
    with caplog.at_level(logging.INFO, logger="streamfuse"):
        code, _, err = run_cli(capsys, "run", "demo", "--set", f"sources.ir={camera}", "--set", f"sources.vis={camera}",
                               "--set", "synthetic.width=160", "--set", "synthetic.height=128",
                               "--set", "control.enabled=false", "--set", "stats.log_every_s=0",
                               "--set", f"sinks=[{{type: video, path: '{tmp_path / 'out.mp4'}'}}]", "--no-progress")
    assert code == 0, err
    written = len(read_video(tmp_path / "out.mp4")[0])
    assert written < 400  # 2000 pairs a second: the model cannot keep up
    dropped = re.search(rf"pairs: {written} fused, (\d+) dropped before fusion", caplog.text)
    assert dropped and int(dropped[1]) > 0


def test_a_floating_point_thermal_image_is_one_error_with_what_to_do(image_folders, capsys, caplog):
    """The source's state change logged the error, then the command printed it again."""
    ir_dir, vis_dir = image_folders
    (ir_dir / "f3.png").unlink()
    cv2.imwrite(str(ir_dir / "f3.tiff"), np.full((48, 64), 21.5, np.float32))  # degrees Celsius
    with caplog.at_level(logging.INFO, logger="streamfuse"):
        code, _, err = run_cli(capsys, "fuse", "--ir", str(ir_dir), "--vis", str(vis_dir), "-o",
                               str(ir_dir.parent / "out"), "--fuser", "classical", "--no-progress")
    assert code == 1
    said = (caplog.text + err).count("f3.tiff: unsupported pixel type float32")
    assert said == 1 and "16-bit centikelvin" in err


def test_a_decode_error_mid_file_is_a_warning_and_counted(tmp_path, capsys, caplog):
    write_video(tmp_path / "ir.mp4", [np.zeros((48, 64, 3), np.uint8)] * 40, fps=25)
    broken = write_png_mov(tmp_path / "vis.mov", 40, broken=(20,))
    code, log = fuse_videos(capsys, caplog, tmp_path / "ir.mp4", broken, tmp_path / "out.mp4")
    assert code == 0
    assert len(read_video(tmp_path / "out.mp4")[0]) == 39
    assert "vis.mov: frame 20 cannot be decoded" in log
    assert "39 read, 39 paired, 0 unpaired, 1 dropped" in log  # the visible input
    assert "40 read, 39 paired, 1 unpaired, 0 dropped" in log  # the thermal frame without its partner


def test_folders_pair_by_file_name_and_files_without_a_partner_are_named(image_folders, tmp_path, capsys, caplog):
    ir_dir, vis_dir = image_folders
    cv2.imwrite(str(ir_dir / "a_extra.png"), make_pair(50)[0])  # sorts first: by order, every pair would shift
    cv2.imwrite(str(vis_dir / "z_extra.png"), make_pair(51)[1])
    with caplog.at_level(logging.WARNING):
        code, _, err = run_cli(capsys, "fuse", "--ir", str(ir_dir), "--vis", str(vis_dir), "-o", str(tmp_path / "out"),
                               "--fuser", "classical", "--no-progress")
    assert code == 0, err
    assert "2 image(s) have no partner of the same name and are skipped" in caplog.text
    assert str(ir_dir / "a_extra.png") in caplog.text and str(vis_dir / "z_extra.png") in caplog.text
    assert sorted(p.stem for p in (tmp_path / "out").iterdir()) == sorted(f"f{i}" for i in range(12))
    ir, vis = (cv2.imread(str(folder / "f5.png"), cv2.IMREAD_UNCHANGED) for folder in (ir_dir, vis_dir))
    assert np.array_equal(cv2.imread(str(tmp_path / "out" / "f5.png")), ClassicalFuser().fuse(ir, vis))


def test_folders_with_no_name_in_common_are_refused_unless_paired_by_order(image_folders, tmp_path, capsys):
    ir_dir, vis_dir = image_folders
    for path in vis_dir.iterdir():
        path.rename(path.with_name("vis_" + path.name))
    code, _, err = run_cli(capsys, "fuse", "--ir", str(ir_dir), "--vis", str(vis_dir), "-o", str(tmp_path / "out"),
                           "--fuser", "classical", "--no-progress")
    assert code == 1
    assert f"--ir {ir_dir} and --vis {vis_dir} have no file name in common (e.g. f0.png and vis_f0.png)" in err
    assert "--pair-by order" in err
    code, _, err = run_cli(capsys, "fuse", "--ir", str(ir_dir), "--vis", str(vis_dir), "-o", str(tmp_path / "out"),
                           "--fuser", "classical", "--no-progress", "--pair-by", "order")
    assert code == 0, err
    assert len(list((tmp_path / "out").iterdir())) == 12


def test_pair_by_for_inputs_other_than_two_folders_is_an_argument_error(tmp_path, capsys):
    """Two videos pair by time and two images are one pair: --pair-by was ignored without a word."""
    ir, vis = make_pair(0)
    cv2.imwrite(str(tmp_path / "ir.png"), ir)
    cv2.imwrite(str(tmp_path / "vis.png"), vis)
    for command in (["fuse", "-o", str(tmp_path / "o.png")], ["calibrate"]):
        code, _, err = run_cli(capsys, *command, "--ir", str(tmp_path / "ir.png"), "--vis", str(tmp_path / "vis.png"),
                               "--pair-by", "order")
        assert code == 2
        assert "--pair-by order: pairs the images of two folders; these inputs are image" in err


def test_a_truncated_jpeg_in_a_folder_is_skipped_naming_the_file(image_folders, tmp_path, capsys, caplog):
    ir_dir, _ = image_folders
    vis_dir = tmp_path / "vis_jpg"
    vis_dir.mkdir()
    for index in range(12):
        cv2.imwrite(str(vis_dir / f"f{index}.jpg"), make_pair(index)[1])
    cut = vis_dir / "f3.jpg"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size * 2 // 3])
    assert cv2.imread(str(cut)) is not None  # OpenCV decodes the top part without complaint
    code, _, err = run_cli(capsys, "fuse", "--ir", str(ir_dir), "--vis", str(vis_dir), "-o", str(tmp_path / "out"),
                           "--fuser", "classical", "--no-progress")
    assert code == 0 and "Traceback" not in err
    assert f"{cut}: truncated JPEG" in caplog.text and "skipped" in caplog.text
    assert sorted(p.stem for p in (tmp_path / "out").iterdir()) == sorted(f"f{i}" for i in range(12) if i != 3)
    single = ["fuse", "--ir", str(ir_dir / "f3.png"), "--vis", str(cut), "-o", str(tmp_path / "one.png")]
    code, _, err = run_cli(capsys, *single, "--fuser", "classical")  # one image given: an error, as before
    assert code == 1 and f"streamfuse: error: {cut}: truncated JPEG" in err


def test_two_images_of_one_name_in_a_folder_are_an_error_not_a_guess(image_folders, tmp_path, capsys):
    """f1.png and f1.jpg beside each other: every later frame was paired with its neighbour's partner."""
    ir_dir, vis_dir = image_folders
    cv2.imwrite(str(vis_dir / "f1.jpg"), make_pair(1)[1])
    for command in (["fuse", "-o", str(tmp_path / "out"), "--fuser", "classical", "--no-progress"], ["eval"]):
        code, _, err = run_cli(capsys, command[0], "--ir", str(ir_dir), "--vis", str(vis_dir), *command[1:])
        assert code == 1, err
        assert f"streamfuse: error: {vis_dir}: two images are named 'f1' (f1.jpg and f1.png)" in err
    assert not (tmp_path / "out").exists()


def test_an_image_is_recognised_by_its_content_not_its_name(tmp_path):
    """A PNG named .jpg (a mislabelled export) is read; a truncated JPEG named .png is still refused."""
    image = make_pair(0)[1]
    png_as_jpg = tmp_path / "frame.jpg"
    png_as_jpg.write_bytes(cv2.imencode(".png", image)[1].tobytes())
    assert np.array_equal(read_image(png_as_jpg), image)
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    cut_as_png = tmp_path / "cut.png"
    cut_as_png.write_bytes(jpeg[: len(jpeg) * 2 // 3])
    with pytest.raises(SourceError, match="truncated JPEG"):
        read_image(cut_as_png)


def test_a_real_camera_paired_with_the_default_synthetic_one_is_warned_about(inputs, caplog):
    config = config_from_dict({"sources": {"ir": {"type": "images", "path": str(inputs["ir_dir"])}}, "sinks": []})
    with caplog.at_level(logging.WARNING):
        Pipeline(config)
    assert "sources.vis is the synthetic test camera while sources.ir is a real input" in caplog.text


def test_images_of_several_sizes_into_one_video_are_refused_before_any_work(tmp_path, capsys):
    """The video sink refused the first image of another size, after fusing the ones before (with -y, over a
    good earlier video)."""
    for folder in ("ir", "vis"):
        (tmp_path / folder).mkdir()
    for index, size in enumerate([(64, 48), (64, 48), (80, 60)]):
        ir, vis = (cv2.resize(image, size) for image in make_pair(index))
        cv2.imwrite(str(tmp_path / "ir" / f"f{index}.png"), ir)
        cv2.imwrite(str(tmp_path / "vis" / f"f{index}.jpg"), vis)
    earlier = write_video(tmp_path / "out.mp4", [make_pair(i)[1] for i in range(8)], fps=10)
    before = earlier.read_bytes()
    code, _, err = run_cli(capsys, "fuse", "--ir", str(tmp_path / "ir"), "--vis", str(tmp_path / "vis"), "-o",
                           str(earlier), "-y", "--fuser", "classical", "--no-progress")
    assert code == 2 and earlier.read_bytes() == before
    assert (f"the images of --vis {tmp_path / 'vis'} have 2 different sizes (f0.jpg 64x48, f2.jpg 80x60) and a "
            "video has one; write a folder of images instead") in err
    code, _, _ = run_cli(capsys, "fuse", "--ir", str(tmp_path / "ir"), "--vis", str(tmp_path / "vis"), "-o",
                         str(tmp_path / "folder"), "--fuser", "classical", "--no-progress")
    assert code == 0 and len(list((tmp_path / "folder").iterdir())) == 3
    # a damaged file whose header still states another size: skipped by the run, not a reason to refuse the video
    odd = tmp_path / "vis" / "f2.jpg"
    odd.write_bytes(odd.read_bytes()[: odd.stat().st_size // 2])  # a truncated JPEG: its header says 80x60
    code, _, err = run_cli(capsys, "fuse", "--ir", str(tmp_path / "ir"), "--vis", str(tmp_path / "vis"), "-o",
                           str(tmp_path / "two.mp4"), "--fuser", "classical", "--no-progress")
    assert code == 0, err
    assert len(read_video(tmp_path / "two.mp4")[0]) == 2


def test_a_pair_of_images_registration_refuses_is_named_by_its_files(tmp_path, capsys):
    for folder in ("ir", "vis"):
        (tmp_path / folder).mkdir()
    for index in range(2):
        ir, vis = make_pair(index)
        cv2.imwrite(str(tmp_path / "ir" / f"a{index}.png"), ir if index == 0 else cv2.resize(ir, (80, 60)))
        cv2.imwrite(str(tmp_path / "vis" / f"b{index}.png"), vis)
    code, _, err = run_cli(capsys, "fuse", "--ir", str(tmp_path / "ir"), "--vis", str(tmp_path / "vis"), "-o",
                           str(tmp_path / "out"), "--pair-by", "order", "--fuser", "classical", "--no-progress")
    assert code == 1
    assert (f"1 of the 2 pairs has images of two sizes (e.g. {tmp_path / 'ir' / 'a1.png'} and "
            f"{tmp_path / 'vis' / 'b1.png'}: infrared 80x60, visible 64x48)") in err
    assert not (tmp_path / "out").exists()  # refused before any work


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif"])
def test_image_size_reads_the_size_read_image_gives(tmp_path, suffix):
    path = tmp_path / f"a{suffix}"
    cv2.imwrite(str(path), cv2.resize(make_pair(0)[1], (70, 38)))
    assert image_size(path) == (70, 38) == read_image(path).shape[1::-1]
    (tmp_path / "not.png").write_bytes(b"garbage")
    assert image_size(tmp_path / "not.png") is None


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """A JPEG file's bytes with an EXIF segment stating ``orientation`` (6: turn 90 degrees clockwise to show it),
    as phones write it instead of turning the pixels."""
    ifd = (1).to_bytes(2, "little") + (0x0112).to_bytes(2, "little") + (3).to_bytes(2, "little") \
        + (1).to_bytes(4, "little") + orientation.to_bytes(2, "little") + bytes(2) + bytes(4)
    segment = b"Exif\0\0" + b"II*\0" + (8).to_bytes(4, "little") + ifd
    return jpeg[:2] + b"\xff\xe1" + (len(segment) + 2).to_bytes(2, "big") + segment + jpeg[2:]


def test_a_jpeg_is_read_turned_as_its_exif_orientation_says(tmp_path):
    """Phone photos were fused sideways (or refused: 'infrared frames are 320x210 but visible frames are 210x320')."""
    upright = make_pair(3, (64, 48))[1]
    ok, data = cv2.imencode(".jpg", cv2.rotate(upright, cv2.ROTATE_90_COUNTERCLOCKWISE), [cv2.IMWRITE_JPEG_QUALITY, 98])
    (tmp_path / "phone.jpg").write_bytes(with_exif_orientation(data.tobytes(), 6))
    image = read_image(tmp_path / "phone.jpg")
    assert np.array_equal(image, cv2.rotate(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.ROTATE_90_CLOCKWISE))
    assert image_size(tmp_path / "phone.jpg") == (64, 48)  # the header size, turned alike
    xmp = b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta/>"  # phones and editors write XMP after EXIF
    with_xmp = data.tobytes()[:2] + b"\xff\xe1" + (len(xmp) + 2).to_bytes(2, "big") + xmp + data.tobytes()[2:]
    (tmp_path / "edited.jpg").write_bytes(with_exif_orientation(with_xmp, 6))
    assert image_size(tmp_path / "edited.jpg") == (64, 48)  # the XMP segment reset the turn: 48x64
    (tmp_path / "plain.jpg").write_bytes(with_exif_orientation(data.tobytes(), 1))
    assert read_image(tmp_path / "plain.jpg").shape == (64, 48, 3) and image_size(tmp_path / "plain.jpg") == (48, 64)


def test_a_16bit_colour_image_keeps_its_exposure(tmp_path):
    """It was stretched like a thermal image (0.1-99.9 percentiles to 0-255): the visible picture's mean went
    from 173 to 111, blacks crushed."""
    vis = make_pair(2)[1]
    cv2.imwrite(str(tmp_path / "vis16.png"), vis.astype(np.uint16) * 257)
    assert np.array_equal(read_image(tmp_path / "vis16.png"), vis)
    assert np.array_equal(read_image(tmp_path / "vis16.png", keep_16bit=True), vis)


def test_a_16bit_gray_image_stored_as_rgb_is_read_as_gray(tmp_path):
    """A 16-bit MRI slice saved with three equal channels (as medical slices often are) was divided by 257 like a
    photo: counts up to 25,500 came in at 0-99, the slice nearly black, where as gray it is stretched."""
    slice16 = (np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) * 8).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "gray.png"), slice16)
    cv2.imwrite(str(tmp_path / "rgb.png"), np.dstack([slice16] * 3))
    assert np.array_equal(read_image(tmp_path / "rgb.png"), read_image(tmp_path / "gray.png"))
    assert read_image(tmp_path / "rgb.png").max() == 255
    assert np.array_equal(read_image(tmp_path / "rgb.png", keep_16bit=True), slice16)


def test_a_multipage_tiff_is_warned_about(tmp_path, caplog):
    pages = [np.full((24, 32), 40 * index, np.uint8) for index in range(1, 4)]
    assert cv2.imwritemulti(str(tmp_path / "stack.tif"), pages)
    with caplog.at_level(logging.WARNING, logger="streamfuse"):
        assert np.array_equal(read_image(tmp_path / "stack.tif"), pages[0])
    assert "stack.tif holds 3 pages (a multi-page TIFF); only the first is read" in caplog.text


def test_paths_with_wildcard_characters_that_exist_are_used_as_they_are(tmp_path, capsys):
    """'night [1]/' and 'clip [1].mp4' were taken as glob patterns: 'the pattern matches no image files'."""
    folder = tmp_path / "night [1]"
    for name in ("ir", "vi"):
        (folder / name).mkdir(parents=True)
    for index in range(3):
        ir, vis = make_pair(index)
        cv2.imwrite(str(folder / "ir" / f"a{index}.png"), ir)
        cv2.imwrite(str(folder / "vi" / f"a{index}.png"), vis)
    code, _, err = run_cli(capsys, "fuse", "--ir", str(folder / "ir"), "--vis", str(folder / "vi"), "-o",
                           str(tmp_path / "out"), "--fuser", "classical", "--no-progress")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a0.png", "a1.png", "a2.png"]
    write_video(tmp_path / "clip [1].mp4", [make_pair(i)[1] for i in range(4)], fps=10)
    code, out, err = run_cli(capsys, "probe", str(tmp_path / "clip [1].mp4"), "--json")
    assert code == 0 and '"frames": 4' in out, err
    code, _, err = run_cli(capsys, "fuse", "--ir", str(folder / "ir" / "a[01].png"), "--vis",  # a real pattern
                           str(folder / "vi" / "a[01].png"), "-o", str(tmp_path / "two"), "--fuser", "classical")
    assert code == 0, err  # in a folder whose name has [ (it matched nothing, or another folder's files)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["a0.png", "a1.png"]


def test_names_in_either_unicode_form_pair_up(tmp_path, capsys):
    """macOS writes 'ü' as 'u' and a combining mark (NFD): 'no file name in common (e.g. Straße_müde.png and
    Straße_müde.png)'."""
    import unicodedata

    for name, form in (("ir", "NFC"), ("vis", "NFD")):
        (tmp_path / name).mkdir()
        for index, (ir, vis) in enumerate(make_pair(i) for i in range(2)):
            stem = unicodedata.normalize(form, f"Straße_müde_{index}")
            cv2.imwrite(str(tmp_path / name / f"{stem}.png"), ir if name == "ir" else vis)
    code, _, err = run_cli(capsys, "fuse", "--ir", str(tmp_path / "ir"), "--vis", str(tmp_path / "vis"), "-o",
                           str(tmp_path / "out"), "--fuser", "classical", "--no-progress")
    assert code == 0, err
    assert sorted(unicodedata.normalize("NFC", p.stem) for p in (tmp_path / "out").iterdir()) == \
        ["Straße_müde_0", "Straße_müde_1"]


def test_folders_with_a_pair_of_two_sizes_are_refused_before_any_output(tmp_path, capsys):
    """The run stopped at that pair with the earlier pairs' outputs written, and the rerun with the suggested
    registration.mode=resize then refused them as existing outputs."""
    for name in ("ir", "vis"):
        (tmp_path / name).mkdir()
    for index in range(3):
        ir, vis = make_pair(index, (80, 64))
        cv2.imwrite(str(tmp_path / "ir" / f"{index}.png"), ir)
        cv2.imwrite(str(tmp_path / "vis" / f"{index}.png"), cv2.resize(vis, (60, 48)) if index == 1 else vis)
    command = ["fuse", "--ir", str(tmp_path / "ir"), "--vis", str(tmp_path / "vis"), "-o", str(tmp_path / "out"),
               "--fuser", "classical"]
    assert main(command) == 1 and not (tmp_path / "out").exists()
    assert "1 of the 3 pairs has images of two sizes (e.g. " in capsys.readouterr().err
    assert main([*command, "--set", "registration.mode=resize"]) == 0
    assert len(list((tmp_path / "out").iterdir())) == 3
