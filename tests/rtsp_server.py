"""A real RTSP camera for the tests: GStreamer's RTSP server streaming a moving H.264 test pattern.

Runs under Debian's system Python (``/usr/bin/python3`` with python3-gi and gir1.2-gst-rtsp-server-1.0),
not the project's virtual environment::

    /usr/bin/python3 tests/rtsp_server.py --port 8554 --path /cam --size 160x128 --fps 15

Prints ``READY rtsp://127.0.0.1:PORT/PATH`` on stdout once it listens. The tests stop it with
SIGKILL (camera dropped), SIGSTOP/SIGCONT (camera stalled) and start it again on the same port
(camera restarted).
"""

from __future__ import annotations

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/cam")
    parser.add_argument("--size", default="160x128", help="WIDTHxHEIGHT")
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--pattern", default="ball", help="videotestsrc pattern (ball moves every frame)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( videotestsrc is-live=true pattern={args.pattern} "
        f"! video/x-raw,format=I420,width={width},height={height},framerate={args.fps}/1 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.fps} bitrate=500 "
        "! rtph264pay name=pay0 pt=96 config-interval=1 )")
    factory.set_shared(True)  # one pipeline for all clients, like a camera
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        sys.exit(1)
    print(f"READY rtsp://127.0.0.1:{args.port}{args.path}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
