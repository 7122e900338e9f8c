#!/usr/bin/env python3
"""Temporal stability of fusers on an image sequence (lower flicker is better).

    python tools/flicker_study.py --ir ../shared/data/tno_video_sequences/Nato_camp_sequence/thermal \
        --vis ../shared/data/tno_video_sequences/Nato_camp_sequence/visual --fuser classical model
"""

from __future__ import annotations

import argparse

from streamfuse.config import FusionConfig
from streamfuse.evaluation import to_rgb
from streamfuse.fusers import build_fuser
from streamfuse.fusers.colour import as_gray
from streamfuse.imageio import list_images, read_image
from streamfuse.metrics.temporal import FlickerMeter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ir", required=True)
    parser.add_argument("--vis", required=True)
    parser.add_argument("--fuser", nargs="+", default=["classical", "model"])
    args = parser.parse_args()
    frames = [(as_gray(read_image(i)), read_image(v)) for i, v in
              zip(list_images(args.ir), list_images(args.vis), strict=True)]
    print(f"{len(frames)} frames; flicker in grey levels (interval / nearest-source rule), lower is better")
    for name in args.fuser:
        fuser = build_fuser(FusionConfig(fuser=name))
        meters = {mode: FlickerMeter(mode) for mode in ("interval", "nearest")}
        for ir, vis in frames:
            fused = fuser.fuse(ir, vis)
            for meter in meters.values():
                meter.update(ir, to_rgb(vis), to_rgb(fused))
        print(f"{name:<10} {meters['interval'].value:8.4f} {meters['nearest'].value:8.4f}")


if __name__ == "__main__":
    main()
