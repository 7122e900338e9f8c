"""tools/medical_split.py: the folders of the fixed medical split, as links to the data set."""

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import shared_data
from streamfuse.config import packaged_configs, parse_yaml

TOOL = Path(__file__).resolve().parents[1] / "tools" / "medical_split.py"


def fake_data_set(root: Path, drop: str | None = None) -> Path:
    """Every file the split lists, as tiny images (``drop``: one MRI-CT stem left out)."""
    split = parse_yaml(packaged_configs()["medical_split"].read_text())
    for task, parts in split.items():
        if task == "data":
            continue
        for modality in task.split("_"):
            folder = root / task / modality
            folder.mkdir(parents=True)
            for stem in [s for part in parts.values() for s in part]:
                if not (task == "MRI_CT" and stem == drop):
                    cv2.imwrite(str(folder / f"{stem}.png"), np.full((8, 8), int(stem), np.uint8))
    return root


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=120)


def test_the_split_folders_link_every_listed_file_in_its_part(tmp_path):
    data = fake_data_set(tmp_path / "data")
    done = run("--data", str(data), "-o", str(tmp_path / "split"))
    assert done.returncode == 0, done.stderr
    assert "MRI_SPECT: train 51 pairs" in done.stdout and "test 22 pairs" in done.stdout
    test_mri = tmp_path / "split" / "MRI_SPECT" / "test" / "MRI"
    assert sorted(p.stem for p in test_mri.iterdir())[:3] == ["12", "15", "18"]
    link = test_mri / "12.png"
    assert link.is_symlink() and link.resolve() == (data / "MRI_SPECT" / "MRI" / "12.png").resolve()
    assert not set(p.name for p in (tmp_path / "split" / "MRI_CT" / "train" / "CT").iterdir()) & set(
        p.name for p in (tmp_path / "split" / "MRI_CT" / "test" / "CT").iterdir())
    again = run("--data", str(data), "-o", str(tmp_path / "split"))  # never over what is there
    assert again.returncode == 2 and "already exists; choose a new folder" in again.stderr


@pytest.mark.parametrize(("drop", "message"), [("12", "no image 12.* (listed in the split's MRI_CT test part)")])
def test_a_data_set_missing_a_listed_file_is_one_error(tmp_path, drop, message):
    done = run("--data", str(fake_data_set(tmp_path / "data", drop=drop)), "-o", str(tmp_path / "split"))
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_the_shipped_data_set_splits_as_the_model_card_says(tmp_path):
    data = shared_data("medical_harvard")
    done = run("--data", str(data), "-o", str(tmp_path / "split"))
    assert done.returncode == 0, done.stderr
    for task, test_pairs in (("MRI_CT", 6), ("MRI_PET", 13), ("MRI_SPECT", 22)):
        assert f"{task}: train" in done.stdout and f"test {test_pairs} pairs" in done.stdout
