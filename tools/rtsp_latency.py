"""Capture-to-decoded-frame latency of the RTSP output, measured at a real client (PyAV, i.e. FFmpeg's RTSP client).

Runs the demo pipeline (the packaged demo config, endless, its sinks replaced by one RTSP sink) and,
in the same process so both sides share one clock, a PyAV client over TCP with FFmpeg's low-delay
flags. Each decoded frame is matched to its capture time through its RTP timestamp
(:meth:`RtspSink.capture_time`), and latency = the moment the client has the decoded picture minus
the capture time. The first second is left out (FFmpeg reads ahead while it opens the stream).

    python tools/rtsp_latency.py                       # the demo as configured (model fuser)
    python tools/rtsp_latency.py --fuser classical --seconds 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import av
from view_bench import start_demo  # tools/: the demo pipeline started as both tools measure it


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args, pipeline, runner = start_demo(parser, ['sinks=[{"type": "rtsp", "port": 0}]'])
    while not (pipeline.sinks and pipeline.sinks[0].encoder) and runner.is_alive():
        time.sleep(0.05)  # the first frame: the stream's size and parameter sets are known
    sink = pipeline.sinks[0]
    latencies, unmatched = [], 0
    options = {"rtsp_transport": "tcp", "fflags": "nobuffer", "flags": "low_delay"}
    try:
        with av.open(sink.url, options=options, timeout=10) as container:
            started = time.monotonic()
            frames_before = pipeline.frames_fused
            for frame in container.decode(video=0):
                now = time.time()
                elapsed = time.monotonic() - started
                if elapsed > args.seconds + 1:
                    break
                captured = sink.capture_time(frame.pts)
                if elapsed < 1:
                    continue
                if captured is None:
                    unmatched += 1
                    continue
                latencies.append((now - captured) * 1000.0)
            fused_fps = (pipeline.frames_fused - frames_before) / (time.monotonic() - started)
    finally:
        pipeline.stop()
        runner.join(30)
    if not latencies:
        print("no frame decoded", file=sys.stderr)
        return 1
    latencies.sort()
    width, height = sink.encoder.size
    print(f"fuser {pipeline.fuser.name}, {width}x{height}, {len(latencies)} frames decoded in {args.seconds:g} s "
          f"({len(latencies) / args.seconds:.1f} fps at the client, pipeline {fused_fps:.1f} fps), "
          f"{unmatched} unmatched")
    print(f"capture -> decoded at the client: median {statistics.median(latencies):.1f} ms, "
          f"p95 {latencies[int(0.95 * (len(latencies) - 1))]:.1f} ms, max {latencies[-1]:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
