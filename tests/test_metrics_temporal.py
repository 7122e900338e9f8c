"""Temporal flicker of fused video: exact values on constructed sequences, noise statistics, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamfuse.metrics.temporal import FlickerMeter, flicker, to_luma

SHAPE = (48, 64)


def scene(seed: int, frames: int, step: float = 0.0) -> list[np.ndarray]:
    """A random static texture brightened by ``step`` per frame (float64)."""
    base = np.random.default_rng(seed).uniform(20, 200, SHAPE)
    return [base + step * t for t in range(frames)]


@pytest.mark.parametrize("mode", ["interval", "nearest"])
def test_fused_equal_to_a_source_scores_zero(mode):
    ir = [np.random.default_rng(t).uniform(0, 255, SHAPE) for t in range(6)]  # changes wildly every frame
    vis = scene(1, 6, step=3.0)
    assert flicker(ir, vis, ir, mode=mode) == 0.0
    assert flicker(ir, vis, vis, mode=mode) == 0.0
    # Following IR in one half and VIS in the other is still explained pixel by pixel.
    mixed = [np.where(np.arange(SHAPE[1]) < 32, a, b) for a, b in zip(ir, vis, strict=True)]
    assert flicker(ir, vis, mixed, mode=mode) == 0.0


@pytest.mark.parametrize("mode", ["interval", "nearest"])
def test_static_scene_with_flickering_output(mode):
    # Sources never change (dI = dV = 0); fused alternates S + a, S - a: |dF| = 2a at every pixel of
    # every transition -> score 2a exactly, in both modes (the explained set is just {0}).
    ir, vis = scene(2, 7), scene(3, 7)
    a = 4.0
    fused = [0.5 * i + 0.5 * v + a * (-1) ** t for t, (i, v) in enumerate(zip(ir, vis, strict=True))]
    assert flicker(ir, vis, fused, mode=mode) == pytest.approx(2 * a, rel=1e-12)


def test_blend_scores_zero_with_interval_and_half_disagreement_with_nearest():
    # IR brightens by 10 per frame, VIS darkens by 6: dI = 10, dV = -6 everywhere.
    ir, vis = scene(4, 5, step=10.0), scene(5, 5, step=-6.0)
    fused = [0.5 * i + 0.5 * v for i, v in zip(ir, vis, strict=True)]
    # dF = 2 lies inside [-6, 10] -> interval residual 0.
    assert flicker(ir, vis, fused) == pytest.approx(0.0, abs=1e-9)
    # Nearest source: |2 - 10| = 8 = |2 - (-6)| -> 8 = |dI - dV| / 2.
    assert flicker(ir, vis, fused, mode="nearest") == pytest.approx(8.0, rel=1e-9)
    # Overshooting both sources: dF = 10 + 5 -> 5 beyond the interval, 5 from the nearest source (IR).
    overshoot = [i + 5.0 * t for t, i in enumerate(ir)]
    assert flicker(ir, vis, overshoot) == pytest.approx(5.0, rel=1e-9)
    assert flicker(ir, vis, overshoot, mode="nearest") == pytest.approx(5.0, rel=1e-9)


def test_random_flicker_raises_score_by_expected_amount():
    # IR alternates by +-100 (a legitimate source change), VIS is static, fused = IR + n_t with
    # n_t ~ N(0, s^2) i.i.d. per pixel and frame. Then dF - dI = n_t - n_{t-1} ~ N(0, 2 s^2), and
    # |dF - dV| = |+-100 + e| is always the farther one (e has sd 4.2, 50 is ~12 sd away), so:
    #   nearest:  E|N(0, 2 s^2)|          = sqrt(2) s * sqrt(2 / pi) = 2 s / sqrt(pi)
    #   interval: E max(0, +-e) (overshoot only) = half of that  = s / sqrt(pi)
    s = 3.0
    frames = 21
    rng = np.random.default_rng(6)
    base = rng.uniform(50, 150, SHAPE)
    ir = [base + 100.0 * (t % 2) for t in range(frames)]
    vis = [rng.uniform(0, 255, SHAPE)] * frames
    fused = [i + rng.normal(0.0, s, SHAPE) for i in ir]
    assert flicker(ir, vis, ir) == 0.0
    # 20 transitions x 3072 pixels: standard error ~0.3 %, tolerance 3 %.
    assert flicker(ir, vis, fused, mode="nearest") == pytest.approx(2 * s / math.sqrt(math.pi), rel=0.03)
    assert flicker(ir, vis, fused) == pytest.approx(s / math.sqrt(math.pi), rel=0.03)


def test_uint8_and_rgb_frames():
    # Gray uint8 frames are used as their values: dF = 7 on a static scene -> 7.
    ir = [np.full(SHAPE, 100, np.uint8)] * 3
    fused = [np.full(SHAPE, 100 + 7 * t, np.uint8) for t in range(3)]
    assert flicker(ir, ir, fused) == pytest.approx(7.0)
    # RGB frames become BT.601 luma: pure red 255 -> 0.299 * 255 = 76.245; pure blue -> 0.114 * 255.
    red = np.zeros((*SHAPE, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((*SHAPE, 3), np.uint8)
    blue[..., 2] = 255
    assert to_luma(red)[0, 0] == pytest.approx(76.245)
    black = np.zeros((*SHAPE, 3), np.uint8)
    # Static black sources, fused switching red -> blue: |dF| = 0.185 * 255 = 47.175.
    assert flicker([black] * 2, [black] * 2, [red, blue]) == pytest.approx((0.299 - 0.114) * 255)


def test_streaming_generators_and_meter():
    ir, vis = scene(7, 6, step=2.0), scene(8, 6)
    fused = [f + (5.0 if t == 3 else 0.0) for t, f in enumerate(ir)]
    # dI = 2, dV = 0: explained interval [0, 2]. Transition 2->3 has dF = 2 + 5 = 7 (5 above the
    # interval), 3->4 has dF = 2 - 5 = -3 (3 below) -> 0, 0, 5, 3, 0 -> mean 8 / 5 = 1.6.
    assert flicker(iter(ir), (v for v in vis), map(np.asarray, fused)) == pytest.approx(1.6)
    meter = FlickerMeter()
    assert meter.frames == 0 and math.isnan(meter.value) and math.isnan(meter.last)
    per_transition = [meter.update(i, v, f) for i, v, f in zip(ir, vis, fused, strict=True)]
    assert math.isnan(per_transition[0])
    assert per_transition[1:] == pytest.approx([0.0, 0.0, 5.0, 3.0, 0.0])
    assert meter.frames == 6 and meter.transitions == 5
    assert meter.value == pytest.approx(1.6) and meter.last == 0.0
    meter.reset()
    assert meter.frames == 0 and math.isnan(meter.value)


def test_validation_errors():
    one = [np.zeros(SHAPE)]
    with pytest.raises(ValueError, match="at least 2 frames, got 1"):
        flicker(one, one, one)
    with pytest.raises(ValueError, match="at least 2 frames, got 0"):
        flicker([], [], [])
    three, two = [np.zeros(SHAPE)] * 3, [np.zeros(SHAPE)] * 2
    with pytest.raises(ValueError, match="unequal lengths: fused_frames"):
        flicker(three, three, two)
    with pytest.raises(ValueError, match="unequal lengths: ir_frames, vis_frames"):
        flicker(two, two, three)
    with pytest.raises(ValueError, match=r"sizes differ.*64x48.*65x48"):
        flicker(three, three, [np.zeros((48, 65))] * 3)
    with pytest.raises(ValueError, match=r"size changed from 64x48 to 32x24"):
        resized = [np.zeros(SHAPE), np.zeros((24, 32))]
        flicker(resized, resized, resized)
    with pytest.raises(ValueError, match="mode"):
        FlickerMeter(mode="median")
    with pytest.raises(ValueError, match="shape"):
        to_luma(np.zeros((4, 4, 2)))
