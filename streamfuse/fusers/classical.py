"""Classical luminance fusion by band selection: the fixed rule of the fusion network, in OpenCV.

The same decomposition, rule and composition as :mod:`streamfuse.models.bands` (read its docstring
for the design: visible base kept, infrared injected per band where its structure is stronger, the
stronger finest detail per pixel), written with OpenCV's box filters and resizes, which are several
times faster on a CPU than the torch operations the network needs for training and CUDA.
``tests/test_classical.py`` checks that the two implementations agree.

A prompt steers it through the routed intents: each intent moves the injection logits towards the
infrared or the visible image (:data:`INTENT_LEAN`); intents about a damaged visible image
(:data:`~streamfuse.models.network.LOCAL_INTENTS`: glare, low light, fog) do so only where that damage
is (:func:`damage_gates`), so a prompt never changes a region where the visible camera is fine.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from streamfuse.fusers.base import Fuser
from streamfuse.fusers.colour import merge_luminance, split_luminance
from streamfuse.models.rule import (
    BASE_FLOOR,
    BASE_OFFSET,
    BASE_STEEPNESS,
    CHAIN,
    FINE_RADIUS,
    LOCAL_INTENTS,
    RULE_FLOOR,
    RULE_OFFSET,
    RULE_STEEPNESS,
    damage_gates,
    steep,
)

#: How far each intent moves the injection logits towards infrared (+) or visible (-).
INTENT_LEAN = {
    "thermal_targets": 3.0, "low_light": 4.0, "fog": 4.0, "glare": 4.0,
    "visible_detail": -3.0, "low_contrast_thermal": -2.0,
}


@functools.lru_cache(maxsize=32)
def _inverse_counts(height: int, width: int, radius: int) -> np.ndarray:
    """1 / (pixels in each window) of a border-shrunk box filter."""
    def counts(size: int) -> np.ndarray:
        index = np.arange(size)
        r = min(radius, size - 1)
        return (np.minimum(index + r + 1, size) - np.maximum(index - r, 0)).astype(np.float32)

    return 1.0 / np.outer(counts(height), counts(width))


def box_filter(image: np.ndarray, radius: int) -> np.ndarray:
    """Mean over ``(2r+1)^2`` windows, shrunk at the borders (as :func:`streamfuse.models.bands.box_filter`)."""
    height, width = image.shape[:2]
    rw, rh = min(radius, width - 1), min(radius, height - 1)
    sums = cv2.boxFilter(image, -1, (2 * rw + 1, 2 * rh + 1), normalize=False, borderType=cv2.BORDER_CONSTANT)
    return sums * _inverse_counts(height, width, radius)


def guided_smooth(image: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Self-guided filter (He, Sun and Tang, TPAMI 2013)."""
    mean = box_filter(image, radius)
    variance = np.maximum(box_filter(image * image, radius) - mean * mean, 0)
    a = variance / (variance + eps)
    return box_filter(a, radius) * image + box_filter(mean - a * mean, radius)


def _half(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)


def _double(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, (image.shape[1] * 2, image.shape[0] * 2), interpolation=cv2.INTER_LINEAR)


def strongest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pixel, whichever of ``a`` and ``b`` has the larger local mean magnitude (:data:`FINE_RADIUS`).

    Window sums with zero padding compare like border-shrunk means (both sides share the count).
    """
    size = (2 * FINE_RADIUS + 1,) * 2
    magnitude_a = cv2.boxFilter(cv2.absdiff(a, 0.0), -1, size, normalize=False, borderType=cv2.BORDER_CONSTANT)
    magnitude_b = cv2.boxFilter(cv2.absdiff(b, 0.0), -1, size, normalize=False, borderType=cv2.BORDER_CONSTANT)
    stronger = cv2.compare(magnitude_a, magnitude_b, cv2.CMP_GT)
    out = b.copy()
    cv2.copyTo(a, stronger, out)
    return out


def _decompose(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """``fine, half, [D1, D2, base]`` of one float32 image with sides divisible by 4."""
    half = _half(image)
    coarse, smooth = [], half
    for radius, eps in CHAIN:
        smoother = guided_smooth(smooth, radius, eps)
        coarse.append(smooth - smoother)
        smooth = smoother
    coarse.append(smooth)
    return cv2.subtract(image, _double(half)), half, coarse


def rule_logits(coarse_ir: list[np.ndarray], coarse_vis: list[np.ndarray]) -> list[np.ndarray]:
    """The fixed rule's injection logits at quarter resolution, one per coarse band."""
    logits = [steep(box_filter(_half(band_ir * band_ir), radius // 2 + 1),
                    box_filter(_half(band_vis * band_vis), radius // 2 + 1), RULE_FLOOR, RULE_STEEPNESS, RULE_OFFSET)
              for band_ir, band_vis, (radius, _) in zip(coarse_ir[:-1], coarse_vis[:-1], CHAIN, strict=True)]
    base_ir, base_vis = coarse_ir[-1], coarse_vis[-1]
    radius = CHAIN[-1][0] // 2
    salience_ir = box_filter(_half(np.abs(base_ir - base_ir.mean(dtype=np.float64)).astype(np.float32)), radius)
    salience_vis = box_filter(_half(np.abs(base_vis - base_vis.mean(dtype=np.float64)).astype(np.float32)), radius)
    logits.append(steep(salience_ir, salience_vis, BASE_FLOOR, BASE_STEEPNESS, BASE_OFFSET))
    return logits


def fuse_luminance(ir: np.ndarray, vis: np.ndarray, valid: np.ndarray | None = None, *,
                   weights: dict[str, float] | None = None) -> np.ndarray:
    """Fuse two registered single-channel ``uint8`` images of the same size.

    Args:
        ir: Infrared image.
        vis: Visible luminance.
        valid: Optional ``uint8`` mask, 1 where ``ir`` has data (elsewhere the result is ``vis``).
        weights: Routed intent weights (``{intent: weight}``); None or balanced is the plain rule.

    Returns:
        The fused ``uint8`` luminance.
    """
    height, width = ir.shape[:2]
    pad_h, pad_w = (-height) % 4, (-width) % 4
    sources = []
    for image in (ir, vis):
        image = np.multiply(image, np.float32(1 / 255), dtype=np.float32)
        if pad_h or pad_w:
            image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE)
        sources.append(image)
    fine_ir, half_ir, coarse_ir = _decompose(sources[0])
    fine_vis, half_vis, coarse_vis = _decompose(sources[1])
    logits = rule_logits(coarse_ir, coarse_vis)
    lean = _lean_map(_half(half_ir), _half(half_vis), weights or {})
    fused_half = half_vis
    for band_ir, band_vis, logit in zip(coarse_ir, coarse_vis, logits, strict=True):
        injection = _double(1 / (1 + np.exp(-(logit + lean))))
        fused_half = fused_half + injection * (band_ir - band_vis)
    fused = cv2.add(_double(fused_half), strongest(fine_ir, fine_vis))[:height, :width]
    if valid is not None:
        fused = np.where(valid.astype(bool), fused, sources[1][:height, :width])
    return np.clip(fused * 255 + 0.5, 0, 255).astype(np.uint8)


def _lean_map(quarter_ir: np.ndarray, quarter_vis: np.ndarray, weights: dict[str, float]) -> np.ndarray | float:
    """The prompt's offset of the injection logits: global intents everywhere, damage intents where the damage is."""
    lean: np.ndarray | float = 0.0
    gates = None
    for intent, weight in weights.items():
        amount = weight * INTENT_LEAN.get(intent, 0.0)
        if not amount:
            continue
        if intent in LOCAL_INTENTS:
            gates = gates if gates is not None else damage_gates(quarter_ir, quarter_vis, box_filter)
            lean = lean + amount * gates[LOCAL_INTENTS[intent]]
        else:
            lean = lean + amount
    return lean


class ClassicalFuser(Fuser):
    """Band-selection luminance fusion (the network's fixed rule) with visible chroma restored."""

    name = "classical"

    def __init__(self) -> None:
        self.weights: dict[str, float] = {}

    def condition(self, routing) -> None:
        """Lean towards infrared or visible by the routed intents' :data:`INTENT_LEAN`."""
        self.weights = dict(routing.weights) if routing is not None else {}

    def _fuse(self, ir: np.ndarray, vis: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        luma, ycrcb = split_luminance(vis)
        fused = fuse_luminance(ir, luma, valid, weights=self.weights)
        return merge_luminance(fused, ycrcb)
