"""The ``streamfuse`` command: run, fuse, probe, bench, subscribe."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from streamfuse import __version__
from streamfuse.config import (
    Config,
    config_from_dict,
    load_config,
)
from streamfuse.errors import StreamfuseError
from streamfuse.fusers import FUSERS
from streamfuse.imageio import IMAGE_EXTENSIONS, list_images
from streamfuse.pipeline import Pipeline
from streamfuse.probe import describe_machine, probe
from streamfuse.stats import END_TO_END, PipelineStats

log = logging.getLogger("streamfuse")

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".ts", ".m4v")


# ---------------------------------------------------------------------------------------------- run
def cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.set)
    pipeline = Pipeline(config, max_frames=args.max_frames)
    _log_setup(pipeline, args.config or "packaged demo config")
    stats = pipeline.run(progress=_progress_wanted(args, pipeline))
    _log_summary(stats)
    return 130 if pipeline.interrupted else 0


def _log_setup(pipeline: Pipeline, origin: str) -> None:
    log.info("config: %s", origin)
    for name, source in pipeline.sources.items():
        log.info("source %s: %s (drop policy %s)", name, source.describe(), source.drop_policy)
    log.info("registration: %s; fuser: %s", pipeline.registrar.name, pipeline.fuser.name)
    for index, sink in enumerate(pipeline.config.sinks):
        log.info("sink %d: %s", index, sink.type + " " + (getattr(sink, "path", "") or getattr(sink, "endpoint", "")))


def _log_summary(stats: PipelineStats) -> None:
    log.info("done: %s", stats.summary_line())
    for line in stats.table().splitlines():
        log.info("%s", line)


def _progress_wanted(args: argparse.Namespace, pipeline: Pipeline) -> bool:
    return not args.no_progress and sys.stderr.isatty() and pipeline.expected_frames is not None


# --------------------------------------------------------------------------------------------- fuse
def _input_kind(path: str, flag: str) -> str:
    if "://" in path:
        return "video"
    p = Path(path)
    if any(ch in path for ch in "*?["):
        return "folder"
    if not p.exists():
        raise StreamfuseError(f"{flag} {path}: no such file or folder")
    if p.is_dir():
        return "folder"
    return "image" if p.suffix.lower() in IMAGE_EXTENSIONS else "video"


def fuse_config(ir: str, vis: str, output: str, *, fuser: str, overwrite: bool,
                overrides: list[str] | None = None) -> Config:
    """The pipeline config for ``streamfuse fuse``: images, folders or videos in, the matching kind out."""
    kinds = {_input_kind(ir, "--ir"), _input_kind(vis, "--vis")}
    out = Path(output)
    if "video" in kinds:
        if out.suffix.lower() not in VIDEO_EXTENSIONS:
            raise StreamfuseError(f"-o {output}: a video input needs a video output ({', '.join(VIDEO_EXTENSIONS)})")
        sink = {"type": "video", "path": output, "overwrite": overwrite}
    elif kinds == {"image"}:
        if out.suffix.lower() not in IMAGE_EXTENSIONS:
            raise StreamfuseError(f"-o {output}: an image input needs an image output ({', '.join(IMAGE_EXTENSIONS)})")
        sink = {"type": "images", "path": str(out.parent), "pattern": out.name.replace("{", "{{").replace("}", "}}"),
                "overwrite": overwrite}
    else:
        if out.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS:
            raise StreamfuseError(f"-o {output}: folder inputs write a folder of images; give a folder path")
        sink = {"type": "images", "path": output, "pattern": "{name}.png", "overwrite": overwrite}

    def source(path: str) -> dict:
        kind = _input_kind(path, "")
        if kind == "video":
            return {"type": "video", "uri": path}
        return {"type": "images", "path": path}

    if kinds <= {"image", "folder"}:
        ir_count, vis_count = len(list_images(ir)), len(list_images(vis))
        if ir_count != vis_count:
            raise StreamfuseError(f"--ir {ir} has {ir_count} images but --vis {vis} has {vis_count}; "
                                  "images are paired by sorted name, so both need the same number")
    data = {
        "sources": {"ir": source(ir), "vis": source(vis)},
        "fusion": {"fuser": fuser},
        "sinks": [sink],
        "stats": {"log_every_s": 0},
    }
    return config_from_dict(data, overrides)


def cmd_fuse(args: argparse.Namespace) -> int:
    config = fuse_config(args.ir, args.vis, args.output, fuser=args.fuser, overwrite=args.overwrite,
                         overrides=args.set)
    pipeline = Pipeline(config)
    stats = pipeline.run(progress=_progress_wanted(args, pipeline))
    fuse = stats.stages().get("fuse")
    log.info("wrote %d fused frame(s) to %s (fuser %s, median %.1f ms per frame)", stats.frames_out, args.output,
             pipeline.fuser.name, fuse.p50_ms if fuse else 0.0)
    return 130 if pipeline.interrupted else 0


# -------------------------------------------------------------------------------------------- probe
def cmd_probe(args: argparse.Namespace) -> int:
    report = probe(args.uri, frames=args.frames)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:>16}: {value}")
    return 0


# -------------------------------------------------------------------------------------------- bench
def bench_config(width: int, height: int, frames: int, fuser: str, sink: str, workdir: Path) -> Config:
    """Synthetic input without rate limiting, the chosen fuser, and an H.264 file (or no) output."""
    sinks = [{"type": "video", "path": str(workdir / "bench.mp4"), "overwrite": True}] if sink == "video" else []
    return config_from_dict({
        "synthetic": {"width": width, "height": height},
        "sources": {"ir": {"type": "synthetic", "realtime": False, "frames": frames},
                    "vis": {"type": "synthetic", "realtime": False, "frames": frames}},
        "fusion": {"fuser": fuser},
        "sinks": sinks,
        "stats": {"log_every_s": 0},
    })


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise StreamfuseError(f"--size {args.size}: expected WIDTHxHEIGHT, e.g. 640x512") from None
    with tempfile.TemporaryDirectory(prefix="streamfuse-bench-") as workdir:
        config = bench_config(width, height, args.frames, args.fuser, args.sink, Path(workdir))
        pipeline = Pipeline(config)
        started = time.perf_counter()
        stats = pipeline.run(progress=not args.no_progress and sys.stderr.isatty())
        wall = time.perf_counter() - started
    report = {
        "fps": stats.fps(),
        "frames": stats.frames_out,
        "wall_s": wall,
        "size": [width, height],
        "fuser": args.fuser,
        "sink": args.sink,
        "stages": {name: {"p50_ms": p.p50_ms, "p95_ms": p.p95_ms, "p99_ms": p.p99_ms, "mean_ms": p.mean_ms,
                          "count": p.count} for name, p in stats.stages().items()},
        "machine": describe_machine(),
    }
    print(f"streamfuse bench: {width}x{height}, fuser {args.fuser}, {stats.frames_out} frames, "
          f"sink {args.sink}, {report['machine']['cpu']} ({report['machine']['cores']} cores)")
    print(stats.table())
    e2e = stats.stages().get(END_TO_END)
    print(f"end-to-end: {report['fps']:.1f} fps, latency p50 {e2e.p50_ms:.1f} ms, p95 {e2e.p95_ms:.1f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


# ---------------------------------------------------------------------------------------- subscribe
def cmd_subscribe(args: argparse.Namespace) -> int:
    from streamfuse.sinks import Subscriber, VideoWriter

    keep = "all" if args.save else "latest"
    writer = VideoWriter(args.save, overwrite=args.overwrite, key="--save") if args.save else None
    all_latencies: list[float] = []
    window_start, window_latencies = time.monotonic(), []
    first: float | None = None
    deadline = time.monotonic() + args.duration if args.duration else None

    def report(frames: int, seconds: float, latencies: list[float], prefix: str) -> None:
        latencies = sorted(latencies)
        print(f"{prefix}{frames / seconds if seconds > 0 else 0.0:6.1f} fps  latency p50 "
              f"{latencies[len(latencies) // 2]:6.1f} ms  max {latencies[-1]:6.1f} ms  received {len(all_latencies)}",
              flush=True)

    try:
        with Subscriber(args.endpoint, topic=args.topic, keep=keep) as subscriber:
            log.info("subscribed to %s (topic %r); Ctrl-C to stop", args.endpoint, args.topic)
            while (args.frames is None or len(all_latencies) < args.frames) and (
                    deadline is None or time.monotonic() < deadline):
                frame = subscriber.receive(0.5) if keep == "all" else subscriber.latest(0.5)
                now = time.monotonic()
                if frame is not None:
                    first = first or now
                    all_latencies.append(frame.latency_ms)
                    window_latencies.append(frame.latency_ms)
                    if writer is not None:
                        writer.write(frame.image, frame.header["timestamp_vis"])
                if now - window_start >= 1.0:
                    if window_latencies:
                        report(len(window_latencies), now - window_start, window_latencies, "")
                    else:
                        print(f"no frames from {args.endpoint} in the last second", flush=True)
                    window_start, window_latencies = now, []
    except KeyboardInterrupt:
        pass
    finally:
        if writer is not None:
            writer.close()
    if all_latencies:
        report(len(all_latencies) - 1, time.monotonic() - first, all_latencies, "total: ")
    log.info("received %d frame(s)%s", len(all_latencies), f"; saved to {args.save}" if writer else "")
    return 0


# ------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``streamfuse`` command."""
    parser = argparse.ArgumentParser(prog="streamfuse", description="Real-time infrared + visible video fusion.")
    parser.add_argument("--version", action="version", version=f"streamfuse {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set sync.tolerance_ms=20 (repeatable)")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")

    run = commands.add_parser("run", help="run a pipeline from a config file (default: the synthetic demo)")
    run.add_argument("config", nargs="?", help="YAML config (default: the packaged configs/demo.yaml)")
    run.add_argument("--max-frames", type=int, help="stop after N fused frames")
    common(run)
    run.set_defaults(handler=cmd_run)

    fuse = commands.add_parser("fuse", help="fuse images, folders of images, or videos")
    fuse.add_argument("--ir", required=True, help="infrared image, folder (or glob) of images, or video")
    fuse.add_argument("--vis", required=True, help="visible image, folder (or glob) of images, or video")
    fuse.add_argument("-o", "--output", required=True, help="output image, folder or video (matching the inputs)")
    fuse.add_argument("--fuser", default="classical", help=f"fuser name ({', '.join(FUSERS)})")
    fuse.add_argument("-y", "--overwrite", action="store_true", help="replace existing output files")
    common(fuse)
    fuse.set_defaults(handler=cmd_fuse)

    probe_cmd = commands.add_parser("probe", help="describe a video file, stream URL or image folder")
    probe_cmd.add_argument("uri")
    probe_cmd.add_argument("--frames", type=int, default=5, help="how many first timestamps to show")
    probe_cmd.add_argument("--json", action="store_true", help="print JSON")
    probe_cmd.set_defaults(handler=cmd_probe)

    bench = commands.add_parser("bench", help="measure throughput and per-stage latency on synthetic input")
    bench.add_argument("--size", default="640x512", help="frame size WxH (default 640x512)")
    bench.add_argument("--frames", type=int, default=300, help="frames to process (default 300)")
    bench.add_argument("--fuser", default="classical", help=f"fuser name ({', '.join(FUSERS)})")
    bench.add_argument("--sink", choices=["video", "none"], default="video",
                       help="encode H.264 to a temporary file (default) or discard the output")
    bench.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    bench.set_defaults(handler=cmd_bench)

    sub = commands.add_parser("subscribe", help="receive fused frames from a ZeroMQ publisher")
    sub.add_argument("endpoint", help="publisher endpoint, e.g. tcp://127.0.0.1:5555")
    sub.add_argument("--topic", default="fused")
    sub.add_argument("--save", metavar="VIDEO", help="write every received frame to a video file")
    sub.add_argument("-y", "--overwrite", action="store_true", help="replace an existing --save file")
    sub.add_argument("--frames", type=int, help="stop after N frames")
    sub.add_argument("--duration", type=float, help="stop after S seconds")
    sub.set_defaults(handler=cmd_subscribe)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse arguments, run the command, map user errors to one line and an exit code."""
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s streamfuse: %(message)s", datefmt="%H:%M:%S")
    try:
        return args.handler(args)
    except StreamfuseError as exc:
        print(f"streamfuse: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("streamfuse: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
