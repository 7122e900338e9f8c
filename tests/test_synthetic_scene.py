"""Tests of the synthetic infrared + visible street scene."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from streamfuse.sources.synthetic_scene import SyntheticScene

W, H = 640, 512
TIMES = (0.0, 2.5, 5.0)

# A small misalignment of a half-resolution IR camera: scale ~2.05, 3 degree roll, (12, -8) px shift.
_ANGLE = np.deg2rad(3.0)
_LINEAR = 2.05 * np.array([[np.cos(_ANGLE), -np.sin(_ANGLE)], [np.sin(_ANGLE), np.cos(_ANGLE)]])
MISALIGNED = np.eye(3)
MISALIGNED[:2, :2] = _LINEAR
MISALIGNED[:2, 2] = np.array([W / 2 + 12.0, H / 2 - 8.0]) - _LINEAR @ np.array([160.0, 128.0])


def luminance(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)


def relative_chroma(bgr: np.ndarray) -> float:
    """Mean spread between the colour channels relative to the mean brightness: 0 for grey images."""
    channels = bgr.astype(np.float32)
    return float((channels.max(axis=2) - channels.min(axis=2)).mean() / channels.max(axis=2).mean())


def mean_abs_diff(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    diff = np.abs(a.astype(np.float32) - b.astype(np.float32))
    return float(diff.mean() if where is None else diff[where].mean())


def digest(scene: SyntheticScene, t: float) -> str:
    frames = (scene.render_vis(t), scene.render_ir(t), scene.object_mask(t))
    return hashlib.sha256(b"".join(frame.tobytes() for frame in frames)).hexdigest()


@pytest.fixture(scope="module")
def scene() -> SyntheticScene:
    return SyntheticScene()


@pytest.fixture(scope="module")
def empty_scene() -> SyntheticScene:
    """The same street as ``scene`` without any moving object."""
    return SyntheticScene(people=0, vehicles=0)


def test_default_shapes_and_dtypes(scene: SyntheticScene) -> None:
    assert (scene.width, scene.height, scene.ir_width, scene.ir_height) == (W, H, W, H)
    vis, ir, mask = scene.render_vis(0.5), scene.render_ir(0.5), scene.object_mask(0.5)
    assert vis.shape == (H, W, 3) and vis.dtype == np.uint8
    assert ir.shape == (H, W) and ir.dtype == np.uint8
    assert mask.shape == (H, W) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1, 2}
    assert scene.ir_to_vis.dtype == np.float64
    np.testing.assert_array_equal(scene.ir_to_vis, np.eye(3))
    assert not scene.ir_to_vis.flags.writeable


def test_smaller_ir_camera_shapes_and_scale_homography() -> None:
    scene = SyntheticScene(ir_size=(320, 256))
    assert (scene.ir_width, scene.ir_height) == (320, 256)
    assert scene.render_vis(1.0).shape == (H, W, 3)
    ir = scene.render_ir(1.0)
    assert ir.shape == (256, 320) and ir.dtype == np.uint8
    assert scene.object_mask(1.0).shape == (H, W)
    np.testing.assert_allclose(scene.ir_to_vis, np.diag([2.0, 2.0, 1.0]))


def test_other_visible_size() -> None:
    scene = SyntheticScene(320, 240, people=6, vehicles=3)
    assert scene.render_vis(3.0).shape == (240, 320, 3)
    assert scene.render_ir(3.0).shape == (240, 320)
    assert scene.object_mask(3.0).shape == (240, 320)


def test_same_arguments_give_identical_frames() -> None:
    kwargs = dict(seed=3, time_of_day="night", fog=0.4, noise=0.5, ir_size=(320, 256), ir_homography=MISALIGNED)
    a, b = SyntheticScene(**kwargs), SyntheticScene(**kwargs)
    for t in (0.0, 1.7, 12.34):
        np.testing.assert_array_equal(a.render_vis(t), b.render_vis(t))
        np.testing.assert_array_equal(a.render_ir(t), b.render_ir(t))
        np.testing.assert_array_equal(a.object_mask(t), b.object_mask(t))
    np.testing.assert_array_equal(a.render_vis(1.7), a.render_vis(1.7))  # rendering leaves no state behind


def test_frames_are_identical_across_processes() -> None:
    code = (
        "from streamfuse.sources.synthetic_scene import SyntheticScene\n"
        "from tests.test_synthetic_scene import digest\n"
        "print(digest(SyntheticScene(seed=5, fog=0.3, noise=0.4), 2.2))"
    )
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(root), os.environ.get("PYTHONPATH")))))
    result = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == digest(SyntheticScene(seed=5, fog=0.3, noise=0.4), 2.2)


def test_different_seed_gives_different_scene(scene: SyntheticScene) -> None:
    other = SyntheticScene(seed=1)
    assert mean_abs_diff(scene.render_vis(0.0), other.render_vis(0.0)) > 5
    assert mean_abs_diff(scene.render_ir(0.0), other.render_ir(0.0)) > 5
    assert not np.array_equal(scene.object_mask(0.0), other.object_mask(0.0))


def test_objects_move_and_mask_is_not_empty(scene: SyntheticScene) -> None:
    before, after = scene.object_mask(0.0), scene.object_mask(1.0)
    assert np.count_nonzero(before == 1) > 300 and np.count_nonzero(before == 2) > 1000
    changed = np.count_nonzero(before != after)
    assert changed > 0.3 * np.count_nonzero(before)
    assert not np.array_equal(scene.render_ir(0.0), scene.render_ir(1.0))
    assert not np.array_equal(scene.render_vis(0.0), scene.render_vis(1.0))


def test_no_objects_gives_empty_mask(empty_scene: SyntheticScene) -> None:
    assert not empty_scene.object_mask(4.0).any()
    np.testing.assert_array_equal(empty_scene.render_vis(0.0), empty_scene.render_vis(4.0))


def test_mask_matches_the_drawn_objects(scene: SyntheticScene, empty_scene: SyntheticScene) -> None:
    for t in TIMES:
        mask = scene.object_mask(t) > 0
        changed = np.any(scene.render_vis(t) != empty_scene.render_vis(t), axis=2)
        near_objects = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        assert not np.any(changed & ~near_objects), "pixels changed away from the objects of the mask"
        assert changed[mask].mean() > 0.95


@pytest.mark.parametrize(
    ("kwargs", "min_ratio"),
    [
        ({}, 1.5),
        ({"time_of_day": "night"}, 5.0),
        ({"fog": 0.8}, 2.5),
        ({"time_of_day": "night", "fog": 0.5}, 8.0),
    ],
)
def test_people_are_more_salient_in_ir_than_in_visible(kwargs: dict, min_ratio: float) -> None:
    with_people = SyntheticScene(vehicles=0, **kwargs)
    without = SyntheticScene(people=0, vehicles=0, **kwargs)
    ir_contrast, vis_contrast = [], []
    for t in TIMES:
        person = with_people.object_mask(t) == 1
        assert person.sum() > 300
        ir_contrast.append(mean_abs_diff(with_people.render_ir(t), without.render_ir(t), person))
        vis_contrast.append(
            mean_abs_diff(luminance(with_people.render_vis(t)), luminance(without.render_vis(t)), person)
        )
    assert np.mean(ir_contrast) > 60  # warm people stand out of the thermal background
    assert np.mean(ir_contrast) > min_ratio * np.mean(vis_contrast)


def test_people_are_bright_in_ir(scene: SyntheticScene) -> None:
    ir, person = scene.render_ir(2.5), scene.object_mask(2.5) == 1
    core = cv2.erode(person.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert np.median(ir[core]) > 190
    assert np.median(ir[~person]) < 140


def test_night_is_dark_and_colourless_in_visible_only(scene: SyntheticScene) -> None:
    night = SyntheticScene(time_of_day="night")
    day_vis, night_vis = scene.render_vis(1.0), night.render_vis(1.0)
    assert luminance(night_vis).mean() < 0.45 * luminance(day_vis).mean()
    assert relative_chroma(night_vis) < 0.7 * relative_chroma(day_vis)
    day_ir, night_ir = scene.render_ir(1.0).ravel(), night.render_ir(1.0).ravel()
    assert np.corrcoef(day_ir, night_ir)[0, 1] > 0.95
    assert mean_abs_diff(day_ir, night_ir) < 20


def test_fog_lowers_visible_contrast_far_away_and_spares_ir(scene: SyntheticScene) -> None:
    foggy = SyntheticScene(fog=0.8)
    clear, fogged = luminance(scene.render_vis(1.0)), luminance(foggy.render_vis(1.0))
    upper, lower = slice(0, H // 2), slice(int(0.8 * H), H)
    upper_ratio = fogged[upper].std() / clear[upper].std()
    lower_ratio = fogged[lower].std() / clear[lower].std()
    assert upper_ratio < 0.35
    assert upper_ratio < lower_ratio < 1.0
    assert fogged[upper].mean() > clear[upper].mean()  # day fog is bright
    np.testing.assert_array_equal(foggy.render_ir(1.0), scene.render_ir(1.0))


def test_noise_is_deterministic_per_frame_and_stronger_at_night() -> None:
    residual_std = {}
    for time_of_day in ("day", "night"):
        clean = SyntheticScene(time_of_day=time_of_day, people=0, vehicles=0)
        noisy = SyntheticScene(time_of_day=time_of_day, people=0, vehicles=0, noise=0.5)
        residual = noisy.render_vis(0.0).astype(np.float32) - clean.render_vis(0.0)
        residual_std[time_of_day] = residual.std()
        assert abs(residual.mean()) < 2.0
        ir_residual = noisy.render_ir(0.0).astype(np.float32) - clean.render_ir(0.0)
        assert 1.5 < ir_residual.std() < 6.0
        assert not np.array_equal(noisy.render_vis(0.0), noisy.render_vis(1 / 30))
        np.testing.assert_array_equal(noisy.render_ir(2.0), noisy.render_ir(2.0))
    assert 2.0 < residual_std["day"] < residual_std["night"]


def test_ground_truth_homography_registers_ir_onto_visible_grid() -> None:
    aligned = SyntheticScene().render_ir(1.0)
    scene = SyntheticScene(ir_size=(320, 256), ir_homography=MISALIGNED)
    np.testing.assert_array_equal(scene.ir_to_vis, MISALIGNED)
    ir = scene.render_ir(1.0)
    assert ir.shape == (256, 320)
    # IR pixel p shows visible point H p, so the visible grid sees IR(inv(H) q): a forward warp by H.
    registered = cv2.warpPerspective(ir, scene.ir_to_vis, (W, H))
    valid = cv2.warpPerspective(np.full(ir.shape, 255, np.uint8), scene.ir_to_vis, (W, H))
    valid = cv2.erode(valid, np.ones((5, 5), np.uint8)) == 255
    assert valid.mean() > 0.8
    assert mean_abs_diff(registered, aligned, valid) < 3.0
    ignoring_misalignment = cv2.resize(ir, (W, H), interpolation=cv2.INTER_LINEAR)
    assert mean_abs_diff(ignoring_misalignment, aligned, valid) > 10.0


def test_pure_scale_ir_camera_registers_with_its_default_homography() -> None:
    aligned = SyntheticScene().render_ir(1.0)
    scene = SyntheticScene(ir_size=(320, 256))
    registered = cv2.warpPerspective(scene.render_ir(1.0), scene.ir_to_vis, (W, H))
    assert mean_abs_diff(registered[4:-4, 4:-4], aligned[4:-4, 4:-4]) < 3.0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"fog": 1.5}, "fog"),
        ({"fog": -0.1}, "fog"),
        ({"noise": 2}, "noise"),
        ({"noise": float("nan")}, "noise"),
        ({"time_of_day": "dusk"}, "time_of_day"),
        ({"width": 0}, "width"),
        ({"height": 10.5}, "height"),
        ({"seed": -1}, "seed"),
        ({"people": -1}, "people"),
        ({"vehicles": 1.5}, "vehicles"),
        ({"ir_size": (0, 256)}, "ir_size"),
        ({"ir_size": (320,)}, "ir_size"),
        ({"ir_homography": np.zeros((3, 3))}, "ir_homography"),
        ({"ir_homography": [[1, 0], [0, 1]]}, "ir_homography"),
        ({"ir_homography": [[1, 0, 0], [0, 1, 0], [0, 0, float("inf")]]}, "ir_homography"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        SyntheticScene(**kwargs)


def test_bad_time_raises_value_error(scene: SyntheticScene) -> None:
    for render in (scene.render_vis, scene.render_ir, scene.object_mask):
        with pytest.raises(ValueError, match="t must be"):
            render(float("nan"))
