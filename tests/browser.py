"""Headless Chromium driven through the Chrome DevTools protocol (for the web view's tests and tools/view_bench.py).

Needs Debian's ``chromium`` (``.ci/run`` installs it) and the ``websocket-client`` package (test extra).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any


def chromium_missing() -> str | None:
    """Why headless Chromium cannot run here (None: it can)."""
    if shutil.which("chromium") is None:
        return "chromium is not installed (apt-get install chromium; .ci/run installs it)"
    try:
        import websocket  # noqa: F401
    except ImportError:
        return 'websocket-client is not installed (pip install -e ".[test]")'
    return None


class Browser:
    """One headless Chromium showing one page; :meth:`evaluate` runs JavaScript in it.

    Args:
        url: The page to open.
        size: Window size in pixels (width, height).
    """

    def __init__(self, url: str, size: tuple[int, int] = (1280, 900)) -> None:
        import websocket

        self._profile = tempfile.mkdtemp(prefix="streamfuse-chromium-")
        self._process = subprocess.Popen(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--mute-audio",
             "--remote-debugging-port=0", f"--user-data-dir={self._profile}", f"--window-size={size[0]},{size[1]}",
             url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port = self._debugging_port(timeout=30)
            targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5).read())
            page = next(target for target in targets if target["type"] == "page")
            self._socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30,
                                                       suppress_origin=True)
        except BaseException:
            self.close()
            raise
        self._next_id = 0

    def _debugging_port(self, timeout: float) -> int:
        marker = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"chromium exited with status {self._process.returncode}")
            if marker.exists() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            time.sleep(0.05)
        raise RuntimeError(f"chromium did not open its DevTools port within {timeout} s")

    def command(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events arriving meanwhile are skipped)."""
        self._next_id += 1
        self._socket.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv())
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if it is a promise)."""
        result = self.command("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def type_text(self, selector: str, text: str) -> None:
        """Focus the element and type ``text`` into it as keyboard input."""
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.command("Input.insertText", text=text)

    def screenshot(self, path: Path) -> bytes:
        """Save a PNG of the page to ``path`` and return its bytes."""
        data = base64.b64decode(self.command("Page.captureScreenshot", format="png")["data"])
        path.write_bytes(data)
        return data

    def close(self) -> None:
        """Quit Chromium and remove its profile."""
        if getattr(self, "_socket", None) is not None:
            self._socket.close()
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
