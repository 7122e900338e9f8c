"""Classical luminance fusion by Laplacian pyramids: the torch-free baseline fuser.

The visible image's luminance (Y of YCrCb) and the infrared image are decomposed into Laplacian
pyramids (Burt & Adelson, 1983). Detail bands are combined with soft weights from local band
energy (the stronger local structure wins, smoothly, so textures from both sources survive without
seams); the coarsest band is combined by salience, the local deviation from each image's mean
intensity, so warm targets that stand out in infrared keep their contrast instead of being averaged
away. The fused luminance gets the visible chroma back.

A prompt steers it through the routed intents: each intent leans the weights towards the infrared
or the visible image (:data:`INTENT_LEAN`), by raising the infrared weights to a power.
"""

from __future__ import annotations

import cv2
import numpy as np

from streamfuse.fusers.base import Fuser
from streamfuse.fusers.colour import merge_luminance, split_luminance

_EPS = 1e-3
#: Squared salience (in gray levels) below which the base band leans towards an even mix: where
#: neither image stands out, the ratio of two tiny saliences would otherwise flip between sources
#: and leave blotches.
_BASE_SALIENCE_FLOOR = 15.0**2

#: How far each intent leans the fusion towards infrared (+) or visible (-); -1..1.
INTENT_LEAN = {
    "thermal_targets": 0.6, "low_light": 0.8, "fog": 0.8, "glare": 0.5,
    "visible_detail": -0.6, "low_contrast_thermal": -0.5,
}


def _gaussian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    pyramid = [image]
    for _ in range(levels - 1):
        pyramid.append(cv2.pyrDown(pyramid[-1]))
    return pyramid


def _laplacian_bands(gaussian: list[np.ndarray]) -> list[np.ndarray]:
    bands = []
    for fine, coarse in zip(gaussian[:-1], gaussian[1:], strict=True):
        up = cv2.pyrUp(coarse, dstsize=(fine.shape[1], fine.shape[0]))
        bands.append(cv2.subtract(fine, up))
    return bands


def _soft_weight(strength_ir: np.ndarray, strength_vis: np.ndarray, floor: float = 0.0) -> np.ndarray:
    """Per-pixel infrared weight ``(s_ir + floor) / (s_ir + s_vis + 2 floor)`` in [0, 1]."""
    total = cv2.add(strength_ir, strength_vis)
    total += 2 * floor + _EPS
    return cv2.divide(strength_ir + (floor + _EPS / 2), total)


def _blend(ir: np.ndarray, vis: np.ndarray, weight_ir: np.ndarray) -> np.ndarray:
    """``vis + weight_ir * (ir - vis)``."""
    return cv2.add(vis, cv2.multiply(weight_ir, cv2.subtract(ir, vis)))


def fuse_luminance(ir: np.ndarray, vis: np.ndarray, valid: np.ndarray | None = None, *, levels: int = 4,
                   lean: float = 0.0) -> np.ndarray:
    """Fuse two registered single-channel ``uint8`` images of the same size.

    Args:
        ir: Infrared image.
        vis: Visible luminance.
        valid: Optional ``uint8`` mask, 1 where ``ir`` has data (elsewhere the result is ``vis``).
        levels: Pyramid levels; fewer for small images (each level halves the size).
        lean: -1..1, favour the visible (-) or infrared (+) image: infrared weights ``w`` become
            ``w ** 4**(-lean)``.

    Returns:
        The fused ``uint8`` luminance.
    """
    levels = max(1, min(levels, int(np.log2(max(1, min(ir.shape[:2])))) - 2))
    g_ir = _gaussian_pyramid(ir.astype(np.float32), levels)
    g_vis = _gaussian_pyramid(vis.astype(np.float32), levels)
    masks = None
    if valid is not None:
        masks = _gaussian_pyramid(valid.astype(np.float32), levels)

    gamma = 4.0 ** (-lean)

    def steer(weight: np.ndarray) -> np.ndarray:
        return cv2.pow(weight, gamma) if lean else weight

    fused_bands = []
    for level, (band_ir, band_vis) in enumerate(zip(_laplacian_bands(g_ir), _laplacian_bands(g_vis), strict=True)):
        energy_ir = cv2.GaussianBlur(cv2.multiply(band_ir, band_ir), (5, 5), 0)
        energy_vis = cv2.GaussianBlur(cv2.multiply(band_vis, band_vis), (5, 5), 0)
        weight = steer(_soft_weight(energy_ir, energy_vis))
        if masks is not None:
            weight = cv2.multiply(weight, masks[level])
        fused_bands.append(_blend(band_ir, band_vis, weight))

    base_ir, base_vis = g_ir[-1], g_vis[-1]
    salience_ir = cv2.GaussianBlur(cv2.absdiff(base_ir, float(base_ir.mean())), (5, 5), 0)
    salience_vis = cv2.GaussianBlur(cv2.absdiff(base_vis, float(base_vis.mean())), (5, 5), 0)
    weight = steer(_soft_weight(cv2.multiply(salience_ir, salience_ir), cv2.multiply(salience_vis, salience_vis),
                                _BASE_SALIENCE_FLOOR))
    if masks is not None:
        weight = cv2.multiply(weight, masks[-1])
    fused = _blend(base_ir, base_vis, weight)

    for band in reversed(fused_bands):
        fused = cv2.add(cv2.pyrUp(fused, dstsize=(band.shape[1], band.shape[0])), band)
    return np.clip(fused, 0, 255, out=fused).astype(np.uint8)


class ClassicalFuser(Fuser):
    """Laplacian-pyramid luminance fusion with visible chroma restored (no torch needed).

    Args:
        levels: Pyramid levels.
    """

    name = "classical"

    def __init__(self, *, levels: int = 4) -> None:
        self.levels = levels
        self.lean = 0.0

    def condition(self, routing) -> None:
        """Lean towards infrared or visible by the routed intents' :data:`INTENT_LEAN`."""
        weights = routing.weights if routing is not None else {}
        self.lean = float(np.clip(sum(w * INTENT_LEAN.get(i, 0.0) for i, w in weights.items()), -1.0, 1.0))

    def _fuse(self, ir: np.ndarray, vis: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        luma, ycrcb = split_luminance(vis)
        fused = fuse_luminance(ir, luma, valid, levels=self.levels, lean=self.lean)
        return merge_luminance(fused, ycrcb)
