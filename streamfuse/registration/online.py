"""Online refinement: re-estimate the registration from live frames, off the hot path.

A background thread wakes every ``registration.refine_every_s`` seconds, runs the automatic
estimator (:func:`~streamfuse.registration.estimate.estimate_homography`) on the last few frame
pairs the pairing stage offered, and moves the registrar's transform toward the estimate only when
the estimate is accepted *and* within ``refine_max_change_px`` of the current transform (a camera
that was knocked needs a new calibration, not a silent jump). The move is smoothed: the image
corners go ``refine_smoothing`` of the way to where the estimate puts them. The registrar swaps in
the new immutable transform; frames already paired keep theirs, later frames use the new one on every
fusion path.

The pairing stage only hands over references to frames it has anyway (:meth:`OnlineRefiner.offer`),
at most a few per interval, so the frame path pays nothing measurable.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

import cv2
import numpy as np

from streamfuse.config import RegistrationConfig
from streamfuse.registration.base import Registrar
from streamfuse.registration.estimate import Estimate, alignment_quality, displacement_px, estimate_homography
from streamfuse.registration.homography import Homography
from streamfuse.stats import PipelineStats

log = logging.getLogger(__name__)


def current_matrix(registrar: Registrar, ir_shape: tuple[int, int], vis_shape: tuple[int, int]) -> np.ndarray:
    """The registrar's transform as a homography (identity and resize are scalings)."""
    transform = registrar.transform
    if isinstance(transform, Homography):
        return transform.matrix
    return np.diag([vis_shape[1] / ir_shape[1], vis_shape[0] / ir_shape[0], 1.0])


def blend(current: np.ndarray, target: np.ndarray, weight: float, ir_shape: tuple[int, int]) -> np.ndarray:
    """The homography that moves the infrared image's corners ``weight`` of the way from ``current`` to ``target``."""
    height, width = ir_shape
    corners = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], np.float64).reshape(-1, 1, 2)
    start = cv2.perspectiveTransform(corners, current)
    end = cv2.perspectiveTransform(corners, target)
    moved = start + weight * (end - start)
    return cv2.getPerspectiveTransform(corners.astype(np.float32), moved.astype(np.float32)).astype(np.float64)


class OnlineRefiner:
    """Keeps a registrar's transform aligned from live frames (``registration.refine_every_s``).

    Args:
        registrar: Whose transform is refined.
        config: The ``registration`` section (``refine_*`` keys).
        stats: Where the ``registration_quality`` gauge and ``registration.*`` counters go.
    """

    def __init__(self, registrar: Registrar, config: RegistrationConfig, stats: PipelineStats) -> None:
        self.registrar = registrar
        self.stats = stats
        self.interval_s = float(config.refine_every_s)
        self.max_change_px = config.refine_max_change_px
        self.smoothing = config.refine_smoothing
        self._pairs: collections.deque[tuple[np.ndarray, np.ndarray]] = collections.deque(maxlen=config.refine_pairs)
        self._sample_every_s = self.interval_s / config.refine_pairs
        self._last_sample = -np.inf
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._report = {"quality": None, "confidence": None, "checks": 0, "applied": 0, "refused": 0,
                        "too_far": 0, "last": None}

    def offer(self, ir: np.ndarray, vis: np.ndarray) -> None:
        """A new pair (unwarped gray infrared, visible) from the pairing stage; kept when a sample is due."""
        now = time.monotonic()
        if now - self._last_sample >= self._sample_every_s:
            self._last_sample = now
            with self._lock:
                self._pairs.append((ir, vis))

    def check(self) -> Estimate | None:
        """Estimate from the kept pairs and apply the result when it passes; None without pairs yet."""
        with self._lock:
            pairs = list(self._pairs)
        if not pairs:
            return None
        ir_shape, vis_shape = pairs[-1][0].shape[:2], pairs[-1][1].shape[:2]
        current = current_matrix(self.registrar, ir_shape, vis_shape)
        estimate = estimate_homography(pairs)
        change = displacement_px(estimate.matrix, current, ir_shape)
        report = dict(self._report)
        report["checks"] += 1
        if not estimate.accepted:
            report["refused"] += 1
            outcome = f"refused: {estimate.reason}"
        elif change > self.max_change_px:
            report["too_far"] += 1
            outcome = (f"not applied: {change:.1f} px from the current registration (refine_max_change_px "
                       f"{self.max_change_px}); recalibrate with 'streamfuse calibrate' if a camera moved")
        else:
            current = blend(current, estimate.matrix, self.smoothing, ir_shape)
            self.registrar.set_matrix(current, key="registration (online estimate)")  # keeps the calibrated size
            report["applied"] += 1
            outcome = f"applied ({change:.1f} px change, smoothing {self.smoothing})"
        report["quality"] = round(alignment_quality(pairs, current), 4)
        report["confidence"] = round(estimate.confidence, 4)
        report["last"] = outcome
        self._report = report
        self.registrar.quality = report["quality"]
        self.stats.set_gauge("registration_quality", report["quality"])
        log.info("registration check: %s; quality %.3f", outcome, report["quality"])
        return estimate

    def report(self) -> dict:
        """``quality`` (alignment score of the current transform on the latest frames), the last
        estimate's ``confidence``, counts of ``checks`` / ``applied`` / ``refused`` / ``too_far``
        and the ``last`` outcome."""
        return dict(self._report)

    def start(self) -> None:
        """Start the background thread."""
        self._thread = threading.Thread(target=self._run, name="registration-refine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread (an estimate in progress finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:  # a failed check must not stop fusion; the next one tries again
                log.exception("registration check failed")
