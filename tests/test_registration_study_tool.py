"""tools/registration_study.py: the truth of the SuperFusion deformations, and the estimator's last step from it."""

import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import shared_data

TOOL = Path(__file__).resolve().parents[1] / "tools" / "registration_study.py"
sys.path.insert(0, str(TOOL.parent))

from registration_study import best_fit, truth_of  # noqa: E402


def test_best_fit_recovers_a_homography_given_as_the_truth():
    homography = np.array([[1.02, -0.05, 7.5], [0.04, 0.99, -3.0], [1e-5, -2e-5, 1.0]])
    found = best_fit(truth_of(homography, 160, 120))
    assert np.allclose(found / found[2, 2], homography, atol=1e-6)


def test_oracle_reports_each_deformation_and_refuses_warps():
    root = shared_data("superfusion_reg_roadscene")
    done = subprocess.run([sys.executable, str(TOOL), str(root), "--half", "first", "--oracle"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if "(rotation" in line]
    assert len(lines) == 10
    assert all(1.0 < float(line.split("best homography")[1].split("px")[0]) < 2.0 for line in lines)
    assert "the final refinement from the best homography is within 3 px of the truth on" in done.stdout
    refused = subprocess.run([sys.executable, str(TOOL), str(root), "--oracle", "--warp", "1"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--oracle measures the SuperFusion deformations" in refused.stderr
