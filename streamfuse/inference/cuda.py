"""The CUDA backend of the inference worker: pinned rings, three CUDA streams, CUDA graphs, a completion thread.

See :mod:`streamfuse.inference.worker` for how the stages overlap.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import weakref
from dataclasses import dataclass

import numpy as np
import torch

from streamfuse.inference import gpu_ops
from streamfuse.inference.batches import Key, Request, Resolver, batch_error
from streamfuse.models.network import FusionNet
from streamfuse.registration.homography import Homography

log = logging.getLogger(__name__)

#: Pinned buffer sets per batching key (upload, compute, download, copy-out).
RING_DEPTH = 4
#: Eager runs before the first timed (or captured) batch of each shape.
WARMUP_RUNS = 3


class _Slot:
    """Pinned host and device buffers for one batch in flight, with its hand-off events."""

    def __init__(self, key: Key, capacity: int, intents: int, device: torch.device) -> None:
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
    batch: list[Request]
    slot: _Slot
    ring: _Ring


class CudaBackend:
    """Launches each batch on three CUDA streams; a completion thread resolves the futures.

    Args:
        network: The fusion network, already on ``device`` in ``dtype``.
        resolver: Where each batch is reported, fused or failed.
        device: The CUDA device.
        dtype: The network's precision.
        max_batch: Most frames per batch (sizes the pinned buffers).
        intents: Number of intent weights per frame.
        temporal_smoothing: ``FusionNet.forward``'s ``momentum`` (0: each frame on its own).
        cuda_graphs: Capture and replay a CUDA graph per (shape, batch size).
    """

    def __init__(self, network: FusionNet, resolver: Resolver, *, device: torch.device, dtype: torch.dtype,
                 max_batch: int, intents: int, temporal_smoothing: float, cuda_graphs: bool) -> None:
        self.network = network
        self.resolver = resolver
        self.device = device
        self.dtype = dtype
        self.max_batch = max_batch
        self.intents = intents
        self.temporal_smoothing = temporal_smoothing
        self.cuda_graphs = cuda_graphs
        self.copy_stream = torch.cuda.Stream(self.device)
        self.compute_stream = torch.cuda.Stream(self.device)
        self.download_stream = torch.cuda.Stream(self.device)
        torch.cuda.synchronize(self.device)  # the network's weights were copied on the default stream
        self._rings: dict[Key, _Ring] = {}
        self._tables: dict[tuple[Key, int], _BatchTables] = {}
        self._warps: weakref.WeakKeyDictionary[Homography, dict] = weakref.WeakKeyDictionary()
        """Per transform and size pair: device warp tables (a transform never changes; a new one gets its own)."""
        self._graphs: dict[tuple[Key, int], _Graph | None] = {}
        self._warmed: set[tuple[Key, int]] = set()
        self._memory: dict[int, torch.Tensor] = {}
        """Per stream: the network's temporal memory after its latest frame, on the device (compute stream)."""
        self._done: queue.SimpleQueue[_InFlight | None] = queue.SimpleQueue()
        self._completer = threading.Thread(target=self._complete_loop, name="inference-complete", daemon=True)
        self._completer.start()

    def threads(self) -> tuple[threading.Thread, ...]:
        return (self._completer,)

    def forget(self, stream: int) -> None:
        """Drop ``stream``'s temporal memory (after its last frame)."""
        self._memory.pop(stream, None)

    def graphs(self) -> dict[tuple[Key, int], bool]:
        """Per (batching key, batch size) run so far: whether its CUDA graph was captured."""
        return {shape: graph is not None for shape, graph in self._graphs.items()}

    def start(self) -> None:
        torch.cuda.set_device(self.device)

    def finish(self) -> None:
        self._done.put(None)

    def join(self, timeout: float | None) -> None:
        self._completer.join(timeout)

    # ------------------------------------------------------------------------------------- dispatch
    def _ring(self, key: Key) -> _Ring:
        ring = self._rings.get(key)
        if ring is None:
            slots = [_Slot(key, self.max_batch, self.intents, self.device)
                     for _ in range(RING_DEPTH)]
            ring = self._rings[key] = _Ring(slots)
        return ring

    def _warp_tables(self, request: Request) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
        """The frame's cached device warp tables for its transform and size pair (built on the compute stream)."""
        transform = request.transform
        if transform is None:
            return None
        sizes = (request.ir.shape, request.vis.shape[:2])
        cached = self._warps.setdefault(transform, {})
        tables = cached.get(sizes)
        if tables is None:
            index, weight, valid = gpu_ops.remap_table(transform.matrix, *sizes)
            with torch.cuda.stream(self.compute_stream):
                tables = (torch.from_numpy(index)[None].to(self.device), torch.from_numpy(weight)[None].to(self.device),
                          None if valid is None else torch.from_numpy(valid)[None, None].to(self.device))
            cached[sizes] = tables
        return tables

    def _batch_tables(self, key: Key, size: int, per_frame: list) -> _BatchTables:
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
            return gpu_ops.fuse_tensors(self.network, vis, ir, weights, dtype=self.dtype, **warp), None
        return gpu_ops.fuse_tensors(self.network, vis, ir, weights, dtype=self.dtype, memory=memory,
                                    momentum=self.temporal_smoothing, **warp)

    def _batch_memory(self, batch: list[Request]) -> torch.Tensor | None:
        """Each item's memory from its stream's previous frame (NaN rows: none), or None without smoothing."""
        if not self.temporal_smoothing:
            return None
        shape = FusionNet.memory_shape(*batch[0].vis.shape[:2])
        memory = torch.full((len(batch), *shape), float("nan"), dtype=self.dtype, device=self.device)
        for i, request in enumerate(batch):
            previous = self._memory.get(request.stream)
            if previous is not None and previous.shape == shape:
                memory[i].copy_(previous)
        return memory

    def _keep_memory(self, batch: list[Request], memory: torch.Tensor | None) -> None:
        """Store each stream's new memory (the last of its frames in the batch wins)."""
        if memory is None:
            return
        for i, request in enumerate(batch):
            previous = self._memory.get(request.stream)
            if previous is not None and previous.shape == memory.shape[1:]:
                previous.copy_(memory[i])
            else:
                self._memory[request.stream] = memory[i].clone()

    def _warm_up(self, key: Key, size: int, slot: _Slot, tables: _BatchTables | None,
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

    def run(self, batch: list[Request]) -> None:
        prepared = self.resolver.prepare_each(batch, self._warp_tables)
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
                self.resolver.failed(batch, batch_error(batch, "GPU execution", exc))
                continue
            item.ring.release(slot)
            self.resolver.done(batch, results, stages)

