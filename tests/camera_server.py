"""Control of the real RTSP test cameras (tests/rtsp_server.py under the system Python with GStreamer)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")


def gstreamer_missing() -> str | None:
    """Why the RTSP tests cannot run here (None when they can)."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
                            "from gi.repository import GstRtspServer"], capture_output=True, text=True)
    if probe.returncode != 0:
        return ("GStreamer's RTSP server is not installed for the system Python; apt-get install python3-gi "
                "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
                "gstreamer1.0-plugins-ugly")
    return None


class RtspCamera:
    """One RTSP camera on a fixed port that tests can start, kill, freeze and restart.

    Args:
        port: TCP port on 127.0.0.1 (kept across restarts, like a real camera's address).
        size: ``(width, height)`` of the stream.
        fps: Frame rate.
    """

    def __init__(self, port: int, *, size: tuple[int, int] = (160, 128), fps: int = 15) -> None:
        self.port = port
        self.size = size
        self.fps = fps
        self.path = "/cam"
        """Where the stream is mounted; change it before a (re)start to serve elsewhere (404 at :attr:`url`)."""
        self.url = f"rtsp://127.0.0.1:{port}/cam"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> float:
        """Start serving; returns the monotonic time at which it listens."""
        assert self.process is None, "camera already running"
        command = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port), "--size",
                   f"{self.size[0]}x{self.size[1]}", "--fps", str(self.fps), "--path", self.path]
        deadline = time.monotonic() + timeout
        while True:  # the port may still be in TIME_WAIT right after a kill
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            line = self.process.stdout.readline()
            if line.startswith("READY"):
                return time.monotonic()
            self.process.wait()
            self.process = None
            if time.monotonic() > deadline:
                raise RuntimeError(f"RTSP test camera did not start on port {self.port}")
            time.sleep(0.2)

    def kill(self) -> None:
        """Drop the camera at once (no RTSP teardown), as a power loss would."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)  # a frozen process must wake to die cleanly
            self.process.kill()
            self.process.wait()
            self.process.stdout.close()
            self.process.stderr.close()
            self.process = None

    def freeze(self) -> None:
        """Stall the camera: the connection stays open, no packet comes (SIGSTOP)."""
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Resume a frozen camera (SIGCONT)."""
        self.process.send_signal(signal.SIGCONT)

    def restart(self) -> float:
        """Kill and start again on the same port; returns when it listens again."""
        self.kill()
        return self.start()
