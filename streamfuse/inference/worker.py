"""An inference worker that batches frames across streams and keeps a GPU busy without adding latency.

Threads and queues::

    submit() ──► pending deque ──► dispatch thread ──► (CPU) prepare, forward, finish, resolve futures
    (any thread,   (bounded by      forms batches     (CUDA) launch: upload on the copy stream,
     blocks when    queue_size       of same-size              compute on the compute stream,
     full)          unresolved       frames                    download on the download stream
                    frames)                                          │ events
                                                                     ▼
                                                     completion thread: waits on the batch's last
                                                     event, copies results out of the pinned ring,
                                                     resolves futures

**Batching rule.** The dispatch thread takes the oldest pending frame and every later pending frame
with the same batching key (visible shape, infrared shape, warped or not), in submission order, up
to ``max_batch``. A stream that has an earlier frame of another size pending contributes no later
frames, so each stream's frames are fused, and their futures resolved, in submission order. When the
batch is smaller than the number of streams that recently submitted frames of that key (capped at
``max_batch``), it waits for them, but never past ``max_wait_ms`` after the oldest frame's
submission; a lone stream therefore never waits, and a backlog never waits at all.

**GPU path.** Host buffers are pinned and come from a small ring per batching key (capacity
``max_batch`` frames each, :data:`RING_DEPTH` deep); a slot goes back to the ring only after its
batch's download finished and the results were copied out of it, so no buffer is handed out while
still referenced. Because the three CUDA streams hand work over with events, frame n+1's upload
overlaps frame n's compute and frame n-1's download, and the host never calls
``torch.cuda.synchronize()`` in the hot path: the completion thread waits on one event per batch.
Colour conversion (BGR<->YCrCb) and the homography warp run on the GPU
(:mod:`streamfuse.inference.gpu_ops`, bit-exact to the OpenCV calls the CPU path makes). The first
batch of each (key, batch size) is a warm-up (a few eager runs, cuDNN autotuning) and, with
``cuda_graphs``, a CUDA graph capture on the compute stream; later batches replay the graph with
static input and output tensors. A capture that fails logs a warning and that shape runs eagerly.
Creating a CUDA worker turns on ``torch.backends.cudnn.benchmark`` (process-wide; shapes are fixed).

**Error policy.** A failing forward pass (or any failure while preparing or finishing a batch) sets
an :class:`InferenceError` naming the streams, the frame size and the cause on the futures of that
batch only, and the worker keeps working: later frames are fused normally. (An asynchronous CUDA
error that corrupts the context makes every later batch fail the same way, each with its own
error.) A failure of the worker's own machinery fails every unresolved future, and ``submit`` then
raises ``RuntimeError``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import copy
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from streamfuse.config import FusionConfig, check_homography
from streamfuse.errors import ConfigError, PipelineError
from streamfuse.fusers.colour import as_gray
from streamfuse.inference import gpu_ops
from streamfuse.models.network import FusionNet
from streamfuse.registration.homography import HomographyRegistrar

log = logging.getLogger(__name__)

#: Precision names and their torch dtypes.
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: Pinned buffer sets per batching key on the GPU path (upload, compute, download, copy-out).
RING_DEPTH = 4
#: Eager runs before the first timed (or captured) batch of each shape on the GPU.
WARMUP_RUNS = 3
#: A stream counts as active (worth waiting for when batching) this long after its last frame.
ACTIVE_STREAM_S = 1.0
#: Latency samples kept per stage.
STATS_WINDOW = 5000

_Key = tuple[tuple[int, ...], tuple[int, int], bool]
"""Batching key: visible shape, infrared shape, whether the infrared frame is warped."""


class InferenceError(PipelineError):
    """Fusing a batch failed; set on the future of every frame in that batch (``__cause__`` holds the cause)."""


def _samples() -> collections.deque[float]:
    return collections.deque(maxlen=STATS_WINDOW)


@dataclass
class WorkerStats:
    """Counters and per-stage latency samples of an :class:`InferenceWorker` (thread-safe).

    Stage latencies are per batch: on the GPU path ``upload_ms``, ``model_ms`` and ``download_ms``
    are the GPU times of the host-to-device copy, the compute (colour, warp, network) and the
    device-to-host copy; on the CPU path they are the preparation (warp, colour split, staging),
    the forward pass and the finishing (quantisation, chroma restored, copy-out). ``queue_ms``
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


class _Warp:
    """One stream's homography with its per-size caches (touched only by the dispatch thread)."""

    def __init__(self, matrix: np.ndarray) -> None:
        self.matrix = matrix
        self.registrar: HomographyRegistrar | None = None
        self.tables: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}


@dataclass(eq=False, slots=True)
class _Request:
    stream: int
    ir: np.ndarray
    vis: np.ndarray
    weights: torch.Tensor
    warp: _Warp | None
    future: concurrent.futures.Future
    submitted: float
    key: _Key
    dispatched: float = 0.0


def _settle(future: concurrent.futures.Future, result: Any = None, error: BaseException | None = None) -> None:
    """Resolve a future unless it is already done (cancelled, or failed by ``close`` after a timeout)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass


def _describe(batch: list[_Request]) -> str:
    streams = sorted({r.stream for r in batch})
    height, width = batch[0].vis.shape[:2]
    return f"{len(batch)} frame(s) of stream(s) {', '.join(map(str, streams))} at {width}x{height}"


def _batch_error(batch: list[_Request], what: str, exc: BaseException) -> InferenceError:
    error = InferenceError(f"inference: {what} failed for {_describe(batch)}: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"  # resolved below to an indexed device
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device: unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if resolved.type == "cpu":
        return torch.device("cpu")
    if resolved.type != "cuda":
        raise ValueError(f"device: unsupported device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but CUDA is not available here "
                         "(torch.cuda.is_available() is False); use 'cpu' or 'auto'")
    index = resolved.index if resolved.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise ValueError(f"device: {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return torch.device("cuda", index)


class InferenceWorker:
    """Fuses frames from several streams on one device, batching same-size frames across streams.

    ``submit`` returns a future per frame; each stream's futures resolve in submission order. The
    worker runs its own copy of ``network`` (moved to the device, in ``precision``), so later
    changes to the caller's module are not seen. Usable as a context manager (``close`` on exit).

    Args:
        network: The fusion network (its weights are copied).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        precision: ``"fp32"``, ``"fp16"`` or ``"bf16"`` (the network's weights and activations;
            colour and warp arithmetic is exact integer math either way). fp16/bf16 need CUDA: with
            ``device="cpu"`` they raise ``ValueError``; with ``device="auto"`` on a machine without
            a GPU the worker logs a warning and runs fp32. On GPUs with TF32, fp32 convolutions use
            it unless ``torch.backends.cudnn.allow_tf32`` is turned off.
        max_batch: Most frames per forward pass.
        max_wait_ms: Longest a frame waits for its batch to fill.
        threads: Torch CPU threads (process-wide ``torch.set_num_threads``; None leaves torch's default).
        cuda_graphs: Capture and replay CUDA graphs per shape and batch size (GPU only).
        queue_size: Most unresolved frames; ``submit`` blocks while that many are pending
            (submitted, not yet resolved). Must be at least ``max_batch``.
        temporal_smoothing: Weight of each stream's previous frame in the fusion decisions
            (``FusionNet.forward``'s ``momentum``; 0 disables), on the CPU and the GPU alike.

    Raises:
        ValueError: An argument is out of range, or the device or precision is unavailable.
    """

    def __init__(self, network: FusionNet, *, device: str = "auto", precision: str = "fp32", max_batch: int = 1,
                 max_wait_ms: float = 4.0, threads: int | None = None, cuda_graphs: bool = True,
                 queue_size: int = 8, temporal_smoothing: float = 0.0) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch: must be at least 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms: must not be negative, got {max_wait_ms}")
        if queue_size < max_batch:
            raise ValueError(f"queue_size ({queue_size}) must be at least max_batch ({max_batch})")
        if threads is not None and threads < 1:
            raise ValueError(f"threads: must be at least 1, got {threads}")
        if not 0.0 <= temporal_smoothing < 1.0:
            raise ValueError(f"temporal_smoothing: must be in [0, 1), got {temporal_smoothing}")
        self.device = _resolve_device(device)
        self.temporal_smoothing = temporal_smoothing
        if precision != "fp32" and self.device.type != "cuda":
            if device != "auto":
                raise ValueError(f"precision {precision!r} needs a CUDA device; device {device!r} runs fp32 only")
            log.warning("precision %s needs CUDA and no GPU is available: running fp32 on the CPU", precision)
            precision = "fp32"
        self.precision = precision
        self.dtype = PRECISIONS[precision]
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.queue_size = queue_size
        if threads is not None:
            torch.set_num_threads(threads)
        self.intents = list(network.intents)
        balanced = {"balanced": 1.0} if "balanced" in self.intents else dict.fromkeys(self.intents, 1.0)
        self._default_weights = network.intent_weights(balanced).float()
        model = copy.deepcopy(network).eval().requires_grad_(False)
        self.network = model.to(self.device, self.dtype).to(memory_format=torch.channels_last)
        self.stats = WorkerStats()
        self._cond = threading.Condition()
        self._pending: collections.deque[_Request] = collections.deque()
        self._live: set[concurrent.futures.Future] = set()
        self._weights: dict[int, torch.Tensor] = {}
        self._warps: dict[int, _Warp] = {}
        self._recent: dict[_Key, dict[int, float]] = {}
        self._closed = False
        self._failure: BaseException | None = None
        if self.device.type == "cuda":
            self._backend: _CpuBackend | _CudaBackend = _CudaBackend(self, cuda_graphs)
        else:
            self._backend = _CpuBackend(self)
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="inference-dispatch", daemon=True)
        self._dispatcher.start()

    # ------------------------------------------------------------------------------------ public API
    def set_weights(self, stream: int, intent_weights: torch.Tensor) -> None:
        """Condition ``stream`` on these intent weights, for frames submitted after this call.

        Args:
            stream: Stream id.
            intent_weights: ``(1, K)`` or ``(K,)`` weights in the network's intent order (see
                :meth:`FusionNet.intent_weights`).
        """
        weights = torch.as_tensor(intent_weights).detach().to("cpu", torch.float32).reshape(1, -1).clone()
        if weights.shape[1] != len(self.intents):
            raise ValueError(f"intent weights: expected {len(self.intents)} values (one per intent), "
                             f"got {weights.shape[1]}")
        if not torch.isfinite(weights).all():
            raise ValueError("intent weights: contain a non-finite value")
        with self._cond:
            self._weights[stream] = weights

    def set_homography(self, stream: int, matrix: np.ndarray | None) -> None:
        """Warp ``stream``'s infrared frames with this IR->VIS homography (None: no warp), for later frames.

        Raises:
            ConfigError: The matrix is not a valid, invertible 3x3 homography.
        """
        warp = None if matrix is None else _Warp(check_homography(matrix, f"stream {stream} homography"))
        with self._cond:
            if warp is None:
                self._warps.pop(stream, None)
            else:
                self._warps[stream] = warp

    def submit(self, stream: int, ir: np.ndarray, vis: np.ndarray) -> concurrent.futures.Future:
        """Queue one frame pair of ``stream``; blocks while ``queue_size`` frames are unresolved.

        The arrays are read later, on the worker's threads: do not modify them until the future is done.
        Callbacks added to the future run on a worker thread: keep them short, and never call
        ``submit`` from them (it may block on the queue that thread drains).

        Args:
            stream: Stream id (frames of one stream are fused in submission order).
            ir: ``uint8`` infrared frame ``(h, w)`` (a BGR frame is reduced to its luminance). Warped
                onto the visible grid if the stream has a homography; otherwise it must have the
                visible frame's size.
            vis: ``uint8`` visible frame, BGR ``(H, W, 3)`` or gray ``(H, W)``.

        Returns:
            A future resolving to the fused ``uint8`` image, shaped like ``vis``, or failing with
            :class:`InferenceError`.

        Raises:
            ValueError: Bad image types or sizes.
            RuntimeError: The worker is closed (or stopped after an internal failure).
        """
        vis = np.asarray(vis)
        if vis.dtype != np.uint8 or not (vis.ndim == 2 or (vis.ndim == 3 and vis.shape[2] == 3)):
            raise ValueError(f"visible frame: expected uint8 (H, W, 3) BGR or (H, W) gray, got {vis.dtype} "
                             f"{vis.shape}")
        ir = np.asarray(ir)
        if ir.ndim == 3:
            ir = as_gray(ir)
        if ir.dtype != np.uint8 or ir.ndim != 2:
            raise ValueError(f"infrared frame: expected uint8 (h, w), got {ir.dtype} {ir.shape}")
        with self._cond:
            while len(self._live) >= self.queue_size and not self._closed and self._failure is None:
                self._cond.wait()
            self._check_open()
            warp = self._warps.get(stream)
            if warp is None and ir.shape != vis.shape[:2]:
                raise ValueError(f"stream {stream}: infrared frame is {ir.shape[1]}x{ir.shape[0]} but visible frame "
                                 f"is {vis.shape[1]}x{vis.shape[0]}; set a homography or register them first")
            future: concurrent.futures.Future = concurrent.futures.Future()
            now = time.perf_counter()
            key: _Key = (vis.shape, ir.shape, warp is not None)
            self._pending.append(_Request(stream, ir, vis, self._weights.get(stream, self._default_weights), warp,
                                          future, now, key))
            self._live.add(future)
            self._recent.setdefault(key, {})[stream] = now
            self._cond.notify_all()
        future.add_done_callback(self._forget)
        return future

    def close(self, timeout: float | None = None, *, cancel_pending: bool = False) -> None:
        """Stop accepting frames, finish the ones submitted, join the threads.

        Every future is done afterwards: fused, failed, or cancelled. Idempotent.

        Args:
            timeout: Longest to wait for the frames in flight, in seconds (None: as long as they take).
                Frames still unresolved then fail with ``RuntimeError``.
            cancel_pending: Cancel frames not yet dispatched instead of fusing them (frames already
                running on the device still finish).
        """
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        with self._cond:
            self._closed = True
            queued = [r.future for r in self._pending] if cancel_pending else []
            self._cond.notify_all()
        for future in queued:
            future.cancel()
        own = threading.current_thread() in (self._dispatcher, *self._backend.threads())
        if not own:
            self._dispatcher.join(left())
            self._backend.join(left())
        with self._cond:
            unresolved = list(self._live)
        for future in unresolved:
            if not future.cancel():
                _settle(future, error=RuntimeError("inference worker closed before this frame was fused "
                                                   "(close timed out)"))
        alive = [t.name for t in (self._dispatcher, *self._backend.threads()) if t.is_alive()]
        if alive and not own:
            log.warning("inference worker: threads still running after close(timeout=%s): %s", timeout, alive)

    def __enter__(self) -> InferenceWorker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    # --------------------------------------------------------------------------------------- internals
    def _check_open(self) -> None:
        if self._failure is not None:
            raise RuntimeError(f"inference worker stopped after an internal error: {self._failure}") from self._failure
        if self._closed:
            raise RuntimeError("inference worker is closed; create a new one to submit frames")

    def _forget(self, future: concurrent.futures.Future) -> None:
        with self._cond:
            self._live.discard(future)
            self._cond.notify_all()

    def _dispatch_loop(self) -> None:
        try:
            self._backend.start()
            while (batch := self._next_batch()) is not None:
                try:
                    self._backend.run(batch)
                except Exception as exc:  # the batch fails, the worker goes on
                    log.debug("inference batch failed", exc_info=True)
                    self._fail(batch, _batch_error(batch, "forward pass", exc))
        except BaseException as exc:
            log.exception("inference worker stopped after an internal error")
            with self._cond:
                self._failure = exc
                requests = list(self._pending)
                unresolved = list(self._live)
                self._cond.notify_all()
            error = RuntimeError(f"inference worker stopped after an internal error: {type(exc).__name__}: {exc}")
            for future in [r.future for r in requests] + unresolved:
                if not future.cancel():
                    _settle(future, error=error)
        finally:
            self._backend.finish()

    def _fail(self, batch: list[_Request], error: BaseException) -> None:
        self.stats.record_failure(len(batch))
        for request in batch:
            _settle(request.future, error=error)

    def _next_batch(self) -> list[_Request] | None:
        """The next batch to fuse (see the module docstring), or None once closed and drained."""
        with self._cond:
            while True:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return None
                head = self._pending[0]
                deadline = head.submitted + self.max_wait_s
                while True:
                    batch = self._collect(head)
                    if len(batch) >= self._batch_target(head.key) or self._closed:
                        break
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                for request in batch:
                    self._pending.remove(request)
                now = time.perf_counter()
                running = []
                for request in batch:
                    if request.future.set_running_or_notify_cancel():
                        request.dispatched = now
                        running.append(request)
                if running:
                    return running

    def _collect(self, head: _Request) -> list[_Request]:
        batch: list[_Request] = []
        blocked: set[int] = set()
        for request in self._pending:
            if len(batch) == self.max_batch:
                break
            if request.key == head.key and request.stream not in blocked:
                batch.append(request)
            else:
                blocked.add(request.stream)  # keep this stream's order: nothing of it may overtake this frame
        return batch

    def _batch_target(self, key: _Key) -> int:
        now = time.perf_counter()
        recent = self._recent.get(key, {})
        active = sum(1 for last in recent.values() if now - last < ACTIVE_STREAM_S)
        return max(1, min(self.max_batch, active))

    def _finish(self, batch: list[_Request], results: list[np.ndarray], stages_ms: tuple[float, float, float]) -> None:
        """Record statistics and resolve a successful batch's futures in order."""
        self.stats.record_batch(len(batch), *stages_ms)
        for request, result in zip(batch, results, strict=True):
            now = time.perf_counter()
            self.stats.record_frame((request.dispatched - request.submitted) * 1000, (now - request.submitted) * 1000)
            _settle(request.future, result)

    def _prepare_each(self, batch: list[_Request], prepare: Callable[[_Request], Any]) -> list[tuple[_Request, Any]]:
        """Run ``prepare`` per frame; a frame that fails (e.g. a bad homography) fails alone."""
        prepared = []
        for request in batch:
            try:
                prepared.append((request, prepare(request)))
            except Exception as exc:
                self._fail([request], _batch_error([request], "preparing the frame", exc))
        return prepared


# ---------------------------------------------------------------------------------------------- CPU
@dataclass
class _CpuBuffers:
    """Per-shape staging buffers of the CPU path, reused for every batch of that shape."""

    ir: torch.Tensor  # (max_batch, 1, H, W) float32
    luma: torch.Tensor  # (max_batch, 1, H, W) float32
    ir_u8: np.ndarray  # (max_batch, H, W)
    luma_u8: np.ndarray  # (max_batch, H, W)
    out_u8: torch.Tensor  # (max_batch, H, W) uint8
    ycrcb: list[np.ndarray]  # max_batch x (H, W, 3)


class _CpuBackend:
    """Fuses each batch synchronously on the dispatch thread (OpenCV for colour and warp, torch for the network)."""

    _MAX_SHAPES = 8

    def __init__(self, worker: InferenceWorker) -> None:
        self.worker = worker
        self._buffers: dict[tuple[int, int], _CpuBuffers] = {}
        self._memory: dict[int, torch.Tensor] = {}
        """Per stream: the network's temporal memory after its latest frame (temporal smoothing)."""

    def threads(self) -> tuple[threading.Thread, ...]:
        return ()

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
            n = self.worker.max_batch
            ir = torch.empty((n, 1, height, width), dtype=torch.float32)
            buffers = _CpuBuffers(ir, torch.empty_like(ir), np.empty((n, height, width), np.uint8),
                                  np.empty((n, height, width), np.uint8),
                                  torch.empty((n, height, width), dtype=torch.uint8),
                                  [np.empty((height, width, 3), np.uint8) for _ in range(n)])
            self._buffers[(height, width)] = buffers
        return buffers

    @staticmethod
    def _warp(request: _Request) -> tuple[np.ndarray, np.ndarray | None]:
        if request.warp is None:
            return request.ir, None
        if request.warp.registrar is None:
            request.warp.registrar = HomographyRegistrar(request.warp.matrix)
        return request.warp.registrar.apply(request.ir, request.vis.shape[:2])

    @torch.inference_mode()
    def run(self, batch: list[_Request]) -> None:
        worker = self.worker
        t0 = time.perf_counter()
        prepared = worker._prepare_each(batch, self._warp)
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
        ir_in = buffers.ir[:size]
        luma_in = buffers.luma[:size]
        ir_in[:, 0].copy_(torch.from_numpy(buffers.ir_u8[:size])).div_(255.0)
        luma_in[:, 0].copy_(torch.from_numpy(buffers.luma_u8[:size])).div_(255.0)
        weights = torch.cat([request.weights for request in batch])
        t1 = time.perf_counter()
        try:
            if worker.temporal_smoothing:
                fused = self._forward_with_memory(batch, ir_in, luma_in, weights)
            else:
                fused = worker.network(ir_in, luma_in, weights)
        except Exception as exc:
            worker._fail(batch, _batch_error(batch, "forward pass", exc))
            return
        t2 = time.perf_counter()
        buffers.out_u8[:size].copy_(fused[:, 0].mul_(255.0).add_(0.5).clamp_(0, 255))
        levels = buffers.out_u8.numpy()
        results = []
        for i, (request, (_ir, valid)) in enumerate(prepared):
            luma = levels[i]
            if valid is not None:
                luma = np.where(valid.astype(bool), luma, buffers.luma_u8[i])
            if request.vis.ndim == 3:
                buffers.ycrcb[i][:, :, 0] = luma
                results.append(cv2.cvtColor(buffers.ycrcb[i], cv2.COLOR_YCrCb2BGR))  # a new array
            else:
                results.append(np.array(luma, copy=True))  # never hand out the reused buffer
        t3 = time.perf_counter()
        worker._finish(batch, results, ((t1 - t0) * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000))


    def _forward_with_memory(self, batch: list[_Request], ir: torch.Tensor, luma: torch.Tensor,
                             weights: torch.Tensor) -> torch.Tensor:
        """Forward pass carrying each stream's decisions over from its previous frame.

        Frames of one stream in the same batch all continue from the memory before the batch.
        """
        fresh = torch.full(FusionNet.memory_shape(*ir.shape[-2:]), float("nan"))
        rows = []
        for request in batch:
            previous = self._memory.get(request.stream)
            rows.append(previous if previous is not None and previous.shape == fresh.shape else fresh)
        fused, memory = self.worker.network(ir, luma, weights, torch.stack(rows), self.worker.temporal_smoothing)
        for i, request in enumerate(batch):
            self._memory[request.stream] = memory[i].clone()
        return fused


# --------------------------------------------------------------------------------------------- CUDA
class _Slot:
    """Pinned host and device buffers for one batch in flight, with its hand-off events."""

    def __init__(self, key: _Key, capacity: int, intents: int, device: torch.device) -> None:
        vis_shape, ir_shape, _ = key

        def host(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
            return torch.zeros(shape, dtype=dtype, pin_memory=True)

        self.host_vis = host((capacity, *vis_shape), torch.uint8)
        self.host_ir = host((capacity, *ir_shape), torch.uint8)
        self.host_weights = host((capacity, intents), torch.float32)
        self.host_out = host((capacity, *vis_shape), torch.uint8)
        self.host_vis_np, self.host_ir_np = self.host_vis.numpy(), self.host_ir.numpy()
        self.host_weights_np, self.host_out_np = self.host_weights.numpy(), self.host_out.numpy()
        # torch.empty launches no kernel: nothing on the default stream races the side streams.
        self.dev_vis = torch.empty(self.host_vis.shape, dtype=torch.uint8, device=device)
        self.dev_ir = torch.empty(self.host_ir.shape, dtype=torch.uint8, device=device)
        self.dev_weights = torch.empty(self.host_weights.shape, dtype=torch.float32, device=device)
        self.dev_out = torch.empty(self.host_out.shape, dtype=torch.uint8, device=device)
        self.events = {name: torch.cuda.Event(enable_timing=True)
                       for name in ("up0", "up1", "run0", "run1", "down0", "down1")}


class _Ring:
    """A fixed set of slots; the dispatch thread takes one, the completion thread gives it back."""

    def __init__(self, slots: list[_Slot]) -> None:
        self._free: queue.SimpleQueue[_Slot] = queue.SimpleQueue()
        for slot in slots:
            self._free.put(slot)

    def acquire(self) -> _Slot:
        return self._free.get()

    def release(self, slot: _Slot) -> None:
        self._free.put(slot)


@dataclass
class _BatchTables:
    """Warp tables of a (key, batch size), filled per sample only when the stream's tables change."""

    index: torch.Tensor  # (B, 4, H*W) int64
    weight: torch.Tensor  # (B, 4, H*W) int32
    valid: torch.Tensor  # (B, 1, H, W) bool
    owners: list[object | None]


@dataclass
class _Graph:
    """A captured CUDA graph with its static inputs and output."""

    graph: torch.cuda.CUDAGraph
    vis: torch.Tensor
    ir: torch.Tensor
    weights: torch.Tensor
    memory: torch.Tensor | None  # the streams' previous temporal memory (temporal smoothing only)
    out: torch.Tensor
    out_memory: torch.Tensor | None


@dataclass
class _InFlight:
    batch: list[_Request]
    slot: _Slot
    ring: _Ring


class _CudaBackend:
    """Launches each batch on three CUDA streams; a completion thread resolves the futures."""

    def __init__(self, worker: InferenceWorker, cuda_graphs: bool) -> None:
        self.worker = worker
        self.device = worker.device
        self.cuda_graphs = cuda_graphs
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels once
        self.copy_stream = torch.cuda.Stream(self.device)
        self.compute_stream = torch.cuda.Stream(self.device)
        self.download_stream = torch.cuda.Stream(self.device)
        torch.cuda.synchronize(self.device)  # the network's weights were copied on the default stream
        self._rings: dict[_Key, _Ring] = {}
        self._tables: dict[tuple[_Key, int], _BatchTables] = {}
        self._graphs: dict[tuple[_Key, int], _Graph | None] = {}
        self._warmed: set[tuple[_Key, int]] = set()
        self._ones: dict[tuple[int, int], torch.Tensor] = {}
        self._memory: dict[int, torch.Tensor] = {}
        """Per stream: the network's temporal memory after its latest frame, on the device (compute stream)."""
        self._done: queue.SimpleQueue[_InFlight | None] = queue.SimpleQueue()
        self._completer = threading.Thread(target=self._complete_loop, name="inference-complete", daemon=True)
        self._completer.start()

    def threads(self) -> tuple[threading.Thread, ...]:
        return (self._completer,)

    def start(self) -> None:
        torch.cuda.set_device(self.device)

    def finish(self) -> None:
        self._done.put(None)

    def join(self, timeout: float | None) -> None:
        self._completer.join(timeout)

    # ------------------------------------------------------------------------------------- dispatch
    def _ring(self, key: _Key) -> _Ring:
        ring = self._rings.get(key)
        if ring is None:
            slots = [_Slot(key, self.worker.max_batch, len(self.worker.intents), self.device)
                     for _ in range(RING_DEPTH)]
            ring = self._rings[key] = _Ring(slots)
        return ring

    def _warp_tables(self, request: _Request) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
        """The stream's cached device warp tables for this size pair (built on the compute stream)."""
        warp = request.warp
        if warp is None:
            return None
        sizes = (request.ir.shape, request.vis.shape[:2])
        tables = warp.tables.get(sizes)
        if tables is None:
            index, weight, valid = gpu_ops.remap_table(warp.matrix, *sizes)
            with torch.cuda.stream(self.compute_stream):
                tables = (torch.from_numpy(index)[None].to(self.device), torch.from_numpy(weight)[None].to(self.device),
                          None if valid is None else torch.from_numpy(valid)[None, None].to(self.device))
            warp.tables[sizes] = tables
        return tables

    def _batch_tables(self, key: _Key, size: int, per_frame: list) -> _BatchTables:
        """Fill the (key, size) warp-table buffers on the compute stream, copying only changed samples."""
        tables = self._tables.get((key, size))
        height, width = key[0][:2]
        if tables is None:
            pixels = height * width
            tables = _BatchTables(torch.zeros((size, 4, pixels), dtype=torch.int64, device=self.device),
                                  torch.zeros((size, 4, pixels), dtype=torch.int32, device=self.device),
                                  torch.ones((size, 1, height, width), dtype=torch.bool, device=self.device),
                                  [None] * size)
            self._tables[(key, size)] = tables
        for i, (index, weight, valid) in enumerate(per_frame):
            if tables.owners[i] is index:
                continue
            tables.index[i].copy_(index[0])
            tables.weight[i].copy_(weight[0])
            if valid is None:
                tables.valid[i].fill_(True)
            else:
                tables.valid[i].copy_(valid[0])
            tables.owners[i] = index
        return tables

    def _compute(self, vis: torch.Tensor, ir: torch.Tensor, weights: torch.Tensor, tables: _BatchTables | None,
                 memory: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fused frames of a batch, and the new temporal memory when ``memory`` is given."""
        warp = {} if tables is None else {"remap_index": tables.index, "remap_weight": tables.weight,
                                          "valid": tables.valid}
        if memory is None:
            return gpu_ops.fuse_tensors(self.worker.network, vis, ir, weights, dtype=self.worker.dtype, **warp), None
        return gpu_ops.fuse_tensors(self.worker.network, vis, ir, weights, dtype=self.worker.dtype, memory=memory,
                                    momentum=self.worker.temporal_smoothing, **warp)

    def _batch_memory(self, batch: list[_Request]) -> torch.Tensor | None:
        """Each item's memory from its stream's previous frame (NaN rows: none), or None without smoothing."""
        if not self.worker.temporal_smoothing:
            return None
        shape = FusionNet.memory_shape(*batch[0].vis.shape[:2])
        memory = torch.full((len(batch), *shape), float("nan"), dtype=self.worker.dtype, device=self.device)
        for i, request in enumerate(batch):
            previous = self._memory.get(request.stream)
            if previous is not None and previous.shape == shape:
                memory[i].copy_(previous)
        return memory

    def _keep_memory(self, batch: list[_Request], memory: torch.Tensor | None) -> None:
        """Store each stream's new memory (the last of its frames in the batch wins)."""
        if memory is None:
            return
        for i, request in enumerate(batch):
            previous = self._memory.get(request.stream)
            if previous is not None and previous.shape == memory.shape[1:]:
                previous.copy_(memory[i])
            else:
                self._memory[request.stream] = memory[i].clone()

    def _warm_up(self, key: _Key, size: int, slot: _Slot, tables: _BatchTables | None,
                 memory: torch.Tensor | None) -> None:
        """Eager warm-up runs, then (optionally) a graph capture, for a new (key, batch size)."""
        args = (slot.dev_vis[:size], slot.dev_ir[:size], slot.dev_weights[:size], tables, memory)
        for _ in range(WARMUP_RUNS):
            self._compute(*args)
        self._warmed.add((key, size))
        if not self.cuda_graphs:
            return
        static = _Graph(torch.cuda.CUDAGraph(), *(t.clone() for t in args[:3]),
                        memory=None if memory is None else memory.clone(), out=torch.empty(0), out_memory=None)
        try:
            with torch.cuda.graph(static.graph, stream=self.compute_stream, capture_error_mode="thread_local"):
                static.out, static.out_memory = self._compute(static.vis, static.ir, static.weights, tables,
                                                              static.memory)
        except Exception as exc:
            log.warning("CUDA graph capture failed for batch %d of %s (%s: %s); running that shape eagerly",
                        size, key[0], type(exc).__name__, exc)
            self._graphs[(key, size)] = None
        else:
            self._graphs[(key, size)] = static

    def run(self, batch: list[_Request]) -> None:
        worker = self.worker
        prepared = worker._prepare_each(batch, self._warp_tables)
        if not prepared:
            return
        batch = [request for request, _ in prepared]
        key, size = batch[0].key, len(batch)
        ring = self._ring(key)
        slot = ring.acquire()  # waits while RING_DEPTH batches of this key are in flight
        events = slot.events
        try:
            for i, request in enumerate(batch):
                np.copyto(slot.host_vis_np[i], request.vis)
                np.copyto(slot.host_ir_np[i], request.ir)
                slot.host_weights_np[i] = request.weights[0].numpy()
            with torch.inference_mode():
                with torch.cuda.stream(self.copy_stream):
                    events["up0"].record(self.copy_stream)
                    slot.dev_vis[:size].copy_(slot.host_vis[:size], non_blocking=True)
                    slot.dev_ir[:size].copy_(slot.host_ir[:size], non_blocking=True)
                    slot.dev_weights[:size].copy_(slot.host_weights[:size], non_blocking=True)
                    events["up1"].record(self.copy_stream)
                with torch.cuda.stream(self.compute_stream):
                    self.compute_stream.wait_event(events["up1"])
                    tables = None
                    if key[2]:
                        tables = self._batch_tables(key, size, [tables for _, tables in prepared])
                    memory = self._batch_memory(batch)
                    if (key, size) not in self._warmed:
                        self._warm_up(key, size, slot, tables, memory)
                    events["run0"].record(self.compute_stream)
                    graph = self._graphs.get((key, size))
                    if graph is not None:
                        graph.vis.copy_(slot.dev_vis[:size])
                        graph.ir.copy_(slot.dev_ir[:size])
                        graph.weights.copy_(slot.dev_weights[:size])
                        if memory is not None:
                            graph.memory.copy_(memory)
                        graph.graph.replay()
                        fused, new_memory = graph.out, graph.out_memory
                    else:
                        fused, new_memory = self._compute(slot.dev_vis[:size], slot.dev_ir[:size],
                                                          slot.dev_weights[:size], tables, memory)
                    slot.dev_out[:size].copy_(fused)
                    self._keep_memory(batch, new_memory)
                    events["run1"].record(self.compute_stream)
                with torch.cuda.stream(self.download_stream):
                    self.download_stream.wait_event(events["run1"])
                    events["down0"].record(self.download_stream)
                    slot.host_out[:size].copy_(slot.dev_out[:size], non_blocking=True)
                    events["down1"].record(self.download_stream)
        except BaseException:
            # Work already queued may still read the slot: let it drain before the slot is reused.
            for stream in (self.copy_stream, self.compute_stream, self.download_stream):
                with contextlib.suppress(Exception):  # a broken context raises again here; keep the first error
                    stream.synchronize()
            ring.release(slot)
            raise
        self._done.put(_InFlight(batch, slot, ring))

    # ----------------------------------------------------------------------------------- completion
    def _complete_loop(self) -> None:
        torch.cuda.set_device(self.device)
        while (item := self._done.get()) is not None:
            batch, slot, events = item.batch, item.slot, item.slot.events
            try:
                events["down1"].synchronize()
                size = len(batch)
                results = [np.array(slot.host_out_np[i], copy=True) for i in range(size)]  # out of the ring
                stages = (events["up0"].elapsed_time(events["up1"]), events["run0"].elapsed_time(events["run1"]),
                          events["down0"].elapsed_time(events["down1"]))
            except Exception as exc:
                item.ring.release(slot)
                self.worker._fail(batch, _batch_error(batch, "GPU execution", exc))
                continue
            item.ring.release(slot)
            self.worker._finish(batch, results, stages)


def build_worker(network: FusionNet, fusion: FusionConfig) -> InferenceWorker:
    """The worker described by the ``fusion`` config section (``precision: auto`` = fp16 on CUDA, else fp32).

    ``threads: null`` leaves one core to the rest of the pipeline (capture, encoding): torch's
    OpenMP threads spin-wait, and when they compete with other busy threads for every core, the
    forward pass's tail latency grows by an order of magnitude.

    Raises:
        ConfigError: The device or precision cannot be used on this machine.
    """
    try:
        precision = fusion.precision
        if precision == "auto":
            precision = "fp16" if _resolve_device(fusion.device).type == "cuda" else "fp32"
        threads = fusion.threads or max(1, len(os.sched_getaffinity(0)) - 1)
        return InferenceWorker(network, device=fusion.device, precision=precision, max_batch=fusion.max_batch,
                               max_wait_ms=fusion.max_wait_ms, threads=threads,
                               cuda_graphs=fusion.cuda_graphs, queue_size=max(8, 2 * fusion.max_batch),
                               temporal_smoothing=fusion.temporal_smoothing)
    except ValueError as exc:
        raise ConfigError(f"fusion.{exc}") from None
