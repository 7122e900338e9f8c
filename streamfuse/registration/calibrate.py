"""Calibrating a camera pair: a homography (infrared pixel -> visible pixel) from points, a target, or images.

* :func:`from_points` fits corresponding points (:func:`load_points` reads them from CSV or YAML)
  with RANSAC and reports the reprojection error; degenerate sets are refused.
* :func:`from_target` detects a checkerboard or circle grid in both images (a heated or cooled
  target shows in either polarity in the thermal image, so both are tried) and fits the grid.
* :func:`streamfuse.registration.estimate.estimate_homography` estimates from image content.

:class:`Calibration` is the common result; :func:`write_calibration` stores it in the file that the
``registration.calibration`` config key names (read by :func:`streamfuse.config.read_calibration`).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import itertools
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import yaml

from streamfuse.colour import as_gray
from streamfuse.config import check_homography, yaml_problem
from streamfuse.errors import StreamfuseError, UsageError

#: Inlier threshold for point correspondences: px of the coarser camera (a point clicked a pixel off in a
#: 640-px thermal image is three pixels off in a 1920-px visible one).
RANSAC_PX = 3.0
#: Up to this many points, every subset of 5 or more is tried (:func:`_agreeing_points`); beyond, RANSAC.
#: RANSAC's inlier test is a fit, and with few points a fit absorbs a wrong one: of six points with one
#: mis-click, RANSAC kept the wrong one and dropped a right one at a reported error of about a pixel.
SEARCHED_POINTS = 10
#: A point agrees with the others when the homography of the others alone puts it within this many times the
#: inlier threshold (fitted to a few points, such a prediction carries their clicking error further).
PREDICTION_FACTOR = 3.0
#: Points closer than this (px) count as duplicates.
DUPLICATE_PX = 0.5
#: Two frames whose target grids lie within this (px, every point, in both images) show one position of the
#: target (held still): their points are averaged, not given twice.
SAME_VIEW_PX = 3.0
#: Point sets whose spread across their main direction is below this fraction of the spread along it
#: are collinear (a homography needs points that span both directions).
COLLINEAR_RATIO = 0.01
#: A fitted matrix with a larger condition number is refused as near-singular.
MAX_CONDITION = 1e7
#: Target kinds and the OpenCV detector flags for them.
TARGETS = ("checkerboard", "circles", "acircles")


class CalibrationError(StreamfuseError):
    """The calibration input cannot give a homography (bad file, degenerate points, target not found)."""


@dataclasses.dataclass(frozen=True)
class Calibration:
    """A homography with how it was obtained and how good it is.

    Attributes:
        matrix: 3x3 homography, infrared pixel -> visible pixel, normalised to ``H[2, 2] == 1``.
        method: ``points``, ``target`` or ``automatic``.
        accepted: False when the estimate must not be used (automatic estimation refused it).
        confidence: 1.0 for points and targets (measured geometry); for ``automatic`` see
            :mod:`streamfuse.registration.estimate`.
        reprojection_error_px: ``{"rms": ..., "max": ...}`` over the inlier points (points, target).
        inliers: Points (or grid corners) used, and how many were given.
        reason: Why it was refused (empty when accepted).
        details: Further method-specific numbers (scores, pair count).
    """

    matrix: np.ndarray
    method: str
    accepted: bool = True
    confidence: float = 1.0
    reprojection_error_px: dict[str, float] | None = None
    inliers: tuple[int, int] | None = None
    reason: str = ""
    details: dict = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict:
        """JSON/YAML-ready form (the ``--json`` output and the calibration file's content)."""
        result = {"matrix": [[float(v) for v in row] for row in self.matrix], "accepted": self.accepted,
                  "confidence": round(float(self.confidence), 4), "method": self.method}
        if self.reprojection_error_px is not None:
            result["reprojection_error_px"] = {k: round(float(v), 4) for k, v in self.reprojection_error_px.items()}
        if self.inliers is not None:
            result["inliers"] = {"used": self.inliers[0], "given": self.inliers[1]}
        if self.reason:
            result["reason"] = self.reason
        result.update(self.details)
        return result


# ------------------------------------------------------------------------------------------- points
def load_points(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Read point correspondences: infrared ``(N, 2)``, visible ``(N, 2)`` and each point's line number.

    CSV: one correspondence per line, ``ir_x, ir_y, vis_x, vis_y`` (a header line of names and
    ``#`` comments are skipped). YAML: ``points:`` a list of ``{ir: [x, y], vis: [x, y]}``.

    Raises:
        CalibrationError: The file is missing or a line is malformed (named by file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"--points {path}: no such file")
    text = path.read_text(encoding="utf-8-sig", errors="replace")  # -sig: a spreadsheet's UTF-8 CSV starts with a BOM
    rows = _yaml_points(path, text) if path.suffix.lower() in (".yaml", ".yml") else _csv_points(path, text)
    if not rows:
        raise CalibrationError(f"{path}: no point correspondences found (expected lines 'ir_x, ir_y, vis_x, vis_y')")
    values = np.array([row for row, _ in rows], dtype=np.float64)
    return values[:, :2], values[:, 2:], [line for _, line in rows]


def _csv_points(path: Path, text: str) -> list[tuple[list[float], int]]:
    rows, header = [], False
    for number, fields in enumerate(csv.reader(text.splitlines()), start=1):
        fields = [f.strip() for f in fields]
        if not any(fields) or fields[0].startswith("#"):
            continue
        try:
            values = [float(f) for f in fields]
        except ValueError:
            if not rows and not header and len(fields) == 4 and not any(_is_number(f) for f in fields):
                header = True  # one header line of four names, before the first point
                continue
            hint = _csv_hint(fields)
            raise CalibrationError(f"{path}, line {number}: expected four numbers 'ir_x, ir_y, vis_x, vis_y'{hint}, "
                                   f"got {','.join(fields)!r}") from None
        if len(values) != 4:
            hint = {5: " (no id column: the first number is ir_x)",
                    8: " (decimal commas? separate by commas, with a point as the decimal mark)"}.get(len(values), "")
            raise CalibrationError(f"{path}, line {number}: expected four numbers 'ir_x, ir_y, vis_x, vis_y'{hint}, "
                                   f"got {len(values)} value(s)")
        if not np.all(np.isfinite(values)):
            bad = next(field for field, value in zip(fields, values, strict=True) if not np.isfinite(value))
            raise CalibrationError(f"{path}, line {number}: {bad!r} is not a finite number; a point is two "
                                   "pixel coordinates")
        rows.append((values, number))
    return rows


def _csv_hint(fields: list[str]) -> str:
    """What a CSV line that is not four numbers probably got wrong ("" when nothing is clear)."""
    if any("#" in field for field in fields):
        return " (a # comment goes on a line of its own)"
    if len(fields) > 1 and any(";" in field for field in fields):  # 389,44;378,98;...: decimal commas
        return " (separated by commas with a point as the decimal mark, e.g. 102.5,88,131,96.5)"
    other = next((name for mark, name in ((";", "semicolons"), ("\t", "tabs"), (" ", "spaces"))
                  if len(fields) == 1 and mark in fields[0]), None)
    if other:
        return f" (separated by commas, not {other})"
    if len(fields) == 5 and fields[-1] == "":
        return " (no comma after the last number)"
    return ""


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _yaml_points(path: Path, text: str) -> list[tuple[list[float], int]]:
    try:
        document = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise CalibrationError(f"{path}: not valid YAML ({yaml_problem(exc)})") from None
    points = None
    if isinstance(document, yaml.MappingNode):
        points = next((value for key, value in document.value if key.value == "points"), None)
    if not isinstance(points, yaml.SequenceNode):
        raise CalibrationError(f"{path}: expected a 'points:' list of {{ir: [x, y], vis: [x, y]}}")
    rows = []
    for node in points.value:
        line = node.start_mark.line + 1
        item = yaml.safe_load(yaml.serialize(node))
        try:
            coordinates = (*item["ir"], *item["vis"])
            if any(isinstance(v, bool) for v in coordinates) or len(item["ir"]) != 2 or len(item["vis"]) != 2:
                raise TypeError  # float(True) is 1.0; [10, 20, 5] and [12] are four numbers, not two points
            values = [float(v) for v in coordinates]
        except (TypeError, KeyError, ValueError):
            raise CalibrationError(f"{path}, line {line}: expected {{ir: [x, y], vis: [x, y]}} with numbers, got "
                                   f"{item!r}") from None
        if len(values) != 4 or not np.all(np.isfinite(values)):
            raise CalibrationError(f"{path}, line {line}: ir and vis must each be two finite numbers [x, y]")
        rows.append((values, line))
    return rows


def _on_one_line(points: np.ndarray) -> bool:
    """Whether the points lie on one line (spread across it under :data:`COLLINEAR_RATIO` of the spread along it)."""
    spread = np.linalg.svd(points - points.mean(axis=0), compute_uv=False)
    return bool(spread[1] < COLLINEAR_RATIO * spread[0])


def _check_spread(points: np.ndarray, lines: Sequence[int], which: str, origin: str) -> None:
    """Refuse duplicate and collinear point sets (a homography needs four points in general position)."""
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    first, second = np.unravel_index(np.argmin(distances), distances.shape)
    if distances[first, second] < DUPLICATE_PX:
        raise CalibrationError(f"{origin}: lines {lines[min(first, second)]} and {lines[max(first, second)]} give the "
                               f"same {which} point; each correspondence must be a different point")
    if _on_one_line(points):
        raise CalibrationError(f"{origin}: the {which} points lie on one line; a homography needs points spread "
                               "over the image (at least 4, no three on a line), e.g. near the four corners")
    if len(points) == 4:  # the exact fit: every point counts, and three on a line make it degenerate
        for left_out in range(4):
            if _on_one_line(np.delete(points, left_out, axis=0)):
                on_line = ", ".join(str(lines[i]) for i in range(4) if i != left_out)
                raise CalibrationError(f"{origin}: the {which} points of lines {on_line} lie on one line; four points "
                                       "fit a homography only with no three on a line (add points, or move one)")


def _check_inside(points: np.ndarray, size: tuple[int, int] | None, lines: Sequence[int], which: str,
                  origin: str) -> None:
    """Refuse a point outside its image (``size`` = ``(width, height)``; None: not known)."""
    if size is None:
        return
    outside = (points < -1).any(axis=1) | (points[:, 0] > size[0]) | (points[:, 1] > size[1])
    if outside.any():
        index = int(np.argmax(outside))
        raise CalibrationError(f"{origin}, line {lines[index]}: the {which} point ({points[index, 0]:g}, "
                               f"{points[index, 1]:g}) is outside the {size[0]}x{size[1]} {which} image "
                               f"({int(outside.sum())} of {len(points)} are); were the points picked in images of "
                               "another size?")


def _check_orientation(matrix: np.ndarray, points: np.ndarray, origin: str) -> None:
    """Refuse a homography that folds the region the ``points`` span (maps part of it through infinity) or
    mirrors it: two cameras side by side see the scene the same way round (a swapped pair of points does
    either)."""
    low, high = points.min(axis=0), points.max(axis=0)
    corners = np.array([[low[0], low[1]], [high[0], low[1]], [low[0], high[1]], [high[0], high[1]]])
    depth = corners @ matrix[2, :2] + matrix[2, 2]  # > 0 for points in front of the visible camera
    check = "check that each line pairs the same physical point in both images"
    if not (depth > 0).all():
        raise CalibrationError(f"{origin}: the fitted homography folds the infrared image (it maps part of it "
                               f"through infinity); {check}, and spread 8 or more points over the image")
    if np.linalg.det(matrix) < 0:
        raise CalibrationError(f"{origin}: the fitted homography mirrors the image (left and right, or top and "
                               f"bottom, swapped); {check} (a camera that mirrors its picture: turn that off in "
                               "the camera)")


def from_points(ir: np.ndarray, vis: np.ndarray, *, lines: Sequence[int] | None = None,
                origin: str = "points", ir_size: tuple[int, int] | None = None,
                vis_size: tuple[int, int] | None = None) -> Calibration:
    """Fit a homography to corresponding points (RANSAC for more than four), with its reprojection error.

    ``ir_size`` / ``vis_size`` (``(width, height)``), when the images are known: every point must lie in
    its image, and the fit may not fold the infrared image (send part of it through infinity) there; without
    them, within the infrared points' bounding box.

    Raises:
        CalibrationError: Fewer than 4 points, duplicates, collinear points, a point outside its image,
            RANSAC finding no consistent set, or a near-singular, folding or mirroring result.
    """
    ir, vis = np.asarray(ir, dtype=np.float64).reshape(-1, 2), np.asarray(vis, dtype=np.float64).reshape(-1, 2)
    lines = list(lines) if lines is not None else list(range(1, len(ir) + 1))
    if len(ir) < 4:
        raise CalibrationError(f"{origin}: {len(ir)} correspondence(s); a homography needs at least 4 "
                               "(8 or more, spread over the image, give a check on the error)")
    _check_inside(ir, ir_size, lines, "infrared", origin)
    _check_inside(vis, vis_size, lines, "visible", origin)
    _check_spread(ir, lines, "infrared", origin)
    _check_spread(vis, lines, "visible", origin)
    threshold = RANSAC_PX * max(1.0, _scale(ir, vis))  # in visible pixels
    if len(ir) == 4:
        matrix, mask = cv2.findHomography(ir, vis, 0)
    elif len(ir) <= SEARCHED_POINTS:
        mask = _agreeing_points(ir, vis, threshold, lines, origin)
        matrix, _ = cv2.findHomography(ir[mask], vis[mask], 0)
        mask = mask.astype(np.uint8)
    else:
        matrix, mask = cv2.findHomography(ir, vis, cv2.RANSAC, threshold)
    if matrix is None or mask is None or int(mask.sum()) < 4:
        raise CalibrationError(f"{origin}: no homography fits these points (RANSAC found no consistent set of 4); "
                               "check that each line pairs the same physical point in both images")
    if not np.all(np.isfinite(matrix)) or np.linalg.cond(matrix / matrix[2, 2]) > MAX_CONDITION:
        raise CalibrationError(f"{origin}: the fitted homography is near-singular; the points are close to "
                               "degenerate (spread them over the image)")
    matrix = check_homography(matrix, origin)
    _check_orientation(matrix, ir if ir_size is None else np.array([[0, 0], [ir_size[0], ir_size[1]]]), origin)
    inlier = mask.ravel().astype(bool)
    errors = np.linalg.norm(cv2.perspectiveTransform(ir[inlier].reshape(-1, 1, 2), matrix).reshape(-1, 2)
                            - vis[inlier], axis=1)
    outliers = [line for line, keep in zip(lines, inlier, strict=True) if not keep]
    details = {"outlier_lines": outliers} if outliers else {}
    if len(ir) == 4:
        details["checked"] = False  # an exact fit: its reprojection error is 0 whatever the points are
    return Calibration(matrix, "points", reprojection_error_px={"rms": float(np.sqrt(np.mean(errors ** 2))),
                                                                "max": float(errors.max())},
                       inliers=(int(inlier.sum()), len(ir)), details=details)


def _scale(ir: np.ndarray, vis: np.ndarray) -> float:
    """Visible pixels per infrared pixel over the points (the square root of their hulls' area ratio)."""
    ir_area = cv2.contourArea(cv2.convexHull(ir.astype(np.float32)))
    vis_area = cv2.contourArea(cv2.convexHull(vis.astype(np.float32)))
    return float(np.sqrt(vis_area / ir_area)) if ir_area > 0 else 1.0


def _agreeing_points(ir: np.ndarray, vis: np.ndarray, threshold: float, lines: Sequence[int],
                     origin: str) -> np.ndarray:
    """The largest set of 5 or more points each of which the homography of the others puts within
    :data:`PREDICTION_FACTOR` x ``threshold`` of where it was given (a boolean mask). A fit's own residuals
    cannot show a wrong point among a few (five points leave two equations to check eight unknowns); a
    prediction from the others can.

    Raises:
        CalibrationError: No five points agree, or two different sets of the largest size do (which points
            are wrong cannot be told).
    """
    def worst_prediction(subset: tuple[int, ...]) -> float:
        worst = 0.0
        for left_out in subset:
            others = [index for index in subset if index != left_out]
            matrix, _ = cv2.findHomography(ir[others], vis[others], 0)
            if matrix is None:
                return np.inf
            predicted = cv2.perspectiveTransform(ir[left_out].reshape(1, 1, 2), matrix).reshape(2)
            worst = max(worst, float(np.linalg.norm(predicted - vis[left_out])))
        return worst

    limit = PREDICTION_FACTOR * threshold
    for size in range(len(ir), 4, -1):
        agreeing = [subset for subset in itertools.combinations(range(len(ir)), size)
                    if worst_prediction(subset) <= limit]
        if len(agreeing) == 1:
            mask = np.zeros(len(ir), bool)
            mask[list(agreeing[0])] = True
            return mask
        if agreeing:
            doubtful = sorted({lines[index] for subset in agreeing for index in range(len(ir)) if index not in subset})
            raise CalibrationError(f"{origin}: {len(agreeing)} different sets of {size} of the {len(ir)} points agree "
                                   "on a homography, each leaving out some of line(s) "
                                   f"{', '.join(map(str, doubtful))}; which are wrong cannot be told: check those "
                                   "lines, or give more points")
    raise CalibrationError(f"{origin}: no 5 of the {len(ir)} points agree on one homography (each predicted from "
                           f"the others within {limit:.1f} px); check that each line pairs the same physical point in "
                           "both images, and give 6 or more, better 8, spread over the image")


# ------------------------------------------------------------------------------------------- target
def parse_grid(text: str) -> tuple[int, int]:
    """``"9x6"`` -> ``(9, 6)`` (columns x rows of inner corners or circles)."""
    try:
        columns, rows = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--grid {text!r}: expected COLUMNSxROWS, e.g. 9x6") from None
    if columns < 2 or rows < 2 or columns * rows < 4:
        raise UsageError(f"--grid {text!r}: a grid needs at least 2x2 points")
    return columns, rows


def detect_target(image: np.ndarray, kind: str, grid: tuple[int, int]) -> np.ndarray | None:
    """Grid points ``(N, 2)`` of a ``kind`` target in ``image`` (either polarity), or None when not found."""
    gray = as_gray(image)
    for candidate in (gray, 255 - gray):
        if kind == "checkerboard":
            found, corners = cv2.findChessboardCornersSB(candidate, grid, flags=cv2.CALIB_CB_NORMALIZE_IMAGE)
        else:
            flags = cv2.CALIB_CB_SYMMETRIC_GRID if kind == "circles" else cv2.CALIB_CB_ASYMMETRIC_GRID
            found, corners = cv2.findCirclesGrid(candidate, grid, flags=flags)
        if found:
            return corners.reshape(-1, 2).astype(np.float64)
    return None


def from_target(pairs: Sequence[tuple[np.ndarray, np.ndarray]], kind: str, grid: tuple[int, int], *,
                names: Sequence[tuple[str, str]] | None = None) -> Calibration:
    """Fit a homography to a calibration target's grid points detected in every ``(ir, vis)`` pair.

    Several views of the target (moved between them) cover more of the image and give a better fit.
    ``names``: what each pair's images are called in errors (their files); default "infrared image", ...

    Raises:
        CalibrationError: The target is not found in one of the images, or the fit is degenerate.
    """
    if kind not in TARGETS:
        raise CalibrationError(f"--target {kind!r}: expected one of {', '.join(TARGETS)}")
    ir_points: list[np.ndarray] = []
    vis_points: list[np.ndarray] = []
    views: list[int] = []  # frames averaged into each view
    for index, pair in enumerate(pairs):
        found = []
        pair_names = names[index] if names is not None else ("infrared image", "visible image")
        for image, name in zip(pair, pair_names, strict=True):
            points = detect_target(image, kind, grid)
            if points is None:
                where = f"{name} (pair {index + 1})" if len(pairs) > 1 and names is None else name
                raise CalibrationError(f"{where}: no {grid[0]}x{grid[1]} {kind} found (both polarities tried); "
                                       "check --grid (inner corners for a checkerboard, circles for a grid), that "
                                       "the whole target is in view and, for the thermal camera, that it is heated "
                                       "or cooled")
            found.append(points)
        ir_found, vis_found = found
        if np.dot(ir_found[-1] - ir_found[0], vis_found[-1] - vis_found[0]) < 0:
            ir_found = ir_found[::-1]  # a symmetric grid detected from the opposite corner in one image
        _add_view(ir_points, vis_points, views, ir_found, vis_found)
    ir_image, vis_image = pairs[0]
    result = from_points(np.concatenate(ir_points), np.concatenate(vis_points), origin=f"{kind} grid",
                         ir_size=ir_image.shape[1::-1], vis_size=vis_image.shape[1::-1])
    details = {**result.details, "pairs": len(pairs)}
    if len(ir_points) < len(pairs):
        details["positions"] = len(ir_points)  # frames of a target held still count as one view
    return dataclasses.replace(result, method="target", details=details)


def _add_view(ir_points: list, vis_points: list, views: list[int], ir_found: np.ndarray, vis_found: np.ndarray) -> None:
    """Add a view's grid points, or average them into an earlier view that shows the target where this one
    does (within :data:`SAME_VIEW_PX` in both images: the target held still over several frames)."""
    for index, (ir_seen, vis_seen) in enumerate(zip(ir_points, vis_points, strict=True)):
        if max(np.abs(ir_seen - ir_found).max(), np.abs(vis_seen - vis_found).max()) < SAME_VIEW_PX:
            count = views[index]
            ir_points[index] = (ir_seen * count + ir_found) / (count + 1)
            vis_points[index] = (vis_seen * count + vis_found) / (count + 1)
            views[index] += 1
            return
    ir_points.append(ir_found)
    vis_points.append(vis_found)
    views.append(1)


# --------------------------------------------------------------------------------------------- files
def write_calibration(path: str | Path, calibration: Calibration, *, ir_size: tuple[int, int] | None = None,
                      vis_size: tuple[int, int] | None = None) -> None:
    """Write an accepted calibration as YAML (``matrix`` plus how it was made), atomically."""
    if not calibration.accepted:
        raise ValueError("a refused calibration is never written")
    content = {**calibration.as_dict(),
               "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    if ir_size and vis_size:
        content["ir_size"], content["vis_size"] = list(ir_size), list(vis_size)
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("# streamfuse calibrate: homography mapping infrared pixels to visible pixels\n"
                         + yaml.safe_dump(content, sort_keys=False, default_flow_style=None), encoding="utf-8")
    temporary.replace(path)


def overlay(ir: np.ndarray, vis: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Before | after image: the infrared edges (red) over the visible image, unwarped and warped by ``matrix``."""
    vis_gray = as_gray(vis)
    height, width = vis_gray.shape
    ir_gray = as_gray(ir)
    resize = np.diag([width / ir_gray.shape[1], height / ir_gray.shape[0], 1.0])
    panels = []
    for transform in (resize, matrix):
        warped = cv2.warpPerspective(ir_gray, transform, (width, height), borderMode=cv2.BORDER_REPLICATE)
        inside = cv2.warpPerspective(np.full_like(ir_gray, 255), transform, (width, height)) > 0
        inside = cv2.erode(inside.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0  # not the frame's own border
        edges = (cv2.Canny(cv2.GaussianBlur(warped, (0, 0), 1.5), 40, 100) > 0) & inside
        panel = cv2.cvtColor(vis_gray // 2 + 64, cv2.COLOR_GRAY2BGR)
        panel[edges] = (0, 0, 255)
        panels.append(panel)
    separator = np.full((height, 4, 3), 255, np.uint8)
    return np.hstack([panels[0], separator, panels[1]])


def save_overlay(path: str | Path, ir: np.ndarray, vis: np.ndarray, matrix: np.ndarray) -> None:
    """Write :func:`overlay` as an image file.

    Raises:
        CalibrationError: The file cannot be written.
    """
    if not cv2.imwrite(str(path), overlay(ir, vis, matrix)):
        raise CalibrationError(f"{path}: could not write the overlay image (check the folder and the extension)")
