"""Counters and latency samples of an inference worker."""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamfuse.stats import PipelineStats

#: Latency samples kept per stage.
STATS_WINDOW = 5000


def _samples() -> collections.deque[float]:
    return collections.deque(maxlen=STATS_WINDOW)


@dataclass
class WorkerStats:
    """Counters and per-stage latency samples of an :class:`InferenceWorker` (thread-safe).

    Stage latencies are per batch: on the GPU path ``upload_ms``, ``model_ms`` and ``download_ms``
    are the GPU times of the host-to-device copy, the compute (colour, warp, network) and the
    device-to-host copy; on the CPU path they are the preparation (warp, colour split), the bands and
    the network, and the finishing on the completion thread (composition, chroma restored). ``queue_ms``
    (submission to dispatch) and ``total_ms`` (submission to resolved future) are per frame. Each
    list keeps the last :data:`STATS_WINDOW` samples.
    """

    frames: int = 0
    """Frames fused successfully."""
    batches: int = 0
    """Batches fused successfully."""
    failed: int = 0
    """Frames whose future got an exception."""
    upload_ms: collections.deque[float] = field(default_factory=_samples)
    model_ms: collections.deque[float] = field(default_factory=_samples)
    download_ms: collections.deque[float] = field(default_factory=_samples)
    queue_ms: collections.deque[float] = field(default_factory=_samples)
    total_ms: collections.deque[float] = field(default_factory=_samples)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def mean_batch(self) -> float:
        """Mean number of frames per successful forward pass (0 before the first)."""
        with self._lock:
            return self.frames / self.batches if self.batches else 0.0

    def record_batch(self, size: int, upload_ms: float, model_ms: float, download_ms: float) -> None:
        """Count one successful batch of ``size`` frames and its stage times."""
        with self._lock:
            self.frames += size
            self.batches += 1
            self.upload_ms.append(upload_ms)
            self.model_ms.append(model_ms)
            self.download_ms.append(download_ms)

    def record_frame(self, queue_ms: float, total_ms: float) -> None:
        """Record one resolved frame's queueing and submit-to-result latency."""
        with self._lock:
            self.queue_ms.append(queue_ms)
            self.total_ms.append(total_ms)

    def record_failure(self, frames: int) -> None:
        """Count frames whose future got an exception."""
        with self._lock:
            self.failed += frames

    def percentiles(self, stage: str, quantiles: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
        """Percentiles of one stage's samples, e.g. ``{"p50": 1.2, "p95": 2.0, "p99": 2.5, "mean": 1.3}``.

        Args:
            stage: ``"upload"``, ``"model"``, ``"download"``, ``"queue"`` or ``"total"`` (with or without ``_ms``).
            quantiles: Percentiles to report (0..100).

        Returns:
            Milliseconds by ``p<q>`` and ``mean``; all zeros when there are no samples yet.
        """
        name = stage if stage.endswith("_ms") else f"{stage}_ms"
        if name not in ("upload_ms", "model_ms", "download_ms", "queue_ms", "total_ms"):
            raise ValueError(f"unknown stage {stage!r}; use upload, model, download, queue or total")
        with self._lock:
            samples = np.array(getattr(self, name), dtype=np.float64)
        keys = [f"p{q:g}" for q in quantiles]
        if samples.size == 0:
            return {**dict.fromkeys(keys, 0.0), "mean": 0.0}
        values = np.percentile(samples, quantiles)
        return {**{k: float(v) for k, v in zip(keys, values, strict=True)}, "mean": float(samples.mean())}

    def summary(self) -> dict[str, Any]:
        """Counters and the percentiles of every stage, as plain data."""
        stages = {name: self.percentiles(name) for name in ("upload", "model", "download", "queue", "total")}
        with self._lock:
            counts = {"frames": self.frames, "batches": self.batches, "failed": self.failed}
        return {**counts, "mean_batch": self.mean_batch, "stages_ms": stages}

    def record_into(self, stats: PipelineStats) -> None:
        """Copy the per-batch stage times (upload, model, download) into a pipeline's ``stats``."""
        for stage in ("upload", "model", "download"):
            with self._lock:
                samples = list(getattr(self, f"{stage}_ms"))
            for value in samples:
                stats.record_latency(stage, value)
