"""The CPU backend of the inference worker: OpenCV for colour, warp and bands, torch for the network's trunk."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from streamfuse.fusers.colour import merge_luminance
from streamfuse.inference.batches import Request, Resolver, batch_error
from streamfuse.models.cpu import fuse_on_cpu
from streamfuse.models.network import FusionNet


@dataclass
class _CpuBuffers:
    """Per-shape staging buffers of the CPU path, reused for every batch of that shape."""

    ir_u8: np.ndarray  # (max_batch, H, W)
    luma_u8: np.ndarray  # (max_batch, H, W)
    ycrcb: list[np.ndarray]  # max_batch x (H, W, 3)


class CpuBackend:
    """Fuses each batch synchronously on the dispatch thread (:func:`~streamfuse.models.cpu.fuse_on_cpu`).

    Args:
        network: The fusion network (on the CPU, in eval mode).
        resolver: Where each batch is reported, fused or failed.
        max_batch: Most frames per batch (sizes the staging buffers).
        temporal_smoothing: ``FusionNet.forward``'s ``momentum`` (0: each frame on its own).
    """

    _MAX_SHAPES = 8

    def __init__(self, network: FusionNet, resolver: Resolver, *, max_batch: int, temporal_smoothing: float) -> None:
        self.network = network
        self.resolver = resolver
        self.max_batch = max_batch
        self.temporal_smoothing = temporal_smoothing
        self._buffers: dict[tuple[int, int], _CpuBuffers] = {}
        self._memory: dict[int, torch.Tensor] = {}
        """Per stream: the network's temporal memory after its latest frame (temporal smoothing)."""

    def threads(self) -> tuple[threading.Thread, ...]:
        return ()

    def graphs(self) -> dict:
        """No CUDA graphs on the CPU."""
        return {}

    def start(self) -> None:
        pass

    def finish(self) -> None:
        pass

    def join(self, timeout: float | None) -> None:
        pass

    def _buffers_for(self, height: int, width: int) -> _CpuBuffers:
        buffers = self._buffers.get((height, width))
        if buffers is None:
            if len(self._buffers) >= self._MAX_SHAPES:
                self._buffers.pop(next(iter(self._buffers)))
            n = self.max_batch
            buffers = _CpuBuffers(np.empty((n, height, width), np.uint8), np.empty((n, height, width), np.uint8),
                                  [np.empty((height, width, 3), np.uint8) for _ in range(n)])
            self._buffers[(height, width)] = buffers
        return buffers

    @staticmethod
    def _warp(request: Request) -> tuple[np.ndarray, np.ndarray | None]:
        if request.transform is None:
            return request.ir, None
        return request.transform.apply(request.ir, request.vis.shape[:2])

    @torch.inference_mode()
    def run(self, batch: list[Request]) -> None:
        t0 = time.perf_counter()
        prepared = self.resolver.prepare_each(batch, self._warp)
        if not prepared:
            return
        batch = [request for request, _ in prepared]
        height, width = batch[0].vis.shape[:2]
        size = len(batch)
        buffers = self._buffers_for(height, width)
        for i, (request, (ir, _valid)) in enumerate(prepared):
            buffers.ir_u8[i] = ir
            if request.vis.ndim == 3:
                cv2.cvtColor(request.vis, cv2.COLOR_BGR2YCrCb, dst=buffers.ycrcb[i])
                buffers.luma_u8[i] = buffers.ycrcb[i][:, :, 0]
            else:
                buffers.luma_u8[i] = request.vis
        weights = torch.cat([request.weights for request in batch])
        t1 = time.perf_counter()
        try:
            memory = self._memory_rows(batch, height, width) if self.temporal_smoothing else None
            levels, new_memory = fuse_on_cpu(self.network, buffers.ir_u8[:size], buffers.luma_u8[:size], weights,
                                             memory, self.temporal_smoothing)
        except Exception as exc:
            self.resolver.failed(batch, batch_error(batch, "forward pass", exc))
            return
        if new_memory is not None:
            for i, request in enumerate(batch):
                self._memory[request.stream] = new_memory[i].clone()
        t2 = time.perf_counter()
        results = []
        for i, (request, (_ir, valid)) in enumerate(prepared):
            luma = levels[i]
            if valid is not None:
                luma = np.where(valid.astype(bool), luma, buffers.luma_u8[i])
            if request.vis.ndim == 3:
                results.append(merge_luminance(luma, buffers.ycrcb[i]))  # a new array
            else:
                results.append(luma)  # a new array from fuse_on_cpu (or np.where), not a reused buffer
        t3 = time.perf_counter()
        self.resolver.done(batch, results, ((t1 - t0) * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000))

    def _memory_rows(self, batch: list[Request], height: int, width: int) -> torch.Tensor:
        """Each frame's stream memory from its previous frame (NaN rows: none yet, or another size).

        Frames of one stream in the same batch all continue from the memory before the batch.
        """
        fresh = torch.full(FusionNet.memory_shape(height, width), float("nan"))
        rows = []
        for request in batch:
            previous = self._memory.get(request.stream)
            rows.append(previous if previous is not None and previous.shape == fresh.shape else fresh)
        return torch.stack(rows)
