"""Unsupervised fusion losses, computed against the CLEAN sources with per-intent emphasis.

Terms (each per sample, averaged over pixels):

- ``intensity``: ``|F - T|`` with ``T`` the per-pixel mix of IR and VIS weighted by each source's
  saliency (:func:`salient_mix`), so that dark and bright features both keep their contrast (a
  target of ``max(IR, VIS)``, used before, made a bright, flat image that scored high MI and Qabf);
- ``intensity_ir``: ``|F - IR|`` weighted by the infrared intensity, so warm objects keep their level;
- ``gradient``: ``| |grad F| - max(|grad IR|, |grad VIS|) |``, towards the stronger edges (Sobel);
- ``gradient_vis`` / ``gradient_ir``: the same towards one source's edges;
- ``ssim``: ``1 - (SSIM(F, IR) + SSIM(F, VIS)) / 2``; ``ssim_vis``: ``1 - SSIM(F, VIS)``;
- ``rule``: ``|F - R|`` with ``R`` the fixed band rule's fusion of the clean sources
  (:func:`streamfuse.models.bands.rule_fusion`): keeps balanced fusion near the rule, which scores well on
  the benchmarks, and is a restoration target for the degraded inputs of the damage intents.

An intent's recipe (the prompt bank's ``recipe.emphasis``) multiplies these terms; terms it does not
name have weight 0. Gradient terms are scaled by :data:`GRADIENT_SCALE` so the three kinds of terms
have comparable magnitudes at the start of training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

TERMS = ("intensity", "intensity_ir", "gradient", "gradient_vis", "gradient_ir", "ssim", "ssim_vis", "rule")
GRADIENT_SCALE = 10.0

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0


def sobel_magnitude(image: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude of ``(B, 1, H, W)`` images (Sobel, replicate borders)."""
    kernels = torch.stack([_SOBEL_X, _SOBEL_X.t()])[:, None].to(image)
    padded = F.pad(image, (1, 1, 1, 1), mode="replicate")
    gx, gy = F.conv2d(padded, kernels).chunk(2, dim=1)
    return torch.sqrt(gx * gx + gy * gy + 1e-8)


def _gaussian_kernel(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - size // 2
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    return kernel / kernel.sum()


_KERNEL = _gaussian_kernel()
_SALIENCY_KERNEL = _gaussian_kernel(31, 5.0)


def _gaussian_blur(stack: torch.Tensor, kernel: torch.Tensor = _KERNEL) -> torch.Tensor:
    """Separable Gaussian ('valid') over every channel of ``(B, C, H, W)``."""
    channels = stack.shape[1]
    kernel = kernel.to(stack)
    rows = F.conv2d(stack, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def salient_mix(ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """Per-pixel mix of ``(B, 1, H, W)`` sources, each weighted by its saliency: the squared local
    mean (Gaussian, sigma 5) of its absolute deviation from its own mean level."""
    sources = torch.cat([ir, vis], dim=1)
    deviation = (sources - sources.mean(dim=(2, 3), keepdim=True)).abs()
    pad = _SALIENCY_KERNEL.numel() // 2
    saliency = _gaussian_blur(F.pad(deviation, (pad, pad, pad, pad), mode="reflect"), _SALIENCY_KERNEL) ** 2 + 1e-6
    weight_ir = saliency[:, :1] / saliency.sum(dim=1, keepdim=True)
    return weight_ir * ir + (1 - weight_ir) * vis


def ssim_pair(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean SSIM of ``fused`` with ``ir`` and with ``vis`` (Gaussian window 11, sigma 1.5).

    All local statistics come from one blur of the stacked maps (the costly part of the loss).
    """
    c1, c2 = 0.01**2, 0.03**2
    stats = _gaussian_blur(torch.cat([fused, ir, vis, fused * fused, ir * ir, vis * vis, fused * ir, fused * vis],
                                     dim=1))
    mu_f, mu_i, mu_v, ff, ii, vv, fi, fv = stats.unbind(dim=1)
    var_f, var_i, var_v = ff - mu_f**2, ii - mu_i**2, vv - mu_v**2

    def index(mu_x, var_x, cov):
        value = ((2 * mu_f * mu_x + c1) * (2 * cov + c2)) / ((mu_f**2 + mu_x**2 + c1) * (var_f + var_x + c2))
        return value.mean(dim=(1, 2))

    return index(mu_i, var_i, fi - mu_f * mu_i), index(mu_v, var_v, fv - mu_f * mu_v)


def loss_terms(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor,
               rule_target: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Every term of the module docstring, per sample (``(B,)`` tensors); ``rule`` is 0 without ``rule_target``."""
    per_sample = (1, 2, 3)
    grad_f, grad_ir, grad_vis = sobel_magnitude(fused), sobel_magnitude(ir), sobel_magnitude(vis)
    ssim_ir, ssim_vis = ssim_pair(fused, ir, vis)
    return {
        "intensity": (fused - salient_mix(ir, vis)).abs().mean(per_sample),
        "intensity_ir": ((fused - ir).abs() * ir).mean(per_sample) / (ir.mean(per_sample) + 1e-3),
        "gradient": GRADIENT_SCALE * (grad_f - torch.maximum(grad_ir, grad_vis)).abs().mean(per_sample),
        "gradient_vis": GRADIENT_SCALE * (grad_f - grad_vis).abs().mean(per_sample),
        "gradient_ir": GRADIENT_SCALE * (grad_f - grad_ir).abs().mean(per_sample),
        "ssim": 1 - (ssim_ir + ssim_vis) / 2,
        "ssim_vis": 1 - ssim_vis,
        "rule": (fused - rule_target).abs().mean(per_sample) if rule_target is not None else torch.zeros_like(ssim_vis),
    }


def emphasis_matrix(recipes: Sequence[dict[str, float]]) -> torch.Tensor:
    """``(B, len(TERMS))`` weights from each sample's ``recipe["emphasis"]``."""
    return torch.tensor([[float(r.get(term, 0.0)) for term in TERMS] for r in recipes])


def fusion_loss(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor, emphasis: torch.Tensor,
                rule_target: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The emphasised total (mean over the batch) and each term's batch mean (for logging)."""
    terms = loss_terms(fused, ir, vis, rule_target)
    stacked = torch.stack([terms[t] for t in TERMS], dim=1)  # (B, T)
    total = (stacked * emphasis.to(stacked)).sum(dim=1).mean()
    return total, {t: float(terms[t].detach().mean()) for t in TERMS}
