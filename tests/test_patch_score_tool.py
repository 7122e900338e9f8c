"""The coarse-artifact score of tools/patch_score.py and the N_abf arithmetic behind it."""

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from streamfuse.metrics.qabf import artifact_share
from streamfuse.metrics.vifb import qabf_edges

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))

from patch_score import coarse_artifacts  # noqa: E402


def _ramps(size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Two smooth sources that disagree in level: a horizontal and a vertical ramp."""
    ramp = np.linspace(30, 220, size)
    return np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size))


def test_a_source_itself_or_a_smooth_blend_has_no_artifacts():
    ir, vis = _ramps()
    assert coarse_artifacts(ir, vis, vis) == 0.0  # no fused edge is stronger than the source's own
    assert coarse_artifacts(ir, vis, (ir + vis) / 2) < 0.01


def test_a_patch_drawn_inside_smooth_sources_is_an_artifact():
    ir, vis = _ramps()
    yy, xx = np.mgrid[:128, :128]
    patch = (yy - 64) ** 2 + (xx - 40) ** 2 < 30 ** 2  # the base choice flips inside a circle neither image has
    patched = np.where(patch, ir, vis)
    assert coarse_artifacts(ir, vis, patched) > 0.03  # 0.05 here; real patched frames score 0.06-0.12
    assert coarse_artifacts(ir, vis, patched) > 10 * coarse_artifacts(ir, vis, (ir + vis) / 2)


def test_n_abf_counts_only_where_the_fused_edge_beats_both_sources():
    step = np.zeros((16, 16))
    step[:, 8:] = 100.0
    flat = np.zeros((16, 16))
    edges = [*qabf_edges(step), *qabf_edges(flat)]
    assert artifact_share(*edges, *qabf_edges(step)) == 0.0  # the source's own edge, not stronger
    assert artifact_share(*edges, *qabf_edges(2 * step)) > 0.0  # the same edge, stronger than both
    assert np.isnan(artifact_share(*qabf_edges(flat), *qabf_edges(flat), *qabf_edges(step)))  # no source edges


def test_the_command_prints_a_mean_per_folder(tmp_path):
    ir, vis = _ramps()
    yy, xx = np.mgrid[:128, :128]
    for folder, image in (("ir", ir), ("vi", vis), ("blend", (ir + vis) / 2),
                          ("patched", np.where((yy - 64) ** 2 + (xx - 40) ** 2 < 900, ir, vis))):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "a.png"), image.astype(np.uint8))
    done = subprocess.run([sys.executable, str(TOOLS / "patch_score.py"), "--ir", str(tmp_path / "ir"), "--vis",
                           str(tmp_path / "vi"), "--fused", str(tmp_path / "blend"), str(tmp_path / "patched")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    means = [float(line.split("mean ")[1].split()[0]) for line in done.stdout.splitlines()]
    assert len(means) == 2 and means[0] < 0.01 < 0.03 < means[1]


@pytest.mark.parametrize(("args", "message"), [(["--fused", "nowhere"], "nowhere: no such folder"),
                                               (["--fused", "ir", "--scale", "0"], "--scale must be at least 1")])
def test_the_command_errors(tmp_path, args, message):
    for folder in ("ir", "vi"):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "a.png"), np.zeros((8, 8), np.uint8))
    args = [str(tmp_path / a) if a in ("ir", "nowhere") else a for a in args]
    done = subprocess.run([sys.executable, str(TOOLS / "patch_score.py"), "--ir", str(tmp_path / "ir"), "--vis",
                           str(tmp_path / "vi"), *args], capture_output=True, text=True)
    assert done.returncode != 0 and message.replace("nowhere", str(tmp_path / "nowhere")) in done.stderr
