"""Refinement of trained weights by self-distillation (``init_weights`` in a training config).

A copy of the starting network, frozen, is the teacher. Every sample's target is the teacher's own
output for the same degraded input and intent, so the other intents keep their behaviour, except for
samples of ``refine.intent`` (the low-contrast-thermal intent), whose target blends the teacher's own
output for that intent (``own_share``) with its balanced fusion of the same inputs after the thermal
image's range has been restored (:func:`restore_thermal_range`), which brings back the warm and
cold regions and the edges between them without the noise (see docs/model.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from streamfuse.config import RefineConfig
from streamfuse.models.network import FusionNet


def restore_thermal_range(ir: torch.Tensor, gain: float, sigma: float, sigma_range: float) -> torch.Tensor:
    """``(B, 1, H, W)`` infrared in [0, 1] with its range stretched ``gain`` times around each image's mean.

    What is stretched is an edge-preserving (bilateral) smoothing of the image, ``sigma`` pixels
    wide and ``sigma_range`` deep in intensity: edges between warm and cold regions come back at
    full strength while the noise and quantisation steps, which a flat thermal image no longer
    masks, are not amplified (they are left out).
    """
    planes = ir.detach().cpu().numpy()[:, 0].astype(np.float32)
    smooth = np.stack([cv2.bilateralFilter(plane, -1, sigma_range, sigma) for plane in planes])[:, None]
    base = torch.from_numpy(smooth).to(ir)
    mean = ir.mean(dim=(2, 3), keepdim=True)
    return (mean + (base - mean) * gain).clamp(0.0, 1.0)


@torch.no_grad()
def distillation_targets(teacher: FusionNet, ir_in: torch.Tensor, vis_in: torch.Tensor, weights: torch.Tensor,
                         intents: Sequence[str], refine: RefineConfig) -> torch.Tensor:
    """Per-sample targets of a refinement step (see the module docstring).

    Args:
        teacher: The frozen starting network.
        ir_in: ``(B, 1, H, W)`` degraded infrared inputs.
        vis_in: ``(B, 1, H, W)`` degraded visible inputs.
        weights: ``(B, K)`` intent weights of the samples.
        intents: The intent each sample was degraded for.
        refine: Which intent gets the blended target, and how.
    """
    targets = teacher(ir_in, vis_in, weights)
    rows = [i for i, intent in enumerate(intents) if intent == refine.intent]
    if rows:
        balanced = teacher.intent_weights({"balanced": 1.0}).expand(len(rows), -1)
        restored_ir = restore_thermal_range(ir_in[rows], refine.thermal_gain, refine.thermal_sigma,
                                            refine.thermal_sigma_range)
        restored = teacher(restored_ir, vis_in[rows], balanced)
        targets[rows] = refine.own_share * targets[rows] + (1 - refine.own_share) * restored
    return targets
