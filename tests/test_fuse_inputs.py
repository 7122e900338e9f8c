"""`streamfuse fuse` on real files: outputs never overwrite inputs, losses are reported, folders pair by stem."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import make_pair
from media import read_video, write_png_mov, write_video
from streamfuse.cli import main
from streamfuse.config import config_from_dict
from streamfuse.errors import ConfigError
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
    assert f"would write over the input {flag} {inputs[output].resolve()}" in err
    assert "-y" not in err and "overwrite" not in err.replace("overwritten", "")
    after = {key: digest(path) if path.is_dir() else path.read_bytes() for key, path in inputs.items()}
    assert after == before


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
    write_video(tmp_path / "vis.mp4", [make_pair(i)[1] for i in range(16)], fps=10)
    code, log = fuse_videos(capsys, caplog, tmp_path / "ir.mp4", tmp_path / "vis.mp4", tmp_path / "out.mp4")
    assert code == 0
    assert len(read_video(tmp_path / "out.mp4")[0]) == 10
    assert "16 read, 10 paired, 6 unpaired, 0 dropped" in log
    assert "not every input frame was fused (vis: 6 unpaired, 0 dropped of 16 read)" in log


def test_a_decode_error_mid_file_is_a_warning_and_counted(tmp_path, capsys, caplog):
    write_video(tmp_path / "ir.mp4", [np.zeros((48, 64, 3), np.uint8)] * 40, fps=25)
    broken = write_png_mov(tmp_path / "vis.mov", 40, broken=(20,))
    code, log = fuse_videos(capsys, caplog, tmp_path / "ir.mp4", broken, tmp_path / "out.mp4")
    assert code == 0
    assert len(read_video(tmp_path / "out.mp4")[0]) == 39
    assert "vis.mov: frame 20 cannot be decoded" in log
    assert "39 read, 39 paired, 0 unpaired, 1 dropped" in log  # the visible input
    assert "40 read, 39 paired, 1 unpaired, 0 dropped" in log  # the thermal frame without its partner
