"""The fusion baselines of tools/baselines.py: what each method must do by construction, and the command."""

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))

from baselines import METHODS, gff, laplacian  # noqa: E402


def _scene(seed: int, shape: tuple[int, int] = (96, 128)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.random(shape, dtype=np.float32), (0, 0), 3)
    return cv2.normalize(image, None, 0, 1, cv2.NORM_MINMAX)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_fusing_an_image_with_itself_gives_it_back(name):
    image = _scene(1)
    np.testing.assert_allclose(METHODS[name](image, image), image, atol=1e-4)


def test_laplacian_pyramid_takes_the_stronger_detail_and_averages_the_top_level():
    dots = np.full((64, 64), 0.5, np.float32)
    dots[10:12, 10:12] = dots[40:42, 30:32] = 0.9  # small: their contrast lives in the fine levels
    flat = np.full((64, 64), 0.3, np.float32)
    fused = laplacian(dots, flat)
    level = fused[50:60, 50:60].mean()
    assert level == pytest.approx(0.4, abs=0.01)  # the coarse level: the mean of 0.5 and 0.3
    assert fused[10:12, 10:12].mean() - level > 0.8 * 0.4  # the dots nearly at full contrast
    assert fused[40:42, 30:32].mean() - level > 0.8 * 0.4


def test_gff_follows_the_image_with_structure_where_the_other_is_flat():
    textured, flat = _scene(2), np.full((96, 128), 0.5, np.float32)
    fused = gff(textured, flat)
    # Most of the textured image's variation survives (a base averaged with the flat image halves it at most).
    assert np.corrcoef(fused.ravel(), textured.ravel())[0, 1] > 0.9
    assert fused.std() > 0.5 * textured.std()


def test_the_command_writes_one_folder_per_method(tmp_path):
    for folder, seed in (("ir", 3), ("vi", 4)):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "pair1.png"), (_scene(seed) * 255).astype(np.uint8))
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(TOOLS / "baselines.py"), "--ir", str(tmp_path / "ir"),
                           "--vis", str(tmp_path / "vi"), "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in out.iterdir()) == sorted(METHODS)
    assert cv2.imread(str(out / "gff" / "pair1.png"), cv2.IMREAD_GRAYSCALE).shape == (96, 128)


def test_the_command_refuses_folders_with_no_pair(tmp_path):
    for folder, name in (("ir", "a.png"), ("vi", "b.png")):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / name), np.zeros((8, 8), np.uint8))
    done = subprocess.run([sys.executable, str(TOOLS / "baselines.py"), "--ir", str(tmp_path / "ir"),
                           "--vis", str(tmp_path / "vi"), "-o", str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 2 and "no image pairs" in done.stderr


def test_the_command_refuses_to_write_a_method_folder_over_an_input(tmp_path):
    """-o one level above an input folder named like a method: the max fusion was written over the inputs."""
    for side, seed in (("max", 1), ("vi", 2)):
        (tmp_path / side).mkdir()
        cv2.imwrite(str(tmp_path / side / "a.png"), (_scene(seed) * 255).astype(np.uint8))
    before = (tmp_path / "max" / "a.png").read_bytes()
    done = subprocess.run([sys.executable, str(TOOLS / "baselines.py"), "--ir", str(tmp_path / "max"),
                           "--vis", str(tmp_path / "vi"), "-o", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2 and f"its folder {tmp_path / 'max'} is the input --ir" in done.stderr
    assert (tmp_path / "max" / "a.png").read_bytes() == before


def test_the_look_sheet_refuses_an_output_in_its_data_and_names_a_missing_pair(tmp_path):
    for side in ("ir", "vi"):
        (tmp_path / "data" / side).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "data" / side / "01.png"), (_scene(3) * 255).astype(np.uint8))
    sheet = [sys.executable, str(TOOLS / "look_sheet.py"), "--data", str(tmp_path / "data")]
    into_input = subprocess.run([*sheet, "--pairs", "01", "-o", str(tmp_path / "data" / "vi" / "01.png")],
                                capture_output=True, text=True)
    assert into_input.returncode == 2 and "would write into the input --data" in into_input.stderr
    missing = subprocess.run([*sheet, "--pairs", "01", "99", "-o", str(tmp_path / "sheet.jpg")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "no image 99.* in" in missing.stderr and "Traceback" not in missing.stderr
