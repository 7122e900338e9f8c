"""Batched, pipelined inference of the fusion network on a GPU (or the CPU) for several streams.

Imports only torch, numpy, OpenCV and streamfuse's model, registration and colour helpers (never
zmq, PyAV or open_clip), so it can run on a bare GPU machine.
"""

from __future__ import annotations

from streamfuse.inference.worker import InferenceError, InferenceWorker, WorkerStats, build_worker

__all__ = ["InferenceWorker", "WorkerStats", "InferenceError", "build_worker"]
