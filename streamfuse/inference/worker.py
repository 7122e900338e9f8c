"""An inference worker that batches frames across streams and keeps a GPU busy without adding latency.

Threads and queues::

    submit() ──► pending deque ──► dispatch thread ──► (CPU) warp, luminance, bands, network
    (any thread,   (bounded by      forms batches     (CUDA) launch: upload on the copy stream,
     blocks when    queue_size       of same-size              compute on the compute stream,
     full)          unresolved       frames                    download on the download stream
                    frames)                                          │ (CPU) queue, (CUDA) events
                                                                     ▼
                                                     completion thread: (CPU) composes the bands, puts
                                                     the visible colour back (on the dispatch thread
                                                     when no frame waits); (CUDA) waits on the batch's
                                                     last event, copies results out of the pinned
                                                     ring; resolves futures

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
The backends live in :mod:`~streamfuse.inference.cpu` and :mod:`~streamfuse.inference.cuda`; they
report each batch through a :class:`~streamfuse.inference.batches.Resolver`, never this class.

**Warp.** A frame is warped with the homography given to :meth:`InferenceWorker.submit`, else its
stream's (:meth:`InferenceWorker.set_homography`). A :class:`~streamfuse.registration.Homography`
is immutable, so its sampling tables are cached per transform and a new one is used from the next
frame submitted with it.

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
import copy
import logging
import threading
import time

import numpy as np
import torch

from streamfuse.colour import as_gray
from streamfuse.config import FusionConfig
from streamfuse.errors import ConfigError
from streamfuse.inference.batches import Key, Request, Resolver, batch_error, settle
from streamfuse.inference.cpu import CpuBackend
from streamfuse.inference.stats import WorkerStats
from streamfuse.models.network import FusionNet
from streamfuse.registration.homography import Homography

log = logging.getLogger(__name__)

#: Precision names and their torch dtypes.
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: A stream counts as active (worth waiting for when batching) this long after its last frame.
ACTIVE_STREAM_S = 1.0

def resolve_device(device: str) -> torch.device:
    """``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N`` as an indexed torch device;
    a ``ValueError`` for a name torch does not know or a device this machine does not have."""
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
        cuda_graphs: Capture and replay CUDA graphs per shape and batch size (GPU only).
        queue_size: Most unresolved frames; ``submit`` blocks while that many are pending
            (submitted, not yet resolved). Must be at least ``max_batch``.
        temporal_smoothing: Weight of each stream's previous frame in the fusion decisions
            (``FusionNet.forward``'s ``momentum``; 0 disables), on the CPU and the GPU alike.

    Raises:
        ValueError: An argument is out of range, or the device or precision is unavailable.
    """

    def __init__(self, network: FusionNet, *, device: str = "auto", precision: str = "fp32", max_batch: int = 1,
                 max_wait_ms: float = 4.0, cuda_graphs: bool = True,
                 queue_size: int = 8, temporal_smoothing: float = 0.0) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch: must be at least 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms: must not be negative, got {max_wait_ms}")
        if queue_size < max_batch:
            raise ValueError(f"queue_size ({queue_size}) must be at least max_batch ({max_batch})")
        if not 0.0 <= temporal_smoothing < 1.0:
            raise ValueError(f"temporal_smoothing: must be in [0, 1), got {temporal_smoothing}")
        self.device = resolve_device(device)
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
        self.intents = list(network.intents)
        balanced = {"balanced": 1.0} if "balanced" in self.intents else dict.fromkeys(self.intents, 1.0)
        self._default_weights = network.intent_weights(balanced).float()
        model = copy.deepcopy(network).eval().requires_grad_(False)
        self.network = model.to(self.device, self.dtype).to(memory_format=torch.channels_last)
        self.stats = WorkerStats()
        self._cond = threading.Condition()
        self._pending: collections.deque[Request] = collections.deque()
        self._live: set[concurrent.futures.Future] = set()
        self._weights: dict[int, torch.Tensor] = {}
        self._homographies: dict[int, Homography] = {}
        self._recent: dict[Key, dict[int, float]] = {}
        self._closed = False
        self._failure: BaseException | None = None
        self._resolver = Resolver(self.stats)
        if self.device.type == "cuda":
            from streamfuse.inference.cuda import CudaBackend

            self._backend: CpuBackend | CudaBackend = CudaBackend(
                self.network, self._resolver, device=self.device, dtype=self.dtype, max_batch=max_batch,
                intents=len(self.intents), temporal_smoothing=temporal_smoothing, cuda_graphs=cuda_graphs)
        else:
            self._backend = CpuBackend(self.network, self._resolver, temporal_smoothing=temporal_smoothing,
                                       backlog=lambda: bool(self._pending))
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
        homography = None if matrix is None else Homography(matrix, key=f"stream {stream} homography")
        with self._cond:
            if homography is None:
                self._homographies.pop(stream, None)
            else:
                self._homographies[stream] = homography

    def forget(self, stream: int) -> None:
        """Drop everything kept for ``stream`` (intent weights, homography, temporal memory) once its last
        frame has resolved: a stream that ends leaves nothing behind in a long-running worker."""
        with self._cond:
            self._weights.pop(stream, None)
            self._homographies.pop(stream, None)
            for streams in self._recent.values():  # no longer counted as active by the batching
                streams.pop(stream, None)
        self._backend.forget(stream)

    def submit(self, stream: int, ir: np.ndarray, vis: np.ndarray, *,
               homography: Homography | None = None) -> concurrent.futures.Future:
        """Queue one frame pair of ``stream``; blocks while ``queue_size`` frames are unresolved.

        The arrays are read later, on the worker's threads: do not modify them until the future is done.
        Callbacks added to the future run on a worker thread: keep them short, and never call
        ``submit`` from them (it may block on the queue that thread drains).

        Args:
            stream: Stream id (frames of one stream are fused in submission order).
            ir: ``uint8`` infrared frame ``(h, w)`` (a BGR frame is reduced to its luminance). Warped
                onto the visible grid with ``homography`` or the stream's; without either, it must
                have the visible frame's size.
            vis: ``uint8`` visible frame, BGR ``(H, W, 3)`` or gray ``(H, W)``.
            homography: Warp this frame with it (None: the stream's, see :meth:`set_homography`).

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
            warp = homography or self._homographies.get(stream)
            if warp is None and ir.shape != vis.shape[:2]:
                raise ValueError(f"stream {stream}: infrared frame is {ir.shape[1]}x{ir.shape[0]} but visible frame "
                                 f"is {vis.shape[1]}x{vis.shape[0]}; set a homography or register them first")
            future: concurrent.futures.Future = concurrent.futures.Future()
            now = time.perf_counter()
            key: Key = (vis.shape, ir.shape, warp is not None)
            self._pending.append(Request(stream, ir, vis, self._weights.get(stream, self._default_weights), warp,
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
                settle(future, error=RuntimeError("inference worker closed before this frame was fused "
                                                   "(close timed out)"))
        alive = [t.name for t in (self._dispatcher, *self._backend.threads()) if t.is_alive()]
        if alive and not own:
            log.warning("inference worker: threads still running after close(timeout=%s): %s", timeout, alive)

    def __enter__(self) -> InferenceWorker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def captured_graphs(self) -> dict[tuple[Key, int], bool]:
        """Per (batching key, batch size) seen so far: whether a CUDA graph replays it (empty on the CPU)."""
        return self._backend.graphs()

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
                    self._resolver.failed(batch, batch_error(batch, "forward pass", exc))
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
                    settle(future, error=error)
        finally:
            self._backend.finish()

    def _next_batch(self) -> list[Request] | None:
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

    def _collect(self, head: Request) -> list[Request]:
        batch: list[Request] = []
        blocked: set[int] = set()
        for request in self._pending:
            if len(batch) == self.max_batch:
                break
            if request.key == head.key and request.stream not in blocked:
                batch.append(request)
            else:
                blocked.add(request.stream)  # keep this stream's order: nothing of it may overtake this frame
        return batch

    def _batch_target(self, key: Key) -> int:
        now = time.perf_counter()
        recent = self._recent.get(key, {})
        active = sum(1 for last in recent.values() if now - last < ACTIVE_STREAM_S)
        return max(1, min(self.max_batch, active))


def build_worker(network: FusionNet, fusion: FusionConfig) -> InferenceWorker:
    """The worker described by the ``fusion`` config section (``precision: auto`` = fp16 on CUDA, else fp32).

    ``fusion.threads`` is process-wide state: :func:`streamfuse.runtime.setup_runtime` sets it.

    Raises:
        ConfigError: The device or precision cannot be used on this machine.
    """
    try:
        precision = fusion.precision
        if precision == "auto":
            precision = "fp16" if resolve_device(fusion.device).type == "cuda" else "fp32"
        return InferenceWorker(network, device=fusion.device, precision=precision, max_batch=fusion.max_batch,
                               max_wait_ms=fusion.max_wait_ms, cuda_graphs=fusion.cuda_graphs,
                               queue_size=max(8, 2 * fusion.max_batch),
                               temporal_smoothing=fusion.temporal_smoothing)
    except ValueError as exc:
        raise ConfigError(f"fusion.{exc}") from None
