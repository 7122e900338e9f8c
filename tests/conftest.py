"""Shared fixtures: small synthetic inputs, the shared data folder, free ports."""

from __future__ import annotations

import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("STREAMFUSE_DATA", REPO.parent / "shared" / "data"))


def wait_until(condition, timeout: float, what: str) -> float:
    """Poll ``condition`` until true; returns the monotonic time it became true (AssertionError on timeout)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic()


@contextmanager
def running_pipeline(config: dict, ready: Callable, what: str) -> Iterator:
    """A pipeline built from ``config`` running on its own thread, yielded once ``ready(pipeline)``; on
    leaving it is stopped and must end without errors."""
    from streamfuse.config import config_from_dict
    from streamfuse.pipeline import Pipeline

    pipeline = Pipeline(config_from_dict(config))
    runner = threading.Thread(target=pipeline.run, kwargs={"install_signal_handlers": False})
    runner.start()
    try:
        wait_until(lambda: ready(pipeline), 20, what)
        yield pipeline
    finally:
        pipeline.stop()
        runner.join(30)
    assert not runner.is_alive()
    assert pipeline.errors() == []


def http_get(url: str) -> tuple[int, str]:
    """Status and body of a GET on ``url`` (an HTTP error status is returned, not raised)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def shared_data(*parts: str) -> Path:
    """A path inside ../shared/data; skips the test with a reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path} (set STREAMFUSE_DATA to the data folder)")
    return path


@pytest.fixture(autouse=True)
def private_text_cache(tmp_path_factory, monkeypatch):
    """Each test session writes text embeddings to its own cache folder, never the user's."""
    monkeypatch.setenv("STREAMFUSE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "text-cache"))


@pytest.fixture(autouse=True)
def seeded_random_generators():
    """Each test starts from the same global random state, so its random inputs do not depend on which
    tests ran before it (a rare unlucky draw then fails every run, not one CI run in hundreds)."""
    import torch

    np.random.seed(0)
    torch.manual_seed(0)


def python_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child Python that imports streamfuse from the checkout.

    The checkout goes first on PYTHONPATH; entries already there stay (where the dependencies may live).
    """
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_pair(index: int, size: tuple[int, int] = (64, 48)) -> tuple[np.ndarray, np.ndarray]:
    """A small IR/VIS pair: a textured visible image and a thermal image with a hot square.

    The frame index is drawn into both so tests can tell frames apart.
    """
    width, height = size
    rng = np.random.default_rng(index)
    vis = rng.integers(60, 120, (height, width, 3), dtype=np.uint8)
    ir = np.full((height, width), 40, np.uint8)
    x = (index * 3) % (width - 12)
    ir[10:22, x:x + 12] = 230
    cv2.putText(vis, str(index), (2, height - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
    return ir, vis


@pytest.fixture
def image_folders(tmp_path: Path) -> tuple[Path, Path]:
    """Two folders of 12 small IR and VIS PNG frames named so that natural sorting matters (f2 < f10)."""
    ir_dir, vis_dir = tmp_path / "ir", tmp_path / "vis"
    ir_dir.mkdir()
    vis_dir.mkdir()
    for index in range(12):
        ir, vis = make_pair(index)
        cv2.imwrite(str(ir_dir / f"f{index}.png"), ir)
        cv2.imwrite(str(vis_dir / f"f{index}.png"), vis)
    return ir_dir, vis_dir


def static_rig(count: int, homography: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """A fixed camera pair watching a still scene, misaligned by ``homography`` (IR pixel -> VIS pixel).

    A registered TNO pair (a set the registration docs do not report on) re-shot through
    ``homography`` by ``tools/registration_study.reshoot`` (640x480 views), ``count`` times with
    fresh sensor noise.
    """
    import sys

    sys.path.insert(0, str(REPO / "tools"))
    from registration_study import reshoot

    from streamfuse.imageio import read_image

    folder = shared_data("tno_cddfuse")
    ir, vis = (cv2.resize(read_image(folder / part / "10.png"), (800, 600), interpolation=cv2.INTER_AREA)
               for part in ("ir", "vi"))
    ir_view, vis_view = reshoot(ir, vis, homography)
    rng = np.random.default_rng(0)

    def noisy(image: np.ndarray) -> np.ndarray:
        return np.clip(image + rng.normal(0, 2, image.shape), 0, 255).astype(np.uint8)

    return [(noisy(ir_view), noisy(vis_view)) for _ in range(count)]
