"""Does watching slow the pipeline? Pipeline frame rate without and with browser-like viewers of the web view,
and capture-to-display latency in headless Chromium.

Runs the demo pipeline (the packaged demo config, endless, with ``view.enabled``) and measures, each
for ``--seconds``:

1. the pipeline's output frame rate (median of one-second samples) with nobody watching;
2. the same with ``--tabs`` viewers in another process, each like a browser tab of the page: the
   three MJPEG streams (infrared, visible, fused) read in full and ``/api/status`` polled twice a
   second; and the frame rate each viewer received;
3. with ``--chromium``: the page in headless Chromium, which reports for every fused picture it
   draws the capture time the server sent with it; latency = drawn minus captured (one clock).
   ``--screenshot PATH`` saves the page.

    python tools/view_bench.py --tabs 10
    python tools/view_bench.py --tabs 10 --fuser classical --chromium --screenshot docs/images/view.png

CPU use is reported in cores (1.00 = one core busy) for the pipeline's process (which serves the view)
and for the viewers' process: on a machine with few cores, viewers on the same machine take CPU time
from the pipeline, as browsers on it would.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the headless Chromium helper

from streamfuse.config import load_config  # noqa: E402
from streamfuse.pipeline import Pipeline  # noqa: E402
from streamfuse.runtime import setup_runtime  # noqa: E402

KINDS = ("ir", "vis", "fused")


def read_stream(url: str, seconds: float, counts: list[int], slot: int) -> None:
    """Read an MJPEG stream in full for ``seconds``, counting the parts."""
    deadline = time.monotonic() + seconds
    with urllib.request.urlopen(url, timeout=10) as response:
        while time.monotonic() < deadline:
            line = response.readline()
            if not line:
                return
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
                response.readline()
                response.read(length)
                counts[slot] += 1


def poll_status(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        urllib.request.urlopen(url, timeout=10).read()
        time.sleep(0.5)


def tabs(base: str, count: int, seconds: float, results: multiprocessing.Queue) -> None:
    """``count`` browser-tab-like viewers for ``seconds``; puts each stream's frames per second on ``results``."""
    counts = [0] * (count * len(KINDS))
    threads = []
    for tab in range(count):
        for k, kind in enumerate(KINDS):
            threads.append(threading.Thread(target=read_stream, args=(f"{base}/stream/{kind}.mjpg", seconds, counts,
                                                                      tab * len(KINDS) + k)))
        threads.append(threading.Thread(target=poll_status, args=(f"{base}/api/status", seconds)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    results.put(([c / seconds for c in counts], (usage.ru_utime + usage.ru_stime) / seconds))


def fps_samples(pipeline: Pipeline, seconds: float) -> tuple[list[float], float]:
    """Output frames per second of ``pipeline``, one sample a second, and this process's CPU use (cores)."""
    samples = []
    last, last_t = pipeline.frames_fused, time.monotonic()
    cpu, started = time.process_time(), last_t
    for _ in range(int(seconds)):
        time.sleep(1.0)
        now, now_t = pipeline.frames_fused, time.monotonic()
        samples.append((now - last) / (now_t - last_t))
        last, last_t = now, now_t
    return samples, (time.process_time() - cpu) / (time.monotonic() - started)


def chromium_latency(url: str, seconds: float, screenshot: Path | None) -> list[float]:
    """Capture-to-display latencies (ms) Chromium reports for the fused picture, sampled every 100 ms."""
    from browser import Browser, chromium_missing

    if chromium_missing():
        raise SystemExit(f"--chromium: {chromium_missing()}")
    with Browser(url) as browser:
        def fused() -> dict:
            return json.loads(browser.evaluate("JSON.stringify((window.viewStats || {}).fused || {})"))

        deadline = time.monotonic() + 30
        while fused().get("frames", 0) < 30 and time.monotonic() < deadline:
            time.sleep(0.2)
        latencies, last_index = [], None
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            stats = fused()
            if stats.get("index") != last_index:
                latencies.append(stats["latency_ms"])
                last_index = stats["index"]
            time.sleep(0.1)
        if screenshot is not None:
            browser.screenshot(screenshot)
    return latencies


def start_demo(parser: argparse.ArgumentParser, overrides: list[str]) -> tuple[argparse.Namespace, Pipeline,
                                                                                 threading.Thread]:
    """Parse the shared options (``--config``, ``--fuser``, ``--seconds``) and start that pipeline, endless,
    with ``overrides``, on its own thread; returns the arguments, the pipeline and the thread."""
    parser.add_argument("--config", default="demo", help="config name or file (default: the demo)")
    parser.add_argument("--fuser", help="override fusion.fuser (classical, model)")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each measurement")
    args = parser.parse_args()
    overrides = ["sources.ir.frames=null", "sources.vis.frames=null", "stats.log_every_s=0", "control.enabled=false",
                 *overrides, *([f"fusion.fuser={args.fuser}"] if args.fuser else [])]
    config = load_config(args.config, overrides)
    setup_runtime(config.fusion, live=True)
    pipeline = Pipeline(config)
    runner = threading.Thread(target=pipeline.run, kwargs={"install_signal_handlers": False})
    runner.start()
    return args, pipeline, runner


def describe(samples: list[float]) -> str:
    samples = sorted(samples)
    p95 = samples[int(0.95 * (len(samples) - 1))]
    return f"median {statistics.median(samples):.1f}, min {samples[0]:.1f}, p95 {p95:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tabs", type=int, default=10, help="browser-tab-like viewers")
    parser.add_argument("--chromium", action="store_true", help="also measure capture-to-display in Chromium")
    parser.add_argument("--screenshot", type=Path, help="with --chromium: save the page as this PNG")
    args, pipeline, runner = start_demo(parser, ["sinks=[]", "view.enabled=true", "view.port=0"])
    try:
        while pipeline.frames_fused < 30 and runner.is_alive():
            time.sleep(0.1)  # past the warm-up
        base = pipeline.view.url
        source_fps = pipeline.config.sources.vis.fps
        print(f"fuser {pipeline.fuser.name}, cameras at {source_fps:g} fps, {args.seconds:g} s per measurement")
        alone, cpu_alone = fps_samples(pipeline, args.seconds)
        print(f"pipeline fps, nobody watching: {describe(alone)}; pipeline process CPU {cpu_alone:.2f} cores")
        encoded_before, fused_before = dict(pipeline.view.board.encoded), pipeline.frames_fused
        results: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
        viewers = multiprocessing.get_context("spawn").Process(target=tabs, args=(base, args.tabs, args.seconds + 3,
                                                                                   results))
        viewers.start()
        time.sleep(2.0)  # every stream connected
        watched, cpu_watched = fps_samples(pipeline, args.seconds)
        received, cpu_viewers = results.get(timeout=60)
        viewers.join(10)
        fused = pipeline.frames_fused - fused_before
        per_frame = {kind: (pipeline.view.board.encoded[kind] - encoded_before[kind]) / fused for kind in KINDS}
        print(f"pipeline fps, {args.tabs} tabs watching ({len(received)} MJPEG streams + status polls): "
              f"{describe(watched)}; pipeline process CPU {cpu_watched:.2f} cores, viewers' process {cpu_viewers:.2f}")
        print(f"fps received per stream: {describe(received)}")
        print(f"JPEG encodings per fused frame while {args.tabs} viewers watched each picture: "
              + ", ".join(f"{kind} {ratio:.2f}" for kind, ratio in per_frame.items()))
        if args.chromium:
            latencies = chromium_latency(f"{base}/", args.seconds, args.screenshot)
            print(f"Chromium capture -> display (ms), {len(latencies)} frames sampled: {describe(latencies)}")
    finally:
        pipeline.stop()
        runner.join(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
