"""Classical luminance fusion by band selection: the fusion network's fixed rule, in OpenCV.

The infrared image and the visible luminance are split into bands and composed by the fixed
injection rule (:mod:`streamfuse.models.bands_cv`; the design is in :mod:`streamfuse.models.bands`):
visible base kept, infrared injected per band where its structure is stronger, the locally stronger
finest detail. The fused luminance gets the visible chroma back. No torch needed.

A medical prompt switches, by its share, to the medical rule (the brighter base and the stronger
detail band of either image almost outright; :data:`~streamfuse.models.rule.MEDICAL_INTENTS`).
A prompt steers it through the routed intents: each intent moves the injection logits towards the
infrared or the visible image (:data:`INTENT_LEAN`); intents about a damaged visible image
(:data:`~streamfuse.models.rule.LOCAL_INTENTS`: glare, low light, fog) do so only where that damage
is (:func:`~streamfuse.models.rule.damage_gates`), so a prompt never changes a region where the visible
camera is fine.
"""

from __future__ import annotations

import concurrent.futures
import os

import numpy as np

from streamfuse.colour import merge_luminance, split_luminance
from streamfuse.fusers.base import Fuser, warn_of_unknown_intents
from streamfuse.models import bands_cv
from streamfuse.models.rule import LOCAL_INTENTS, MEDICAL_INTENTS, damage_gates

#: How far each intent moves the injection logits towards infrared (+) or visible (-).
INTENT_LEAN = {
    "thermal_targets": 3.0, "low_light": 8.0, "fog": 8.0, "glare": 8.0,
    "visible_detail": -3.0, "low_contrast_thermal": -2.0,
}


def fuse_luminance(ir: np.ndarray, vis: np.ndarray, valid: np.ndarray | None = None, *,
                   weights: dict[str, float] | None = None) -> np.ndarray:
    """Fuse two registered single-channel ``uint8`` images of the same size.

    Args:
        ir: Infrared image.
        vis: Visible luminance.
        valid: Optional ``uint8`` mask, 1 where ``ir`` has data (elsewhere the result is ``vis``).
        weights: Routed intent weights (``{intent: weight}``); None or balanced is the plain rule, the
            medical intents' share is fused by the medical rule.

    Returns:
        The fused ``uint8`` luminance.
    """
    weights = weights or {}
    bands = bands_cv.split(ir, vis)
    logits = bands_cv.rule_logits(bands)
    medical = sum(weights.get(intent, 0.0) for intent in MEDICAL_INTENTS)
    if medical:
        logits = [logit + medical * (other - logit) for logit, other in zip(logits, bands_cv.medical_logits(bands),
                                                                            strict=True)]
    lean, repair = _lean_map(bands, weights)
    injection = [1 / (1 + np.exp(-(logit + lean))) for logit in logits]
    fused = bands_cv.compose(bands, injection, repair=repair)
    if valid is not None:
        fused = np.where(valid.astype(bool), fused, vis)
    return fused


def _lean_map(bands: bands_cv.Split, weights: dict[str, float]) -> tuple[np.ndarray | float, np.ndarray | None]:
    """The prompt's offset of the injection logits (global intents everywhere, damage intents where the damage
    is), and where its damage intents repair the visible image (None: nowhere).

    The damage gates are computed only when the prompt has a damage intent.
    """
    lean: np.ndarray | float = 0.0
    repair = None
    gates = None
    for intent, weight in weights.items():
        amount = weight * INTENT_LEAN.get(intent, 0.0)
        if not amount:
            continue
        if intent in LOCAL_INTENTS:
            gates = gates if gates is not None else damage_gates(*bands_cv.quarter(bands), bands_cv.box_filter)
            lean = lean + amount * gates[LOCAL_INTENTS[intent]]
            repair = (0 if repair is None else repair) + weight * gates[LOCAL_INTENTS[intent]]
        else:
            lean = lean + amount
    return lean, repair


class ClassicalFuser(Fuser):
    """Band-selection luminance fusion (the network's fixed rule) with visible chroma restored.

    Between :meth:`start` and :meth:`close`, :meth:`submit` fuses on a pool of ``threads`` threads
    (OpenCV and NumPy release the GIL), so that on a recording consecutive pairs are fused side by side;
    on a live feed it fuses each pair at once (one in flight, :meth:`max_in_flight`).

    Args:
        threads: Pairs fused at once by :meth:`submit` (None: 2, or 1 on a single core).
    """

    name = "classical"

    def __init__(self, threads: int | None = None) -> None:
        self.weights: dict[str, float] = {}
        self.threads = threads or min(2, os.cpu_count() or 1)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._in_flight: set[concurrent.futures.Future] = set()

    def condition(self, routing) -> None:
        """Lean towards infrared or visible by the routed intents' :data:`INTENT_LEAN`."""
        if routing is not None:
            warn_of_unknown_intents(self.name, routing.weights, {"balanced", *INTENT_LEAN, *MEDICAL_INTENTS})
        self.weights = dict(routing.weights) if routing is not None else {}

    def start(self, stats=None, *, live: bool = False) -> None:
        """Start the pool :meth:`submit` fuses on; none for one thread or a live feed, which keeps one pair in
        flight (:meth:`submit` then fuses at once, on the caller's thread: a hand-over would only add latency)."""
        if self.threads > 1 and not live and self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="classical-fuse")

    def close(self, *, timeout: float | None = None, cancel_pending: bool = False) -> None:
        """Stop the pool after the pairs being fused (at most ``threads``, a few tens of ms each); with
        ``cancel_pending``, pairs not started are cancelled. ``timeout`` is not needed: nothing waits longer."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=cancel_pending)
            self._pool = None

    def max_in_flight(self, *, live: bool) -> int:
        """One pair per thread on a recording; one on a live feed (more would only add latency there)."""
        return 1 if live or self._pool is None else self.threads

    def submit(self, pair, routing) -> concurrent.futures.Future:
        """Fuse ``pair`` on the pool (after :meth:`start`). A new prompt waits for the pairs in flight, so
        that each pair is fused with the prompt it was submitted with."""
        if self._pool is None:
            return super().submit(pair, routing)
        if routing is not self._routing:
            concurrent.futures.wait(list(self._in_flight))  # never condition beside a running fuse
            self._condition_once(routing)
        future = self._pool.submit(self.fuse, pair.ir.image, pair.vis.image, pair.valid)
        self._in_flight.add(future)
        future.add_done_callback(self._in_flight.discard)
        return future

    def _fuse(self, ir: np.ndarray, vis: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        luma, ycrcb = split_luminance(vis)
        fused = fuse_luminance(ir, luma, valid, weights=self.weights)
        return merge_luminance(fused, ycrcb)
