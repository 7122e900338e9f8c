"""tools/contact_sheet.py: a sheet from folders, and one error (never a traceback, never an input overwritten)."""

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import make_pair

TOOL = Path(__file__).resolve().parents[1] / "tools" / "contact_sheet.py"


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    for part in ("ir", "vi", "fused"):
        (tmp_path / part).mkdir()
    for index in range(2):
        ir, vis = make_pair(index)
        cv2.imwrite(str(tmp_path / "ir" / f"{index:02d}.png"), ir)
        cv2.imwrite(str(tmp_path / "vi" / f"{index:02d}.png"), vis)
        cv2.imwrite(str(tmp_path / "fused" / f"{index:02d}.png"), vis)
    return tmp_path


def sheet(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *argv], capture_output=True, text=True, timeout=60)


def test_a_sheet_of_two_rows(folders):
    done = sheet("--ir", str(folders / "ir"), "--vis", str(folders / "vi"), "--fused", str(folders / "fused"),
                 "-o", str(folders / "sheet.png"), "--width", "300")
    assert done.returncode == 0, done.stderr
    image = cv2.imread(str(folders / "sheet.png"))
    assert image.shape[1] == 300 and image.shape[0] > 0


@pytest.mark.parametrize("change, message", [
    ({"--fused": "missing"}, "--fused {root}/missing: no such file or folder"),
    ({"--ir": "ir/00.png"}, "--ir {root}/ir/00.png: a folder of images is expected (videos need --video)"),
    ({"-o": "ir/00.png"}, "-o {root}/ir/00.png: would write over the input --ir {root}/ir; choose an output "
                          "outside the inputs (inputs are never overwritten)"),
])
def test_a_bad_path_is_one_error_and_changes_nothing(folders, change, message):
    before = (folders / "ir" / "00.png").read_bytes()
    argv = {"--ir": "ir", "--vis": "vi", "--fused": "fused", "-o": "sheet.png", **change}
    done = sheet(*[part for flag, path in argv.items() for part in (flag, str(folders / path))])
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == "contact_sheet.py: error: " + message.format(root=folders)
    assert (folders / "ir" / "00.png").read_bytes() == before and not (folders / "sheet.png").exists()
    assert np.any(cv2.imread(str(folders / "ir" / "00.png")))
