#!/usr/bin/env python3
"""Automatic registration against ground truth: the SuperFusion registration sets and random warps.

Each SuperFusion triplet has ``ir`` (aligned with ``vi``), ``ir_warp`` (deformed) and ``flow`` (the
deformation: ``ir_warp(q) = ir(flow(q))``), so the true infrared -> visible mapping of an ``ir_warp``
pixel ``q`` is ``flow(q)``. For each scene this estimates a homography from the single pair
``(ir_warp, vi)`` and reports the mean distance, over every pixel, between where it sends the pixel
and where the truth does, next to the same distance for doing nothing (the identity). ``--warp``
instead warps the aligned ``ir`` by random homographies (translation up to 6% of the width, scale
0.93-1.07, rotation up to 3 degrees, mild perspective) and measures against that known matrix.

``--rig K`` estimates instead from K different scenes seen through one rig: each of ``--trials``
rigs is a random homography (the same ranges) applied to K registered pairs drawn from the half,
resized to :data:`RIG_SIZE`, and the estimate from all K pairs is measured against it. With
``--unrelated`` each scene's infrared image is replaced by the next scene's: nothing should be accepted;
with ``--broken N`` only the first N scenes of each rig are (frame pairs broken by a sync fault, say).

Scenes are sorted by name; ``--half first`` / ``--half second`` select a half (thresholds were tuned
on the first half of RoadScene only).

Examples::

    python tools/registration_study.py /work/shared/data/superfusion_reg_roadscene --half second
    python tools/registration_study.py /work/shared/data/superfusion_reg_msrs
    python tools/registration_study.py /work/shared/data/superfusion_reg_msrs --warp 2
    python tools/registration_study.py /work/shared/data/superfusion_reg_roadscene --half second --rig 4 --seed 1
    python tools/registration_study.py /work/shared/data/superfusion_reg_roadscene --half first --rig 4 --broken 1
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from streamfuse.imageio import list_images, natural_key, read_image
from streamfuse.registration.estimate import STRUCTURES, estimate_homography, final_refinement

#: Fraction of each side of a registered pair cropped off by :func:`reshoot` (room for the warp).
MARGIN = 0.1
#: Size (width, height) every pair of a ``--rig`` study is resized to: one rig, one frame size.
RIG_SIZE = (480, 360)


def read_flow(path: Path) -> np.ndarray:
    """The ``flow`` array of an uncompressed MATLAB v5 file holding one single-precision matrix."""
    data = path.read_bytes()
    offset = 128
    data_type, _ = struct.unpack_from("<II", data, offset)
    if data_type != 14:  # miMATRIX
        raise ValueError(f"{path}: expected an uncompressed MATLAB matrix (got element type {data_type})")
    offset += 8 + 16  # matrix tag, array flags
    _, dims_bytes = struct.unpack_from("<II", data, offset)
    dims = struct.unpack_from(f"<{dims_bytes // 4}i", data, offset + 8)
    offset += 8 + dims_bytes + (-dims_bytes % 8)
    name_tag = struct.unpack_from("<I", data, offset)[0]
    if name_tag >> 16:  # small data element: name packed in the tag
        offset += 8
    else:
        name_bytes = struct.unpack_from("<I", data, offset + 4)[0]
        offset += 8 + name_bytes + (-name_bytes % 8)
    value_type, value_bytes = struct.unpack_from("<II", data, offset)
    if value_type != 7:  # miSINGLE
        raise ValueError(f"{path}: expected single-precision data (got element type {value_type})")
    values = np.frombuffer(data, dtype="<f4", count=value_bytes // 4, offset=offset + 8)
    return values.reshape(dims, order="F")


def truth_pixels(flow: np.ndarray) -> np.ndarray:
    """``(H, W, 2)`` visible pixel each ``ir_warp`` pixel shows (grid_sample, align_corners=False)."""
    grid = flow[0].astype(np.float64)
    height, width = grid.shape[:2]
    return np.stack([((grid[..., 0] + 1) * width - 1) / 2, ((grid[..., 1] + 1) * height - 1) / 2], axis=-1)


def mean_error(matrix: np.ndarray, truth: np.ndarray) -> float:
    """Mean distance (px) between ``matrix``'s mapping and the true one, over every pixel."""
    height, width = truth.shape[:2]
    return float(np.linalg.norm(truth_of(matrix, width, height) - truth, axis=-1).mean())


def random_homography(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A random IR -> VIS homography within the ranges of issue 17, about the image centre."""
    angle, scale = rng.uniform(-3, 3), rng.uniform(0.93, 1.07)
    similarity = np.vstack([cv2.getRotationMatrix2D((width / 2, height / 2), angle, scale), [0, 0, 1]])
    similarity[:2, 2] += rng.uniform(-0.06, 0.06, 2) * width
    perspective = np.eye(3)
    perspective[2, :2] = rng.uniform(-2e-5, 2e-5, 2) * 640 / width
    centre = np.array([[1, 0, width / 2], [0, 1, height / 2], [0, 0, 1]])
    return similarity @ centre @ perspective @ np.linalg.inv(centre)


def reshoot(ir: np.ndarray, vis: np.ndarray, homography: np.ndarray,
            margin: float = MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """A misaligned rig from a registered pair: the visible camera sees the centre (``margin`` cropped
    off each side), the infrared camera a view whose pixel ``q`` shows the visible camera's pixel
    ``homography(q)``. Both views are filled with real content (no black border for a warp within
    the margin), as real cameras are."""
    height, width = vis.shape[:2]
    mx, my = round(width * margin), round(height * margin)
    crop = np.array([[1, 0, -mx], [0, 1, -my], [0, 0, 1]], np.float64)
    size = (width - 2 * mx, height - 2 * my)
    ir_view = cv2.warpPerspective(ir, np.linalg.inv(homography) @ crop, size, flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
    return ir_view, vis[my:height - my, mx:width - mx].copy()


def truth_of(homography: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(H, W, 2)`` visible pixel each infrared pixel shows under ``homography``."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    mapped = cv2.perspectiveTransform(np.stack([xs, ys], -1).reshape(-1, 1, 2), homography)
    return mapped.reshape(height, width, 2)


def single_cases(args: argparse.Namespace, names: list[str], rng: np.random.Generator):
    """One pair per estimate: each scene's SuperFusion deformation, or ``args.warp`` random warps of it."""
    for name in names:
        vis = read_image(args.root / "vi" / name)
        if not args.warp:
            yield name, [(read_image(args.root / "ir_warp" / name), vis)], truth_pixels(
                read_flow(args.root / "flow" / f"{name}.mat"))
            continue
        ir = read_image(next((args.root / "ir").glob(Path(name).stem + ".*")))
        for _ in range(args.warp):
            height, width = vis.shape[:2]
            truth_h = random_homography(rng, width - 2 * round(width * MARGIN), height - 2 * round(height * MARGIN))
            ir_view, vis_view = reshoot(ir, vis, truth_h)
            yield name, [(ir_view, vis_view)], truth_of(truth_h, *vis_view.shape[1::-1])


def rig_cases(root: Path, names: list[str], rng: np.random.Generator, scenes: int, trials: int,
              broken: int = 0):
    """``trials`` estimates, each from ``scenes`` registered pairs seen through one random rig (the first
    ``broken`` pairs of each with the next scene's infrared image)."""
    width, height = RIG_SIZE
    pairs = [(cv2.resize(read_image(next((root / "ir").glob(Path(name).stem + ".*"))), RIG_SIZE),
              cv2.resize(read_image(root / "vi" / name), RIG_SIZE)) for name in names]
    for trial in range(trials):
        chosen = rng.choice(len(pairs), scenes, replace=False)
        truth_h = random_homography(rng, width - 2 * round(width * MARGIN), height - 2 * round(height * MARGIN))
        views = [reshoot(pairs[(index + 1) % len(pairs) if position < broken else index][0], pairs[index][1],
                         truth_h) for position, index in enumerate(chosen)]
        yield f"rig {trial}", views, truth_of(truth_h, *views[0][1].shape[1::-1])


def best_fit(truth: np.ndarray) -> np.ndarray:
    """The homography closest to a true (non-rigid) mapping: least squares over a 4 px grid of its pixels."""
    height, width = truth.shape[:2]
    ys, xs = np.mgrid[0:height:4, 0:width:4]
    matrix, _ = cv2.findHomography(np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64),
                                   truth[ys, xs].reshape(-1, 2), 0)
    return matrix


def oracle(args: argparse.Namespace, names: list[str]) -> None:
    """Per SuperFusion scene: the best homography's error and rotation, and where the estimator's final
    refinement goes when started from it (an analysis of the truth and of the refinement, no search)."""
    near = []
    for name, pairs, truth in single_cases(args, names, np.random.default_rng(args.seed)):
        best = best_fit(truth)
        refined = final_refinement(pairs[0], best, args.structure)
        error = mean_error(refined, truth) if refined is not None else float("nan")
        near.append(error <= 3)
        print(f"{name:12s} best homography {mean_error(best, truth):5.2f} px (rotation "
              f"{np.degrees(np.arctan2(best[1, 0], best[0, 0])):+5.1f} deg); final refinement from it "
              f"{error:5.2f} px", flush=True)
    print(f"\n{args.root.name} ({args.half}): the final refinement from the best homography is within 3 px of "
          f"the truth on {sum(near)} of {len(near)} scenes")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="a superfusion_reg_* folder (ir, vi, ir_warp, flow)")
    parser.add_argument("--half", choices=["first", "second", "all"], default="all")
    parser.add_argument("--warp", type=int, metavar="N", help="N random homographies of each aligned pair instead")
    parser.add_argument("--rig", type=int, metavar="K", help="estimate from K scenes through one random rig instead")
    parser.add_argument("--trials", type=int, default=10, help="rigs drawn with --rig (default 10)")
    parser.add_argument("--unrelated", action="store_true",
                        help="with --rig: pair each visible image with the next scene's infrared image")
    parser.add_argument("--broken", type=int, default=0, metavar="N",
                        help="with --rig: only the first N scenes of each rig get the next scene's infrared image")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--structure", choices=STRUCTURES, default=STRUCTURES[0],
                        help="structure images the estimator compares (default learned)")
    parser.add_argument("--oracle", action="store_true",
                        help="no estimation: each deformation's best homography, and the final refinement from it")
    args = parser.parse_args()
    names = sorted((p.name for p in list_images(args.root / "vi")), key=natural_key)
    half = len(names) // 2
    names = {"first": names[:half], "second": names[half:], "all": names}[args.half]
    rng = np.random.default_rng(args.seed)
    if (args.unrelated or args.broken) and not args.rig:
        parser.error("--unrelated and --broken need --rig")
    if args.unrelated and args.broken:
        parser.error("--unrelated breaks every scene of a rig; --broken N only the first N: give one of them")
    if not 0 <= args.broken <= (args.rig or 0):
        parser.error(f"--broken: 0 to --rig ({args.rig}) scenes, got {args.broken}")
    broken = args.rig if args.unrelated else args.broken
    if args.oracle:
        if args.warp or args.rig:
            parser.error("--oracle measures the SuperFusion deformations: not with --warp or --rig")
        oracle(args, names)
        return 0
    cases = (rig_cases(args.root, names, rng, args.rig, args.trials, broken) if args.rig
             else single_cases(args, names, rng))
    rows = []
    for name, pairs, truth in cases:
        start = time.perf_counter()
        result = estimate_homography(pairs, args.structure)
        seconds = time.perf_counter() - start
        error, nothing = mean_error(result.matrix, truth), mean_error(np.eye(3), truth)
        rows.append((name, result.accepted, result.confidence, error, nothing, seconds))
        print(f"{name:12s} accepted={result.accepted!s:5s} conf={result.confidence:.2f} "
              f"score {result.identity_score:.3f}->{result.score:.3f} error {error:6.2f} px  "
              f"nothing {nothing:6.2f} px  {seconds:.2f} s", flush=True)
    accepted = [r for r in rows if r[1]]
    kind = ", random warps" if args.warp else ""
    if args.rig:
        kind = f", rigs of {args.rig} scenes" + (f", {broken} with another's infrared image" if broken else "")
    print(f"\n{args.root.name} ({args.half}{kind}): {len(rows)} estimates, "
          f"{len(accepted)} accepted ({len(accepted) / len(rows):.0%})")
    if accepted:
        errors = np.array([r[3] for r in accepted])
        print(f"accepted: median error {np.median(errors):.2f} px, within 3 px {np.mean(errors <= 3):.0%}, "
              f"worse than nothing {sum(r[3] > r[4] for r in accepted)}")
    print(f"accepted and within 3 px: {sum(r[1] and r[3] <= 3 for r in rows)} of {len(rows)} "
          f"({np.mean([r[1] and r[3] <= 3 for r in rows]):.0%})")
    print(f"all estimates, accepted or not: within 3 px {np.mean([r[3] <= 3 for r in rows]):.0%}; "
          f"doing nothing: median "
          f"{np.median([r[4] for r in rows]):.2f} px; median time {np.median([r[5] for r in rows]):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
