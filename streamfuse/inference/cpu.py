"""The CPU backend of the inference worker: OpenCV for colour, warp and bands, torch for the network's trunk.

Two threads, as on a GPU: the dispatch thread warps, converts to luminance, splits the bands and runs
the network (:func:`~streamfuse.models.cpu.decide_on_cpu`); a completion thread composes the bands
(:func:`~streamfuse.models.cpu.compose_on_cpu`), puts the visible colour back and resolves the futures,
so batch n's composition runs beside batch n+1's network: the fusion thread is the pipeline's slowest
stage (on 2 cores at 640x512 this took the benchmark from 25 to 36 fps end to end; docs/architecture.md).
One completion thread, fed in dispatch order, keeps every stream's frames resolved in submission
order. When no other frame is waiting (a live feed with one frame in flight) and the completion thread
is idle, the dispatch thread finishes the batch itself: there is nothing to overlap, and the hand-over
cost a live run about 5 ms of latency and a tenth of its frame rate.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from streamfuse.colour import merge_luminance, split_luminance
from streamfuse.inference.batches import Request, Resolver, batch_error
from streamfuse.models.cpu import Decided, compose_on_cpu, decide_on_cpu
from streamfuse.models.network import FusionNet


class _Fused(NamedTuple):
    """A fused batch on its way to the completion thread."""

    batch: list[Request]
    decided: Decided
    """The bands and the network's decisions, to compose."""
    lumas: list[np.ndarray]
    """Visible luminance per frame (kept where the warped infrared frame has no pixels)."""
    ycrcbs: list[np.ndarray | None]
    """Visible YCrCb per frame (None: gray input)."""
    valids: list[np.ndarray | None]
    """Where the warped infrared frame has pixels (None: everywhere)."""
    prepare_ms: float
    fuse_ms: float


class CpuBackend:
    """Runs the network on the dispatch thread; composes, restores colour and resolves futures on a completion
    thread while frames wait, else on the dispatch thread.

    Args:
        network: The fusion network (on the CPU, in eval mode).
        resolver: Where each batch is reported, fused or failed.
        temporal_smoothing: ``FusionNet.forward``'s ``momentum`` (0: each frame on its own).
        backlog: Whether frames are waiting to be dispatched (the worker's pending queue is not empty).
    """

    def __init__(self, network: FusionNet, resolver: Resolver, *, temporal_smoothing: float,
                 backlog: Callable[[], bool] = lambda: True) -> None:
        self.network = network
        self.backlog = backlog
        self.resolver = resolver
        self.temporal_smoothing = temporal_smoothing
        self._memory: dict[int, torch.Tensor] = {}
        """Per stream: the network's temporal memory after its latest frame (temporal smoothing)."""
        self._done: queue.SimpleQueue[_Fused | None] = queue.SimpleQueue()
        self._handed_over = 0
        """Batches given to the completion thread and not finished yet (guarded by ``_lock``)."""
        self._lock = threading.Lock()
        self._completer = threading.Thread(target=self._complete_loop, name="inference-complete", daemon=True)
        self._completer.start()

    def threads(self) -> tuple[threading.Thread, ...]:
        return (self._completer,)

    def forget(self, stream: int) -> None:
        """Drop ``stream``'s temporal memory (after its last frame)."""
        self._memory.pop(stream, None)

    def graphs(self) -> dict:
        """No CUDA graphs on the CPU."""
        return {}

    def start(self) -> None:
        pass

    def finish(self) -> None:
        self._done.put(None)

    def join(self, timeout: float | None) -> None:
        self._completer.join(timeout)

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
        lumas, ycrcbs = zip(*(split_luminance(request.vis) for request in batch), strict=True)
        lumas = [np.ascontiguousarray(luma) for luma in lumas]  # the bands read a contiguous image faster
        weights = torch.cat([request.weights for request in batch])
        t1 = time.perf_counter()
        try:
            memory = self._memory_rows(batch, height, width) if self.temporal_smoothing else None
            decided, new_memory = decide_on_cpu(self.network, [ir for _, (ir, _) in prepared], lumas, weights,
                                                memory, self.temporal_smoothing)
        except Exception as exc:
            self.resolver.failed(batch, batch_error(batch, "forward pass", exc))
            return
        if new_memory is not None:
            for i, request in enumerate(batch):
                self._memory[request.stream] = new_memory[i].clone()
        t2 = time.perf_counter()
        fused = _Fused(batch, decided, lumas, list(ycrcbs), [valid for _, (_, valid) in prepared],
                       (t1 - t0) * 1000, (t2 - t1) * 1000)
        with self._lock:
            hand_over = self._handed_over > 0 or self.backlog()  # finishing here would then hold up the next batch
            self._handed_over += hand_over
        if hand_over:
            self._done.put(fused)
        else:  # nothing waits and the completion thread is idle: no hand-over (a live feed)
            self._finish(fused)

    def _complete_loop(self) -> None:
        while (fused := self._done.get()) is not None:
            self._finish(fused)
            with self._lock:
                self._handed_over -= 1

    def _finish(self, fused: _Fused) -> None:
        """Compose a decided batch, put the visible colour back and resolve its futures."""
        t0 = time.perf_counter()
        stage = "composition"
        try:
            levels = compose_on_cpu(fused.decided)
            stage = "colour restoration"
            results = []
            for level, luma, ycrcb, valid in zip(levels, fused.lumas, fused.ycrcbs, fused.valids, strict=True):
                if valid is not None:
                    level = np.where(valid.astype(bool), level, luma)
                results.append(merge_luminance(level, ycrcb))  # new arrays: nothing here is reused
        except Exception as exc:
            self.resolver.failed(fused.batch, batch_error(fused.batch, stage, exc))
            return
        finish_ms = (time.perf_counter() - t0) * 1000
        self.resolver.done(fused.batch, results, (fused.prepare_ms, fused.fuse_ms, finish_ms))

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
