from __future__ import annotations

import logging
import threading
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from conftest import make_pair
from streamfuse.config import FusionConfig
from streamfuse.errors import ConfigError
from streamfuse.fusers import ClassicalFuser, build_fuser, fuse_luminance


def scene(size=(128, 96)):
    """Visible: textured, a dark person-sized patch hidden in shadow; thermal: the same patch hot."""
    width, height = size
    rng = np.random.default_rng(0)
    vis_y = cv2.GaussianBlur(rng.integers(40, 200, (height, width)).astype(np.uint8), (3, 3), 0)
    vis_y[30:70, 50:70] = 35
    ir = np.full((height, width), 70, np.uint8)
    ir[30:70, 50:70] = 240
    vis = cv2.cvtColor(vis_y, cv2.COLOR_GRAY2BGR)
    vis[:, :, 2] = np.clip(vis[:, :, 2].astype(int) + 40, 0, 255)  # a red cast to check chroma
    return ir, vis


def test_output_matches_visible_size_and_type():
    ir, vis = scene()
    fused = ClassicalFuser().fuse(ir, vis)
    assert fused.shape == vis.shape and fused.dtype == np.uint8
    gray = ClassicalFuser().fuse(ir, vis[:, :, 0])
    assert gray.shape == vis.shape[:2]


def test_hot_target_becomes_visible_and_visible_texture_survives():
    ir, vis = scene()
    fused = cv2.cvtColor(ClassicalFuser().fuse(ir, vis), cv2.COLOR_BGR2GRAY).astype(float)
    vis_y = cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY).astype(float)
    target = fused[35:65, 55:65].mean()
    surround = np.concatenate([fused[30:70, 30:45].ravel(), fused[30:70, 75:90].ravel()]).mean()
    assert target - surround > 40  # the hidden person now stands out
    outside = np.s_[:, :40]  # far from the target, the visible texture dominates
    correlation = np.corrcoef(fused[outside].ravel(), vis_y[outside].ravel())[0, 1]
    assert correlation > 0.8


def test_a_lit_window_at_night_leaves_no_dark_patch_on_a_thermal_facade():
    """The base choice follows the visible base's edges (and the thermal base's): the window is the
    visible image's, the facade around it stays the thermal image's (salience alone spread the dark
    visible base around each window)."""
    rng = np.random.default_rng(0)
    ir = 0.5 + cv2.GaussianBlur(rng.normal(0, 0.02, (256, 256)).astype(np.float32), (0, 0), 2)
    ir[:40], ir[:, :30] = 0.12, 0.12  # a warm facade under a cold sky
    vis = np.full((256, 256), 0.04, np.float32)  # night: dark but for three lit windows
    windows = [(60, 60), (60, 180), (170, 120)]
    ring = np.zeros(vis.shape, bool)
    for y, x in windows:
        vis[y:y + 12, x:x + 12] = 0.9
        ring[y - 20:y + 32, x - 20:x + 32] = True
    for y, x in windows:
        ring[y - 4:y + 16, x - 4:x + 16] = False
    ir8, vis8 = (np.round(np.clip(image, 0, 1) * 255).astype(np.uint8) for image in (ir, vis))
    fused = fuse_luminance(ir8, vis8).astype(float)
    assert np.percentile(fused[ring], 1) > 0.85 * ir8[ring].mean()  # 115 against 127 (79 before)
    assert min(fused[y + 3:y + 9, x + 3:x + 9].mean() for y, x in windows) > 190


def test_a_warm_person_hidden_in_a_dark_region_shows_at_full_brightness_without_a_glow():
    """The base choice follows the thermal base's edges too: guided by the flat dark visible base alone,
    the person's thermal base was box-blurred over the region (a glow around him, the person dimmed)."""
    rng = np.random.default_rng(0)
    ir = np.full((256, 320), 0.45, np.float32)
    ir[100:] = 0.5
    ir[110:180, 150:170] = 0.95  # a warm person in the dark lower half
    vis = np.full((256, 320), 0.2, np.float32)
    vis[:100] = 0.7 + cv2.GaussianBlur(rng.normal(0, 0.1, (100, 320)).astype(np.float32), (0, 0), 1.5)
    ir8, vis8 = (np.round(np.clip(image + rng.normal(0, 0.01, image.shape), 0, 1) * 255).astype(np.uint8)
                 for image in (ir, vis))
    fused = fuse_luminance(ir8, vis8).astype(float)
    beside = np.concatenate([fused[120:170, 115:145].ravel(), fused[120:170, 175:205].ravel()]).mean()
    far = fused[120:170, 20:60].mean()
    assert beside - far < 10, (beside, far)  # 7 (16 guided by the visible base alone)
    assert fused[120:170, 154:166].mean() > 220  # 241 (165 before)


def test_a_field_smooth_in_both_images_gets_no_patch():
    """A dark thermal field with two warm roads (which raise its frame mean) under a visible field that
    brightens to the right: the visible base's salience passes through zero along the field, so the base
    choice flips there, which drew a dark patch neither image has (v5.5: the middle of the field at 39
    grey levels between 110 and 170). Its steps are taken out of the fused base (rule.base_step_correction)."""
    height, width = 256, 320
    ir = np.full((height, width), 0.1, np.float32)
    for x in (40, 280):
        ir[:, x:x + 6] = 0.9
    vis = np.tile(np.linspace(0.35, 0.85, width, dtype=np.float32), (height, 1))
    rng = np.random.default_rng(0)
    ir8, vis8 = (np.round(np.clip(image + rng.normal(0, 0.005, image.shape), 0, 1) * 255).astype(np.uint8)
                 for image in (ir, vis))
    field = cv2.blur(fuse_luminance(ir8, vis8).astype(np.float32), (9, 9))[40:-40, 70:270]
    assert np.abs(np.diff(field[:, ::4], axis=1)).max() < 6  # 3.5 (v5.5: 11.9; the visible ramp alone 1.6)
    row = field[88]
    assert row.min() > row[0] - 10, row[::20].round()  # no dip below the field's darker end (v5.5: 59 below)


def test_fog_over_one_side_leaves_the_other_sides_thermal_facade_alone():
    """Bright damage on the left raises the visible frame mean; the undamaged right must keep the base it
    has without the damage (against the frame mean alone its dark visible base became "salient")."""
    rng = np.random.default_rng(0)
    ir = 0.45 + cv2.GaussianBlur(rng.normal(0, 0.02, (256, 384)).astype(np.float32), (0, 0), 2)
    ir[:60] = 0.12  # a warm facade under a cold sky
    vis = 0.05 + cv2.GaussianBlur(rng.normal(0, 0.01, (256, 384)).astype(np.float32), (0, 0), 1)
    for y in (90, 170):
        for x in range(20, 384, 60):
            vis[y:y + 14, x:x + 10] = 0.85  # lit windows at night
    fogged = vis.copy()
    fogged[:, :140] = 0.8 + 0.05 * vis[:, :140]
    ir8, vis8, fogged8 = (np.round(np.clip(image, 0, 1) * 255).astype(np.uint8) for image in (ir, vis, fogged))
    right = np.s_[70:250, 260:]
    clean, foggy = (fuse_luminance(ir8, v)[right].astype(float) for v in (vis8, fogged8))
    assert clean.mean() > 0.95 * ir8[right].mean()
    assert np.abs(foggy - clean).mean() < 3, np.abs(foggy - clean).mean()


def test_chroma_comes_from_the_visible_image():
    ir, vis = scene()
    fused = ClassicalFuser().fuse(ir, vis)
    fused_cr = cv2.cvtColor(fused, cv2.COLOR_BGR2YCrCb)[:, :, 1].astype(int)
    vis_cr = cv2.cvtColor(vis, cv2.COLOR_BGR2YCrCb)[:, :, 1].astype(int)
    assert np.abs(fused_cr - vis_cr)[:, :40].mean() < 3


def test_invalid_area_follows_visible():
    ir, vis = scene()
    valid = np.ones(ir.shape, np.uint8)
    valid[:, 64:] = 0
    vis_y = vis[:, :, 0]
    fused = fuse_luminance(ir, vis_y, valid)
    assert np.abs(fused[:, 80:].astype(int) - vis_y[:, 80:].astype(int)).mean() < 2
    assert np.abs(fuse_luminance(ir, vis_y)[:, 80:].astype(int) - vis_y[:, 80:].astype(int)).mean() > 2


def test_identical_inputs_are_reproduced():
    _, vis = scene()
    y = vis[:, :, 0]
    assert np.abs(fuse_luminance(y, y).astype(int) - y.astype(int)).max() <= 1


@pytest.mark.parametrize("size", [(17, 9), (1, 1), (2, 3), (121, 6)])
def test_tiny_and_odd_sizes(size):
    ir, vis = make_pair(0, size)
    assert ClassicalFuser().fuse(ir, vis).shape == vis.shape


def test_batch_preserves_order_and_validates():
    pairs = [make_pair(i) for i in range(4)]
    fuser = ClassicalFuser()
    batch = fuser.fuse_batch([p[0] for p in pairs], [p[1] for p in pairs])
    for (ir, vis), out in zip(pairs, batch, strict=True):
        assert np.array_equal(out, fuser.fuse(ir, vis))
    with pytest.raises(ValueError, match="infrared frame is 64x48 but visible frame is 32x24"):
        fuser.fuse(pairs[0][0], cv2.resize(pairs[0][1], (32, 24)))
    with pytest.raises(ValueError, match="uint8"):
        fuser.fuse(pairs[0][0].astype(np.float32), pairs[0][1])



@pytest.mark.parametrize(("ir", "vis", "message"), [
    (None, np.zeros((8, 8, 3), np.uint8), "the infrared frame must be a numpy array, got NoneType"),
    (np.zeros((8, 8), np.uint8), np.zeros((0, 8, 3), np.uint8), "the visible frame is empty"),
    (np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), "the visible frame has 4 channels (BGRA)"),
    (np.zeros((8, 8, 2), np.uint8), np.zeros((8, 8), np.uint8), "must be gray (H, W) or BGR (H, W, 3), got shape"),
])
def test_a_frame_a_fuser_cannot_take_is_one_value_error_naming_it(ir, vis, message):
    """From code: a None, an empty array or a (H, W, 1) visible frame gave an AttributeError or a multi-line
    cv2.error, and BGRA was taken without a word."""
    with pytest.raises(ValueError) as raised:
        ClassicalFuser().fuse(ir, vis)
    assert message in str(raised.value)


def test_single_channel_frames_and_a_mask_of_another_size():
    ir, vis = make_pair(2)
    gray = cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY)
    fuser = ClassicalFuser()
    assert np.array_equal(fuser.fuse(ir[:, :, None], gray[:, :, None]), fuser.fuse(ir, gray))
    with pytest.raises(ValueError, match=r"the valid mask is \(4, 4\); expected one value per pixel, \(48, 64\)"):
        fuser.fuse(ir, vis, np.ones((4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"the valid mask is \(48, 64, 3\)"):  # was numpy's broadcast error
        fuser.fuse(ir, vis, np.ones((48, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="map 16-bit thermal frames to 8 bits first: streamfuse.gain.AutoGain"):
        fuser.fuse(ir.astype(np.uint16) * 200, vis)


def test_bgr_infrared_is_reduced_to_luminance():
    ir, vis = make_pair(3)
    fuser = ClassicalFuser()
    assert np.array_equal(fuser.fuse(cv2.cvtColor(ir, cv2.COLOR_GRAY2BGR), vis), fuser.fuse(ir, vis))


def test_unknown_fuser_is_a_config_error():
    with pytest.raises(ConfigError, match="fusion.fuser: unknown fuser 'magic' \\(available: model, classical"):
        build_fuser(FusionConfig(fuser="magic"))


def test_a_gpu_device_for_the_classical_fuser_is_warned_about(caplog):
    with caplog.at_level(logging.WARNING):
        build_fuser(FusionConfig(fuser="classical", device="cuda"))
    assert "fusion.device=cuda has no effect: the classical fuser runs on the CPU" in caplog.text


def frame_pair(ir: np.ndarray, vis: np.ndarray) -> SimpleNamespace:
    """What ``Fuser.submit`` reads of a pipeline's frame pair: the two images and no validity mask."""
    return SimpleNamespace(ir=SimpleNamespace(image=ir), vis=SimpleNamespace(image=vis), valid=None)


def test_submitted_pairs_are_fused_side_by_side_in_order_each_with_the_prompt_it_was_submitted_with():
    pairs = [make_pair(i, (160, 120)) for i in range(8)]
    glare, thermal = SimpleNamespace(weights={"glare": 1.0}), SimpleNamespace(weights={"thermal_targets": 1.0})
    routings = [None] * 3 + [thermal] * 3 + [glare] * 2
    fuser = ClassicalFuser(threads=2)
    assert fuser.max_in_flight(live=False) == 1  # not started: submit fuses at once
    fuser.start()
    assert fuser.max_in_flight(live=False) == 2 and fuser.max_in_flight(live=True) == 1
    futures = [fuser.submit(frame_pair(ir, vis), routing) for (ir, vis), routing in zip(pairs, routings, strict=True)]
    results = [future.result(timeout=30) for future in futures]
    threads = {name for name in (t.name for t in threading.enumerate()) if name.startswith("classical-fuse")}
    fuser.close()
    assert threads and not [t for t in threading.enumerate() if t.name.startswith("classical-fuse")]
    for (ir, vis), routing, result in zip(pairs, routings, results, strict=True):
        alone = ClassicalFuser()
        alone.condition(routing)
        assert np.array_equal(result, alone.fuse(ir, vis))
    assert not np.array_equal(results[3], ClassicalFuser().fuse(*pairs[3]))  # the prompt changed the output


def test_on_a_live_feed_the_classical_fuser_fuses_each_pair_at_once_on_the_callers_thread():
    ir, vis = make_pair(0)
    fuser = ClassicalFuser(threads=2)
    fuser.start(live=True)
    assert fuser.max_in_flight(live=True) == 1
    future = fuser.submit(frame_pair(ir, vis), None)
    assert future.done() and np.array_equal(future.result(), ClassicalFuser().fuse(ir, vis))
    assert not [t for t in threading.enumerate() if t.name.startswith("classical-fuse")]
    fuser.close()
