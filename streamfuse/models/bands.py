"""Band composition: split both sources into bands, then choose per band and per pixel.

Shared by the fusion network (which predicts where infrared goes into each band) and the classical
fuser (which uses the fixed rule alone), on CPU, on CUDA and in training. The design follows the
hybrid multi-scale decomposition family (Zhou, Wang, Li and Dong, "Perceptual fusion of infrared and
visible images through a hybrid multi-scale decomposition with Gaussian and bilateral filters",
Information Fusion 30, 2016): keep the visible base, inject infrared per band where its structure is
stronger (a steep, nonlinear weight), take the stronger detail at the finest band.

Both sources travel stacked as channels ``[IR, VIS]`` of one ``(B, 2, H, W)`` tensor (luminance in
[0, 1], H and W even). Each is split as::

    I = fine + up(half)            fine: detail finer than 2 px (full resolution)
    half = D1 + D2 + base          at 1/2 resolution: an edge-preserving (self-guided filter) chain,
                                   D1 = half - S1, D2 = S1 - S2, base = S2

and the two are composed as::

    F = fine_gain * strongest(fine_IR, fine_VIS)     (the locally stronger one, softly where close)
        + up( half_VIS + w_1 (g D1_IR - D1_VIS) + w_2 (g D2_IR - D2_VIS) + w_base (base_IR - base_VIS) + C )

where ``C`` takes out of the base the steps that changes of ``w_base`` draw inside regions smooth in both
bases (:func:`~streamfuse.models.rule.base_step_correction`, at quarter resolution).

With every injection weight ``w`` at 0 and the gains at 1 the output is the visible image, apart from
the finest band, which comes from whichever source is locally stronger. Everything the maps touch
lives at half resolution; the full-resolution work is one 2x average pool, two 2x upsamplings and a
few elementwise operations. Box filters are OpenCV's on a CPU and one pooling kernel elsewhere
(:func:`box_filter`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch.nn import functional as F

from streamfuse.models import bands_cv
from streamfuse.models.rule import (
    BASE_FLOOR,
    BASE_GUIDE,
    BASE_OFFSET,
    BASE_STEEPNESS,
    COARSE_BANDS,
    ENERGY_RADII,
    FINE_RADIUS,
    MEDICAL_DETAIL,
    RULE_FLOOR,
    RULE_OFFSET,
    RULE_STEEPNESS,
    SALIENCE_RADIUS,
    base_step_correction,
    fine_weight,
    guided_chain,
    guided_filter_pair,
    medical_base_logit,
    steep,
    visible_base_deviation,
)


class Bands(NamedTuple):
    """Both sources split into bands; every tensor has the channels ``[IR, VIS]``."""

    fine: torch.Tensor
    """``(B, 2, H, W)`` detail finer than 2 px: the source minus its upsampled half-resolution image."""
    half: torch.Tensor
    """``(B, 2, H/2, W/2)`` the sources at half resolution (the sum of the coarse bands)."""
    coarse: tuple[torch.Tensor, ...]
    """``D1, D2, base``, each ``(B, 2, H/2, W/2)``."""


def box_filter(image: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean of ``(B, C, H, W)`` over ``(2r+1)^2`` windows, shrunk at the borders.

    By OpenCV on a CPU where no gradient is needed (inference, and the bands of training data: the
    box filters only ever see data), otherwise by one pooling kernel (on a GPU, where one kernel per
    filter keeps the eager forward pass from being bound by kernel launches, and for gradients;
    ``avg_pool2d`` with large windows is slow on a CPU).
    """
    if image.device.type == "cpu" and image.dtype == torch.float32 and not image.requires_grad:
        planes = image.detach().reshape(-1, *image.shape[-2:]).contiguous().numpy()
        return torch.from_numpy(np.stack([bands_cv.box_filter(plane, radius) for plane in planes])).view(image.shape)
    height, width = image.shape[-2:]
    rw, rh = min(radius, width - 1), min(radius, height - 1)
    return F.avg_pool2d(image, (2 * rh + 1, 2 * rw + 1), stride=1, padding=(rh, rw), count_include_pad=False)


def guided_smooth(image: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """Self-guided filter (He, Sun and Tang, TPAMI 2013): edge-preserving smoothing of each channel."""
    channels = image.shape[1]
    moments = box_filter(torch.cat([image, image * image], dim=1), radius)
    mean, mean_square = moments[:, :channels], moments[:, channels:]
    variance = (mean_square - mean * mean).clamp(min=0)
    a = variance / (variance + eps)
    coefficients = box_filter(torch.cat([a, mean - a * mean], dim=1), radius)
    return coefficients[:, :channels] * image + coefficients[:, channels:]


def screened_poisson(flux_rows: torch.Tensor, flux_cols: torch.Tensor, screening: float) -> torch.Tensor:
    """``C`` with ``(screening - Laplacian) C = div(flux)`` and no flux across the borders, per ``(B, C)`` plane.

    ``flux_rows`` is ``(B, C, h - 1, w)`` (from each cell to the one below), ``flux_cols`` ``(B, C, h, w - 1)``.
    As :func:`streamfuse.models.bands_cv.screened_poisson` (a DCT) on a CPU without gradients; elsewhere by
    the FFT of the mirrored divergence (float32: half-precision FFTs need power-of-two sizes).
    """
    shape = (*flux_cols.shape[:-1], flux_cols.shape[-1] + 1)
    if flux_rows.device.type == "cpu" and flux_rows.dtype == torch.float32 and not (
            flux_rows.requires_grad or flux_cols.requires_grad):
        rows, cols = (flux.reshape(-1, *flux.shape[-2:]).contiguous().numpy() for flux in (flux_rows, flux_cols))
        solved = [bands_cv.screened_poisson(r, c, screening) for r, c in zip(rows, cols, strict=True)]
        return torch.from_numpy(np.stack(solved)).view(shape)
    divergence = (F.pad(flux_rows, (0, 0, 0, 1)) - F.pad(flux_rows, (0, 0, 1, 0))
                  + F.pad(flux_cols, (0, 1)) - F.pad(flux_cols, (1, 0)))
    height, width = shape[-2:]
    mirrored = torch.cat([divergence, divergence.flip(-2)], dim=-2).float()
    mirrored = torch.cat([mirrored, mirrored.flip(-1)], dim=-1)
    eigen_rows = 2 - 2 * torch.cos(torch.pi * torch.arange(2 * height, device=divergence.device) / height)
    eigen_cols = 2 - 2 * torch.cos(torch.pi * torch.arange(width + 1, device=divergence.device) / width)
    spectrum = torch.fft.rfft2(mirrored) / (screening + eigen_rows[:, None] + eigen_cols[None, :])
    solved = torch.fft.irfft2(spectrum, s=mirrored.shape[-2:])[..., :height, :width]
    return solved.to(divergence.dtype)


def upsample(image: torch.Tensor) -> torch.Tensor:
    """Bilinear upsampling by 2."""
    return F.interpolate(image, scale_factor=2.0, mode="bilinear", align_corners=False)


def decompose(sources: torch.Tensor) -> Bands:
    """Split ``(B, 2, H, W)`` stacked ``[IR, VIS]`` images (H and W even) into :class:`Bands`."""
    half = F.avg_pool2d(sources, 2)
    return Bands(sources - upsample(half), half, tuple(guided_chain(half, guided_smooth)))


def rule_logits(bands: Bands) -> torch.Tensor:
    """Logits ``(B, COARSE_BANDS, H/4, W/4)`` of the fixed injection rule, one per coarse band.

    Detail bands: infrared goes in where its local band energy exceeds the visible one's, by a steep
    function of the normalised difference ``(E_IR - E_VIS) / (E_IR + E_VIS)``. Base: the same
    comparison of salience (the base's local absolute deviation from its own mean level; for the
    visible base, darkness counts only up to the base's own level:
    :func:`~streamfuse.models.rule.visible_base_deviation`), so a warm person on a cool background
    goes in, aligned with the edges of both bases (:data:`~streamfuse.models.rule.BASE_GUIDE`).
    Computed at quarter resolution (the energies are smooth), where the network's maps live too.
    """
    logits = [_rule(box_filter(F.avg_pool2d(band * band, 2), radius), RULE_FLOOR, RULE_STEEPNESS, RULE_OFFSET)
              for band, radius in zip(bands.coarse[:-1], ENERGY_RADII, strict=True)]
    base = bands.coarse[-1]
    mean = base.mean(dim=(2, 3), keepdim=True)
    deviation = torch.cat([(base[:, :1] - mean[:, :1]).abs(), visible_base_deviation(base[:, 1:], mean[:, 1:])], dim=1)
    salience = box_filter(F.avg_pool2d(deviation, 2), SALIENCE_RADIUS)
    base_logit = _rule(salience, BASE_FLOOR, BASE_STEEPNESS, BASE_OFFSET)
    guides = F.avg_pool2d(base, 2)
    logits.append(guided_filter_pair(guides[:, :1], guides[:, 1:], base_logit, *BASE_GUIDE, box_filter))
    return torch.cat(logits, dim=1)


def medical_logits(bands: Bands) -> torch.Tensor:
    """Logits ``(B, COARSE_BANDS, H/4, W/4)`` of the medical rule: the stronger detail band and the
    brighter base, each almost outright (:data:`~streamfuse.models.rule.MEDICAL_DETAIL`)."""
    steepness, offset, radius = MEDICAL_DETAIL
    logits = [_rule(box_filter(F.avg_pool2d(band * band, 2), radius), RULE_FLOOR, steepness, offset)
              for band in bands.coarse[:-1]]
    base = F.avg_pool2d(bands.coarse[-1], 2)
    logits.append(medical_base_logit(base[:, :1], base[:, 1:]))
    return torch.cat(logits, dim=1)


def _rule(strength: torch.Tensor, floor: float, steepness: float, offset: float) -> torch.Tensor:
    return steep(strength[:, :1], strength[:, 1:], floor, steepness, offset)


def strongest(fine: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)``: per pixel, the channel whose local mean magnitude is larger (:func:`fine_weight`)."""
    magnitude = box_filter(fine.abs(), FINE_RADIUS)
    ir, vis = fine[:, :1], fine[:, 1:]
    return vis + fine_weight(magnitude[:, :1], magnitude[:, 1:]) * (ir - vis)


def compose(bands: Bands, injection: torch.Tensor, ir_gain: torch.Tensor | None = None,
            fine_gain: torch.Tensor | None = None, repair: torch.Tensor | None = None) -> torch.Tensor:
    """The fused image from the bands and the maps (formula in the module docstring).

    Args:
        bands: Both sources' bands.
        injection: ``(B, COARSE_BANDS, H/4, W/4)`` infrared weights in [0, 1] per coarse band.
        ir_gain: ``(B, 1, H/4, W/4)`` gain ``g`` on the infrared detail bands (None: 1).
        fine_gain: ``(B, 1, H/4, W/4)`` gain on the finest band (None: 1).
        repair: ``(B, 1, H/4, W/4)``: where a damage prompt repairs the visible image (None: nowhere; see
            :func:`~streamfuse.models.rule.base_step_correction`).

    Returns:
        ``(B, 1, H, W)`` fused image, not clamped.
    """
    maps = upsample(injection if ir_gain is None else torch.cat([injection, ir_gain], dim=1))
    gain = 1.0 if ir_gain is None else maps[:, -1:]
    base = F.avg_pool2d(bands.coarse[-1], 2)
    steps = base_step_correction(base[:, :1], base[:, 1:], injection[:, -1:], screened_poisson, box_filter,
                                 repair)
    half = bands.half[:, 1:] + upsample(steps)
    for level, band in enumerate(bands.coarse):
        band_ir = band[:, :1] if level == COARSE_BANDS - 1 else gain * band[:, :1]
        half = half + maps[:, level:level + 1] * (band_ir - band[:, 1:])
    detail = strongest(bands.fine)
    if fine_gain is not None:
        detail = detail * upsample(upsample(fine_gain))
    return upsample(half) + detail


def rule_fusion(sources: torch.Tensor) -> torch.Tensor:
    """The fixed rule alone on ``(B, 2, H, W)`` stacked ``[IR, VIS]`` (sides multiples of 4): ``(B, 1, H, W)``.

    What the untrained network and the classical fuser output; a training target (``rule`` loss term).
    """
    split = decompose(sources)
    return compose(split, torch.sigmoid(rule_logits(split)))
