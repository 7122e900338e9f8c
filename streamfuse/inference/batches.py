"""Batch types of the inference worker and the callback through which backends report (:class:`Resolver`)."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from streamfuse.errors import PipelineError
from streamfuse.inference.stats import WorkerStats
from streamfuse.registration.homography import Homography

#: Stream id of the dummy frame that warms the inference worker up (never a real stream's id): fused, but
#: not counted in the worker's statistics (its one-off start-up cost is no frame's latency).
WARM_UP_STREAM = -1

Key = tuple[tuple[int, ...], tuple[int, int], bool]
"""Batching key: visible shape, infrared shape, whether the infrared frame is warped."""


class InferenceError(PipelineError):
    """Fusing a batch failed; set on the future of every frame in that batch (``__cause__`` holds the cause)."""


@dataclass(eq=False, slots=True)
class Request:
    """One submitted frame pair: its inputs, conditioning, warp, future and timings."""

    stream: int
    ir: np.ndarray
    vis: np.ndarray
    weights: torch.Tensor
    transform: Homography | None
    future: concurrent.futures.Future
    submitted: float
    key: Key
    dispatched: float = 0.0


def settle(future: concurrent.futures.Future, result: Any = None, error: BaseException | None = None) -> None:
    """Resolve a future unless it is already done (cancelled, or failed by ``close`` after a timeout)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass


def batch_error(batch: list[Request], what: str, exc: BaseException) -> InferenceError:
    """An :class:`InferenceError` naming the batch's streams and frame size, caused by ``exc``."""
    streams = sorted({r.stream for r in batch})
    height, width = batch[0].vis.shape[:2]
    described = f"{len(batch)} frame(s) of stream(s) {', '.join(map(str, streams))} at {width}x{height}"
    error = InferenceError(f"inference: {what} failed for {described}: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


class Resolver:
    """The callback through which a backend reports each batch: fused (with stage times) or failed.

    Args:
        stats: Where batches, frames and failures are counted.
    """

    def __init__(self, stats: WorkerStats) -> None:
        self.stats = stats

    def done(self, batch: list[Request], results: list[np.ndarray], stages_ms: tuple[float, float, float]) -> None:
        """Record statistics (not of a warm-up) and resolve a successful batch's futures in order."""
        counted = any(request.stream != WARM_UP_STREAM for request in batch)
        if counted:
            self.stats.record_batch(len(batch), *stages_ms)
        for request, result in zip(batch, results, strict=True):
            now = time.perf_counter()
            if counted:
                self.stats.record_frame((request.dispatched - request.submitted) * 1000,
                                        (now - request.submitted) * 1000)
            settle(request.future, result)

    def failed(self, batch: list[Request], error: BaseException) -> None:
        """Fail every frame of ``batch`` with ``error``."""
        self.stats.record_failure(len(batch))
        for request in batch:
            settle(request.future, error=error)

    def prepare_each(self, batch: list[Request], prepare: Callable[[Request], Any]) -> list[tuple[Request, Any]]:
        """Run ``prepare`` per frame; a frame that fails (e.g. a bad homography) fails alone."""
        prepared = []
        for request in batch:
            try:
                prepared.append((request, prepare(request)))
            except Exception as exc:
                self.failed([request], batch_error([request], "preparing the frame", exc))
        return prepared
