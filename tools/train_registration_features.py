"""Train the learned structure images of automatic registration (streamfuse.registration.features).

    python tools/train_registration_features.py --data ../shared/data \
        --output streamfuse/models/weights/regfeatures.npz

The SuperFusion registration sets (and the RoadScene images they were made from) are never trained on:
they are what docs/registration.md measures the estimator on. Checkpoints are written as it goes;
Ctrl-C keeps the latest.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from streamfuse.registration.features import DILATIONS
from streamfuse.train.registration import train_structure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="data root (default ../shared/data)")
    parser.add_argument("--output", type=Path, required=True, help="weights file (.npz) to write")
    parser.add_argument("--steps", type=int, default=1500, help="training steps (default 1500: the shipped weights)")
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--crop", type=int, default=112)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--night", type=float, default=0.3,
                        help="fraction of crops whose visible image is darkened and given noise (default 0.3)")
    parser.add_argument("--dilations", type=int, nargs="+", default=list(DILATIONS),
                        help=f"dilations of the 3x3 layers (default {' '.join(map(str, DILATIONS))})")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    try:
        train_structure(args.data, args.output, steps=args.steps, batch_size=args.batch_size, crop=args.crop,
                        dilations=args.dilations, night=args.night, seed=args.seed)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
