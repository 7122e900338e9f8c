from __future__ import annotations

import cv2
import numpy as np
import pytest

from streamfuse.config import RegistrationConfig
from streamfuse.errors import ConfigError, PipelineError
from streamfuse.registration import (
    HomographyRegistrar,
    IdentityRegistrar,
    ResizeRegistrar,
    build_registrar,
)


def pattern(width: int = 160, height: int = 120) -> np.ndarray:
    image = np.zeros((height, width), np.uint8)
    for x in range(0, width, 16):
        cv2.line(image, (x, 0), (x, height), 255, 1)
    cv2.circle(image, (width // 2, height // 2), 20, 180, -1)
    return cv2.GaussianBlur(image, (5, 5), 0)


def test_identity_requires_equal_sizes():
    ir = np.zeros((48, 64), np.uint8)
    out, valid = IdentityRegistrar().apply(ir, (48, 64))
    assert out is ir and valid is None
    expected = ("infrared frames are 64x48 but visible frames are 128x96"
                ".*--set registration.mode=resize.*--calibration FILE")
    with pytest.raises(PipelineError, match=expected):
        IdentityRegistrar().apply(ir, (96, 128))


def test_resize_scales_to_visible_grid():
    out, valid = ResizeRegistrar().apply(np.full((48, 64), 7, np.uint8), (96, 128))
    assert out.shape == (96, 128) and valid is None and np.all(out == 7)


def test_homography_recovers_a_known_misalignment():
    vis_grid = pattern()
    # IR camera: half resolution, rotated 3 degrees and shifted; H maps IR pixels onto the visible grid
    rotation = cv2.getRotationMatrix2D((80, 60), 3.0, 1.0)
    to_vis = np.vstack([rotation, [0, 0, 1]]) @ np.array([[2.0, 0, 4], [0, 2.0, -3], [0, 0, 1]])
    ir = cv2.warpPerspective(vis_grid, to_vis, (80, 60), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR)
    registrar = HomographyRegistrar(to_vis)
    warped, valid = registrar.apply(ir, vis_grid.shape)
    assert warped.shape == vis_grid.shape
    assert valid is not None and 0.5 < valid.mean() < 1.0
    inner = cv2.erode(valid, np.ones((9, 9), np.uint8)).astype(bool)
    error = np.abs(warped.astype(int) - vis_grid.astype(int))[inner].mean()
    naive = np.abs(cv2.resize(ir, (160, 120)).astype(int) - vis_grid.astype(int))[inner].mean()
    assert error < 12 and error < naive / 2
    assert np.all(warped[valid == 0] == 0)  # outside the IR field of view: no data, not smeared edges


def test_homography_maps_are_cached_and_a_new_matrix_is_a_new_transform():
    registrar = HomographyRegistrar(np.eye(3))
    ir = pattern()
    before = registrar.transform
    first, _ = registrar.apply(ir, ir.shape)
    assert before.maps(ir.shape, ir.shape) is before.maps(ir.shape, ir.shape)
    registrar.set_matrix([[1, 0, 10], [0, 1, 0], [0, 0, 1]])
    shifted, valid = registrar.apply(ir, ir.shape)
    assert np.array_equal(shifted[:, 10:], first[:, :-10])
    assert valid[:, :10].sum() == 0
    assert np.array_equal(before.apply(ir, ir.shape)[0], first)  # the old transform is unchanged
    with pytest.raises(ValueError):
        registrar.matrix[0, 2] = 5.0  # read-only: a transform never changes after it is made


def test_homography_that_misses_the_image_is_a_clear_error():
    registrar = HomographyRegistrar([[1, 0, 5000], [0, 1, 0], [0, 0, 1]])
    with pytest.raises(PipelineError, match="entirely outside"):
        registrar.apply(pattern(), (120, 160))


def test_a_transform_set_while_running_is_checked_against_the_frames_paired_so_far():
    """set_matrix / set_transform accepted anything: a matrix mapping the infrared image off the visible one, or a
    bare array, failed at the next pair and stopped the pipeline (a live stream, for one bad estimate)."""
    registrar = IdentityRegistrar()  # set_matrix on a registrar that started without one (AttributeError before)
    ir = pattern()
    registrar.transform_for(ir.shape, (120, 160))
    registrar.set_matrix([[1, 0, 4], [0, 1, 0], [0, 0, 1]])
    assert registrar.transform.matrix[0, 2] == 4
    current = registrar.transform
    with pytest.raises(PipelineError, match=r"set_matrix: the homography maps the infrared image entirely outside"):
        registrar.set_matrix([[1, 0, 5000], [0, 1, 0], [0, 0, 1]])
    with pytest.raises(TypeError, match=r"set_transform: expected a Transform .* got ndarray; set_matrix takes"):
        registrar.set_transform(np.eye(3))
    with pytest.raises(ConfigError, match="set_matrix: matrix is singular"):
        registrar.set_matrix([[1, 2, 3], [2, 4, 6], [0, 0, 1]])
    assert registrar.transform is current  # each refused: the current transform stays


def test_set_matrix_keeps_the_resolution_the_calibration_holds_for():
    registrar = HomographyRegistrar(np.eye(3), frame_sizes=((160, 120), (160, 120)))
    registrar.set_matrix([[1, 0, 2], [0, 1, 0], [0, 0, 1]])
    with pytest.raises(PipelineError, match="calibrated on 160x120 infrared and 160x120 visible frames"):
        registrar.transform_for((240, 320), (240, 320))


def test_build_registrar_and_invalid_matrix():
    assert isinstance(build_registrar(RegistrationConfig()), IdentityRegistrar)
    with pytest.raises(ConfigError, match="registration.matrix"):
        HomographyRegistrar([[0, 0, 0], [0, 0, 0], [0, 0, 1]])
