"""Synthetic degradations: each one has the physical effect it claims, measured on the output."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from streamfuse.text.prompts import load_bank
from streamfuse.train.degrade import DEGRADATIONS, INTENT_DEGRADATION, degrade, degrade_for_intent

SEEDS = (0, 1, 2, 3, 4)


def textured(seed: int, shape: tuple[int, int] = (120, 160)) -> np.ndarray:
    """A mid-grey plane with texture everywhere (blurred noise plus a few hard-edged blocks)."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.random(shape, dtype=np.float32), (0, 0), 1.5)
    image = (image - image.mean()) / image.std() * 0.12 + 0.5
    for _ in range(6):
        top, left = rng.integers(0, shape[0] - 20), rng.integers(0, shape[1] - 20)
        image[top:top + 20, left:left + 20] += rng.uniform(-0.2, 0.2)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    return textured(100), textured(200)


def highpass_std(image: np.ndarray) -> float:
    """Standard deviation of the detail left after removing a 5x5 box mean (local contrast)."""
    image = image.astype(np.float32)
    return float((image - cv2.blur(image, (5, 5))).std())


def laplacian_energy(image: np.ndarray) -> float:
    """Mean squared Laplacian: high-frequency energy."""
    return float(np.mean(cv2.Laplacian(image.astype(np.float32), cv2.CV_32F) ** 2))


@pytest.mark.parametrize("kind", DEGRADATIONS)
def test_contract_dtype_range_shape_and_purity(kind, pair):
    ir, vis = pair
    ir_before, vis_before = ir.copy(), vis.copy()
    for seed in SEEDS:
        out_ir, out_vis = degrade(ir, vis, kind, np.random.default_rng(seed))
        for out, source in ((out_ir, ir), (out_vis, vis)):
            assert out.dtype == np.float32 and out.shape == source.shape
            assert out is not source and not np.shares_memory(out, source)
            assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_array_equal(ir, ir_before)
    np.testing.assert_array_equal(vis, vis_before)


@pytest.mark.parametrize("kind", DEGRADATIONS)
def test_deterministic_for_a_seed(kind, pair):
    first = degrade(*pair, kind, np.random.default_rng(7))
    second = degrade(*pair, kind, np.random.default_rng(7))
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    fixed = [degrade(*pair, kind, np.random.default_rng(3), strength=0.5) for _ in range(2)]
    for a, b in zip(*fixed, strict=True):
        np.testing.assert_array_equal(a, b)
    if kind != "none":
        other = degrade(*pair, kind, np.random.default_rng(8))
        assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_none_returns_equal_copies(pair):
    ir, vis = pair
    out_ir, out_vis = degrade(ir, vis, "none", np.random.default_rng(0))
    np.testing.assert_array_equal(out_ir, ir)
    np.testing.assert_array_equal(out_vis, vis)
    assert out_ir is not ir and out_vis is not vis


def test_low_light_darkens_visible_strongly_and_keeps_ir(pair):
    ir, vis = pair
    for seed in SEEDS:
        out_ir, out_vis = degrade(ir, vis, "low_light", np.random.default_rng(seed))
        np.testing.assert_array_equal(out_ir, ir)
        assert out_vis.mean() < 0.4 * vis.mean()
        # 8-bit camera output: every value is one of 256 levels.
        np.testing.assert_allclose(out_vis * 255.0, np.round(out_vis * 255.0), atol=1e-3)
    mild = degrade(ir, vis, "low_light", np.random.default_rng(0), strength=0.0)[1]
    severe = degrade(ir, vis, "low_light", np.random.default_rng(0), strength=1.0)[1]
    assert severe.mean() < 0.1 * vis.mean() < mild.mean()


def test_low_light_noise_is_signal_dependent():
    """Shot noise: a brighter flat patch ends up noisier than a darker one (beyond the read noise floor)."""
    vis = np.full((200, 200), 0.3, dtype=np.float32)
    vis[:, 100:] = 1.0
    out = degrade(np.zeros_like(vis), vis, "low_light", np.random.default_rng(0), strength=1.0)[1]
    assert out[:, 100:].std() > 1.3 * out[:, :100].std()


def test_fog_lowers_contrast_more_at_the_top_and_keeps_ir(pair):
    ir, vis = pair
    third = vis.shape[0] // 3
    for seed in SEEDS:
        out_ir, out_vis = degrade(ir, vis, "fog", np.random.default_rng(seed))
        np.testing.assert_array_equal(out_ir, ir)
        top = highpass_std(out_vis[:third]) / highpass_std(vis[:third])
        bottom = highpass_std(out_vis[-third:]) / highpass_std(vis[-third:])
        assert top < 0.75 * bottom
        assert bottom < 1.0
    dense = degrade(ir, vis, "fog", np.random.default_rng(0), strength=1.0)[1]
    assert highpass_std(dense[:third]) < 0.15 * highpass_std(vis[:third])


def test_glare_adds_saturated_blooms_and_keeps_ir(pair):
    ir, vis = pair
    assert (vis >= 0.999).mean() < 0.01
    for seed in SEEDS:
        out_ir, out_vis = degrade(ir, vis, "glare", np.random.default_rng(seed))
        np.testing.assert_array_equal(out_ir, ir)
        assert out_vis.max() == 1.0
        assert (out_vis >= 0.999).mean() > (vis >= 0.999).mean() + 0.0005
        assert out_vis.mean() > vis.mean() + 0.005
        # Veiling glare lifts the darkest parts of the image everywhere.
        assert np.percentile(out_vis, 1) > np.percentile(vis, 1) + 0.01


def test_noise_raises_high_frequency_energy_of_both(pair):
    ir, vis = pair
    for seed in SEEDS:
        out_ir, out_vis = degrade(ir, vis, "noise", np.random.default_rng(seed))
        assert laplacian_energy(out_ir) > 1.2 * laplacian_energy(ir)
        assert laplacian_energy(out_vis) > 1.2 * laplacian_energy(vis)


def test_noise_puts_column_stripes_on_the_thermal_image():
    flat = np.full((256, 256), 0.5, dtype=np.float32)
    out_ir = degrade(flat, flat, "noise", np.random.default_rng(0), strength=1.0)[0]
    residual = out_ir - flat
    column_spread = residual.mean(axis=0).std()
    row_spread = residual.mean(axis=1).std()
    # Pure temporal noise would give both spreads ~ sigma / sqrt(256); the fixed pattern is per column.
    assert column_spread > 4.0 * row_spread


def test_low_contrast_thermal_compresses_ir_and_keeps_visible(pair):
    ir, vis = pair
    for seed in SEEDS:
        out_ir, out_vis = degrade(ir, vis, "low_contrast_thermal", np.random.default_rng(seed))
        np.testing.assert_array_equal(out_vis, vis)
        assert 0.13 < out_ir.std() / ir.std() < 0.45
        assert abs(out_ir.mean() - ir.mean()) <= 0.06
    for strength, factor in ((0.0, 0.4), (1.0, 0.15)):
        out_ir = degrade(ir, vis, "low_contrast_thermal", np.random.default_rng(0), strength=strength)[0]
        assert out_ir.std() / ir.std() == pytest.approx(factor, abs=0.03)


@pytest.mark.parametrize("kind", [k for k in DEGRADATIONS if k != "none"])
def test_strength_orders_severity(kind, pair):
    """At strength 1 the degraded image moves further from the clean one than at strength 0."""
    ir, vis = pair
    distances = []
    for strength in (0.0, 1.0):
        out_ir, out_vis = degrade(ir, vis, kind, np.random.default_rng(0), strength=strength)
        distances.append(np.abs(out_ir - ir).mean() + np.abs(out_vis - vis).mean())
    assert distances[1] > distances[0] > 0.0


def test_float64_inputs_give_float32(pair):
    ir, vis = (a.astype(np.float64) for a in pair)
    out = degrade(ir, vis, "fog", np.random.default_rng(0))
    assert all(o.dtype == np.float32 for o in out)


def test_bad_arguments_raise(pair):
    ir, vis = pair
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="rain"):
        degrade(ir, vis, "rain", rng)
    with pytest.raises(ValueError, match="strength"):
        degrade(ir, vis, "fog", rng, strength=1.5)
    with pytest.raises(ValueError, match="same shape"):
        degrade(ir, vis[:, :10], "fog", rng)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        degrade(ir[None], vis[None], "fog", rng)


def test_degrade_for_intent_maps_intents(pair):
    ir, vis = pair
    for intent, kind in INTENT_DEGRADATION.items():
        by_intent = degrade_for_intent(ir, vis, intent, np.random.default_rng(5), strength=0.5)
        by_kind = degrade(ir, vis, kind, np.random.default_rng(5), strength=0.5)
        for a, b in zip(by_intent, by_kind, strict=True):
            np.testing.assert_array_equal(a, b)
    for unknown in ("sunny", "mri_ct"):
        with pytest.raises(ValueError, match=unknown):
            degrade_for_intent(ir, vis, unknown, np.random.default_rng(0))


def test_intent_mapping_matches_the_prompt_bank_recipes():
    bank = load_bank()
    for intent, kind in INTENT_DEGRADATION.items():
        assert bank.intent(intent).recipe["degradation"] == kind
        assert kind in DEGRADATIONS
