"""The ``model`` fuser on a CPU: bands split and composed in OpenCV, only the network's trunk in torch.

:meth:`FusionNet.forward` does everything in torch, which training and CUDA need; on a CPU its
full- and half-resolution arithmetic costs more than the network itself. Here that part runs in
OpenCV (:mod:`streamfuse.models.bands_cv`) and torch runs only the network's trunk
(:meth:`FusionNet.decide`); the result matches :meth:`FusionNet.forward` to within a grey level.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from streamfuse.models import bands_cv
from streamfuse.models.network import PAD_MULTIPLE, BandFeatures, FusionNet, activations


def _stack(planes: Sequence[Sequence[np.ndarray]]) -> torch.Tensor:
    """``(B, C, h, w)`` float32 tensor from per-item lists of ``C`` planes."""
    return torch.from_numpy(np.stack([np.stack(item) for item in planes]).astype(np.float32, copy=False))


class Decided(NamedTuple):
    """A batch's bands and the network's decisions for them, ready to compose (:func:`compose_on_cpu`)."""

    splits: list[bands_cv.Split]
    injection: np.ndarray
    """``(B, COARSE_BANDS, h, w)`` infrared injection weights at quarter resolution."""
    ir_gain: np.ndarray
    """``(B, 1, h, w)`` infrared detail gain."""
    fine_gain: np.ndarray
    """``(B, 1, h, w)`` finest-band gain."""
    repair: np.ndarray | None
    """``(B, 1, h, w)``: where the prompt's damage intents repair the visible image (None: nowhere)."""


@torch.inference_mode()
def decide_on_cpu(network: FusionNet, irs: Sequence[np.ndarray], lumas: Sequence[np.ndarray], weights: torch.Tensor,
                  memory: torch.Tensor | None = None, momentum: float = 0.0) -> tuple[Decided, torch.Tensor | None]:
    """Split equally sized ``uint8`` luminance pairs into bands and decide their injection with one trunk pass.

    Arguments as for :func:`fuse_on_cpu`. Returns the decisions and the new memory (None without ``memory``).
    """
    splits = [bands_cv.split(ir, luma, PAD_MULTIPLE) for ir, luma in zip(irs, lumas, strict=True)]
    quarters = [bands_cv.quarter(split) for split in splits]
    features = BandFeatures(
        quarter=_stack(quarters),
        detail=_stack([[bands_cv.half(np.abs(band)) for band in (split.coarse[0][0], split.coarse[1][0])]
                       for split in splits]),
        rule=network.rule_for_prompt(_stack([bands_cv.rule_logits(split) for split in splits]), weights.float(),
                                     lambda: _stack([bands_cv.medical_logits(split) for split in splits])))
    maps, repair = network.decide_with_repair(features, weights.float(), memory, momentum)
    injection, ir_gain, fine_gain = (value.numpy() for value in activations(maps))
    new_memory = None if memory is None else torch.cat([maps, features.quarter], dim=1)
    return Decided(splits, injection, ir_gain, fine_gain, None if repair is None else repair.numpy()), new_memory


def compose_on_cpu(decided: Decided) -> list[np.ndarray]:
    """The fused ``uint8`` luminance images of a decided batch (OpenCV only: another thread can run it
    beside the next batch's trunk)."""
    repair = decided.repair
    return [bands_cv.compose(split, list(decided.injection[i]), decided.ir_gain[i, 0], decided.fine_gain[i, 0],
                             None if repair is None else repair[i, 0])
            for i, split in enumerate(decided.splits)]


def fuse_on_cpu(network: FusionNet, irs: Sequence[np.ndarray], lumas: Sequence[np.ndarray], weights: torch.Tensor,
                memory: torch.Tensor | None = None, momentum: float = 0.0
                ) -> tuple[list[np.ndarray], torch.Tensor | None]:
    """Fuse equally sized ``uint8`` luminance pairs with one trunk pass (:func:`decide_on_cpu`, then
    :func:`compose_on_cpu`).

    Args:
        network: The fusion network (on the CPU).
        irs: Infrared images on the visible grid.
        lumas: Visible luminance images.
        weights: ``(B, K)`` or ``(1, K)`` intent weights.
        memory: Temporal memory of each item's stream (as for :meth:`FusionNet.forward`), or None.
        momentum: Weight of the previous frame's decisions.

    Returns:
        The fused ``uint8`` luminance images, and the new memory (None without ``memory``).
    """
    decided, new_memory = decide_on_cpu(network, irs, lumas, weights, memory, momentum)
    return compose_on_cpu(decided), new_memory
