"""The band composition of :mod:`streamfuse.models.bands` in OpenCV, for CPU inference.

Same decomposition, fixed rule and composition (read that module's docstring for the design), written
with OpenCV's box filters and resizes, which are several times faster on a CPU than the torch
operations the network needs for training and CUDA. The classical fuser uses it with the fixed rule
alone; the ``model`` fuser on a CPU splits and composes here and runs only the network's
trunk in torch. ``tests/test_bands.py`` and ``tests/test_model.py`` check that the
two implementations agree. Imports no torch.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import cv2
import numpy as np

from streamfuse.models import rule


class Split(NamedTuple):
    """One pair split into bands (float32 images, sides padded to the split's multiple)."""

    fine: tuple[np.ndarray, np.ndarray]
    """Full-resolution detail of ``(IR, VIS)``."""
    half: tuple[np.ndarray, np.ndarray]
    """Half-resolution sources."""
    coarse: tuple[list[np.ndarray], list[np.ndarray]]
    """``[D1, D2, base]`` of each source at half resolution."""
    size: tuple[int, int]
    """``(height, width)`` of the input before padding."""


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


@functools.lru_cache(maxsize=32)
def _poisson_denominator(height: int, width: int, screening: float) -> np.ndarray:
    """``screening`` plus the eigenvalues of the negative Laplacian (no flux across the borders) per DCT term."""
    def eigenvalues(size: int) -> np.ndarray:
        return (2 - 2 * np.cos(np.pi * np.arange(size) / size)).astype(np.float32)

    return screening + eigenvalues(height)[:, None] + eigenvalues(width)[None, :]


def screened_poisson(flux_rows: np.ndarray, flux_cols: np.ndarray, screening: float) -> np.ndarray:
    """``C`` with ``(screening - Laplacian) C = div(flux)`` and no flux across the borders, by a DCT.

    ``flux_rows[i, j]`` flows from cell ``(i, j)`` to ``(i + 1, j)``, ``flux_cols[i, j]`` from ``(i, j)``
    to ``(i, j + 1)``.
    """
    height, width = flux_rows.shape[0] + 1, flux_cols.shape[1] + 1
    divergence = np.zeros((height, width), np.float32)
    divergence[:-1] += flux_rows
    divergence[1:] -= flux_rows
    divergence[:, :-1] += flux_cols
    divergence[:, 1:] -= flux_cols
    return cv2.idct(cv2.dct(divergence) / _poisson_denominator(height, width, screening))


def half(image: np.ndarray) -> np.ndarray:
    """2x2 average (sides must be even)."""
    return cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)


def double(image: np.ndarray) -> np.ndarray:
    """Bilinear upsampling by 2 (pixel centres as torch's ``align_corners=False``)."""
    return cv2.resize(image, (image.shape[1] * 2, image.shape[0] * 2), interpolation=cv2.INTER_LINEAR)


def strongest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pixel, whichever of ``a`` (infrared) and ``b`` has the larger local mean magnitude, softly where
    the two are close (:func:`~streamfuse.models.rule.fine_weight`)."""
    magnitude_a = box_filter(cv2.absdiff(a, 0.0), rule.FINE_RADIUS)
    magnitude_b = box_filter(cv2.absdiff(b, 0.0), rule.FINE_RADIUS)
    return cv2.add(b, cv2.multiply(rule.fine_weight(magnitude_a, magnitude_b), cv2.subtract(a, b)))


def _decompose(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """``fine, half, [D1, D2, base]`` of one float32 image with even sides."""
    halved = half(image)
    return cv2.subtract(image, double(halved)), halved, rule.guided_chain(halved, guided_smooth)


def split(ir: np.ndarray, vis: np.ndarray, multiple: int = 4) -> Split:
    """Split a registered ``uint8`` pair into bands, padding (replicate) to a multiple of ``multiple`` (>= 4)."""
    height, width = ir.shape[:2]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    parts = []
    for image in (ir, vis):
        image = np.multiply(image, np.float32(1 / 255), dtype=np.float32)
        if pad_h or pad_w:
            image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE)
        parts.append(_decompose(image))
    (fine_ir, half_ir, coarse_ir), (fine_vis, half_vis, coarse_vis) = parts
    return Split((fine_ir, fine_vis), (half_ir, half_vis), (coarse_ir, coarse_vis), (height, width))


def rule_logits(bands: Split) -> list[np.ndarray]:
    """The fixed rule's injection logits at quarter resolution, one per coarse band."""
    coarse_ir, coarse_vis = bands.coarse
    logits = [rule.steep(box_filter(half(band_ir * band_ir), radius), box_filter(half(band_vis * band_vis), radius),
                         rule.RULE_FLOOR, rule.RULE_STEEPNESS, rule.RULE_OFFSET)
              for band_ir, band_vis, radius in zip(coarse_ir[:-1], coarse_vis[:-1], rule.ENERGY_RADII, strict=True)]
    base_ir, base_vis = coarse_ir[-1], coarse_vis[-1]
    deviations = (np.abs(base_ir - np.float32(base_ir.mean(dtype=np.float64))),
                  rule.visible_base_deviation(base_vis, np.float32(base_vis.mean(dtype=np.float64))))
    salience = [box_filter(half(deviation.astype(np.float32, copy=False)), rule.SALIENCE_RADIUS)
                for deviation in deviations]
    base_logit = rule.steep(*salience, rule.BASE_FLOOR, rule.BASE_STEEPNESS, rule.BASE_OFFSET)
    logits.append(rule.guided_filter_pair(half(base_ir), half(base_vis), base_logit, *rule.BASE_GUIDE, box_filter))
    return logits


def medical_logits(bands: Split) -> list[np.ndarray]:
    """The medical rule's logits at quarter resolution (as :func:`streamfuse.models.bands.medical_logits`)."""
    coarse_ir, coarse_vis = bands.coarse
    steepness, offset, radius = rule.MEDICAL_DETAIL
    logits = [rule.steep(box_filter(half(band_ir * band_ir), radius), box_filter(half(band_vis * band_vis), radius),
                         rule.RULE_FLOOR, steepness, offset)
              for band_ir, band_vis in zip(coarse_ir[:-1], coarse_vis[:-1], strict=True)]
    logits.append(rule.medical_base_logit(half(coarse_ir[-1]), half(coarse_vis[-1])))
    return logits


def quarter(bands: Split) -> tuple[np.ndarray, np.ndarray]:
    """Both sources at quarter resolution."""
    return half(bands.half[0]), half(bands.half[1])


def compose(bands: Split, injection: list[np.ndarray], ir_gain: np.ndarray | None = None,
            fine_gain: np.ndarray | None = None, repair: np.ndarray | None = None) -> np.ndarray:
    """The fused luminance (``uint8``, the input's size) from the bands and quarter-resolution maps.

    Args:
        bands: The pair's bands.
        injection: One infrared weight map in [0, 1] per coarse band.
        ir_gain: Gain on the infrared detail bands (None: 1).
        fine_gain: Gain on the finest band (None: 1).
        repair: Where a damage prompt repairs the visible image (None: nowhere; see
            :func:`~streamfuse.models.rule.base_step_correction`).
    """
    coarse_ir, coarse_vis = bands.coarse
    gain = None if ir_gain is None else double(ir_gain)
    steps = rule.base_step_correction(half(coarse_ir[-1]), half(coarse_vis[-1]), injection[-1], screened_poisson,
                                      box_filter, repair)
    fused_half = bands.half[1] + double(steps)
    for level, (band_ir, band_vis, weight) in enumerate(zip(coarse_ir, coarse_vis, injection, strict=True)):
        if gain is not None and level < len(coarse_ir) - 1:
            band_ir = band_ir * gain
        fused_half = fused_half + double(weight) * (band_ir - band_vis)
    detail = strongest(*bands.fine)
    if fine_gain is not None:
        detail = detail * double(double(fine_gain))
    height, width = bands.size
    fused = cv2.add(double(fused_half), detail)[:height, :width]
    return np.clip(fused * 255 + 0.5, 0, 255).astype(np.uint8)
