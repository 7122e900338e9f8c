"""`streamfuse calibrate`: points, rendered calibration targets, automatic estimation and its refusals."""

from __future__ import annotations

import json
import re
import sys

import cv2
import numpy as np
import pytest
import yaml

from conftest import REPO, shared_data, static_rig
from media import write_video
from streamfuse.cli import REFUSED, main
from streamfuse.config import calibrated_frame_sizes, config_from_dict
from streamfuse.errors import ConfigError
from streamfuse.imageio import list_images, read_image
from streamfuse.pipeline import Pipeline
from streamfuse.registration.calibrate import CalibrationError, from_points, from_target, load_points, write_calibration
from streamfuse.registration.estimate import displacement_px, estimate_homography

sys.path.insert(0, str(REPO / "tools"))
from registration_study import reshoot  # noqa: E402

#: A plausible rig: the infrared camera (480x384) sees a little less than the visible one (640x480).
RIG = np.array([[1.30, 0.02, 12.0], [-0.015, 1.28, 6.0], [1.5e-5, -1e-5, 1.0]])
IR_SIZE = (480, 384)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def corner_error(found: np.ndarray, truth: np.ndarray, size: tuple[int, int] = IR_SIZE) -> float:
    """Largest distance (px) between where two IR -> VIS homographies send the infrared image's corners."""
    width, height = size
    corners = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], np.float64)
    a = cv2.perspectiveTransform(corners.reshape(-1, 1, 2), found).reshape(-1, 2)
    b = cv2.perspectiveTransform(corners.reshape(-1, 1, 2), truth).reshape(-1, 2)
    return float(np.linalg.norm(a - b, axis=1).max())


# ------------------------------------------------------------------------------------------- points
def write_points(path, ir, vis, extra_lines=()):
    rows = (f"{a:.3f},{b:.3f},{c:.3f},{d:.3f}" for (a, b), (c, d) in zip(ir, vis, strict=True))
    lines = ["ir_x,ir_y,vis_x,vis_y", *rows, *extra_lines]
    path.write_text("\n".join(lines) + "\n")
    return path


def rig_points(count: int, seed: int = 0, noise: float = 0.3):
    rng = np.random.default_rng(seed)
    ir = rng.uniform([10, 10], [IR_SIZE[0] - 10, IR_SIZE[1] - 10], (count, 2))
    vis = cv2.perspectiveTransform(ir.reshape(-1, 1, 2), RIG).reshape(-1, 2) + rng.normal(0, noise, (count, 2))
    return ir, vis


def test_points_csv_gives_the_rig_with_its_error_and_names_the_outlier(tmp_path, capsys):
    ir, vis = rig_points(12)
    vis[5] += (40, -25)  # a mis-clicked point, line 7 of the file (after the header)
    points = write_points(tmp_path / "points.csv", ir, vis)
    output = tmp_path / "rig.yaml"
    code, out, err = run_cli(capsys, "calibrate", "--points", str(points), "-o", str(output))
    assert code == 0, err
    assert "outliers (not used): line(s) 7" in out and "over 11 of 12 points" in out
    stored = yaml.safe_load(output.read_text())
    assert stored["method"] == "points" and stored["accepted"] is True
    assert stored["reprojection_error_px"]["rms"] < 1.0
    assert corner_error(np.array(stored["matrix"]), RIG) < 1.0


def test_six_points_with_a_mis_click_do_not_keep_it():
    """Six points, the third mis-clicked by 30 px: RANSAC, whose inlier test is a fit, kept it and dropped the
    first (a right one), reporting 0.75 px RMS for a matrix 40 px off at a corner."""
    truth = np.array([[1.02, 0.01, -12.4], [0.005, 1.03, -8.1], [1e-5, 2e-5, 1.0]])
    ir = np.array([[389.44, 378.98], [176.48, 21.20], [43.76, 397.26], [29.59, 34.78], [491.70, 341.05],
                   [549.40, 97.29]])
    vis = cv2.perspectiveTransform(ir.reshape(-1, 1, 2), truth).reshape(-1, 2)
    vis[2, 0] += 30
    result = from_points(ir, vis)
    assert result.details["outlier_lines"] == [3] and result.inliers == (5, 6)
    assert corner_error(result.matrix, truth, (640, 512)) < 0.1


def test_the_inlier_threshold_is_in_the_coarser_cameras_pixels():
    """A 640x360 thermal camera beside a 1920x1080 visible one, points clicked with 0.5 px of error in each: a
    threshold of 3 visible pixels is a pixel of the thermal image, and three right points were thrown out (the
    fit from the other five 17 px off at a corner)."""
    truth = np.array([[2.9, 0.01, 20.0], [0.0, 2.9, 10.0], [0.0, 0.0, 1.0]])
    rng = np.random.default_rng(102)
    ir = np.array([[30, 25], [320, 20], [610, 30], [600, 180], [615, 335], [320, 340], [25, 330], [40, 180]], float)
    vis = cv2.perspectiveTransform(ir.reshape(-1, 1, 2), truth).reshape(-1, 2) + rng.normal(0, 0.5, ir.shape)
    result = from_points(ir + rng.normal(0, 0.5, ir.shape), vis)
    assert result.inliers == (8, 8) and "outlier_lines" not in result.details
    assert corner_error(result.matrix, truth, (640, 360)) < 3 * 2.9


def test_five_points_with_a_wrong_one_are_refused_not_fitted_through_it(tmp_path, capsys):
    """RANSAC on five points: any four fit exactly, so it kept the wrong point and dropped a right one (accepted
    at rms 0.0, 32 px off on average). Four agreeing points are no check: refused, saying so."""
    ir, vis = rig_points(5, seed=3, noise=0.0)
    vis[0] += (15, -10)  # line 2, after the header
    points = write_points(tmp_path / "points.csv", ir, vis)
    code, _, err = run_cli(capsys, "calibrate", "--points", str(points), "-o", str(tmp_path / "c.yaml"))
    assert code == 1 and "no 5 of the 5 points agree on one homography" in err
    assert "give 6 or more" in err and not (tmp_path / "c.yaml").exists()
    ir, vis = rig_points(6, seed=3, noise=0.0)
    vis[0] += (15, -10)
    points = write_points(tmp_path / "points.csv", ir, vis)  # six: the wrong one is found and left out
    code, out, err = run_cli(capsys, "calibrate", "--points", str(points), "-o", str(tmp_path / "c.yaml"))
    assert code == 0, err
    assert "outliers (not used): line(s) 2" in out
    assert corner_error(np.array(yaml.safe_load((tmp_path / "c.yaml").read_text())["matrix"]), RIG) < 0.05


def test_four_points_say_that_nothing_was_checked(tmp_path, capsys):
    """An exact fit printed "rms 0.000 px" and nothing else, as if it had been measured."""
    ir, vis = rig_points(4, seed=2)
    points = write_points(tmp_path / "points.csv", ir, vis)
    code, out, err = run_cli(capsys, "calibrate", "--points", str(points), "-o", str(tmp_path / "c.yaml"))
    assert code == 0, err
    assert "not checked: four points fit exactly whatever they are" in out
    code, out, err = run_cli(capsys, "calibrate", "--points", str(points), "-o", str(tmp_path / "c.yaml"), "-y",
                             "--json")
    assert code == 0, err
    assert json.loads(out)["checked"] is False


def test_points_yaml_and_json_output(tmp_path, capsys):
    ir, vis = rig_points(6, seed=1, noise=0.0)
    doc = {"points": [{"ir": [float(a), float(b)], "vis": [float(c), float(d)]}
                      for (a, b), (c, d) in zip(ir, vis, strict=True)]}
    points = tmp_path / "points.yaml"
    points.write_text(yaml.safe_dump(doc))
    code, out, err = run_cli(capsys, "calibrate", "--points", str(points), "-o", str(tmp_path / "c.yaml"), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert np.array(result["matrix"]).shape == (3, 3)
    assert result["accepted"] is True and result["method"] == "points" and result["confidence"] == 1.0
    assert result["reprojection_error_px"]["max"] < 0.01 and result["output"] == str(tmp_path / "c.yaml")
    assert corner_error(np.array(result["matrix"]), RIG) < 0.05


@pytest.mark.parametrize(("rows", "message"), [
    ([(10, 10, 20, 20), (100, 10, 120, 20), (10, 100, 20, 120)], "3 correspondence(s); a homography needs at least 4"),
    ([(10, 10, 20, 20), (50, 50, 70, 70), (90, 90, 120, 120), (130, 130, 170, 170), (170, 170, 220, 220)],
     "the infrared points lie on one line"),
    ([(10, 10, 20, 20), (100, 10, 120, 20), (10, 100, 20, 120), (100, 100, 120, 120), (100, 10, 300, 200)],
     "lines 3 and 6 give the same infrared point"),
    ([(10, 10, 20, 20), (50, 50, 70, 60), (90, 90, 120, 110), (10, 100, 20, 120)],
     "the infrared points of lines 2, 3, 4 lie on one line; four points fit a homography only with no three"),
    # two visible points swapped: a fit through infinity in the middle of the image, written as accepted before
    ([(50, 50, 52, 51), (450, 50, 452, 51), (50, 280, 452, 281), (450, 280, 52, 281)],
     "the fitted homography folds the infrared image (it maps part of it through infinity)"),
    ([(0, 0, 100, 0), (100, 0, 0, 0), (0, 100, 100, 100), (100, 100, 0, 100), (50, 30, 50, 30)],
     "the fitted homography mirrors the image"),
    ([(10, 10, 20, 20), (100, 10, 120, 20), (10, 100, 20, 120), ("nan", 100, 120, 120)],
     "line 5: 'nan' is not a finite number"),
])
def test_degenerate_point_sets_are_refused(tmp_path, capsys, rows, message):
    points = tmp_path / "points.csv"
    points.write_text("ir_x,ir_y,vis_x,vis_y\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))
    output = tmp_path / "c.yaml"
    code, _, err = run_cli(capsys, "calibrate", "--points", str(points), "-o", str(output))
    assert code == 1 and message in err and str(points) in err, err
    assert not output.exists()


def test_points_outside_the_images_given_are_refused(tmp_path, capsys):
    """Points picked at another resolution (here 10x) were fitted and written as accepted."""
    ir, vis = rig_points(8)
    points = write_points(tmp_path / "points.csv", ir * 10, vis * 10)
    ir_image, vis_image = (np.zeros((480, 640), np.uint8) for _ in range(2))
    cv2.imwrite(str(tmp_path / "ir.png"), ir_image)
    cv2.imwrite(str(tmp_path / "vis.png"), vis_image)
    code, _, err = run_cli(capsys, "calibrate", "--points", str(points), "--ir", str(tmp_path / "ir.png"),
                           "--vis", str(tmp_path / "vis.png"), "-o", str(tmp_path / "c.yaml"))
    assert code == 1 and "is outside the 640x480 infrared image" in err and "another size?" in err, err
    assert not (tmp_path / "c.yaml").exists()


def test_a_malformed_points_file_names_the_file_and_line(tmp_path):
    ir, vis = rig_points(5)
    points = write_points(tmp_path / "points.csv", ir, vis, extra_lines=["12.5,8,oops,4"])
    with pytest.raises(CalibrationError, match=r"points.csv, line 7: expected four numbers"):
        load_points(points)
    bad_yaml = tmp_path / "points.yaml"
    bad_yaml.write_text("points:\n  - {ir: [1, 2], vis: [3, 4]}\n  - {ir: [1, 2]}\n")
    with pytest.raises(CalibrationError, match=r"points.yaml, line 3: expected \{ir: \[x, y\], vis: \[x, y\]\}"):
        load_points(bad_yaml)
    with pytest.raises(CalibrationError, match="no such file"):
        load_points(tmp_path / "missing.csv")
    semicolons = tmp_path / "semicolons.csv"  # its first line was taken for a header and dropped without a word
    semicolons.write_text("182.1;106.9;190.2;100.4\n12,8,20,4\n")
    with pytest.raises(CalibrationError, match=r"semicolons.csv, line 1: expected four numbers 'ir_x, ir_y, vis_x, "
                                               r"vis_y' \(separated by commas, not semicolons\)"):
        load_points(semicolons)
    second_header = tmp_path / "second_header.csv"  # only one header line; a second was dropped silently
    second_header.write_text("ir_x,ir_y,vis_x,vis_y\na,b,c,d\n1,2,3,4\n")
    with pytest.raises(CalibrationError, match=r"second_header.csv, line 2: expected four numbers"):
        load_points(second_header)
    for text, hint in (("1,2,3,4 # corner\n", "a # comment goes on a line of its own"),
                       ("389,44;378,98;384,21;379,83\n", "with a point as the decimal mark"),
                       ("389,44,378,98,384,21,379,83\n", "decimal commas?"),
                       ("1,2,3,4,\n", "no comma after the last number"),
                       ("7,1,2,3,4\n", "no id column")):
        odd = tmp_path / "odd.csv"
        odd.write_text(text)
        with pytest.raises(CalibrationError, match=re.escape(hint)):
            load_points(odd)
    miscounted = tmp_path / "miscounted.yaml"  # four numbers, but not two and two: read as ir (10, 20), vis (5, 12)
    miscounted.write_text("points:\n  - {ir: [10, 20, 5], vis: [12]}\n")
    with pytest.raises(CalibrationError, match=r"miscounted.yaml, line 2: expected \{ir: \[x, y\]"):
        load_points(miscounted)
    boolean = tmp_path / "boolean.yaml"  # true was read as 1: 'the infrared points lie on one line'
    boolean.write_text("points:\n  - {ir: [1, 2], vis: [3, 4]}\n  - {ir: [true, 2], vis: [3, 4]}\n")
    with pytest.raises(CalibrationError, match=r"boolean.yaml, line 3: expected \{ir: \[x, y\], vis: \[x, y\]\} with "
                                               "numbers"):
        load_points(boolean)


def test_a_points_csv_saved_by_a_spreadsheet_with_a_byte_order_mark_is_read(tmp_path):
    """A spreadsheet's 'CSV UTF-8' starts with a BOM, which made the first point line unreadable."""
    ir, vis = rig_points(6)
    plain = write_points(tmp_path / "plain.csv", ir, vis)
    lines = [line for line in plain.read_text().splitlines() if line[:1].isdigit()]  # no header
    (tmp_path / "bom.csv").write_bytes("\n".join(lines).encode("utf-8-sig"))
    ir_read, vis_read, _ = load_points(tmp_path / "bom.csv")
    assert np.allclose(ir_read, ir, atol=0.01) and np.allclose(vis_read, vis, atol=0.01)


def test_a_near_singular_fit_is_refused():
    ir = np.array([[0, 0], [100, 0], [0, 100], [100, 100]], np.float64)
    vis = np.array([[0, 0], [100, 0], [0, 1e-4], [100, 1.2e-4]], np.float64)  # everything squashed onto a line
    with pytest.raises(CalibrationError, match="line|singular"):
        from_points(ir, vis)


# ------------------------------------------------------------------------------------------- target
def render_target(kind: str, grid: tuple[int, int], size=(640, 480)) -> np.ndarray:
    """A visible-camera view of a printed target: dark pattern on white, slightly blurred."""
    width, height = size
    image = np.full((height, width), 235, np.uint8)
    columns, rows = grid
    if kind == "checkerboard":
        square = 48
        x0, y0 = (width - (columns + 1) * square) // 2, (height - (rows + 1) * square) // 2
        for row in range(rows + 1):
            for column in range(columns + 1):
                if (row + column) % 2 == 0:
                    top, left = y0 + row * square, x0 + column * square
                    image[top:top + square, left:left + square] = 25
    else:
        spacing = 80
        x0, y0 = (width - (columns - 1) * spacing) // 2, (height - (rows - 1) * spacing) // 2
        for row in range(rows):
            for column in range(columns):
                cv2.circle(image, (x0 + column * spacing, y0 + row * spacing), 20, 25, -1, cv2.LINE_AA)
    return cv2.GaussianBlur(image, (0, 0), 0.8)


def thermal_view(vis: np.ndarray, *, invert: bool, seed: int = 0) -> np.ndarray:
    """The infrared camera's view of the target: warped by the rig, blurred, noisy, maybe inverted polarity."""
    ir = cv2.warpPerspective(vis, np.linalg.inv(RIG), IR_SIZE, borderValue=235).astype(np.float32)
    ir = cv2.GaussianBlur(ir, (0, 0), 1.6)
    if invert:
        ir = 255 - ir  # a heated target: the dark squares are warm, bright in the thermal image
    ir += np.random.default_rng(seed).normal(0, 4, ir.shape)
    return np.clip(ir, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("invert", [False, True])
@pytest.mark.parametrize(("kind", "grid"), [("checkerboard", (11, 8)), ("circles", (7, 5))])
def test_rendered_target_recovers_the_rig_in_either_polarity(kind, grid, invert):
    vis = render_target(kind, grid)
    ir = thermal_view(vis, invert=invert)
    result = from_target([(ir, vis)], kind, grid)
    assert result.method == "target" and result.inliers == (grid[0] * grid[1],) * 2
    assert result.reprojection_error_px["rms"] < 1.0
    assert corner_error(result.matrix, RIG) < 1.0


def test_target_cli_writes_the_calibration_and_an_overlay(tmp_path, capsys):
    vis = render_target("checkerboard", (9, 6))
    cv2.imwrite(str(tmp_path / "vis.png"), vis)
    cv2.imwrite(str(tmp_path / "ir.png"), thermal_view(vis, invert=True))
    output = tmp_path / "rig.yaml"
    code, out, err = run_cli(capsys, "calibrate", "--target", "checkerboard", "--grid", "9x6", "--ir",
                             str(tmp_path / "ir.png"), "--vis", str(tmp_path / "vis.png"), "-o", str(output))
    assert code == 0, err
    assert "reprojection error: rms" in out and f"wrote {output}" in out
    overlay = cv2.imread(str(tmp_path / "rig_overlay.png"))
    assert overlay.shape == (480, 2 * 640 + 4, 3)
    stored = yaml.safe_load(output.read_text())
    assert stored["ir_size"] == list(IR_SIZE) and stored["vis_size"] == [640, 480]
    assert corner_error(np.array(stored["matrix"]), RIG) < 1.0
    # the warped infrared frame's own border (a bright thermal image's edge against black) is not drawn as an edge
    from streamfuse.registration.calibrate import overlay as draw_overlay

    drawn = draw_overlay(thermal_view(vis, invert=False), vis, RIG)
    frame = cv2.warpPerspective(np.full(IR_SIZE[::-1], 255, np.uint8), RIG, (640, 480))
    border = cv2.morphologyEx(frame, cv2.MORPH_GRADIENT, np.ones((5, 5), np.uint8)) > 0
    red = np.all(drawn[:, 644:] == (0, 0, 255), axis=2)
    assert (red & border).sum() < 0.05 * border.sum(), ((red & border).sum(), border.sum())
    # calibrating again without images replaces the calibration: the overlay of the one replaced goes too
    ir_points, vis_points = rig_points(8)
    points = write_points(tmp_path / "points.csv", ir_points, vis_points)
    code, _, err = run_cli(capsys, "calibrate", "--points", str(points), "-o", str(output), "-y")
    assert code == 0 and not (tmp_path / "rig_overlay.png").exists(), err


def test_the_overlay_never_replaces_an_input_or_an_existing_file_without_y(tmp_path, capsys):
    vis = render_target("checkerboard", (9, 6))
    cv2.imwrite(str(tmp_path / "rig_overlay.png"), vis)  # the visible input is named like -o's overlay
    cv2.imwrite(str(tmp_path / "ir.png"), thermal_view(vis, invert=True))
    before = (tmp_path / "rig_overlay.png").read_bytes()
    target = ["calibrate", "--target", "checkerboard", "--grid", "9x6", "--ir", str(tmp_path / "ir.png")]
    command = [*target, "--vis", str(tmp_path / "rig_overlay.png"), "-o", str(tmp_path / "rig.yaml")]
    for extra in ([], ["-y"]):
        code, _, err = run_cli(capsys, *command, *extra)
        assert code == 1 and "would write over the input --vis" in err and err.count("\n") == 1
    assert (tmp_path / "rig_overlay.png").read_bytes() == before and not (tmp_path / "rig.yaml").exists()
    (tmp_path / "vis.png").write_bytes(before)
    (tmp_path / "other_overlay.png").write_bytes(b"keep")
    command = [*target, "--vis", str(tmp_path / "vis.png"), "-o", str(tmp_path / "other.yaml")]
    code, _, err = run_cli(capsys, *command)
    assert code == 1 and "its overlay" in err and "already exists; pass -y" in err
    assert (tmp_path / "other_overlay.png").read_bytes() == b"keep"
    code, _, err = run_cli(capsys, *command, "-y")
    assert code == 0, err
    assert cv2.imread(str(tmp_path / "other_overlay.png")) is not None


def test_a_target_missing_in_one_camera_is_one_clear_error(tmp_path, capsys):
    vis = render_target("checkerboard", (9, 6))
    cv2.imwrite(str(tmp_path / "vis.png"), vis)
    cv2.imwrite(str(tmp_path / "ir.png"), np.full(IR_SIZE[::-1], 90, np.uint8))  # a target at ambient temperature
    code, _, err = run_cli(capsys, "calibrate", "--target", "checkerboard", "--ir", str(tmp_path / "ir.png"),
                           "--vis", str(tmp_path / "vis.png"), "-o", str(tmp_path / "c.yaml"))
    assert code == 1
    assert f"--ir {tmp_path / 'ir.png'}: no 9x6 checkerboard found (both polarities tried)" in err
    assert err.count("\n") == 1 and not (tmp_path / "c.yaml").exists()
    code, _, err = run_cli(capsys, "calibrate", "--target", "checkerboard", "--grid", "7x7", "--ir",
                           str(tmp_path / "vis.png"), "--vis", str(tmp_path / "vis.png"), "-o", str(tmp_path / "c"))
    assert code == 1 and "no 7x7 checkerboard found" in err
    for folder in ("ir", "vis"):  # folders: the image is named (it was '--ir FOLDER (pair 2)')
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "a.png"), vis)
    cv2.imwrite(str(tmp_path / "vis" / "b.png"), vis)
    cv2.imwrite(str(tmp_path / "ir" / "b.png"), np.full(IR_SIZE[::-1], 90, np.uint8))
    code, _, err = run_cli(capsys, "calibrate", "--target", "checkerboard", "--ir", str(tmp_path / "ir"),
                           "--vis", str(tmp_path / "vis"), "-o", str(tmp_path / "c.yaml"))
    assert code == 1 and f"{tmp_path / 'ir' / 'b.png'}: no 9x6 checkerboard found" in err, err


# ---------------------------------------------------------------------------------------- automatic
def registered_pairs(folder, count: int, width: int = 800, first: int = 0):
    """``count`` registered pairs of a non-reported set from the ``first``-th on, scaled to ``width`` (room for
    :func:`reshoot`'s crop)."""
    pairs = []
    for ir_file in list_images(folder / "ir")[first:first + count]:
        vis = read_image(next((folder / "vi").glob(ir_file.stem + ".*")))
        size = (width, round(vis.shape[0] * width / vis.shape[1]))
        pairs.append(tuple(cv2.resize(read_image(f), size, interpolation=cv2.INTER_AREA)
                           for f in (ir_file, next((folder / "vi").glob(ir_file.stem + ".*")))))
    return pairs


#: An easy misalignment: 14 px and 9 px shifts, 2% zoom, 0.7 degree rotation.
EASY = np.array([[1.02, -0.012, 14.0], [0.012, 1.02, -9.0], [0, 0, 1]])


@pytest.mark.parametrize("structure", ["learned", "edges"])
def test_automatic_recovers_an_easy_warp_added_to_a_real_pair(tmp_path, capsys, structure):
    """The estimate moves by exactly the warp added to the rig (a "registered" public pair carries its
    own residual misregistration, so the test compares with the estimate for the pair as it is)."""
    ir, vis = registered_pairs(shared_data("tno_cddfuse"), 1, first=9)[0]
    as_is = estimate_homography([reshoot(ir, vis, np.eye(3))], structure)
    ir_view, vis_view = reshoot(ir, vis, EASY)
    cv2.imwrite(str(tmp_path / "ir.png"), ir_view)
    cv2.imwrite(str(tmp_path / "vis.png"), vis_view)
    code, out, err = run_cli(capsys, "calibrate", "--ir", str(tmp_path / "ir.png"), "--vis", str(tmp_path / "vis.png"),
                             "-o", str(tmp_path / "auto.yaml"), "--json", "--structure", structure)
    assert code == 0, out + err
    result = json.loads(out)
    assert result["accepted"] is True and result["method"] == "automatic" and result["confidence"] >= 0.5
    assert result["structure"] == structure
    assert result["alignment_score"] > result["identity_score"] + 0.1
    assert as_is.accepted
    assert displacement_px(np.array(result["matrix"]), as_is.matrix @ EASY, vis_view.shape[:2]) < 1.5
    assert np.array_equal(np.array(result["matrix"])[2], [0, 0, 1])  # automatic estimates are affine
    assert (tmp_path / "auto.yaml").exists()


def test_automatic_finds_a_camera_mounted_seven_degrees_off_with_every_start_agreeing():
    """The coarse search covers the rotations of the SuperFusion deformations (up to about 7 degrees), not only
    the 3 degrees of the random warps: a rig rotated 7 degrees is found from the coarse candidates, not only
    by the refinements that happen to reach it (with the +-3 degree search, half of them: confidence 0.5)."""
    ir, vis = registered_pairs(shared_data("tno_cddfuse"), 1, first=9)[0]
    as_is = estimate_homography([reshoot(ir, vis, np.eye(3))])
    height, width = reshoot(ir, vis, np.eye(3))[1].shape[:2]
    rotated = np.vstack([cv2.getRotationMatrix2D((width / 2, height / 2), 7.0, 1.0), [0, 0, 1]])
    rotated[:2, 2] += (-11.0, 7.0)
    result = estimate_homography([reshoot(ir, vis, rotated)])
    assert result.accepted and result.confidence >= 0.75
    assert displacement_px(result.matrix, as_is.matrix @ rotated, (height, width)) < 1.5


def test_automatic_counts_the_frames_of_a_still_scene_once(tmp_path, capsys):
    """Frames of a still scene (only sensor noise and H.264 between them) are one piece of evidence: the
    estimate and its confidence are those of one frame pair."""
    shift = np.array([[1.0, 0, 8.0], [0, 1.0, -5.0], [0, 0, 1]])
    as_is = estimate_homography(static_rig(1, np.eye(3)))
    pairs = static_rig(3, shift)
    write_video(tmp_path / "ir.mp4", [ir if ir.ndim == 3 else cv2.cvtColor(ir, cv2.COLOR_GRAY2BGR) for ir, _ in pairs],
                fps=5)
    write_video(tmp_path / "vis.mp4", [vis for _, vis in pairs], fps=5)
    code, out, err = run_cli(capsys, "calibrate", "--ir", str(tmp_path / "ir.mp4"), "--vis", str(tmp_path / "vis.mp4"),
                             "-o", str(tmp_path / "auto.yaml"), "--json")
    result = json.loads(out)
    assert result["pairs"] == 3 and result["distinct_pairs"] == 1 and result["agreeing_pairs"] == 1
    assert result["disagreeing_pairs"] == 0
    assert code == 0 and result["accepted"] and as_is.accepted, result
    first = estimate_homography(pairs[:1])
    assert estimate_homography(pairs).confidence == first.confidence
    # the estimate for the rig as it is, moved by the shift added (through H.264 compression)
    assert displacement_px(np.array(result["matrix"]), as_is.matrix @ shift, pairs[0][1].shape[:2]) < 1.5


def test_several_scenes_through_one_rig_agree_and_their_estimates_are_averaged():
    """Each pair is estimated on its own; pairs a few pixels apart (each estimate's own noise) agree, the
    result is their mean, and agreeing scenes are more convincing than any one of them. (Requiring every
    refinement of every pair within 2 px of one estimate refused 9 of 10 such four-pair estimates on
    RoadScene scenes, all within 2.1 px; the mean of the pairs' confidences refused 4 of 10.)"""
    pairs = [reshoot(ir, vis, EASY) for ir, vis in registered_pairs(shared_data("roadscene"), 4, width=480, first=3)]
    singles = [estimate_homography([pair]) for pair in pairs]
    done = []
    result = estimate_homography(pairs, on_pair=lambda: done.append(1))  # a progress bar's update
    assert result.accepted and result.pairs == 4 and len(done) == 4, result.reason
    shape = pairs[0][1].shape[:2]
    agreeing = [single for single in singles if displacement_px(single.matrix, result.matrix, shape) <= 4.0]
    assert len(agreeing) == 4 and result.agreeing_pairs == 4 and result.distinct_pairs == 4
    confidences = [single.confidence for single in agreeing]
    assert result.confidence == pytest.approx(1 - np.prod([1 - confidence for confidence in confidences]))
    assert result.confidence > max(confidences)
    assert np.allclose(result.matrix, np.mean([single.matrix for single in agreeing], axis=0))
    assert displacement_px(result.matrix, EASY, shape) < 3.0


def test_a_broken_frame_pair_is_no_evidence_against_the_scenes_that_agree():
    """A frame pair whose own estimate would be refused (here the infrared image of another scene, as after
    a sync fault) neither joins nor counts against the agreeing scenes, nor enters the alignment score:
    three agreeing scenes and a broken pair give the three scenes' estimate, confidence and score. (Counted
    as a dissenter, it capped the confidence at 3/4 of theirs: 23 of 30 such four-pair rigs were refused
    on the tuning scenes.)"""
    scenes = registered_pairs(shared_data("roadscene"), 5, width=480, first=3)
    agreeing = [reshoot(ir, vis, EASY) for ir, vis in scenes[:3]]
    broken = reshoot(scenes[4][0], scenes[3][1], EASY)
    assert not estimate_homography([broken]).accepted
    three = estimate_homography(agreeing)
    four = estimate_homography([*agreeing, broken])
    assert four.accepted and four.distinct_pairs == 4 and four.agreeing_pairs == 3, four.reason
    assert four.disagreeing_pairs == 0
    assert four.confidence == pytest.approx(three.confidence)
    assert np.allclose(four.matrix, three.matrix) and four.score == pytest.approx(three.score)
    # nor does it change one good pair's estimate, or drag down the alignment score it is accepted on
    one, with_broken = estimate_homography(agreeing[:1]), estimate_homography([agreeing[0], broken])
    assert one.accepted and with_broken.accepted, with_broken.reason
    assert np.allclose(with_broken.matrix, one.matrix) and with_broken.score == pytest.approx(one.score)


def test_a_credible_scene_that_disagrees_lowers_the_confidence():
    """A pair that would be accepted on its own but disagrees (a scene seen through another rig) counts
    against the others: three agreeing scenes keep 3/4 of their confidence and are refused."""
    scenes = registered_pairs(shared_data("roadscene"), 4, width=480, first=3)
    other_rig = np.array([[1.0, 0, -12.0], [0, 1.0, 10.0], [0, 0, 1]])
    agreeing = [reshoot(ir, vis, EASY) for ir, vis in scenes[:3]]
    dissenting = reshoot(*scenes[3], other_rig)
    assert estimate_homography([dissenting]).accepted
    three = estimate_homography(agreeing)
    four = estimate_homography([*agreeing, dissenting])
    assert four.agreeing_pairs == 3 and four.confidence == pytest.approx(3 / 4 * three.confidence)
    assert four.disagreeing_pairs == 1
    assert not four.accepted and "of 4 distinct frame pairs 3 agree, 1 disagree" in four.reason


def test_folders_named_differently_pair_by_order(tmp_path, capsys):
    """TNO-style folders (1800i.bmp / 1800v.bmp): the by-name error points to --pair-by order, which calibrate takes."""
    for index, (ir, vis) in enumerate(reshoot(*pair, EASY) for pair in registered_pairs(shared_data("roadscene"), 2,
                                                                                        width=480, first=3)):
        for folder, name, image in (("ir", f"{index}i.png", ir), ("vis", f"{index}v.png", vis)):
            (tmp_path / folder).mkdir(exist_ok=True)
            cv2.imwrite(str(tmp_path / folder / name), image)
    args = ["calibrate", "--ir", str(tmp_path / "ir"), "--vis", str(tmp_path / "vis"), "-o", str(tmp_path / "c.yaml")]
    code, _, err = run_cli(capsys, *args)
    assert code == 1 and "pass --pair-by order" in err
    code, out, err = run_cli(capsys, *args, "--pair-by", "order", "--json")
    result = json.loads(out)
    assert code == 0 and result["pairs"] == 2 and result["distinct_pairs"] == 2, out + err
    (tmp_path / "ir" / "2i.png").write_bytes(b"not a png")  # one damaged pair: skipped, as fuse does (it stopped)
    (tmp_path / "vis" / "2v.png").write_bytes((tmp_path / "vis" / "0v.png").read_bytes())
    code, out, err = run_cli(capsys, *args, "--pair-by", "order", "--json", "-y")
    assert code == 0 and json.loads(out)["pairs"] == 2, out + err


def test_a_repeated_pair_is_estimated_once_and_counted_on_the_progress_bar():
    pair = reshoot(*registered_pairs(shared_data("roadscene"), 1, width=480, first=3)[0], EASY)
    single = estimate_homography([pair])
    done = []
    repeated = estimate_homography([pair, pair, pair], on_pair=lambda: done.append(1))
    assert len(done) == 3 and repeated.pairs == 3 and repeated.distinct_pairs == 1
    assert np.array_equal(repeated.matrix, single.matrix) and repeated.confidence == single.confidence


def test_automatic_refuses_unrelated_images_and_leaves_the_calibration_alone(tmp_path, capsys):
    folder = shared_data("llvip_samples")
    ir_files = list_images(folder / "ir")
    other = shared_data("tno_cddfuse")
    cv2.imwrite(str(tmp_path / "ir.png"), read_image(ir_files[0]))
    cv2.imwrite(str(tmp_path / "vis.png"), cv2.resize(read_image(list_images(other / "vi")[0]), (1280, 1024)))
    output = tmp_path / "rig.yaml"
    output.write_text("matrix: [[1, 0, 3], [0, 1, 2], [0, 0, 1]]\n")
    before = output.read_text()
    code, out, err = run_cli(capsys, "calibrate", "--ir", str(tmp_path / "ir.png"), "--vis", str(tmp_path / "vis.png"),
                             "-o", str(output), "-y")
    assert code == REFUSED, out + err
    assert "REFUSED:" in out and f"{output} left unchanged" in out and "(or try --structure edges)" in out
    assert "(learned structure images)" in out
    assert output.read_text() == before and not (tmp_path / "rig_overlay.png").exists()


def test_automatic_refuses_featureless_images():
    flat = np.full((240, 320), 128, np.uint8)
    result = estimate_homography([(flat, flat)])
    assert not result.accepted and "featureless" in result.reason
    noise = np.random.default_rng(0)
    ir = np.clip(128 + noise.normal(0, 6, (240, 320)), 0, 255).astype(np.uint8)
    vis = np.clip(128 + noise.normal(0, 6, (240, 320)), 0, 255).astype(np.uint8)
    result = estimate_homography([(ir, vis)])
    assert not result.accepted and result.reason


def test_calibrate_arguments_are_checked(tmp_path, capsys):
    code, _, err = run_cli(capsys, "calibrate", "--ir", str(tmp_path / "x.png"))
    assert code == 2 and "--ir and --vis go together" in err  # argument errors exit 2, as argparse's do
    code, _, err = run_cli(capsys, "calibrate")
    assert code == 2 and "give --points FILE, or --ir and --vis" in err
    code, _, err = run_cli(capsys, "calibrate", "--ir", str(tmp_path), "--vis", str(tmp_path), "--max-pairs", "0")
    assert code == 2 and err == "streamfuse: error: --max-pairs: must be at least 1, got 0\n"
    code, _, err = run_cli(capsys, "calibrate", "--target", "checkerboard", "--grid", "9by6", "--ir", str(tmp_path),
                           "--vis", str(tmp_path))
    assert code == 2 and err == "streamfuse: error: --grid '9by6': expected COLUMNSxROWS, e.g. 9x6\n"
    code, _, err = run_cli(capsys, "calibrate", "--grid", "7x5", "--ir", str(tmp_path), "--vis", str(tmp_path))
    assert code == 2 and "--grid applies only to --target" in err  # was ignored: an automatic estimate instead
    code, _, err = run_cli(capsys, "calibrate", "--points", "p.csv", "--structure", "edges")
    assert code == 2 and "--structure applies only to automatic estimation" in err
    code, _, err = run_cli(capsys, "calibrate", "--points", "p.csv", "--max-pairs", "3")
    assert code == 2 and "--max-pairs applies only to --ir and --vis" in err
    existing = tmp_path / "c.yaml"
    existing.write_text("matrix: [[1, 0, 0], [0, 1, 0], [0, 0, 1]]\n")
    code, _, err = run_cli(capsys, "calibrate", "--points", "p.csv", "-o", str(existing))
    assert code == 1 and "already exists; pass -y" in err
    code, _, err = run_cli(capsys, "calibrate", "--points", str(existing), "-o", str(existing), "-y")
    assert code == 1 and f"would write over the input --points {existing}" in err
    assert existing.read_text() == "matrix: [[1, 0, 0], [0, 1, 0], [0, 0, 1]]\n"
    code, _, err = run_cli(capsys, "calibrate", "--points", "p.csv", "-o", str(tmp_path), "-y")
    assert code == 1 and "is a folder; give a file path" in err


# -------------------------------------------------------------------------------- using the result
def test_run_and_fuse_read_the_calibration_file(tmp_path, capsys):
    ir_points, vis_points = rig_points(8, noise=0.0)
    points = write_points(tmp_path / "points.csv", ir_points, vis_points)
    calibration = tmp_path / "rig.yaml"
    assert run_cli(capsys, "calibrate", "--points", str(points), "-o", str(calibration))[0] == 0
    config = config_from_dict({"registration": {"calibration": str(calibration)}})
    assert config.registration.mode == "homography"
    assert corner_error(np.array(config.registration.matrix), RIG) < 0.01
    assert np.allclose(Pipeline(config).registrar.matrix, config.registration.matrix)

    vis = render_target("checkerboard", (9, 6))
    cv2.imwrite(str(tmp_path / "vis.png"), vis)
    cv2.imwrite(str(tmp_path / "ir.png"), thermal_view(vis, invert=False))  # 480x384: needs the calibration
    fused = tmp_path / "fused.png"
    code, _, err = run_cli(capsys, "fuse", "--ir", str(tmp_path / "ir.png"), "--vis", str(tmp_path / "vis.png"),
                           "-o", str(fused), "--fuser", "classical", "--calibration", str(calibration))
    assert code == 0, err
    assert cv2.imread(str(fused)).shape == (480, 640, 3)
    with pytest.raises(ConfigError, match=r"registration.calibration: .*missing.yaml: no such file"):
        config_from_dict({"registration": {"calibration": str(tmp_path / "missing.yaml")}})
    with pytest.raises(ConfigError, match="either matrix or calibration"):
        config_from_dict({"registration": {"calibration": str(calibration), "matrix": np.eye(3).tolist()}})
    refused = tmp_path / "refused.yaml"
    refused.write_text("matrix: [[1, 0, 0], [0, 1, 0], [0, 0, 1]]\naccepted: false\n")
    with pytest.raises(ConfigError, match="was refused"):
        config_from_dict({"registration": {"calibration": str(refused)}})
    refused.write_text("matrix: [[1, 0, 0], [0, 1, 0], [0, 0, 1]]\naccepted: 'false'\n")  # was taken as accepted
    with pytest.raises(ConfigError, match=r"refused\.yaml: accepted: expected true or false, got 'false' \(str\)"):
        config_from_dict({"registration": {"calibration": str(refused)}})
    with pytest.raises(ConfigError, match=r"registration\.calibration: only used with mode 'homography' \(mode is "
                                          r"'identity'\)"):
        config_from_dict({"registration": {"calibration": str(calibration), "mode": "identity"}})
    # frame sizes that cannot be read turned the resolution check off without a word
    for sizes, message in (("ir_size: [480, 384]\nvis_size: abc\n", r"vis_size: expected \[width, height\] in "
                                                                      r"pixels, got 'abc' \(str\)"),
                           ("ir_size: [10]\nvis_size: [640, 480]\n", r"ir_size: expected \[width, height\]"),
                           ("ir_size: [480, 384]\n", "ir_size without vis_size; a calibration states both")):
        refused.write_text("matrix: [[1, 0, 0], [0, 1, 0], [0, 0, 1]]\n" + sizes)
        with pytest.raises(ConfigError, match=message):
            calibrated_frame_sizes(refused, "registration.calibration")


def test_a_calibration_made_at_another_resolution_is_refused_by_name(tmp_path, capsys):
    vis = render_target("checkerboard", (9, 6))
    ir = thermal_view(vis, invert=False)
    cv2.imwrite(str(tmp_path / "vis.png"), vis)
    cv2.imwrite(str(tmp_path / "ir.png"), ir)
    ir_points, vis_points = rig_points(8, noise=0.0)
    calibration = tmp_path / "rig.yaml"
    write_calibration(calibration, from_points(ir_points, vis_points), ir_size=(ir.shape[1], ir.shape[0]),
                      vis_size=(vis.shape[1] // 2, vis.shape[0] // 2))  # the visible camera at half resolution then
    fused = tmp_path / "fused.png"
    code, _, err = run_cli(capsys, "fuse", "--ir", str(tmp_path / "ir.png"), "--vis", str(tmp_path / "vis.png"),
                           "-o", str(fused), "--fuser", "classical", "--calibration", str(calibration))
    assert code == 1 and not fused.exists()
    assert ("calibrated on 480x384 infrared and 320x240 visible frames, but these are 480x384 and 640x480" in err
            and "calibrate this camera pair at this resolution" in err), err
    write_calibration(calibration, from_points(ir_points, vis_points), ir_size=(480, 384), vis_size=(640, 480))
    code, _, err = run_cli(capsys, "fuse", "--ir", str(tmp_path / "ir.png"), "--vis", str(tmp_path / "vis.png"),
                           "-o", str(fused), "--fuser", "classical", "--calibration", str(calibration))
    assert code == 0, err
    for wrong, what in ((tmp_path, "a folder; name the calibration file in it"), (tmp_path / "nosuch.yaml",
                                                                                    "no such file")):
        code, _, err = run_cli(capsys, "fuse", "--ir", str(tmp_path / "ir.png"), "--vis", str(tmp_path / "vis.png"),
                               "-o", str(tmp_path / "other.png"), "--calibration", str(wrong))
        assert code == 1 and f"--calibration {wrong}: {what}" in err, err  # named by the flag given, not a config key
    one_size = tmp_path / "one_size.yaml"
    one_size.write_text("matrix: [[1, 0, 0], [0, 1, 0], [0, 0, 1]]\nir_size: [480, 384]\n")
    code, _, err = run_cli(capsys, "fuse", "--ir", str(tmp_path / "ir.png"), "--vis", str(tmp_path / "vis.png"),
                           "-o", str(tmp_path / "other.png"), "--calibration", str(one_size))
    assert code == 2 and err.count("one_size.yaml") == 1, err  # the file was named twice


def test_automatic_handles_an_infrared_camera_of_lower_resolution():
    """A 320x240 thermal camera beside a 640x480 visible one: the estimate includes the scaling."""
    shift = np.array([[1.0, 0, 8.0], [0, 1.0, -5.0], [0, 0, 1]])
    as_is = estimate_homography(static_rig(1, np.eye(3)))
    ir, vis = static_rig(1, shift)[0]
    small = cv2.resize(ir, (320, 240), interpolation=cv2.INTER_AREA)
    upscale = np.array([[2.0, 0, 0.5], [0, 2.0, 0.5], [0, 0, 1]])  # small-image pixel -> 640x480 pixel
    result = estimate_homography([(small, vis)])
    assert result.accepted and as_is.accepted, result.reason
    assert displacement_px(result.matrix, as_is.matrix @ shift @ upscale, small.shape[:2]) < 2.0


def test_two_videos_give_frame_pairs_from_the_same_moments(tmp_path):
    """Frames spread over the shorter video, each pair from one moment; long recordings are sampled by seeking
    (not decoded whole). Each video used to be sampled by its own frame count: pairs from different moments."""
    from streamfuse.cli import calibration_pairs

    def numbered(count: int) -> list[np.ndarray]:
        frames = []
        for index in range(count):
            image = np.full((128, 160, 3), 128, np.uint8)
            image[:, :80] = 20 + (index % 20) * 10  # the frame's number in two flat blocks
            image[:, 80:] = 20 + (index // 20) * 10
            frames.append(image)
        return frames

    def number(image: np.ndarray) -> int:
        low, high = (round((float(np.median(image[32:96, columns])) - 20) / 10)
                     for columns in (np.s_[16:64], np.s_[96:144]))
        return high * 20 + low

    write_video(tmp_path / "ir.mp4", numbered(300), fps=25, gop=25)
    write_video(tmp_path / "vis.mp4", numbered(360), fps=25, gop=25)  # 2.4 s longer
    pairs = calibration_pairs(str(tmp_path / "ir.mp4"), str(tmp_path / "vis.mp4"), max_pairs=5)
    assert [(number(ir), number(vis)) for ir, vis in pairs] == [(30, 30), (90, 90), (150, 150), (210, 210), (270, 270)]
    # Matroska headers give no frame count: it comes from the duration, and the videos are sampled the same way
    write_video(tmp_path / "ir.mkv", numbered(300), fps=25, gop=25)
    write_video(tmp_path / "vis.mkv", numbered(360), fps=25, gop=25)
    pairs = calibration_pairs(str(tmp_path / "ir.mkv"), str(tmp_path / "vis.mkv"), max_pairs=5)
    assert [(number(ir), number(vis)) for ir, vis in pairs] == [(30, 30), (90, 90), (150, 150), (210, 210), (270, 270)]
    # ... also recordings whose timestamps start late (Matroska then states 60 s + the length: "no frame at 39.4 s")
    write_video(tmp_path / "ir.mkv", numbered(300), fps=25, gop=25, start_s=60)
    write_video(tmp_path / "vis.mkv", numbered(360), fps=25, gop=25, start_s=60)
    pairs = calibration_pairs(str(tmp_path / "ir.mkv"), str(tmp_path / "vis.mkv"), max_pairs=5)
    assert [(number(ir), number(vis)) for ir, vis in pairs] == [(30, 30), (90, 90), (150, 150), (210, 210), (270, 270)]
    # short videos are decoded in order, at the same moments as long ones are sought
    write_video(tmp_path / "ir.mp4", numbered(60), fps=25)
    write_video(tmp_path / "vis.mp4", numbered(80), fps=25)
    pairs = calibration_pairs(str(tmp_path / "ir.mp4"), str(tmp_path / "vis.mp4"), max_pairs=4)
    assert [(number(ir), number(vis)) for ir, vis in pairs] == [(7, 7), (22, 22), (37, 37), (52, 52)]
    # ... by time, not frame number: a 10 fps thermal camera beside a 30 fps visible one (each video was stepped
    # through by the same number of frames: thermal 1.5 s paired with visible 0.5 s)
    write_video(tmp_path / "ir.mp4", numbered(30), fps=10)
    write_video(tmp_path / "vis.mp4", numbered(90), fps=30)
    pairs = calibration_pairs(str(tmp_path / "ir.mp4"), str(tmp_path / "vis.mp4"), max_pairs=3)
    assert [(number(ir), number(vis)) for ir, vis in pairs] == [(5, 15), (15, 45), (25, 75)]


def test_an_infrared_image_in_colour_beside_a_gray_visible_one_is_warned_about(tmp_path, capsys, caplog):
    """--ir and --vis swapped: accepted at confidence 1.0 with a matrix that maps the wrong way (17 px on MURF's
    landmarks against 9 px for doing nothing); the colour of the images tells."""
    vis = render_target("checkerboard", (9, 6))
    cv2.imwrite(str(tmp_path / "colour.png"), cv2.applyColorMap(vis, cv2.COLORMAP_JET))
    cv2.imwrite(str(tmp_path / "gray.png"), thermal_view(vis, invert=False))
    run_cli(capsys, "calibrate", "--ir", str(tmp_path / "colour.png"), "--vis", str(tmp_path / "gray.png"),
            "-o", str(tmp_path / "c.yaml"), "--json")
    assert "colour.png is in colour and --vis" in caplog.text and "are they the other way round?" in caplog.text
    caplog.clear()
    run_cli(capsys, "calibrate", "--ir", str(tmp_path / "gray.png"), "--vis", str(tmp_path / "colour.png"),
            "-o", str(tmp_path / "d.yaml"), "--json")
    assert "other way round" not in caplog.text


def test_a_target_held_still_over_several_frames_counts_as_one_position(tmp_path):
    """Three frames of a target held still (independent sensor noise): their grid points were given three times
    and refused as 'lines 53 and 107 give the same infrared point'. They are averaged into one view; a moved
    target adds a view."""
    vis = render_target("checkerboard", (9, 6))
    still = [(thermal_view(vis, invert=True, seed=seed), vis) for seed in range(3)]
    result = from_target(still, "checkerboard", (9, 6))
    assert result.details["pairs"] == 3 and result.details["positions"] == 1 and result.inliers == (54, 54)
    assert corner_error(result.matrix, RIG) < 1.0
    moved_vis = np.roll(vis, (30, -40), axis=(0, 1))
    result = from_target([*still, (thermal_view(moved_vis, invert=True), moved_vis)], "checkerboard", (9, 6))
    assert result.details["positions"] == 2 and result.inliers == (108, 108)
