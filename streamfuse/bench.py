"""``streamfuse bench``: model-only and end-to-end throughput and latency, per device and precision.

End to end: N synthetic camera pairs (rendered as fast as consumed, or paced like live cameras),
each through its own pipeline (pairing, registration, fusion, H.264 encoding or no sink), all
sharing one inference worker that batches their frames. Model only: the fusion of luminance pairs
as the worker runs it (on a CPU: OpenCV bands and the network's trunk, ``fuse_on_cpu``; on a GPU:
the network's forward pass), for several batch sizes.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamfuse.colour import as_gray
from streamfuse.config import Config, SyntheticConfig, config_from_dict
from streamfuse.fusers import Fuser
from streamfuse.pipeline import Pipeline
from streamfuse.probe import describe_machine
from streamfuse.runtime import setup_runtime
from streamfuse.sources.synthetic import build_scene
from streamfuse.stats import END_TO_END, PipelineStats


def bench_config(width: int, height: int, frames: int, fuser: str, sink: str, workdir: Path, *,
                 live_fps: float | None = None, seed: int = 0, overrides: list[str] | None = None) -> Config:
    """One benchmark pipeline: synthetic cameras, the fuser, an H.264 file (or no) output."""
    video = {"type": "video", "path": str(workdir / f"bench-{seed}.mp4"), "overwrite": True}
    sinks = [video] if sink == "video" else []
    camera = {"type": "synthetic", "frames": frames, "realtime": live_fps is not None, "fps": live_fps or 30.0}
    return config_from_dict({
        "synthetic": {"width": width, "height": height, "seed": seed},
        "sources": {"ir": dict(camera), "vis": dict(camera)},
        "fusion": {"fuser": fuser},
        "sinks": sinks,
        "stats": {"log_every_s": 0},
    }, overrides)


def end_to_end(width: int, height: int, *, frames: int, fuser: str, sink: str, streams: int = 1,
               live_fps: float | None = None, overrides: list[str] | None = None,
               progress: bool = False) -> tuple[PipelineStats, dict[str, Any]]:
    """Run ``streams`` pipelines at once (one shared inference worker) and return their combined statistics."""
    stats = PipelineStats()
    with tempfile.TemporaryDirectory(prefix="streamfuse-bench-") as workdir, contextlib.ExitStack() as cleanup:
        configs = [bench_config(width, height, frames, fuser, sink, Path(workdir), live_fps=live_fps, seed=i,
                                overrides=overrides) for i in range(streams)]
        setup_runtime(configs[0].fusion, live=False)
        worker = None
        fusers: list[Fuser | None] = [None] * streams
        if fuser == "model":
            from streamfuse.fusers.model import ModelFuser
            from streamfuse.inference import build_worker
            from streamfuse.models.checkpoint import load_model

            worker = build_worker(load_model(configs[0].fusion.weights)[0], configs[0].fusion)
            cleanup.callback(worker.close, timeout=10)  # closed even when a pipeline fails to build
            fusers = [ModelFuser(c.fusion.weights, worker=worker, stream=i) for i, c in enumerate(configs)]
        pipelines = [Pipeline(c, stats=stats, fuser=f) for c, f in zip(configs, fusers, strict=True)]
        errors: list[BaseException] = []

        def run(pipeline: Pipeline, show: bool) -> None:
            try:
                pipeline.run(progress=show, install_signal_handlers=False)
            except BaseException as exc:  # reported after all streams finished
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(p, progress and i == 0)) for i, p in enumerate(pipelines)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM: the pipelines end before the worker they use is closed
            for pipeline in pipelines:
                pipeline.abort()
            for thread in threads:
                thread.join(10)
            raise
        wall = time.perf_counter() - started
        routing = pipelines[0].routing  # None without a prompt: balanced
        info: dict[str, Any] = {"wall_s": wall, "streams": streams, "intents": routing and routing.weights}
        if worker is not None:
            worker.close(timeout=10)
            worker.stats.record_into(stats)
            info.update(device=str(worker.device), precision=worker.precision, mean_batch=worker.stats.mean_batch)
        if errors:
            raise errors[0]
    return stats, info


def model_only(*, width: int, height: int, device: str = "auto", precision: str = "auto",
               batches: tuple[int, ...] = (1, 4, 8), repeats: int = 10, threads: int | None = None,
               weights: str | None = None, intents: dict[str, float] | None = None) -> dict[str, Any]:
    """Milliseconds per frame of the luminance fusion alone, per batch size (median of ``repeats``).

    The frames are the benchmark's synthetic scene (seed 0), as the end-to-end run fuses them.
    ``intents`` are the prompt's intent weights (None: balanced): a damage prompt (glare, low light,
    fog) runs part of the network twice where its damage is in the frame.

    ``threads`` sets torch's CPU threads; None keeps the process's (after a pipeline has run, the
    pipeline's: one fewer than the cores). The result names the count used.

    What the inference worker runs between colour conversion and colour restoration: on a CPU
    :func:`~streamfuse.models.cpu.fuse_on_cpu`, on a GPU the network's forward pass.
    """
    import torch

    from streamfuse.config import FusionConfig
    from streamfuse.inference.worker import PRECISIONS, resolve_device
    from streamfuse.models.checkpoint import load_model
    from streamfuse.models.cpu import fuse_on_cpu

    if threads is not None:
        torch.set_num_threads(threads)
    intents = intents or {"balanced": 1.0}
    target = resolve_device(device)
    if precision == "auto":
        precision = "fp16" if target.type == "cuda" else "fp32"
    FusionConfig(device=device, precision=precision)._check("fusion")
    network = load_model(weights)[0].to(target, PRECISIONS[precision]).to(memory_format=torch.channels_last)
    scene = build_scene(SyntheticConfig(width=width, height=height, seed=0))
    frames = [(scene.render_ir(i / 30), as_gray(scene.render_vis(i / 30))) for i in range(max(batches))]
    results = {}
    for batch in batches:
        irs_u8 = np.stack([ir for ir, _ in frames[:batch]])
        vis_u8 = np.stack([vis for _, vis in frames[:batch]])
        ir, vis = (torch.from_numpy(images)[:, None].to(target, PRECISIONS[precision]) / 255
                   for images in (irs_u8, vis_u8))
        intent = network.intent_weights(intents).to(target, PRECISIONS[precision])
        times = []
        with torch.inference_mode():
            for index in range(repeats + 2):
                if target.type == "cuda":
                    torch.cuda.synchronize(target)
                t0 = time.perf_counter()
                if target.type == "cuda":
                    network(ir, vis, intent)
                else:
                    fuse_on_cpu(network, irs_u8, vis_u8, intent)
                if target.type == "cuda":
                    torch.cuda.synchronize(target)
                if index >= 2:  # warm-up
                    times.append((time.perf_counter() - t0) * 1000 / batch)
        results[str(batch)] = float(np.median(times))
    return {"device": str(target), "precision": precision, "threads": torch.get_num_threads(),
            "intents": intents, "ms_per_frame_by_batch": results}


def machine() -> dict[str, Any]:
    """CPU model and cores, and the GPU name when torch sees one."""
    info = describe_machine()
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def report(stats: PipelineStats, info: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The JSON report: end-to-end fps, per-stage percentiles and everything in ``fields``."""
    return {
        "fps": stats.run_fps(),  # the whole run: from the first output frame to the last
        "frames": stats.frames_out,
        **info,
        **fields,
        "stages": {name: {"p50_ms": p.p50_ms, "p95_ms": p.p95_ms, "p99_ms": p.p99_ms, "mean_ms": p.mean_ms,
                          "count": p.count} for name, p in stats.stages().items()},
        "counters": stats.counters(),
        "latency_ms": vars(stats.stages().get(END_TO_END)) if END_TO_END in stats.stages() else None,
        "machine": machine(),
    }
