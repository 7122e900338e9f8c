#!/usr/bin/env python3
"""Standard fusion baselines, written from their published descriptions, to rank streamfuse against.

    python tools/baselines.py --ir ../shared/data/tno_cddfuse/ir --vis ../shared/data/tno_cddfuse/vi -o out/baselines
    streamfuse eval --ir ../shared/data/tno_cddfuse/ir --vis ../shared/data/tno_cddfuse/vi \\
        --fused out/baselines/* --fuser classical model --convention vifb

Writes ``OUTPUT/<method>/<stem>.png`` (gray) for each pair matched by file stem. Methods, all with the
parameters their papers give (nothing tuned here):

- ``average``: the mean of the two images.
- ``max``: the per-pixel maximum (scores high on MI and Qabf while looking worse: a check that a
  metrics table is read with the images).
- ``laplacian``: Laplacian-pyramid fusion (Burt and Adelson 1983; Toet 1989): four levels, each detail
  coefficient from the source of larger magnitude, the top level averaged.
- ``gff``: guided filtering based fusion (Li, Kang and Hu, "Image fusion with guided filtering", IEEE
  TIP 2013): a two-scale split by a 31x31 mean filter, saliency from the Gaussian-smoothed absolute
  Laplacian, a binary max map refined by guided filters (base r=45, eps=0.3; detail r=7, eps=1e-6).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from streamfuse.colour import as_gray
from streamfuse.errors import StreamfuseError
from streamfuse.evaluation import input_pairs
from streamfuse.imageio import read_image

PYRAMID_LEVELS = 4
GFF_BASE_SIZE, GFF_SALIENCE = 31, (5, 5.0)  # mean filter size; Gaussian radius and sigma
GFF_BASE_GUIDE, GFF_DETAIL_GUIDE = (45, 0.3), (7, 1e-6)


def guided_filter(guide: np.ndarray, image: np.ndarray, radius: int, eps: float,
                  box_filter: Callable[[np.ndarray, int], np.ndarray]) -> np.ndarray:
    """``image`` smoothed along the edges of ``guide`` (He, Sun and Tang, TPAMI 2013): locally ``a * guide + b``."""
    mean_guide, mean_image = box_filter(guide, radius), box_filter(image, radius)
    a = ((box_filter(guide * image, radius) - mean_guide * mean_image)
         / (box_filter(guide * guide, radius) - mean_guide * mean_guide + eps))
    return box_filter(a, radius) * guide + box_filter(mean_image - a * mean_guide, radius)


def average(ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    return (ir + vis) / 2


def maximum(ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    return np.maximum(ir, vis)


def _laplacian_pyramid(image: np.ndarray) -> list[np.ndarray]:
    levels, current = [], image
    for _ in range(PYRAMID_LEVELS - 1):
        smaller = cv2.pyrDown(current)
        levels.append(current - cv2.pyrUp(smaller, dstsize=current.shape[::-1]))
        current = smaller
    return [*levels, current]


def laplacian(ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    pyramid_ir, pyramid_vis = _laplacian_pyramid(ir), _laplacian_pyramid(vis)
    image = (pyramid_ir[-1] + pyramid_vis[-1]) / 2
    for level_ir, level_vis in zip(reversed(pyramid_ir[:-1]), reversed(pyramid_vis[:-1]), strict=True):
        detail = np.where(np.abs(level_ir) >= np.abs(level_vis), level_ir, level_vis)
        image = cv2.pyrUp(image, dstsize=detail.shape[::-1]) + detail
    return image


def _mean_filter(image: np.ndarray, radius: int) -> np.ndarray:
    return cv2.blur(image, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)


def gff(ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    sources = (ir, vis)
    bases = [_mean_filter(image, GFF_BASE_SIZE // 2) for image in sources]
    radius, sigma = GFF_SALIENCE
    salience = [cv2.GaussianBlur(np.abs(cv2.Laplacian(image, cv2.CV_32F)), (2 * radius + 1, 2 * radius + 1), sigma)
                for image in sources]
    chosen = [(salience[0] >= salience[1]).astype(np.float32)]
    chosen.append(1 - chosen[0])
    details = [image - base for image, base in zip(sources, bases, strict=True)]
    fused = np.zeros_like(ir)
    for layers, (guide_radius, eps) in ((bases, GFF_BASE_GUIDE), (details, GFF_DETAIL_GUIDE)):
        weights = [np.clip(guided_filter(image, weight, guide_radius, eps, _mean_filter), 0, None)
                   for image, weight in zip(sources, chosen, strict=True)]
        fused += (weights[0] * layers[0] + weights[1] * layers[1]) / (weights[0] + weights[1] + 1e-12)
    return fused


METHODS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "average": average, "max": maximum, "laplacian": laplacian, "gff": gff}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ir", type=Path, required=True, help="folder of infrared images")
    parser.add_argument("--vis", type=Path, required=True, help="folder of visible images (same file stems)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for one sub-folder per method")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    args = parser.parse_args()

    try:
        pairs, problems = input_pairs(args.ir, args.vis)
    except StreamfuseError as error:  # a missing folder, no pairs: one line, not a traceback
        parser.error(str(error))
    for name in args.methods:
        for flag, folder in (("--ir", args.ir), ("--vis", args.vis)):
            if (args.output / name).resolve() == folder.resolve():
                parser.error(f"-o {args.output}: its folder {args.output / name} is the input {flag} {folder}; "
                             "choose an output outside the inputs (inputs are never overwritten)")
    for name in args.methods:
        (args.output / name).mkdir(parents=True, exist_ok=True)
    written = 0
    for stem, ir_path, vis_path in pairs:
        ir, vis = (as_gray(read_image(path)).astype(np.float32) / 255 for path in (ir_path, vis_path))
        if ir.shape != vis.shape:
            problems.append(f"{stem}: infrared is {ir.shape[1]}x{ir.shape[0]} but visible is "
                            f"{vis.shape[1]}x{vis.shape[0]}; the baselines need registered pairs")
            continue
        written += 1
        for name in args.methods:
            fused = np.clip(METHODS[name](ir, vis) * 255 + 0.5, 0, 255).astype(np.uint8)
            cv2.imwrite(str(args.output / name / f"{stem}.png"), fused)
    for problem in problems:
        print(f"skipped {problem}", file=sys.stderr)
    print(f"wrote {written} pair(s) x {len(args.methods)} method(s) under {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
