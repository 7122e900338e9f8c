"""The inference worker: ordering, batching, buffer reuse, shutdown, errors, warp; CUDA checks where a GPU exists."""

from __future__ import annotations

import copy
import threading
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

import streamfuse.inference.cpu
from conftest import make_pair
from streamfuse.fusers.model import ModelFuser
from streamfuse.inference import InferenceError, InferenceWorker, WorkerStats, gpu_ops
from streamfuse.models.checkpoint import save_weights
from streamfuse.models.network import FusionNet
from streamfuse.registration import HomographyRegistrar
from streamfuse.text import load_bank

INTENTS = load_bank().ids
#: A mild IR->VIS homography (scale, shear, shift, a little perspective) for 60x80 IR onto 48x64 VIS.
HOMOGRAPHY = np.array([[0.82, 0.03, -3.4], [-0.02, 0.8, 1.7], [1e-4, -2e-4, 1.0]])

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available())")


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=needs_cuda)])
def device(request) -> str:
    """Each test using it runs on the CPU and, where a GPU exists, on CUDA."""
    return request.param


def tolerance(device: str) -> int:
    """Levels a result may differ from the CPU reference fuser (TF32 convolutions on GPUs move a few pixels)."""
    return 1 if device == "cpu" else 3


@pytest.fixture(scope="module")
def net() -> FusionNet:
    """A small FusionNet with random, non-trivial weights (outputs depend on inputs and intents)."""
    torch.manual_seed(0)
    model = FusionNet(INTENTS).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.fixture(scope="module")
def reference(net, tmp_path_factory) -> ModelFuser:
    """The project's single-frame CPU fuser with the same weights: the ground truth for every result."""
    return ModelFuser(save_weights(net, tmp_path_factory.mktemp("weights") / "net.pt"))


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """Workers set torch's (process-wide) thread count; put it back for the other test modules."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def fused_by_reference(reference: ModelFuser, ir, vis, intents=None, valid=None) -> np.ndarray:
    reference.condition(SimpleNamespace(weights=intents) if intents else None)
    return reference.fuse(ir, vis, valid)


def level_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def worker_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("inference-")]


def make_worker(net, device: str = "cpu", **kwargs) -> InferenceWorker:
    """A worker; on CUDA without graphs, so that a patched ``decide_with_repair`` is called for every batch."""
    return InferenceWorker(net, device=device, **({"cuda_graphs": False} if device == "cuda" else {}), **kwargs)


# ------------------------------------------------------------------------------------------- ordering
@pytest.mark.parametrize("max_batch", [1, 4])
def test_results_come_back_in_order_with_the_right_frame(net, reference, device, max_batch):
    pairs = [make_pair(i) for i in range(10)]
    expected = [fused_by_reference(reference, ir, vis) for ir, vis in pairs]
    with make_worker(net, device, max_batch=max_batch, queue_size=10) as worker:
        futures = [worker.submit(0, ir, vis) for ir, vis in pairs]
        results = [f.result(timeout=60) for f in futures]
    for index, (result, truth) in enumerate(zip(results, expected, strict=True)):
        assert level_diff(result, truth) <= tolerance(device), f"frame {index}"
        # frames are distinguishable, so a swap would be caught
        other = expected[(index + 1) % len(expected)]
        assert np.abs(result.astype(int) - other).mean() > 5 * np.abs(result.astype(int) - truth).mean() + 1
    assert worker.stats.frames == 10 and worker.stats.failed == 0


def test_three_streams_submitting_from_three_threads(net, reference):
    streams, per_stream = 3, 8
    pairs = {s: [make_pair(100 * s + i) for i in range(per_stream)] for s in range(streams)}
    futures: dict[int, list] = {}
    resolved: list[tuple[int, int]] = []
    lock = threading.Lock()

    def note(stream: int, index: int):
        def callback(_future):
            with lock:
                resolved.append((stream, index))
        return callback

    with make_worker(net, max_batch=4, max_wait_ms=2.0, queue_size=6) as worker:
        def produce(stream: int) -> None:
            futures[stream] = []
            for index, (ir, vis) in enumerate(pairs[stream]):
                future = worker.submit(stream, ir, vis)
                future.add_done_callback(note(stream, index))
                futures[stream].append(future)

        threads = [threading.Thread(target=produce, args=(s,)) for s in range(streams)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        results = {s: [f.result(timeout=10) for f in futures[s]] for s in range(streams)}
    for stream in range(streams):
        order = [index for s, index in resolved if s == stream]
        assert order == list(range(per_stream)), f"stream {stream} resolved out of order: {order}"
        for index, (ir, vis) in enumerate(pairs[stream]):
            assert level_diff(results[stream][index], fused_by_reference(reference, ir, vis)) <= 1


def test_batching_across_streams_matches_unbatched(net):
    streams, per_stream = 4, 6
    jobs = [(s, *make_pair(10 * s + i)) for i in range(per_stream) for s in range(streams)]
    with make_worker(net, max_batch=4, max_wait_ms=20.0, queue_size=24) as batched:
        batched_results = [f.result(timeout=10) for f in [batched.submit(*job) for job in jobs]]
    with make_worker(net, max_batch=1, queue_size=24) as single:
        single_results = [f.result(timeout=10) for f in [single.submit(*job) for job in jobs]]
    assert batched.stats.mean_batch > 1.5, batched.stats.summary()
    assert single.stats.mean_batch == 1.0
    for a, b in zip(batched_results, single_results, strict=True):
        assert level_diff(a, b) <= 1


def test_intent_weights_apply_to_frames_submitted_after_the_call(net, reference):
    ir, vis = make_pair(3)
    with make_worker(net, max_batch=4) as worker:
        before = worker.submit(0, ir, vis)
        worker.set_weights(0, net.intent_weights({"thermal_targets": 1.0}))
        after = worker.submit(0, ir, vis)
        other_stream = worker.submit(1, ir, vis)
        results = before.result(10), after.result(10), other_stream.result(10)
    assert level_diff(results[0], fused_by_reference(reference, ir, vis)) <= 1
    assert level_diff(results[1], fused_by_reference(reference, ir, vis, {"thermal_targets": 1.0})) <= 1
    assert level_diff(results[2], results[0]) <= 1  # stream 1 keeps the default (balanced)
    assert np.abs(results[1].astype(int) - results[0]).mean() > 0.05


# --------------------------------------------------------------------------------------- buffer reuse
@pytest.mark.parametrize("colour", [True, False])
def test_fusing_a_then_b_never_leaks_a_into_b(net, reference, device, colour):
    (ir_a, vis_a), (ir_b, vis_b) = make_pair(1), make_pair(2)
    if not colour:
        vis_a, vis_b = cv2.cvtColor(vis_a, cv2.COLOR_BGR2GRAY), cv2.cvtColor(vis_b, cv2.COLOR_BGR2GRAY)
    with make_worker(net, device) as worker:
        result_a = worker.submit(0, ir_a, vis_a).result(60)
        kept_a = result_a.copy()
        result_b = worker.submit(0, ir_b, vis_b).result(60)
        result_a2 = worker.submit(0, ir_a, vis_a).result(60)
    assert result_a.shape == vis_a.shape and result_b.shape == vis_b.shape
    assert level_diff(result_b, fused_by_reference(reference, ir_b, vis_b)) <= tolerance(device)
    assert np.array_equal(result_a, kept_a), "A's result changed after B was fused"
    assert level_diff(result_a, fused_by_reference(reference, ir_a, vis_a)) <= tolerance(device)
    assert np.array_equal(result_a2, result_a)
    assert not np.shares_memory(result_a, result_a2)


# -------------------------------------------------------------------------------------------- shutdown
def slow_forward(worker: InferenceWorker, monkeypatch, seconds: float = 0.02) -> None:
    """Make every batch's network pass slower (``decide_with_repair``: the trunk, which the CPU and CUDA paths
    both run)."""
    original = worker.network.decide_with_repair

    def decide(*args, **kwargs):
        time.sleep(seconds)
        return original(*args, **kwargs)

    monkeypatch.setattr(worker.network, "decide_with_repair", decide)


def test_close_with_frames_in_flight_resolves_every_future(net, device, monkeypatch):
    worker = make_worker(net, device, max_batch=2, queue_size=12)
    slow_forward(worker, monkeypatch)
    futures = [worker.submit(i % 2, *make_pair(i)) for i in range(12)]
    worker.close()
    assert all(f.done() and not f.cancelled() and f.exception() is None for f in futures)
    assert worker_threads() == []
    with pytest.raises(RuntimeError, match="closed"):
        worker.submit(0, *make_pair(0))
    worker.close()  # idempotent


def test_close_cancelling_pending_frames(net, monkeypatch):
    worker = make_worker(net, queue_size=12)
    slow_forward(worker, monkeypatch)
    futures = [worker.submit(0, *make_pair(i)) for i in range(12)]
    worker.close(cancel_pending=True)
    assert all(f.done() for f in futures)
    cancelled = [f.cancelled() for f in futures]
    assert any(cancelled), "nothing was cancelled"
    assert cancelled == sorted(cancelled), "a later frame finished after an earlier one was cancelled"
    assert worker_threads() == []


def test_close_timeout_fails_what_is_left_and_threads_still_end(net, monkeypatch):
    worker = make_worker(net, queue_size=6)
    slow_forward(worker, monkeypatch, 0.05)
    futures = [worker.submit(0, *make_pair(i)) for i in range(6)]
    worker.close(timeout=0.01)
    assert all(f.done() for f in futures)
    assert any(f.cancelled() or isinstance(f.exception(), RuntimeError) for f in futures)
    deadline = time.monotonic() + 5
    while worker_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker_threads() == []


def test_submit_blocks_when_queue_is_full(net, monkeypatch):
    with make_worker(net, queue_size=2) as worker:
        slow_forward(worker, monkeypatch, 0.05)
        started = time.perf_counter()
        futures = [worker.submit(0, *make_pair(i)) for i in range(4)]
        blocked_s = time.perf_counter() - started
        assert all(f.result(10) is not None for f in futures)
    assert blocked_s >= 0.05  # the 3rd submission waited for the 1st frame to resolve


def test_cpu_finishing_runs_beside_the_next_network_pass_while_frames_wait(net, reference, monkeypatch):
    """Composition and colour go to the completion thread while frames wait, so they overlap the next frame's
    network pass; a lone frame (a live feed) is finished on the dispatch thread, with no hand-over."""
    calls: list[tuple[str, str, float, float]] = []

    def timed(name, function):
        def call(*args, **kwargs):
            start = time.perf_counter()
            time.sleep(0.03)
            result = function(*args, **kwargs)
            calls.append((name, threading.current_thread().name, start, time.perf_counter()))
            return result
        return call

    pairs = [make_pair(i) for i in range(8)]
    with make_worker(net, queue_size=6) as worker:
        monkeypatch.setattr(worker.network, "decide_with_repair", timed("fuse", worker.network.decide_with_repair))
        monkeypatch.setattr("streamfuse.inference.cpu.merge_luminance",
                            timed("colour", streamfuse.inference.cpu.merge_luminance))
        monkeypatch.setattr("streamfuse.inference.cpu.compose_on_cpu",
                            timed("compose", streamfuse.inference.cpu.compose_on_cpu))
        results = [f.result(timeout=60) for f in [worker.submit(0, ir, vis) for ir, vis in pairs[:6]]]
        waiting = list(calls)
        calls.clear()
        results += [worker.submit(0, ir, vis).result(timeout=60) for ir, vis in pairs[6:]]  # one at a time
    for (ir, vis), result in zip(pairs, results, strict=True):
        assert level_diff(result, fused_by_reference(reference, ir, vis)) <= 1
    # frames 0-4 each had a later frame waiting when their network pass ended (frame 5 may be finished either way)
    assert [thread for name, thread, *_ in waiting if name == "compose"][:5] == ["inference-complete"] * 5
    assert {thread for name, thread, *_ in waiting if name == "fuse"} == {"inference-dispatch"}
    fusions = [(start, end) for name, _, start, end in waiting if name == "fuse"]
    colours = [(start, end) for name, _, start, end in waiting if name == "colour"]
    assert len(fusions) == len(colours) == 6
    assert any(c0 < f1 and f0 < c1 for c0, c1 in colours for f0, f1 in fusions), "no overlap: run one after the other"
    assert {thread for _, thread, *_ in calls} == {"inference-dispatch"}  # lone frames: no hand-over


def test_a_failing_colour_restoration_fails_only_its_frames(net, reference, monkeypatch):
    pairs = [make_pair(i) for i in range(4)]
    original, calls = streamfuse.inference.cpu.merge_luminance, []

    def merge(*args):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("simulated")
        return original(*args)

    monkeypatch.setattr("streamfuse.inference.cpu.merge_luminance", merge)
    with make_worker(net, queue_size=4) as worker:
        futures = [worker.submit(3, ir, vis) for ir, vis in pairs]
        for future in futures:
            future.exception(timeout=60)
    error = futures[1].exception()
    assert isinstance(error, InferenceError) and "colour restoration failed" in str(error)
    for index in (0, 2, 3):
        assert level_diff(futures[index].result(), fused_by_reference(reference, *pairs[index])) <= 1
    assert worker.stats.failed == 1 and worker_threads() == []


# ---------------------------------------------------------------------------------------------- errors
def test_a_failing_forward_pass_fails_only_its_frames(net, reference, device, monkeypatch):
    pairs = [make_pair(i) for i in range(6)]
    with make_worker(net, device, queue_size=8) as worker:
        first = worker.submit(7, *pairs[0]).result(timeout=60)  # warmed up: one forward per frame from here
        original, calls = worker.network.decide_with_repair, []

        def decide(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("CUDA out of memory (simulated)")
            return original(*args, **kwargs)

        monkeypatch.setattr(worker.network, "decide_with_repair", decide)
        futures = [worker.submit(7, ir, vis) for ir, vis in pairs]
        for future in futures:
            future.exception(timeout=60)
    error = futures[2].exception()
    assert isinstance(error, InferenceError)
    assert "forward pass failed" in str(error) and "stream(s) 7" in str(error) and "64x48" in str(error)
    assert "CUDA out of memory (simulated)" in str(error) and isinstance(error.__cause__, RuntimeError)
    for index in (0, 1, 3, 4, 5):  # the worker kept working
        assert level_diff(futures[index].result(), fused_by_reference(reference, *pairs[index])) <= tolerance(device)
    assert np.array_equal(futures[0].result(), first)
    assert worker.stats.failed == 1 and worker.stats.frames == 6 and worker_threads() == []


def test_bad_inputs_and_settings_are_rejected(net):
    with pytest.raises(ValueError, match="needs a CUDA device"):
        InferenceWorker(net, device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="precision"):
        InferenceWorker(net, device="cpu", precision="int8")
    with pytest.raises(ValueError, match="queue_size"):
        InferenceWorker(net, device="cpu", max_batch=8, queue_size=4)
    with pytest.raises(ValueError, match="unknown device"):
        InferenceWorker(net, device="tpu:0")
    with make_worker(net) as worker:
        ir, vis = make_pair(0)
        with pytest.raises(ValueError, match="infrared frame is 32x24 but visible frame is 64x48"):
            worker.submit(0, ir[:24, :32], vis)
        with pytest.raises(ValueError, match="visible frame"):
            worker.submit(0, ir, vis.astype(np.float32))
        with pytest.raises(ValueError, match="expected 7 values|values"):
            worker.set_weights(0, torch.ones(1, len(INTENTS) + 1))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU fallback")
def test_half_precision_on_auto_without_a_gpu_falls_back_to_fp32(net, caplog):
    with InferenceWorker(net, device="auto", precision="fp16") as worker:
        assert worker.device.type == "cpu" and worker.precision == "fp32"
    assert "running fp32" in caplog.text


# ------------------------------------------------------------------------------------------ homography
def test_homography_on_the_cpu_path_matches_registrar_and_direct_fusion(net, reference):
    rng = np.random.default_rng(5)
    ir = cv2.GaussianBlur(rng.integers(0, 256, (60, 80), dtype=np.uint8), (0, 0), 2)
    _, vis = make_pair(4)
    warped, valid = HomographyRegistrar(HOMOGRAPHY).apply(ir, vis.shape[:2])
    assert valid is not None and 0 < valid.mean() < 1  # part of the visible image has no IR
    expected = fused_by_reference(reference, warped, vis, valid=valid)
    with make_worker(net, max_batch=2) as worker:
        worker.set_homography(3, HOMOGRAPHY)
        warped_result = worker.submit(3, ir, vis)
        plain = worker.submit(4, warped, vis)  # no homography on stream 4: IR already on the grid
        worker.set_homography(3, None)
        with pytest.raises(ValueError, match="infrared frame is 80x60"):
            worker.submit(3, ir, vis)
        assert np.array_equal(warped_result.result(10), expected)
        assert level_diff(plain.result(10), fused_by_reference(reference, warped, vis)) <= 1


def test_gpu_ops_reproduce_the_cpu_path_exactly(net):
    """The GPU compute step, run on the CPU: OpenCV-exact colour and warp; the fusion itself (torch bands
    there, OpenCV bands in the CPU worker) agrees to within a grey level."""
    rng = np.random.default_rng(6)
    ir = cv2.GaussianBlur(rng.integers(0, 256, (60, 80), dtype=np.uint8), (0, 0), 1.5)
    _, vis = make_pair(9)
    gray = cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY)
    weights = net.intent_weights({"fog": 0.5, "balanced": 0.5})
    with make_worker(net) as worker:
        worker.set_homography(0, HOMOGRAPHY)
        worker.set_weights(0, weights)
        expected_colour = worker.submit(0, ir, vis).result(10)
        expected_gray = worker.submit(1, ir[:48, :64], gray).result(10)
        model = worker.network
        index, weight, valid = gpu_ops.remap_table(HOMOGRAPHY, ir.shape, vis.shape[:2])
        with torch.inference_mode():
            colour = gpu_ops.fuse_tensors(model, torch.from_numpy(vis)[None], torch.from_numpy(ir)[None], weights,
                                          remap_index=torch.from_numpy(index)[None],
                                          remap_weight=torch.from_numpy(weight)[None],
                                          valid=torch.from_numpy(valid)[None, None])
            plain = gpu_ops.fuse_tensors(model, torch.from_numpy(gray)[None],
                                         torch.from_numpy(np.ascontiguousarray(ir[:48, :64]))[None],
                                         net.intent_weights({"balanced": 1}))
    assert level_diff(colour[0].numpy(), expected_colour) <= 1
    assert level_diff(plain[0].numpy(), expected_gray) <= 1
    warped, _ = HomographyRegistrar(HOMOGRAPHY).apply(ir, vis.shape[:2])
    table = (torch.from_numpy(index)[None], torch.from_numpy(weight)[None])
    assert np.array_equal(gpu_ops.remap(torch.from_numpy(ir)[None], *table, vis.shape[:2])[0].numpy(), warped)
    y, cr, cb = gpu_ops.bgr_to_ycrcb(torch.from_numpy(vis))
    assert np.array_equal(torch.stack([y, cr, cb], -1).numpy(), cv2.cvtColor(vis, cv2.COLOR_BGR2YCrCb))
    ycrcb = torch.from_numpy(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).to(torch.int32)
    assert np.array_equal(gpu_ops.ycrcb_to_bgr(*ycrcb.unbind(-1)).numpy(),
                          cv2.cvtColor(ycrcb.numpy().astype(np.uint8), cv2.COLOR_YCrCb2BGR))


class HostTensors(TorchDispatchMode):
    """Records where a tensor is made from Python data (``torch.tensor``, indexing by a list)."""

    def __init__(self) -> None:
        super().__init__()
        self.made_at: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.lift_fresh.default and args[0].dim() > 0:
            ours = [f for f in traceback.extract_stack() if "streamfuse" in Path(f.filename).parts[:-1]]
            self.made_at.add(f"{Path(ours[-1].filename).name}:{ours[-1].lineno} {ours[-1].line}" if ours
                             else "outside streamfuse")
        return func(*args, **(kwargs or {}))


def test_the_gpu_compute_step_makes_no_tensor_from_host_data(net):
    """The step the CUDA worker captures in a graph, traced on fake CUDA tensors (no GPU needed): a tensor
    made from Python data inside it is copied from the host on every call, which graph capture refuses
    ("Cannot copy between CPU and CUDA tensors during CUDA graph capture"), and the worker then runs
    eagerly (on an H200 a medical-intent index list did this: 12 ms per frame instead of a replay)."""
    index, weight, valid = (torch.from_numpy(t) for t in gpu_ops.remap_table(HOMOGRAPHY, (60, 80), (48, 64)))
    prompts = [net.intent_weights(p) for p in ({"balanced": 1}, {"glare": 0.7, "balanced": 0.3}, {"mri_pet": 1})]
    model = copy.deepcopy(net)
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = model.to("cuda", torch.float16)
        vis, ir = torch.zeros((2, 48, 64, 3), dtype=torch.uint8, device="cuda"), torch.zeros(
            (2, 60, 80), dtype=torch.uint8, device="cuda")
        warp = {"remap_index": index[None].expand(2, -1, -1).to("cuda"),
                "remap_weight": weight[None].expand(2, -1, -1).to("cuda"), "valid": valid[None, None].to("cuda")}
        memory = torch.full((2, *FusionNet.memory_shape(48, 64)), float("nan"), dtype=torch.float16, device="cuda")
        prompts = [w.expand(2, -1).to("cuda") for w in prompts]
        with HostTensors() as host, torch.inference_mode():
            for weights in prompts:
                fused, _ = gpu_ops.fuse_tensors(model, vis, ir, weights, dtype=torch.float16, memory=memory,
                                                momentum=0.5, **warp)
                gpu_ops.fuse_tensors(model, vis, ir[:, :48, :64], weights, dtype=torch.float16)
    assert fused.shape == (2, 48, 64, 3) and fused.device.type == "cuda"
    assert not host.made_at, f"tensors made from host data in the GPU compute step: {sorted(host.made_at)}"


def noisy_video(count: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ir, vis) frames of one still scene with sensor noise (no scene cut between them)."""
    _, vis = make_pair(seed)
    ir = cv2.GaussianBlur(np.random.default_rng(seed).integers(0, 256, (48, 64), dtype=np.uint8), (0, 0), 2)
    rng = np.random.default_rng(seed + 100)
    jitter = lambda image: np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)  # noqa: E731
    return [(jitter(ir), jitter(vis)) for _ in range(count)]


def run_in_rounds(worker: InferenceWorker, videos: list[list[tuple[np.ndarray, np.ndarray]]]) -> list[list]:
    """Submit frame i of every stream, wait for them, then frame i + 1: at most one frame per stream per batch."""
    results = [[] for _ in videos]
    for frames in zip(*videos, strict=True):
        futures = [worker.submit(stream, ir, vis) for stream, (ir, vis) in enumerate(frames)]
        for stream, future in enumerate(futures):
            results[stream].append(future.result(timeout=60))
    return results


def test_gpu_ops_carry_the_temporal_memory_like_the_cpu_path(net):
    """The GPU compute step with memory, run on the CPU, gives the CPU worker's smoothed frames (to a grey level)."""
    frames = noisy_video(4, seed=5)
    with make_worker(net, temporal_smoothing=0.5) as worker:
        expected = [worker.submit(0, ir, vis).result(10) for ir, vis in frames]
    model, weights = worker.network, net.intent_weights({"balanced": 1})
    memory = torch.full((1, *FusionNet.memory_shape(48, 64)), float("nan"))
    with torch.inference_mode():
        for (ir, vis), want in zip(frames, expected, strict=True):
            got, memory = gpu_ops.fuse_tensors(model, torch.from_numpy(vis)[None], torch.from_numpy(ir)[None],
                                               weights, memory=memory, momentum=0.5)
            assert level_diff(got[0].numpy(), want) <= 1
    with make_worker(net) as plain:
        unsmoothed = [plain.submit(0, ir, vis).result(10) for ir, vis in frames]
    assert np.array_equal(unsmoothed[0], expected[0])  # nothing to carry over into the first frame
    assert any(level_diff(a, b) > 0 for a, b in zip(unsmoothed[1:], expected[1:], strict=True))


def test_a_forgotten_stream_starts_afresh(net):
    """After ``forget``, a stream's next frame is fused as a first frame: no memory, weights or warp of before."""
    (ir_a, vis_a), (ir_b, vis_b) = noisy_video(2, seed=7)
    with make_worker(net, temporal_smoothing=0.5) as worker:
        fresh = worker.submit(1, ir_b, vis_b).result(10)
        worker.set_weights(0, net.intent_weights({"fog": 1.0}))
        worker.set_homography(0, HOMOGRAPHY)
        worker.submit(0, ir_a, vis_a).result(10)
        carried = worker.submit(0, ir_b, vis_b).result(10)
        worker.forget(0)
        again = worker.submit(0, ir_b, vis_b).result(10)
    assert level_diff(carried, fresh) > 0
    assert np.array_equal(again, fresh)


def test_stats_percentiles():
    stats = WorkerStats()
    assert stats.mean_batch == 0.0 and stats.percentiles("total")["p50"] == 0.0
    stats.record_batch(3, 1.0, 2.0, 3.0)
    stats.record_batch(1, 1.0, 4.0, 3.0)
    for ms in range(1, 101):
        stats.record_frame(0.5, float(ms))
    assert stats.mean_batch == 2.0 and stats.frames == 4
    assert stats.percentiles("model_ms")["mean"] == 3.0
    assert 49 <= stats.percentiles("total")["p50"] <= 52 and stats.percentiles("total")["p95"] > 90
    with pytest.raises(ValueError, match="unknown stage"):
        stats.percentiles("fuse")


def test_the_warm_up_frame_is_not_in_the_statistics(net, device):
    """Its one-off start-up cost was a sample of every stage (31 samples for 30 frames in `bench`)."""
    from streamfuse.inference.batches import WARM_UP_STREAM

    ir, vis = make_pair(0)
    with make_worker(net, device, max_batch=1) as worker:
        worker.submit(WARM_UP_STREAM, ir, vis).result(timeout=60)
        worker.forget(WARM_UP_STREAM)
        assert worker.stats.frames == 0 and not worker.stats.model_ms and not worker.stats.total_ms
        worker.submit(0, ir, vis).result(timeout=60)
        assert worker.stats.frames == 1 and len(worker.stats.model_ms) == len(worker.stats.total_ms) == 1


# ------------------------------------------------------------------------------------------------ CUDA
@pytest.fixture
def cuda_frames() -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(stream, ir, vis) at 128x160: stream 0 warped from a 150x200 IR camera, streams 1-2 registered."""
    rng = np.random.default_rng(11)
    jobs = []
    for i in range(8):
        for stream in range(3):
            vis = cv2.resize(make_pair(10 * stream + i)[1], (160, 128), interpolation=cv2.INTER_NEAREST)
            shape = (150, 200) if stream == 0 else (128, 160)
            ir = cv2.GaussianBlur(rng.integers(0, 256, shape, dtype=np.uint8), (0, 0), 2)
            jobs.append((stream, ir, vis))
    return jobs


def run_jobs(worker: InferenceWorker, jobs) -> list[np.ndarray]:
    worker.set_homography(0, HOMOGRAPHY)
    futures = [worker.submit(*job) for job in jobs]
    return [f.result(timeout=60) for f in futures]


def report(label: str, a: list[np.ndarray], b: list[np.ndarray]) -> tuple[int, float]:
    diffs = np.stack([np.abs(x.astype(np.int16) - y.astype(np.int16)) for x, y in zip(a, b, strict=True)])
    print(f"{label}: max {int(diffs.max())} levels, mean {float(diffs.mean()):.4f}, "
          f"{float((diffs > 0).mean()) * 100:.3f}% of values differ")
    return int(diffs.max()), float(diffs.mean())


@needs_cuda
def test_cuda_matches_cpu_in_order(net, cuda_frames):
    with InferenceWorker(net, device="cpu", max_batch=1, queue_size=32) as cpu:
        expected = run_jobs(cpu, cuda_frames)
    with InferenceWorker(net, device="cuda", max_batch=4, queue_size=32) as gpu:
        results = run_jobs(gpu, cuda_frames)
        again = run_jobs(gpu, cuda_frames[::-1])[::-1]  # buffers reused in another order: same results
    worst, mean = report("cuda fp32 vs cpu", results, expected)
    assert worst <= 3 and mean < 0.05  # TF32 convolutions may move a few pixels by a level or so
    assert all(np.array_equal(a, b) or level_diff(a, b) <= 1 for a, b in zip(results, again, strict=True))
    assert worker_threads() == []


@needs_cuda
@pytest.mark.parametrize("graphs", [False, True])
def test_cuda_temporal_smoothing_matches_cpu(net, graphs):
    videos = [noisy_video(5, seed) for seed in (1, 2, 3)]
    with make_worker(net, temporal_smoothing=0.5) as cpu:
        expected = run_in_rounds(cpu, videos)
    with InferenceWorker(net, device="cuda", max_batch=4, cuda_graphs=graphs, queue_size=32,
                         temporal_smoothing=0.5) as gpu:
        results = run_in_rounds(gpu, videos)
        if graphs:
            assert gpu.captured_graphs and all(gpu.captured_graphs.values())
    worst, mean = report(f"cuda smoothing (graphs {graphs}) vs cpu", sum(results, []), sum(expected, []))
    assert worst <= 3 and mean < 0.05


@needs_cuda
def test_auto_device_picks_an_indexed_cuda_device(net):
    with InferenceWorker(net, device="auto", queue_size=8) as worker:
        assert worker.device == torch.device("cuda", torch.cuda.current_device())
        ir, vis = noisy_video(1, seed=4)[0]
        assert worker.submit(0, ir, vis).result(timeout=60).shape == vis.shape


@needs_cuda
def test_cuda_graph_replay_equals_eager(net, cuda_frames):
    with InferenceWorker(net, device="cuda", max_batch=4, cuda_graphs=False, queue_size=32) as eager:
        expected = run_jobs(eager, cuda_frames)
    with InferenceWorker(net, device="cuda", max_batch=4, cuda_graphs=True, queue_size=32) as graphed:
        results = run_jobs(graphed, cuda_frames)
        assert graphed.captured_graphs and all(graphed.captured_graphs.values()), \
            "a CUDA graph capture failed (see the log)"
    worst, _ = report("cuda graph vs eager", results, expected)
    assert worst <= 1


@needs_cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_half_precision_close_to_fp32(net, cuda_frames, precision):
    with InferenceWorker(net, device="cuda", max_batch=4, queue_size=32) as full:
        expected = run_jobs(full, cuda_frames)
    with InferenceWorker(net, device="cuda", precision=precision, max_batch=4, queue_size=32) as half:
        results = run_jobs(half, cuda_frames)
    worst, mean = report(f"cuda {precision} vs fp32", results, expected)
    assert mean < 1.0 and worst <= 24


def test_a_forgotten_stream_is_not_waited_for_by_the_batching(net):
    """The model fuser's warm-up ran on a stream of its own that the batching counted as active for a second, so
    the first frames of a batching worker waited max_wait_ms each for a partner that never came; forget() now
    drops it (and the fuser forgets its warm-up stream)."""
    ir, vis = make_pair(5)
    with make_worker(net, max_batch=2, max_wait_ms=500.0) as worker:
        worker.submit(-1, ir, vis).result(timeout=30)  # a warm-up on its own stream
        worker.forget(-1)
        worker.submit(0, ir, vis).result(timeout=30)
        assert worker.stats.queue_ms[-1] < 250, list(worker.stats.queue_ms)
        worker.submit(1, ir, vis).result(timeout=30)  # stream 0 is still active: this one waits for it
        assert worker.stats.queue_ms[-1] >= 400, list(worker.stats.queue_ms)
