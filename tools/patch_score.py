#!/usr/bin/env python3
"""Score the coarse artifacts of fused images: edges at a coarse scale that neither source has.

    python tools/patch_score.py --ir ../shared/data/superfusion_reg_msrs/ir \\
        --vis ../shared/data/superfusion_reg_msrs/vi --fused out/current out/variant [--scale 4] [--per-image]

The score is ``N_abf`` (``streamfuse.metrics.qabf.artifact_share``: the share of edge information where
the fused edge is stronger than both sources', lower is better) computed on the three images reduced
``--scale`` times (area average). At full resolution ``N_abf`` is dominated by fine detail selection (a
Laplacian pyramid scores high for its sharpened edges); at 1/4 it follows what the base choice draws:
the outline of a patch inside a region smooth in both images, a halo along an edge, a blotch. See
docs/model.md ("Why the patches appear") for what it measured against what was seen.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from streamfuse.colour import as_gray
from streamfuse.errors import StreamfuseError
from streamfuse.evaluation import find_fused, input_pairs
from streamfuse.imageio import list_images, read_image
from streamfuse.metrics.qabf import artifact_share
from streamfuse.metrics.vifb import qabf_edges


def coarse_artifacts(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray, scale: int = 4) -> float:
    """``N_abf`` of gray ``uint8`` or float images of one size, each reduced ``scale`` times first."""
    def edges(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image = image.astype(np.float64)
        if scale > 1:
            size = (max(1, image.shape[1] // scale), max(1, image.shape[0] // scale))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        return qabf_edges(image)

    with np.errstate(divide="ignore", invalid="ignore"):
        return artifact_share(*edges(ir), *edges(vis), *edges(fused))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ir", type=Path, required=True, help="folder of infrared images")
    parser.add_argument("--vis", type=Path, required=True, help="folder of visible images (same file stems)")
    parser.add_argument("--fused", type=Path, nargs="+", required=True, help="folders of fused images")
    parser.add_argument("--scale", type=int, default=4, help="reduction before scoring (default 4)")
    parser.add_argument("--per-image", action="store_true", help="also print every image's score")
    args = parser.parse_args()
    if args.scale < 1:
        parser.error(f"--scale must be at least 1, got {args.scale}")
    try:
        pairs, problems = input_pairs(args.ir, args.vis)
        listings = {folder: list_images(folder) for folder in args.fused}
    except StreamfuseError as error:  # a missing folder, no pairs: one line, not a traceback
        parser.error(str(error))
    for folder, files in listings.items():
        scores = {}
        for stem, ir_path, vis_path in pairs:
            fused_path = find_fused(folder, stem, files)
            if fused_path is None:
                problems.append(f"{folder}: no fused image for {stem}")
                continue
            ir, vis, fused = (as_gray(read_image(path)) for path in (ir_path, vis_path, fused_path))
            if not ir.shape == vis.shape == fused.shape:
                problems.append(f"{folder}/{stem}: the three images differ in size")
                continue
            scores[stem] = coarse_artifacts(ir, vis, fused, args.scale)
        if args.per_image:
            for stem, score in scores.items():
                print(f"{folder}  {stem}  {score:.4f}")
        mean = f"{np.nanmean(list(scores.values())):.4f}" if scores else "-"
        print(f"{folder}: N_abf at 1/{args.scale}: mean {mean} over {len(scores)} image(s)")
    for problem in problems:
        print(f"skipped {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
