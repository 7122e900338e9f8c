"""Colour restoration: the fused luminance survives the return to BGR; the visible colour is kept where it fits."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from streamfuse.colour import fitting_chroma, merge_luminance, split_luminance


def luminance(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.int16)


def test_a_bright_fused_luminance_over_a_saturated_colour_keeps_its_level():
    # A saturated red sign and a deep blue PET colour, fused to bright (a hot target, bright MRI tissue).
    vis = np.zeros((20, 40, 3), np.uint8)
    vis[:, :20] = (30, 20, 220)
    vis[:, 20:] = (160, 20, 10)
    fused = np.full((20, 40), 200, np.uint8)
    _, ycrcb = split_luminance(vis)
    clipped = ycrcb.copy()
    clipped[:, :, 0] = fused
    clipped = cv2.cvtColor(clipped, cv2.COLOR_YCrCb2BGR)
    assert np.abs(luminance(clipped) - fused).max() > 20  # what plain clipping did
    merged = merge_luminance(fused, ycrcb)
    assert np.abs(luminance(merged) - fused).max() <= 1
    # The hue stays (red stays the strongest channel of the sign, blue of the PET colour), desaturated.
    assert (merged[:, :20, 2] > merged[:, :20, 1]).all() and (merged[:, 20:, 0] > merged[:, 20:, 2]).all()
    assert merged.std(axis=2).mean() < vis.std(axis=2).mean()


def test_colours_that_fit_and_gray_images_are_unchanged():
    rng = np.random.default_rng(0)
    vis = rng.integers(60, 190, (30, 30, 3), dtype=np.uint8)  # muted colours
    fused = rng.integers(100, 150, (30, 30), dtype=np.uint8)
    _, ycrcb = split_luminance(vis)
    plain = ycrcb.copy()
    plain[:, :, 0] = fused
    plain = cv2.cvtColor(plain, cv2.COLOR_YCrCb2BGR)
    assert np.array_equal(merge_luminance(fused, ycrcb), plain)
    gray = cv2.cvtColor(cv2.cvtColor(fused, cv2.COLOR_GRAY2BGR), cv2.COLOR_BGR2YCrCb)
    bright = np.full((30, 30), 250, np.uint8)
    assert np.array_equal(merge_luminance(bright, gray), cv2.cvtColor(bright, cv2.COLOR_GRAY2BGR))


def test_random_colours_keep_the_fused_luminance_and_torch_agrees_with_numpy():
    rng = np.random.default_rng(1)
    vis = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    fused = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    _, ycrcb = split_luminance(vis)
    planes = [ycrcb[:, :, c].astype(np.float32) for c in (1, 2)]
    assert np.abs(luminance(merge_luminance(fused, ycrcb.copy())) - fused).max() <= 1
    expected = fitting_chroma(fused.astype(np.float32), *planes)
    got = fitting_chroma(torch.from_numpy(fused).float(), *map(torch.from_numpy, planes))
    for a, b in zip(expected, got, strict=True):
        assert np.array_equal(a.astype(np.int32), b.to(torch.int32).numpy())
        assert (np.abs(a) <= np.abs(np.stack(planes) - 128).max()).all()
