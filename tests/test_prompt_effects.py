"""Regression guard: the shipped model must follow prompts in the directions the model card reports."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import shared_data
from streamfuse.config import FusionConfig, SyntheticConfig
from streamfuse.evaluation import (
    MATCHING_PROMPTS,
    hot_mask,
    local_damage_scores,
    restoration_scores,
    warm_object_contrast,
)
from streamfuse.fusers import build_fuser
from streamfuse.metrics import vifb
from streamfuse.sources.synthetic import build_scene
from streamfuse.text import HashingTextEncoder, Router, load_bank


@pytest.fixture(scope="module")
def router() -> Router:
    return Router(HashingTextEncoder(), load_bank())


@pytest.fixture(scope="module")
def model():
    return build_fuser(FusionConfig(fuser="model"))


def load_tno(names) -> list[tuple[np.ndarray, np.ndarray]]:
    folder = shared_data("tno_cddfuse")
    return [(cv2.imread(str(folder / "ir" / f"{name}.png"), cv2.IMREAD_GRAYSCALE),
             cv2.imread(str(folder / "vi" / f"{name}.png"), cv2.IMREAD_GRAYSCALE)) for name in names]


@pytest.fixture(scope="module")
def tno_pairs():
    return load_tno(("03", "07", "13"))


@pytest.fixture(scope="module")
def all_tno_pairs():
    return load_tno(f"{i:02d}" for i in range(1, 26))


def synthetic_pairs(time_of_day: str, count: int = 4):
    scene = build_scene(SyntheticConfig(width=320, height=256, seed=5, time_of_day=time_of_day, people=6))
    return [(scene.render_ir(t), scene.render_vis(t), (scene.object_mask(t) > 0).astype(np.uint8))
            for t in np.linspace(0.0, 3.0, count)]


@pytest.mark.parametrize("kind", MATCHING_PROMPTS)
def test_matching_prompt_restores_degraded_inputs_better(model, router, tno_pairs, all_tno_pairs, kind):
    # The noise and low-contrast-thermal prompts are decided by thin margins on the 25-pair mean
    # (docs/model.md), which three pairs do not settle: they are checked on all 25.
    pairs = all_tno_pairs if kind in ("noise", "low_contrast_thermal") else tno_pairs
    balanced = restoration_scores(model, router.route(""), pairs, kind)
    matching = restoration_scores(model, router.route(MATCHING_PROMPTS[kind]), pairs, kind)
    assert matching["Qabf"] > balanced["Qabf"] and matching["Ssim"] > balanced["Ssim"], (balanced, matching)


@pytest.mark.parametrize("kind", ["glare", "fog"])
def test_damage_prompts_act_where_the_damage_is(model, router, tno_pairs, kind):
    balanced = local_damage_scores(model, router.route(""), tno_pairs, kind)
    matching = local_damage_scores(model, router.route(MATCHING_PROMPTS[kind]), tno_pairs, kind)
    assert matching["inside_ssim_ir"] > balanced["inside_ssim_ir"], (balanced, matching)
    assert abs(matching["outside_ssim_vis"] - balanced["outside_ssim_vis"]) <= 0.02, (balanced, matching)


def test_thermal_prompt_raises_warm_object_contrast_on_the_synthetic_scene(model, router):
    def contrast(prompt: str, samples) -> float:
        model.condition(router.route(prompt))
        return float(np.mean([warm_object_contrast(model.fuse(ir, vis), mask) for ir, vis, mask in samples]))

    day, night = synthetic_pairs("day"), synthetic_pairs("night")
    # +9.9 with the prompt routed to thermal_targets alone (+10.x when the old router also gave glare 0.05)
    assert contrast("highlight people and vehicles", day) > contrast("", day) + 9
    # At night the dark visible image gives the balanced output the people at (or above) thermal contrast
    # already; the prompt must keep at least the thermal camera's own contrast.
    thermal_camera = float(np.mean([warm_object_contrast(ir, mask) for ir, _vis, mask in night]))
    assert contrast("highlight people and vehicles", night) > thermal_camera - 1.0


def test_thermal_prompt_raises_warm_object_contrast_on_tno(model, router, tno_pairs):
    def contrast(prompt: str) -> float:
        model.condition(router.route(prompt))
        return float(np.mean([warm_object_contrast(model.fuse(ir, vis), hot_mask(ir)) for ir, vis in tno_pairs]))

    assert contrast("highlight people and vehicles") > contrast("")


def test_visible_detail_prompt_is_closer_to_the_visible_image(model, router, tno_pairs):
    def similarity(prompt: str) -> float:
        model.condition(router.route(prompt))
        return float(np.mean([vifb.ssim(vis, vis, model.fuse(ir, vis)) / 2 for ir, vis in tno_pairs]))

    assert similarity("keep the road markings and signs readable") > similarity("")
