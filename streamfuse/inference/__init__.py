"""Batched, pipelined inference of the fusion network on a GPU (or the CPU) for several streams.

``worker`` is the scheduler (batching across streams, futures, shutdown); ``batches`` holds what it
hands a backend and the callback backends report through; ``cpu`` and ``cuda`` are the backends;
``gpu_ops`` the tensor versions of the colour and warp arithmetic.

Imports only torch, numpy, OpenCV and streamfuse's model, registration and colour helpers (never
zmq, PyAV or open_clip), so it can run on a bare GPU machine.
"""

from __future__ import annotations

from streamfuse.inference.batches import InferenceError
from streamfuse.inference.stats import WorkerStats
from streamfuse.inference.worker import InferenceWorker, build_worker

__all__ = ["InferenceWorker", "WorkerStats", "InferenceError", "build_worker"]
