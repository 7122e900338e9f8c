#!/usr/bin/env python3
"""Temporal stability of fusers on an image sequence (lower flicker is better).

The sequence is fused the way a pipeline fuses video: in order, one stream, through the inference
worker for the model (so ``fusion.temporal_smoothing`` applies; each value in ``--smoothing`` is a
row), and frame by frame for the classical fuser. Prints flicker by the interval and the
nearest-source rules, and the mean per-frame VIFB Qabf / SSIM, so steadier output that lost
quality would show.

    python tools/flicker_study.py --ir ../shared/data/tno_video_sequences/Nato_camp_sequence/thermal \\
        --vis ../shared/data/tno_video_sequences/Nato_camp_sequence/visual --smoothing 0 0.5
"""

from __future__ import annotations

import argparse

import numpy as np

from streamfuse.colour import as_gray
from streamfuse.config import FusionConfig
from streamfuse.evaluation import to_rgb
from streamfuse.fusers import build_fuser
from streamfuse.imageio import list_images, read_image
from streamfuse.inference import build_worker
from streamfuse.metrics import vifb
from streamfuse.metrics.temporal import FlickerMeter
from streamfuse.runtime import setup_runtime


def score(name: str, frames, fused_frames) -> str:
    meters = {mode: FlickerMeter(mode) for mode in ("interval", "nearest")}
    qabf, ssim = [], []
    for (ir, vis), fused in zip(frames, fused_frames, strict=True):
        for meter in meters.values():
            meter.update(ir, to_rgb(vis), to_rgb(fused))
        qabf.append(vifb.qabf(ir, as_gray(vis), as_gray(fused)))
        ssim.append(vifb.ssim(ir, as_gray(vis), as_gray(fused)))
    return (f"{name:<22} {meters['interval'].value:8.4f} {meters['nearest'].value:8.4f} "
            f"{np.mean(qabf):8.4f} {np.mean(ssim):8.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ir", required=True)
    parser.add_argument("--vis", required=True)
    parser.add_argument("--smoothing", type=float, nargs="+", default=[0.0, 0.5],
                        help="fusion.temporal_smoothing values to run the model with")
    args = parser.parse_args()
    setup_runtime(FusionConfig(device="cpu"), live=False)  # torch threads as in `streamfuse run`
    frames = [(as_gray(read_image(i)), read_image(v)) for i, v in
              zip(list_images(args.ir), list_images(args.vis), strict=True)]
    print(f"{len(frames)} frames; flicker in grey levels (interval / nearest-source rule, lower is better), "
          "mean VIFB Qabf and SSIM per frame")
    print(f"{'fuser':<22} {'interval':>8} {'nearest':>8} {'Qabf':>8} {'SSIM':>8}")
    classical = build_fuser(FusionConfig(fuser="classical"))
    print(score("classical", frames, [classical.fuse(ir, vis) for ir, vis in frames]))
    model = build_fuser(FusionConfig(fuser="model"))
    for smoothing in args.smoothing:
        with build_worker(model.network, FusionConfig(device="cpu", temporal_smoothing=smoothing)) as worker:
            futures = [worker.submit(0, ir, vis) for ir, vis in frames]  # in order: one video stream
            fused = [future.result() for future in futures]
        print(score(f"model smoothing {smoothing:g}", frames, fused))


if __name__ == "__main__":
    main()
