"""Throughput of N synthetic camera pairs: a fleet on a local Ray cluster against N ``streamfuse run`` processes.

For each N of ``--pairs`` and each of ``--repeats`` rounds, the same N pipeline configs (synthetic
scene, not paced: as fast as they go, ``--frames`` frames each, no output, a different seed each) run

* as N ``streamfuse run`` processes at once; each reports its own output rate (``fps=`` of its
  summary line: frames per second from its first to its last fused frame), and
* as a fleet: one group (one fusion actor, ``--batch``) holding N pair actors, on a local Ray cluster
  of all CPUs; each pair's rate is the same statistic, from its health report.

It prints the medians over the rounds of the summed rates (which overstate the total where the runs
do not fully overlap), of all frames over the wall time (start-up included: Python and imports for
the processes, the controller, placement group and actors for the fleet), the ratio of the latter
(fleet / processes) and the fleet's mean batch.

With ``--archive N``, it then writes N recording pairs of ``--frames`` frames (the synthetic scene,
H.264, a keyframe every second at 30 fps) and fuses them once with ``streamfuse fuse`` per recording,
one after the other, and once as a ``streamfuse cluster fuse`` job (2-second segments, a worker per
CPU); the rates are frames over wall time (the job's from its own summary: planning and worker
start-up included, the Ray cluster's start not).

    python tools/cluster_bench.py --pairs 2 4 --frames 300 --size 320x256 --archive 4
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from streamfuse.cluster import connect, require_ray  # noqa: E402
from streamfuse.cluster.fleet import controller, load_fleet  # noqa: E402


def write_configs(folder: Path, pairs: int, frames: int, size: tuple[int, int], fuser: str, batch: int,
                  in_flight: int) -> Path:
    """N pipeline configs and the fleet file that groups them; returns the fleet file."""
    cpus = os.cpu_count() or 1
    entries = []
    for index in range(pairs):
        sources = {side: {"type": "synthetic", "frames": frames, "realtime": False} for side in ("ir", "vis")}
        config = {"sources": sources,
                  "synthetic": {"width": size[0], "height": size[1], "seed": index},
                  "fusion": {"fuser": fuser}, "sinks": [], "stats": {"log_every_s": 0}}
        (folder / f"pair{index}.yaml").write_text(yaml.safe_dump(config))
        entries.append({"name": f"pair{index}", "group": "local", "config": f"pair{index}.yaml"})
    group = {"name": "local", "slots": pairs, "cpus_per_pair": max(0.1, (cpus - 1) / pairs), "batch": batch,
             "in_flight": in_flight, "fusion": {"fuser": fuser}}
    (folder / "fleet.yaml").write_text(yaml.safe_dump({"groups": [group], "pairs": entries}))
    return folder / "fleet.yaml"


def processes_fps(folder: Path, pairs: int, frames: int) -> tuple[float, float]:
    """N concurrent ``streamfuse run`` processes: their summed output rates, and all frames over the wall time."""
    t0 = time.perf_counter()
    runs = [subprocess.Popen([sys.executable, "-m", "streamfuse", "run", str(folder / f"pair{i}.yaml"),
                              "--no-progress"], stderr=subprocess.PIPE, text=True) for i in range(pairs)]
    total = 0.0
    for run in runs:
        _, err = run.communicate()
        if run.returncode:
            raise SystemExit(f"streamfuse run failed:\n{err}")
        total += float(re.search(r"done: frames=\d+ fps=([\d.]+)", err).group(1))
    return total, pairs * frames / (time.perf_counter() - t0)


def fleet_fps(fleet_file: Path, pairs: int, frames: int) -> tuple[float, float, float]:
    """The fleet: its pairs' summed output rates, all frames over the wall time, the fusion actor's mean batch."""
    ray = require_ray()
    t0 = time.perf_counter()
    fleet_controller = controller()
    try:
        ray.get(fleet_controller.apply.remote(load_fleet(fleet_file)))
        while True:
            health = ray.get(fleet_controller.health.remote())
            if all(pair["status"] == "finished" for pair in health["pairs"].values()):
                break
            if any(pair["status"] == "failed" for pair in health["pairs"].values()):
                raise SystemExit(f"a pair failed: {health}")
            time.sleep(0.2)
        wall = time.perf_counter() - t0
    finally:
        ray.get(fleet_controller.shutdown.remote())
        ray.kill(fleet_controller)
    rates = sum(pair["fps"] for pair in health["pairs"].values())
    return rates, pairs * frames / wall, health["groups"]["local"]["mean_batch"]


def write_archive(folder: Path, recordings: int, frames: int, size: tuple[int, int]) -> None:
    """``recordings`` pairs of the synthetic scene as ir/NAME.mp4 and vis/NAME.mp4."""
    from streamfuse.config import SyntheticConfig
    from streamfuse.sinks.video import VideoWriter
    from streamfuse.sources import build_scene

    for index in range(recordings):
        scene = build_scene(SyntheticConfig(width=size[0], height=size[1], seed=index))
        for side, render in (("ir", scene.render_ir), ("vis", scene.render_vis)):
            with VideoWriter(folder / side / f"rec{index}.mp4", fps=30, overwrite=True) as writer:
                for i in range(frames):
                    writer.write(render(i / 30), i / 30)


def archive_fps(folder: Path, recordings: int, frames: int, fuser: str) -> tuple[float, float]:
    """Frames per second of ``streamfuse fuse`` per recording in turn, and of one archive job."""
    from streamfuse.cluster.archive import ArchiveJob, find_recordings
    from streamfuse.config import config_from_dict

    t0 = time.perf_counter()
    for index in range(recordings):
        subprocess.run([sys.executable, "-m", "streamfuse", "fuse", "--ir", str(folder / "ir" / f"rec{index}.mp4"),
                        "--vis", str(folder / "vis" / f"rec{index}.mp4"), "-o", str(folder / f"alone{index}.mp4"),
                        "--fuser", fuser, "-y", "-q", "--no-progress"], check=True)
    alone = recordings * frames / (time.perf_counter() - t0)
    config = config_from_dict({"fusion": {"fuser": fuser}, "sinks": []})
    summary = ArchiveJob(find_recordings(folder), folder / "job", config, segment_s=2.0).run()
    return alone, summary.frames / summary.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, nargs="*", default=[2, 4], help="fleet sizes to time (none: skip)")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", default="320x256")
    parser.add_argument("--fuser", default="classical")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--in-flight", type=int, default=2, help="frames each pair keeps at the fusion actor")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--archive", type=int, default=0, metavar="N", help="also time an archive of N recordings")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    connect(None)
    print(f"{os.cpu_count()} CPUs, {args.size}, fuser {args.fuser}, {args.frames} frames per pair, "
          f"batch {args.batch}, in flight {args.in_flight}, "
          f"median of {args.repeats} rounds")
    if args.pairs:
        print("pairs  processes: rates  frames/wall  fleet: rates  frames/wall  ratio (frames/wall)  mean batch")
    for pairs in args.pairs:
        with tempfile.TemporaryDirectory() as tmp:
            fleet_file = write_configs(Path(tmp), pairs, args.frames, size, args.fuser, args.batch,
                                        args.in_flight)
            rounds = [(*processes_fps(Path(tmp), pairs, args.frames), *fleet_fps(fleet_file, pairs, args.frames))
                      for _ in range(args.repeats)]
        a_rates, a_wall, f_rates, f_wall, batch = (statistics.median(column) for column in zip(*rounds, strict=True))
        print(f"{pairs:>5}  {a_rates:>16.1f}  {a_wall:>11.1f}  {f_rates:>12.1f}  {f_wall:>11.1f}  "
              f"{f_wall / a_wall:>19.2f}  {batch:>10.2f}")
    if args.archive:
        with tempfile.TemporaryDirectory() as tmp:
            write_archive(Path(tmp), args.archive, args.frames, size)
            alone, job = archive_fps(Path(tmp), args.archive, args.frames, args.fuser)
        print(f"archive of {args.archive} x {args.frames} frames: 'streamfuse fuse' one after the other "
              f"{alone:.1f} fps, 'streamfuse cluster fuse' job {job:.1f} fps ({job / alone:.2f}x)")


if __name__ == "__main__":
    main()
