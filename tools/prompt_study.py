#!/usr/bin/env python3
"""Do prompts work? Tables for the model card: balanced vs matching prompt on degraded inputs,
warm-object contrast with the thermal-target prompt, visible similarity with the visible-detail prompt.

    python tools/prompt_study.py --data ../shared/data/tno_cddfuse [--sheet docs/images/prompts.jpg]

Degradations use fixed seeds (pair i: seed i) and strength 0.6; scores use the VIFB definitions
with the CLEAN sources as references.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from streamfuse.config import FusionConfig, SyntheticConfig
from streamfuse.errors import StreamfuseError
from streamfuse.evaluation import (
    MATCHING_PROMPTS,
    degrade_pair,
    hot_mask,
    local_damage_scores,
    restoration_scores,
    warm_object_contrast,
)
from streamfuse.fusers import build_fuser
from streamfuse.imageio import list_images, read_image
from streamfuse.metrics import vifb
from streamfuse.sources.synthetic import build_scene
from streamfuse.text import HashingTextEncoder, Router, load_bank

THERMAL_PROMPT = "highlight people and vehicles"
#: Damage that can cover part of the frame (the partial-damage table).
LOCAL_DAMAGE = ("glare", "fog", "low_light")
DETAIL_PROMPT = "keep the road markings and signs readable"


def load_pairs(folder: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """The gray ``(ir, vis)`` pairs of a data set folder with ``ir/`` and ``vi/``."""
    ir_files = {p.stem: p for p in list_images(folder / "ir")}
    pairs = []
    for vis_path in list_images(folder / "vi"):
        ir, vis = read_image(ir_files[vis_path.stem]), read_image(vis_path)
        pairs.append((ir if ir.ndim == 2 else cv2.cvtColor(ir, cv2.COLOR_BGR2GRAY),
                      vis if vis.ndim == 2 else cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY)))
    return pairs


def synthetic_frames(time_of_day: str, count: int = 6) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Infrared, visible and warm-object mask of ``count`` frames of the synthetic scene."""
    scene = build_scene(SyntheticConfig(seed=3, time_of_day=time_of_day, people=6, vehicles=2))
    return [(scene.render_ir(t), scene.render_vis(t), (scene.object_mask(t) > 0).astype(np.uint8))
            for t in 0.7 * np.arange(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/tno_cddfuse"))
    parser.add_argument("--weights", help="model checkpoint (default: the shipped one)")
    parser.add_argument("--sheet", type=Path, help="also write a contact sheet (sources, classical, model per prompt)")
    parser.add_argument("--sheet-synthetic", action="store_true",
                        help="draw the sheet from the synthetic scene (no data-set images; what docs/ ships)")
    args = parser.parse_args()

    router = Router(HashingTextEncoder(), load_bank())
    try:  # a missing data folder or checkpoint: one line, not a traceback
        model = build_fuser(FusionConfig(fuser="model", weights=args.weights))
        pairs = load_pairs(args.data)
    except StreamfuseError as error:
        parser.error(str(error))
    classical = build_fuser(FusionConfig(fuser="classical"))
    name = args.data.resolve().name
    balanced = router.route("")

    print(f"## Degraded inputs ({len(pairs)} pairs of {name}, strength 0.6, scored against the clean sources)\n")
    print("| degradation | matching prompt | routing | classical Qabf / Ssim | model balanced Qabf / Ssim "
          "| model matching Qabf / Ssim | matching wins |")
    print("|---|---|---|---|---|---|---|")
    for kind, prompt in MATCHING_PROMPTS.items():
        routing = router.route(prompt)
        base = restoration_scores(classical, balanced, pairs, kind)
        plain = restoration_scores(model, balanced, pairs, kind)
        steered = restoration_scores(model, routing, pairs, kind)
        wins = steered["Qabf"] > plain["Qabf"] and steered["Ssim"] > plain["Ssim"]
        print(f"| {kind} | {prompt} | {routing.summary()} | {base['Qabf']:.4f} / {base['Ssim']:.4f} | "
              f"{plain['Qabf']:.4f} / {plain['Ssim']:.4f} | {steered['Qabf']:.4f} / {steered['Ssim']:.4f} | "
              f"{'yes' if wins else 'NO'} |")

    print(f"\n## Damage over part of the frame ({len(pairs)} pairs of {name}: the left 40% degraded, strength 0.6)\n")
    print("SSIM with the clean infrared inside the damage / with the clean visible image outside it.\n")
    print("| damage | classical balanced | classical matching | model balanced | model matching | "
          "acts where the problem is |")
    print("|---|---|---|---|---|---|")
    for kind in LOCAL_DAMAGE:
        routing = router.route(MATCHING_PROMPTS[kind])
        cells, model_scores = [], []
        for fuser in (classical, model):
            for chosen in (balanced, routing):
                scores = local_damage_scores(fuser, chosen, pairs, kind)
                cells.append(f"{scores['inside_ssim_ir']:.4f} / {scores['outside_ssim_vis']:.4f}")
                if fuser is model:
                    model_scores.append(scores)
        plain, steered = model_scores
        local = (steered["inside_ssim_ir"] > plain["inside_ssim_ir"]
                 and abs(steered["outside_ssim_vis"] - plain["outside_ssim_vis"]) <= 0.02)
        print(f"| {kind} | " + " | ".join(cells) + f" | {'yes' if local else 'NO'} |")

    print(f"\n## Thermal targets: warm-object contrast (prompt {THERMAL_PROMPT!r})\n")
    print("| input | infrared alone | classical | model balanced | model thermal prompt |")
    print("|---|---|---|---|---|")
    thermal = router.route(THERMAL_PROMPT)
    for label, samples in (("synthetic day, ground-truth masks (6 frames)", synthetic_frames("day")),
                           ("synthetic night, ground-truth masks (6 frames)", synthetic_frames("night")),
                           (f"{name}, IR hot mask (mean + 2 std)", [(ir, vis, hot_mask(ir)) for ir, vis in pairs])):
        scores = [np.mean([warm_object_contrast(ir, mask) for ir, _vis, mask in samples])]
        for fuser, routing in ((classical, None), (model, balanced), (model, thermal)):
            fuser.condition(routing)
            scores.append(np.mean([warm_object_contrast(fuser.fuse(ir, vis), mask) for ir, vis, mask in samples]))
        print(f"| {label} | " + " | ".join(f"{s:.2f}" for s in scores) + " |")

    print(f"\n## Visible detail: SSIM(fused, visible) on {name}, VIFB's SSIM (prompt {DETAIL_PROMPT!r})\n")
    detail = router.route(DETAIL_PROMPT)
    scores = []
    for fuser, routing in ((classical, None), (model, balanced), (model, detail)):
        fuser.condition(routing)
        # VIFB's Ssim sums SSIM over its two references; with the visible image as both it is 2 x SSIM(F, VIS)
        scores.append(np.mean([vifb.ssim(vis, vis, fuser.fuse(ir, vis)) / 2 for ir, vis in pairs]))
    print("| classical | model balanced | model visible-detail prompt |\n|---|---|---|")
    print("| " + " | ".join(f"{s:.4f}" for s in scores) + " |")

    if args.sheet:
        sheet_pairs = [(ir, cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY)) for ir, vis, _ in synthetic_frames("night")] \
            if args.sheet_synthetic else pairs
        write_sheet(args.sheet, sheet_pairs, model, classical, router)


def write_sheet(path: Path, pairs, model, classical, router) -> None:
    """Rows: clean pair, and each degradation; columns: IR, VIS, classical, model balanced, model matching."""
    ir, vis = pairs[min(4, len(pairs) - 1)]
    size = (240, int(240 * ir.shape[0] / ir.shape[1]))
    rows = []
    for kind in ("none", *MATCHING_PROMPTS):
        ir_in, vis_in = (ir, vis) if kind == "none" else degrade_pair(ir, vis, kind, seed=4)
        classical.condition(None)
        cells = [ir_in, vis_in, classical.fuse(ir_in, vis_in)]
        prompts = ["", THERMAL_PROMPT, DETAIL_PROMPT] if kind == "none" else ["", MATCHING_PROMPTS[kind]]
        for prompt in prompts:
            model.condition(router.route(prompt))
            cells.append(model.fuse(ir_in, vis_in))
        cells += [np.zeros_like(ir)] * (6 - len(cells))
        row = np.hstack([cv2.resize(c, size, interpolation=cv2.INTER_AREA) for c in cells])
        cv2.putText(row, kind, (5, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 255, 1)
        rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack(rows), [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"\nwrote {path}: rows clean + each degradation; columns IR, VIS, classical, model balanced, "
          "model matching prompt (clean row: balanced, thermal targets, visible detail)")


if __name__ == "__main__":
    main()
