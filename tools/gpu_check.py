#!/usr/bin/env python3
"""GPU check of the inference worker: its tests, model-only and end-to-end timings, half-precision accuracy.

Run from the repository root on the GPU machine; it finishes in under 4 minutes and prints one summary::

    python3 tools/gpu_check.py          # also writes $OUT/gpu_check.json when OUT is set

It needs torch, numpy, OpenCV and pyyaml (pytest for the test section). When the package's
``__init__`` cannot be imported (it pulls in pyzmq and PyAV for the sinks), the submodules are
imported without it. Every section catches its own errors, prints them and moves on.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZE = (512, 640)  # height, width
#: Device of the end-to-end runs (a knob for trying this script without a GPU).
DEVICE = "cuda"
#: Sections start only while the run is younger than this (seconds), to stay under 4 minutes.
BUDGET_S = 200.0
STARTED = time.monotonic()


def import_streamfuse() -> str:
    """Make ``streamfuse.*`` importable; skip the package ``__init__`` if its optional imports are missing."""
    sys.path.insert(0, str(REPO))
    try:
        import streamfuse  # noqa: F401
        return "full package"
    except ImportError as exc:
        for name in [n for n in sys.modules if n == "streamfuse" or n.startswith("streamfuse.")]:
            del sys.modules[name]
        spec = importlib.util.spec_from_file_location("streamfuse", REPO / "streamfuse" / "__init__.py",
                                                      submodule_search_locations=[str(REPO / "streamfuse")])
        sys.modules["streamfuse"] = importlib.util.module_from_spec(spec)  # not executed: submodules only
        return f"submodules only (package __init__ needs {exc.name or exc})"


IMPORT_MODE = import_streamfuse()

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from streamfuse.inference import InferenceWorker, gpu_ops  # noqa: E402
from streamfuse.models.checkpoint import default_weights_path, load_model  # noqa: E402
from streamfuse.models.network import FusionNet  # noqa: E402

RESULTS: dict = {"import_mode": IMPORT_MODE, "errors": {}}
#: A mild IR->VIS homography so the end-to-end runs include the warp.
HOMOGRAPHY = np.array([[0.97, 0.01, 9.5], [-0.01, 0.98, 6.0], [2e-5, 1e-5, 1.0]])


def run_section(name: str, function, *args, needs_cuda: bool = True) -> None:
    """Run one section, recording its result (or its error) under ``name``; skip it when out of time."""
    elapsed = time.monotonic() - STARTED
    if elapsed > BUDGET_S:
        print(f"\n== {name}: skipped ({elapsed:.0f} s elapsed, budget {BUDGET_S:.0f} s)")
        RESULTS["errors"][name] = "skipped: out of time"
        return
    if needs_cuda and not torch.cuda.is_available():
        print(f"\n== {name}: skipped (no CUDA GPU)")
        RESULTS["errors"][name] = "skipped: no CUDA GPU"
        return
    print(f"\n== {name}", flush=True)
    started = time.monotonic()
    try:
        RESULTS[name] = function(*args)
    except Exception as exc:
        traceback.print_exc()
        RESULTS["errors"][name] = f"{type(exc).__name__}: {exc}"
    print(f"   ({time.monotonic() - started:.1f} s)", flush=True)


def fusion_network() -> tuple[FusionNet, str]:
    if default_weights_path().is_file():
        model, _ = load_model()
        return model, f"shipped weights ({default_weights_path().name})"
    from streamfuse.text import load_bank

    torch.manual_seed(0)
    model = FusionNet(load_bank().ids).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model, "random weights (no shipped checkpoint)"


def make_frames(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Distinct textured 640x512 (IR, BGR) pairs."""
    rng = np.random.default_rng(0)
    height, width = SIZE
    frames = []
    for i in range(count):
        vis = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 3)
        cv2.putText(vis, str(i), (20, 80), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (255, 255, 255), 3)
        ir = cv2.GaussianBlur(rng.integers(0, 256, (height, width), dtype=np.uint8), (0, 0), 4)
        cv2.circle(ir, (40 + 30 * i, 300), 40, 240, -1)
        frames.append((ir, vis))
    return frames


# ------------------------------------------------------------------------------------------- sections
def environment() -> dict:
    info = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "opencv": cv2.__version__,
            "cuda_available": torch.cuda.is_available(), "import_mode": IMPORT_MODE,
            "heavy_modules_loaded": [m for m in ("zmq", "av", "open_clip") if m in sys.modules]}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    sms=props.multi_processor_count, tf32_conv=torch.backends.cudnn.allow_tf32)
    for key, value in info.items():
        print(f"   {key}: {value}")
    return info


def run_tests() -> dict:
    try:
        import pytest
    except ImportError:
        print("   pytest not installed: skipped")
        return {"skipped": "pytest not installed"}
    started = time.monotonic()
    code = pytest.main(["-q", "-s", "-p", "no:cacheprovider", str(REPO / "tests" / "test_worker.py")])
    return {"exit_code": int(code), "passed": int(code) == 0, "seconds": round(time.monotonic() - started, 1)}


def time_cuda(function, iterations: int) -> float:
    """Mean milliseconds of ``function`` on the current stream, by CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iterations):
        function()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / iterations


def model_only(network: FusionNet) -> list[dict]:
    """The network alone on device tensors: eager and CUDA-graph replay, per precision and batch size."""
    rows = []
    torch.backends.cudnn.benchmark = True
    height, width = SIZE
    for precision, dtype in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
        model = copy.deepcopy(network).to("cuda", dtype).to(memory_format=torch.channels_last)
        for batch in (1, 4, 8):
            ir = torch.rand(batch, 1, height, width, device="cuda").to(dtype)
            vis = torch.rand(batch, 1, height, width, device="cuda").to(dtype)
            weights = network.intent_weights({"balanced": 1.0}).expand(batch, -1).contiguous().cuda()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())  # the inputs were made on the default stream
            with torch.inference_mode(), torch.cuda.stream(stream):
                for _ in range(5):
                    model(ir, vis, weights)
                eager = time_cuda(lambda m=model, a=(ir, vis, weights): m(*a), 30)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=stream):
                    model(ir, vis, weights)
                replay = time_cuda(graph.replay, 50)
            row = {"precision": precision, "batch": batch, "eager_ms_per_frame": eager / batch,
                   "graph_ms_per_frame": replay / batch, "eager_ms_per_batch": eager, "graph_ms_per_batch": replay}
            rows.append(row)
            print(f"   {precision} batch {batch}: eager {eager / batch:.3f} ms/frame, "
                  f"graph {replay / batch:.3f} ms/frame ({replay:.3f} ms/batch)")
            del graph
    return rows


def model_only_cpu(network: FusionNet) -> dict:
    """For scale: the same network on one CPU thread (batch 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = copy.deepcopy(network).to(memory_format=torch.channels_last)
        ir, vis = torch.rand(1, 1, *SIZE), torch.rand(1, 1, *SIZE)
        weights = network.intent_weights({"balanced": 1.0})
        with torch.inference_mode():
            model(ir, vis, weights)
            started = time.perf_counter()
            for _ in range(5):
                model(ir, vis, weights)
        ms = (time.perf_counter() - started) / 5 * 1000
    finally:
        torch.set_num_threads(threads)
    print(f"   cpu fp32 batch 1, 1 thread: {ms:.1f} ms/frame")
    return {"ms_per_frame": ms}


def end_to_end_run(network: FusionNet, frames: list, precision: str, graphs: bool, streams: int,
                   frames_per_stream: int, sequential: bool) -> dict:
    max_batch = 4 if streams > 1 else 1
    worker = InferenceWorker(network, device=DEVICE, precision=precision, max_batch=max_batch, max_wait_ms=4.0,
                             cuda_graphs=graphs, queue_size=4 * max(streams, 2))
    try:
        for stream in range(streams):
            worker.set_homography(stream, HOMOGRAPHY)

        def produce(stream: int, count: int) -> None:
            pending = []
            for i in range(count):
                future = worker.submit(stream, *frames[(i + 3 * stream) % len(frames)])
                if sequential:
                    future.result(timeout=60)
                else:
                    pending.append(future)
            for future in pending:
                future.result(timeout=60)

        def run_streams(count: int) -> float:
            started = time.perf_counter()
            threads = [threading.Thread(target=produce, args=(s, count)) for s in range(streams)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return time.perf_counter() - started

        run_streams(40)  # warm-up: the batch sizes this load produces get warmed up and captured, untimed
        baseline = worker.stats.frames
        for samples in (worker.stats.upload_ms, worker.stats.model_ms, worker.stats.download_ms,
                        worker.stats.queue_ms, worker.stats.total_ms):
            samples.clear()
        batches = worker.stats.batches
        seconds = run_streams(frames_per_stream)
        fused = worker.stats.frames - baseline
        summary = worker.stats.summary()
        summary["mean_batch"] = fused / max(1, worker.stats.batches - batches)
        captured = worker.captured_graphs
    finally:
        worker.close()
    total = summary["stages_ms"]["total"]
    return {"precision": precision, "cuda_graphs": graphs, "streams": streams,
            "mode": "sequential" if sequential else "pipelined", "frames": fused, "fps": fused / seconds,
            "latency_p50_ms": total["p50"], "latency_p95_ms": total["p95"], "mean_batch": summary["mean_batch"],
            "gpu_upload_ms_p50": summary["stages_ms"]["upload"]["p50"],
            "gpu_model_ms_p50": summary["stages_ms"]["model"]["p50"],
            "gpu_download_ms_p50": summary["stages_ms"]["download"]["p50"], "failed": summary["failed"],
            "graphs_captured": f"{sum(captured.values())}/{len(captured)}" if graphs else "off"}


def end_to_end(network: FusionNet, frames: list) -> list[dict]:
    """submit -> result through the worker (upload, colour, warp, network, download), 640x512 BGR + IR warp."""
    rows = []
    for precision, graphs in (("fp32", True), ("fp16", True), ("fp16", False)):
        for streams, count, sequential in ((1, 150, True), (1, 300, False), (4, 150, False)):
            if time.monotonic() - STARTED > BUDGET_S:
                print("   out of time: remaining end-to-end runs skipped")
                return rows
            try:
                row = end_to_end_run(network, frames, precision, graphs, streams, count, sequential)
            except Exception as exc:
                traceback.print_exc()
                row = {"precision": precision, "cuda_graphs": graphs, "streams": streams, "error": repr(exc)}
            rows.append(row)
            if "error" not in row:
                print(f"   {precision} graphs={'on ' if graphs else 'off'} {streams} stream(s) {row['mode']:<10}: "
                      f"{row['fps']:7.1f} fps, latency p50 {row['latency_p50_ms']:.2f} ms p95 "
                      f"{row['latency_p95_ms']:.2f} ms, batch {row['mean_batch']:.2f}, GPU up/model/down p50 "
                      f"{row['gpu_upload_ms_p50']:.3f}/{row['gpu_model_ms_p50']:.3f}/"
                      f"{row['gpu_download_ms_p50']:.3f} ms, graphs captured {row['graphs_captured']}")
    return rows


def fuse_all(network: FusionNet, frames: list, device: str, precision: str, graphs: bool = True) -> list[np.ndarray]:
    with InferenceWorker(network, device=device, precision=precision, max_batch=4, cuda_graphs=graphs,
                         queue_size=len(frames)) as worker:
        worker.set_homography(0, HOMOGRAPHY)
        return [f.result(timeout=120) for f in [worker.submit(0, ir, vis) for ir, vis in frames]]


def differences(a: list[np.ndarray], b: list[np.ndarray]) -> dict:
    diff = np.stack([np.abs(x.astype(np.int16) - y.astype(np.int16)) for x, y in zip(a, b, strict=True)])
    return {"max_levels": int(diff.max()), "mean_levels": float(diff.mean()),
            "percent_values_differing": float((diff > 0).mean() * 100)}


def accuracy(network: FusionNet, frames: list) -> dict:
    """Fused uint8 output differences (levels) on 16 frames at 640x512 with the warp."""
    fp32 = fuse_all(network, frames, "cuda", "fp32")
    threads = torch.get_num_threads()
    report = {"fp16_vs_fp32": differences(fuse_all(network, frames, "cuda", "fp16"), fp32),
              "bf16_vs_fp32": differences(fuse_all(network, frames, "cuda", "bf16"), fp32),
              "graph_vs_eager_fp32": differences(fp32, fuse_all(network, frames, "cuda", "fp32", graphs=False)),
              "gpu_fp32_vs_cpu_fp32": differences(fp32, fuse_all(network, frames, "cpu", "fp32"))}
    torch.set_num_threads(threads)
    for name, values in report.items():
        print(f"   {name}: max {values['max_levels']} levels, mean {values['mean_levels']:.4f}, "
              f"{values['percent_values_differing']:.3f}% of values differ")
    return report


def gpu_ops_exactness(frames: list) -> dict:
    """Colour conversion and warp on the GPU against OpenCV on the CPU (expect 0 differing values)."""
    from streamfuse.registration import HomographyRegistrar

    ir, vis = frames[0]
    y, cr, cb = gpu_ops.bgr_to_ycrcb(torch.from_numpy(vis).cuda())
    ycrcb = torch.stack([y, cr, cb], -1).cpu().numpy()
    back = gpu_ops.ycrcb_to_bgr(y, cr, cb).cpu().numpy()
    index, weight, _ = gpu_ops.remap_table(HOMOGRAPHY, ir.shape, SIZE)
    warped = gpu_ops.remap(torch.from_numpy(ir)[None].cuda(), torch.from_numpy(index)[None].cuda(),
                           torch.from_numpy(weight)[None].cuda(), SIZE)[0].cpu().numpy()
    expected, _ = HomographyRegistrar(HOMOGRAPHY).apply(ir, SIZE)
    report = {"ycrcb_differing": int((ycrcb != cv2.cvtColor(vis, cv2.COLOR_BGR2YCrCb)).sum()),
              "bgr_roundtrip_differing": int((back != cv2.cvtColor(cv2.cvtColor(vis, cv2.COLOR_BGR2YCrCb),
                                                                    cv2.COLOR_YCrCb2BGR)).sum()),
              "remap_differing": int((warped != expected).sum())}
    print(f"   {report}")
    return report


# --------------------------------------------------------------------------------------------- summary
def summary() -> None:
    print("\n" + "=" * 100)
    env = RESULTS.get("environment", {})
    print(f"SUMMARY  {env.get('gpu', 'no GPU')}  torch {torch.__version__}  CUDA {torch.version.cuda}  "
          f"({RESULTS.get('weights')}; imports: {IMPORT_MODE})")
    if "tests" in RESULTS:
        print(f"tests/test_worker.py: {RESULTS['tests']}")
    if RESULTS.get("model_only"):
        print("model only, 640x512, ms per frame     batch 1          batch 4          batch 8")
        for precision in ("fp32", "fp16", "bf16"):
            rows = {r["batch"]: r for r in RESULTS["model_only"] if r["precision"] == precision}
            cells = [f"{rows[b]['eager_ms_per_frame']:6.3f} / {rows[b]['graph_ms_per_frame']:6.3f}" if b in rows
                     else "       -        " for b in (1, 4, 8)]
            print(f"  {precision} (eager / graph)              " + "  ".join(cells))
    if "model_only_cpu_1thread" in RESULTS:
        print(f"  cpu fp32 1 thread batch 1: {RESULTS['model_only_cpu_1thread']['ms_per_frame']:.1f} ms/frame")
    if RESULTS.get("end_to_end"):
        print("end to end (submit -> fused BGR, incl. upload, colour, warp, download), 640x512:")
        print("  precision graphs streams mode          fps   p50 ms   p95 ms  batch  captured")
        for r in RESULTS["end_to_end"]:
            if "error" in r:
                print(f"  {r['precision']:<9} {str(r['cuda_graphs']):<6} {r['streams']:<7} ERROR {r['error']}")
                continue
            print(f"  {r['precision']:<9} {str(r['cuda_graphs']):<6} {r['streams']:<7} {r['mode']:<10} {r['fps']:7.1f} "
                  f"{r['latency_p50_ms']:8.2f} {r['latency_p95_ms']:8.2f} {r['mean_batch']:6.2f}  "
                  f"{r['graphs_captured']}")
    if "accuracy" in RESULTS:
        print("accuracy (fused uint8, levels):")
        for name, values in RESULTS["accuracy"].items():
            print(f"  {name:<22} max {values['max_levels']:3d}  mean {values['mean_levels']:.4f}")
    if "gpu_ops_exactness" in RESULTS:
        print(f"gpu_ops vs OpenCV (differing values): {RESULTS['gpu_ops_exactness']}")
    if RESULTS["errors"]:
        print("ERRORS:")
        for name, error in RESULTS["errors"].items():
            print(f"  {name}: {error}")
    print(f"total {time.monotonic() - STARTED:.0f} s")
    out = os.environ.get("OUT")
    if out:
        path = Path(out) / "gpu_check.json"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(RESULTS, indent=2, default=str))
            print(f"wrote {path}")
        except OSError as exc:
            print(f"could not write {path}: {exc}")


def main() -> None:
    run_section("environment", environment, needs_cuda=False)
    run_section("tests", run_tests, needs_cuda=False)
    network, RESULTS["weights"] = fusion_network()
    print(f"\nnetwork: {RESULTS['weights']}")
    frames = make_frames(16)
    run_section("gpu_ops_exactness", gpu_ops_exactness, frames)
    run_section("model_only", model_only, network)
    run_section("model_only_cpu_1thread", model_only_cpu, network, needs_cuda=False)
    run_section("end_to_end", end_to_end, network, frames)
    run_section("accuracy", accuracy, network, frames)
    summary()


if __name__ == "__main__":
    main()
