"""The ``model`` fuser: the text-guided fusion network on the luminance, visible chroma restored."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from streamfuse.colour import as_gray, merge_luminance, split_luminance
from streamfuse.config import FusionConfig
from streamfuse.frames import FramePair
from streamfuse.fusers.base import Fuser, warn_of_unknown_intents
from streamfuse.inference import InferenceWorker, build_worker
from streamfuse.inference.batches import WARM_UP_STREAM
from streamfuse.models.checkpoint import load_model
from streamfuse.models.cpu import fuse_on_cpu
from streamfuse.registration import Homography, Transform
from streamfuse.stats import PipelineStats


class ModelFuser(Fuser):
    """Runs :class:`~streamfuse.models.network.FusionNet` with the routed prompt.

    :meth:`fuse` runs the network here, on the CPU. :meth:`submit` runs it in an
    :class:`~streamfuse.inference.InferenceWorker` (CUDA streams on a GPU, the same API on the CPU)
    that :meth:`start` builds from ``fusion`` and :meth:`close` closes, or in a ``worker`` shared by
    several fusers (one stream each; the worker batches their frames and its owner closes it). The
    worker also applies the pairs' homographies, next to the fusion.

    Args:
        weights: Checkpoint file; None loads the shipped weights.
        fusion: The worker's settings (device, precision, batching, temporal smoothing).
        worker: A shared worker to submit to instead of building one.
        stream: This fuser's stream id in the worker.
    """

    name = "model"

    def __init__(self, weights: str | Path | None = None, *, fusion: FusionConfig | None = None,
                 worker: InferenceWorker | None = None, stream: int = 0) -> None:
        self.network, self.metadata = load_model(weights)
        self.network = self.network.to(memory_format=torch.channels_last)
        self._intent_weights = self.network.intent_weights({"balanced": 1.0})
        self.fusion = fusion or FusionConfig(fuser="model")
        self.stream = stream
        self.worker = worker
        """The inference worker :meth:`submit` uses (built by :meth:`start` unless one was shared in)."""
        self._owns_worker = worker is None
        self._stats: PipelineStats | None = None

    def condition(self, routing) -> None:
        """Use the routing's intent weights (None: balanced) from the next frame on."""
        if routing is not None:
            warn_of_unknown_intents(self.name, routing.weights, self.network.intents)
        self._intent_weights = self.network.intent_weights(routing.weights if routing is not None else {})
        if self.worker is not None:
            self.worker.set_weights(self.stream, self._intent_weights)

    def start(self, stats: PipelineStats | None = None, *, live: bool = False) -> None:
        """Build the worker (unless shared) and condition this stream on the current intent weights."""
        if self._owns_worker:
            self.worker = build_worker(self.network, self.fusion)
            self._stats = stats
        self.worker.set_weights(self.stream, self._intent_weights)

    def close(self, *, timeout: float | None = None, cancel_pending: bool = False) -> None:
        """Close an owned worker; unless cancelling, its stage times then go to the ``stats`` of :meth:`start`."""
        if not self._owns_worker or self.worker is None:
            return
        self.worker.close(timeout, cancel_pending=cancel_pending)
        if self._stats is not None and not cancel_pending:
            self.worker.stats.record_into(self._stats)
            self._stats = None

    def max_in_flight(self, *, live: bool) -> int:
        """Enough to fill a batch and overlap the next one; a live feed keeps one batch.

        Anything more is latency on a live feed: the fresher pair waits in the pipeline's
        drop-oldest queue instead.
        """
        return self.worker.max_batch if live else max(2, 2 * self.worker.max_batch)

    def warps(self, transform: Transform) -> bool:
        """Homographies are applied in the worker (on the GPU there, with cached tables)."""
        return isinstance(transform, Homography)

    def warm_up(self, pair: FramePair) -> bool:
        """Run a black pair of ``pair``'s shapes (and warp) through the worker, on its own stream."""
        ir, vis = np.zeros_like(pair.ir.image), np.zeros_like(pair.vis.image)
        self.worker.submit(WARM_UP_STREAM, ir, vis, homography=pair.transform).result()
        # Counted as an active stream for a second, the batching would wait for its next frame in vain.
        self.worker.forget(WARM_UP_STREAM)
        return True

    def submit(self, pair: FramePair, routing) -> concurrent.futures.Future:
        """Queue ``pair`` in the worker (after :meth:`start`); the future fails with an ``InferenceError``."""
        self._condition_once(routing)
        return self.worker.submit(self.stream, pair.ir.image, pair.vis.image, homography=pair.transform)

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
