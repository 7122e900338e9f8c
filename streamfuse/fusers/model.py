"""The ``model`` fuser: the text-guided fusion network on the luminance, visible chroma restored."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from streamfuse.fusers.base import Fuser
from streamfuse.fusers.colour import as_gray, merge_luminance, split_luminance
from streamfuse.models.checkpoint import load_model
from streamfuse.models.cpu import fuse_on_cpu


class ModelFuser(Fuser):
    """Runs :class:`~streamfuse.models.network.FusionNet` on CPU (this class) with the routed prompt.

    Args:
        weights: Checkpoint file; None loads the shipped weights.
        threads: Torch CPU threads (None leaves torch's default).
    """

    name = "model"

    def __init__(self, weights: str | Path | None = None, *, threads: int | None = None) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        self.network, self.metadata = load_model(weights)
        self.network = self.network.to(memory_format=torch.channels_last)
        self._intent_weights = self.network.intent_weights({"balanced": 1.0})

    def condition(self, routing) -> None:
        """Use the routing's intent weights (None: balanced) from the next frame on."""
        self._intent_weights = self.network.intent_weights(routing.weights if routing is not None else {})

    def fuse_luminance(self, irs: Sequence[np.ndarray], lumas: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Fuse equally sized ``uint8`` luminance pairs in one pass of the network's trunk."""
        return fuse_on_cpu(self.network, irs, lumas, self._intent_weights)[0]

    def _fuse(self, ir: np.ndarray, vis: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        luma, ycrcb = split_luminance(vis)
        fused = self.fuse_luminance([ir], [luma])[0]
        if valid is not None:
            fused = np.where(valid.astype(bool), fused, luma)
        return merge_luminance(fused, ycrcb)

    def fuse_batch(self, irs, viss, valids=None) -> list[np.ndarray]:
        """Fuse several pairs; same-size pairs without masks share one forward pass."""
        sizes = {v.shape[:2] for v in viss} | {i.shape[:2] for i in irs}
        if len(sizes) != 1 or (valids is not None and any(m is not None for m in valids)):
            return super().fuse_batch(irs, viss, valids)
        splits = [split_luminance(v) for v in viss]
        fused = self.fuse_luminance([as_gray(i) for i in irs], [luma for luma, _ in splits])
        return [merge_luminance(f, ycrcb) for f, (_, ycrcb) in zip(fused, splits, strict=True)]
