"""Soak test: run a live pipeline for N minutes with periodic camera drops and report resource slopes.

Two feeds are fused for ``--minutes``: real RTSP cameras (tests/rtsp_server.py under the system
Python with GStreamer; the default) that are killed and restarted every ``--drop-every`` seconds,
alternating between the cameras, or the live synthetic scene (``--feeds synthetic``, no drops).
Every ``--sample-every`` seconds it records resident memory (all, anonymous, file-backed), the C
heap in use and Python's allocated blocks (to tell a leak from memory the allocator keeps), thread
count, open file descriptors, queue depths and the health counters; at the end it prints the
least-squares slope of each after ``--warmup`` minutes (memory in MB per hour), once over every
sample and once over the samples with both sources running (while a camera reconnects, its decoder's
frame buffers are freed and RSS dips by a few MB, which adds noise but no trend), the median RSS of
every 5 minutes (the steadier reading), the counters against the drops injected, and any pipeline
error. Not a CI test: the default run (60 minutes, the last 30 after the warm-up) is the acceptance
check of docs/live.md. The warm-up covers the first three segment rolls: until then each new encoder
(and, less, each new decoder) most likely leaves the allocator's heaps a little more fragmented, and
RSS climbs by a few MB before it levels off.

    python tools/soak.py --out out/soak
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the RTSP test camera helper

from camera_server import RtspCamera, gstreamer_missing  # noqa: E402
from streamfuse.config import config_from_dict  # noqa: E402
from streamfuse.memory import c_heap_mb  # noqa: E402
from streamfuse.pipeline import Pipeline  # noqa: E402
from streamfuse.runtime import setup_runtime  # noqa: E402


def resident_mb() -> dict[str, float]:
    """Resident memory of this process in MB: all of it, anonymous (heap, stacks) and file-backed
    (shared libraries' pages, which grow as code paths are first used)."""
    fields = {"VmRSS": "rss_mb", "RssAnon": "anon_mb", "RssFile": "file_mb"}
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in fields:
                values[fields[key]] = round(int(rest.split()[0]) / 1000, 2)  # kB
    return values


def slope_per_hour(times_s: list[float], values: list[float]) -> float:
    """Least-squares slope of ``values`` against time, per hour."""
    n = len(times_s)
    if n < 2:
        return 0.0
    mean_t, mean_v = sum(times_s) / n, sum(values) / n
    var = sum((t - mean_t) ** 2 for t in times_s)
    cov = sum((t - mean_t) * (v - mean_v) for t, v in zip(times_s, values, strict=True))
    return cov / var * 3600.0 if var else 0.0


def slopes(samples: list[dict[str, float]], keys: list[str]) -> dict[str, float]:
    """Per-hour slope of each of ``keys`` over ``samples``."""
    times = [s["t_s"] for s in samples]
    return {key: round(slope_per_hour(times, [s[key] for s in samples]), 3) for key in keys
            if all(key in s for s in samples)}


def window_medians(samples: list[dict[str, float]], key: str, minutes: float = 5.0) -> dict[str, float]:
    """Median of ``key`` in each ``minutes``-long window, keyed by the window's start minute.

    Steadier than a fitted slope: a camera that is down for a sample or two, or one sawtooth of the
    allocator, moves a median little and a 30-minute least-squares slope a lot."""
    windows: dict[int, list[float]] = {}
    for sample in samples:
        windows.setdefault(int(sample["t_s"] // (minutes * 60)), []).append(sample[key])
    return {f"{index * minutes:g}": round(statistics.median(values), 2) for index, values in sorted(windows.items())}


def read_samples(path: Path) -> list[dict[str, float]]:
    """The samples written to ``path`` (CSV), as numbers."""
    with open(path, newline="") as file:
        return [{key: float(value) for key, value in row.items() if value != ""} for row in csv.DictReader(file)]


def build_config(args: argparse.Namespace, urls: dict[str, str], out: Path) -> dict:
    if args.feeds == "rtsp":
        reconnect = {"stall_timeout_s": 2.0, "backoff_initial_s": 0.25, "backoff_max_s": 2.0}
        sources = {name: {"type": "video", "uri": url, "reconnect": reconnect} for name, url in urls.items()}
    else:
        camera = {"type": "synthetic", "fps": args.fps, "realtime": True}
        sources = {"ir": dict(camera), "vis": dict(camera)}
    return {
        "synthetic": {"width": args.size[0], "height": args.size[1]},
        "sources": sources,
        "sync": {"tolerance_ms": 70, "on_camera_loss": args.on_camera_loss},
        "fusion": {"fuser": args.fuser},
        "sinks": [{"type": "video", "path": str(out / "soak.mp4"), "overwrite": True,
                   "segment_minutes": args.segment_minutes},
                  {"type": "zmq", "endpoint": f"tcp://127.0.0.1:{args.port}"}],
        "health": {"enabled": True, "port": 0},
        "stats": {"log_every_s": 60},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=30.0,
                        help="minutes left out of the slopes (the allocator settles over the first segment rolls)")
    parser.add_argument("--feeds", choices=["rtsp", "synthetic"], default="rtsp")
    parser.add_argument("--drop-every", type=float, default=60.0, help="seconds between camera drops (rtsp)")
    parser.add_argument("--down-for", type=float, default=5.0, help="seconds a dropped camera stays down")
    parser.add_argument("--sample-every", type=float, default=10.0)
    parser.add_argument("--size", type=lambda s: tuple(int(v) for v in s.split("x")), default=(320, 256))
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--fuser", default="classical")
    parser.add_argument("--on-camera-loss", choices=["pause", "passthrough"], default="passthrough")
    parser.add_argument("--segment-minutes", type=float, default=10.0,
                        help="video segment length (0: one file, whose MP4 index grows ~5 MB per hour at 15 fps)")
    parser.add_argument("--port", type=int, default=5590, help="ZeroMQ publisher port")
    parser.add_argument("--camera-ports", type=int, nargs=2, default=[8591, 8592], help="RTSP ports of ir and vis")
    parser.add_argument("--out", type=Path, default=Path("out/soak"))
    args = parser.parse_args()
    args.segment_minutes = args.segment_minutes or None
    args.out.mkdir(parents=True, exist_ok=True)

    cameras: dict[str, RtspCamera] = {}
    if args.feeds == "rtsp":
        missing = gstreamer_missing()
        if missing:
            parser.error(f"--feeds rtsp: {missing}")
        cameras = {name: RtspCamera(port, size=args.size, fps=args.fps)
                   for name, port in zip(("ir", "vis"), args.camera_ports, strict=True)}
        for camera in cameras.values():
            camera.start()
    pipeline = Pipeline(config_from_dict(build_config(args, {n: c.url for n, c in cameras.items()}, args.out)))
    setup_runtime(pipeline.config.fusion, live=pipeline.live)  # as `streamfuse run` does
    error: list[BaseException] = []

    def run() -> None:
        try:
            pipeline.run(install_signal_handlers=False)
        except BaseException as exc:  # reported at the end: a crash is a soak failure
            error.append(exc)

    runner = threading.Thread(target=run, name="soak-pipeline")
    runner.start()
    start = time.monotonic()
    end = start + args.minutes * 60
    next_drop = start + args.drop_every
    drops_injected = {"ir": 0, "vis": 0}
    victim = "ir"
    log_path = args.out / "samples.csv"
    resources = ["rss_mb", "anon_mb", "file_mb", "heap_mb", "heap_held_mb", "heap_mapped_mb", "python_blocks",
                 "threads", "fds", "queue_pairs", "queue_sinks"]
    fields = ["t_s", *resources, "both_running", "queue_ir", "queue_vis", "frames", "fps", "p95_ms"]
    with open(log_path, "w", newline="") as log_file:
        writer = csv.DictWriter(log_file, fieldnames=fields)
        writer.writeheader()
        try:
            while time.monotonic() < end and runner.is_alive():
                now = time.monotonic()
                if cameras and now >= next_drop:
                    cameras[victim].kill()
                    drops_injected[victim] += 1
                    time.sleep(args.down_for)
                    cameras[victim].start()
                    victim = "vis" if victim == "ir" else "ir"
                    next_drop = time.monotonic() + args.drop_every
                health = pipeline.health()
                queues = health["queues"]
                sample = {
                    "t_s": round(now - start, 1), **resident_mb(), **c_heap_mb(),
                    "python_blocks": sys.getallocatedblocks(),
                    "threads": threading.active_count(),
                    "both_running": int(all(h["state"] == "running" for h in health["sources"].values())),
                    "fds": len(os.listdir("/proc/self/fd")),
                    "queue_ir": queues["source.ir"], "queue_vis": queues["source.vis"], "queue_pairs": queues["pairs"],
                    "queue_sinks": sum(depth for name, depth in queues.items() if name.startswith("sink.")),
                    "frames": health["frames"], "fps": health["fps"], "p95_ms": health["latency_ms"]["p95"],
                }
                writer.writerow(sample)  # kept on disk only: a list here would grow the RSS being measured
                log_file.flush()
                print(json.dumps(sample), flush=True)
                time.sleep(min(args.sample_every, max(0.0, end - time.monotonic())))
        except KeyboardInterrupt:
            print("interrupted: reporting what was sampled", flush=True)
        finally:
            health = pipeline.health()
            pipeline.stop()
            runner.join(30)
            for camera in cameras.values():
                camera.kill()

    samples = read_samples(log_path)
    steady = [s for s in samples if s["t_s"] >= args.warmup * 60] or samples
    running = [s for s in steady if s["both_running"]] or steady
    report = {
        "minutes": round((time.monotonic() - start) / 60, 2), "samples": len(samples),
        "slopes_per_hour": slopes(steady, resources),
        "slopes_per_hour_both_running": slopes(running, resources), "samples_both_running": len(running),
        "rss_mb": {"first_after_warmup": steady[0]["rss_mb"], "last": steady[-1]["rss_mb"],
                   "max": max(s["rss_mb"] for s in steady)},
        "rss_mb_5min_medians_both_running": window_medians([s for s in samples if s["both_running"]], "rss_mb"),
        "threads": sorted({int(s["threads"]) for s in steady}), "fds": sorted({int(s["fds"]) for s in steady}),
        "drops_injected": drops_injected,
        "disconnects": {n: health["sources"][n]["disconnects"] for n in ("ir", "vis")},
        "reconnects": {n: health["sources"][n]["reconnects"] for n in ("ir", "vis")},
        "stalls": {n: health["sources"][n]["stalls"] for n in ("ir", "vis")},
        "frames": health["frames"], "status_at_end": health["status"],
        "crashes": [repr(e) for e in error] + ([] if not runner.is_alive() else ["pipeline did not stop"]),
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 1 if report["crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
