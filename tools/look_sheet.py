#!/usr/bin/env python3
"""A sheet to look at: the classical fuser and the model, side by side, on day, night, glare and fog.

    python tools/look_sheet.py -o docs/images/fusion_sheet.jpg                 # synthetic scene (what docs/ ships)
    python tools/look_sheet.py -o out/look_tno.jpg --data ../shared/data/tno_cddfuse --pairs 03 07

Rows: each scene clean, then with glare and with fog over its left 40% (as the partial-damage table
of tools/prompt_study.py, seed 4, strength 0.6). Columns: infrared, visible, classical, model
balanced, model with the matching prompt (clean rows: "highlight people and vehicles").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from streamfuse.config import FusionConfig, SyntheticConfig
from streamfuse.errors import StreamfuseError
from streamfuse.evaluation import MATCHING_PROMPTS, partially_degraded
from streamfuse.fusers import build_fuser
from streamfuse.imageio import read_image
from streamfuse.sources.synthetic import build_scene
from streamfuse.text import HashingTextEncoder, Router, load_bank

THERMAL_PROMPT = "highlight people and vehicles"


def synthetic_scenes() -> list[tuple[str, np.ndarray, np.ndarray]]:
    scenes = []
    for time_of_day in ("day", "night"):
        scene = build_scene(SyntheticConfig(seed=3, time_of_day=time_of_day, people=6, vehicles=2))
        scenes.append((f"synthetic {time_of_day}", scene.render_ir(1.4),
                       cv2.cvtColor(scene.render_vis(1.4), cv2.COLOR_BGR2GRAY)))
    return scenes


def data_scenes(folder: Path, stems: list[str]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    def gray(path: Path) -> np.ndarray:
        image = read_image(path)
        return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)

    def find(side: str, stem: str) -> Path:
        found = sorted((folder / side).glob(f"{stem}.*"))
        if not found:
            raise StreamfuseError(f"--data {folder}: no image {stem}.* in {folder / side}")
        return found[0]

    if not stems:
        raise StreamfuseError("--pairs: name the file stems of --data to show (e.g. --pairs 03 07)")
    return [(f"{folder.name} {stem}", gray(find("ir", stem)), gray(find("vi", stem))) for stem in stems]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--data", type=Path, help="a data set folder with ir/ and vi/ (default: the synthetic scene)")
    parser.add_argument("--pairs", nargs="*", default=[], help="file stems of --data to show")
    parser.add_argument("--width", type=int, default=240, help="width of one cell")
    args = parser.parse_args()
    if not cv2.haveImageWriter(str(args.output)):
        parser.error(f"-o {args.output}: not an image file name (use .jpg or .png)")
    if args.data is not None and args.data.resolve() in args.output.resolve().parents:
        parser.error(f"-o {args.output}: would write into the input --data {args.data}; choose an output outside "
                     "the inputs")
    try:
        scenes = data_scenes(args.data, args.pairs) if args.data else synthetic_scenes()
    except StreamfuseError as error:  # a missing folder or image: one line, not a traceback
        parser.error(str(error))

    router = Router(HashingTextEncoder(), load_bank())
    classical = build_fuser(FusionConfig(fuser="classical"))
    model = build_fuser(FusionConfig(fuser="model"))
    rows = []
    for label, ir, vis in scenes:
        for kind in ("clean", "glare", "fog"):
            vis_in = vis if kind == "clean" else partially_degraded(ir, vis, kind, seed=4)
            prompt = THERMAL_PROMPT if kind == "clean" else MATCHING_PROMPTS[kind]
            cells = [ir, vis_in, classical.fuse(ir, vis_in)]
            for routing in (router.route(""), router.route(prompt)):
                model.condition(routing)
                cells.append(model.fuse(ir, vis_in))
            size = (args.width, int(args.width * ir.shape[0] / ir.shape[1]))
            row = np.hstack([cv2.resize(c, size, interpolation=cv2.INTER_AREA) for c in cells])
            cv2.putText(row, f"{label}, {kind}", (5, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 255, 1)
            rows.append(row)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.output), np.vstack(rows), [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"wrote {args.output}: columns infrared, visible, classical, model balanced, model matching prompt")


if __name__ == "__main__":
    main()
