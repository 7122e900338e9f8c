"""The Fuser interface."""

from __future__ import annotations

import abc
import concurrent.futures
import logging
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

import numpy as np

from streamfuse.colour import as_gray
from streamfuse.text.prompts import REQUIRED_INTENTS

if TYPE_CHECKING:
    from streamfuse.frames import FramePair
    from streamfuse.registration import Transform
    from streamfuse.stats import PipelineStats

log = logging.getLogger(__name__)


class Fuser(abc.ABC):
    """Combines a registered infrared frame and a visible frame into one image.

    Inputs are ``uint8``: the visible frame BGR ``(H, W, 3)`` or gray ``(H, W)``, the infrared frame
    gray (a BGR infrared frame is reduced to its luminance) and already on the visible grid. The
    output has the visible frame's size and type.

    Two ways to run: :meth:`fuse` (one pair, now, on the caller's thread: single images,
    evaluation) and :meth:`submit` (the pipeline's way: a future per pair, between :meth:`start`
    and :meth:`close`). The defaults make :meth:`submit` call :meth:`fuse`; a fuser that runs
    elsewhere (a device, a worker thread) overrides :meth:`submit` and the lifecycle hooks.
    """

    name = "fuser"
    _routing = None  # the routing the fuser was last conditioned on by submit()

    def condition(self, routing) -> None:  # noqa: B027 - optional hook, most fusers keep the default
        """Adapt to a prompt routing (a :class:`~streamfuse.text.Routing`, or None for no prompt).

        :meth:`submit` calls it before the first frame fused with a new routing; never
        concurrently with :meth:`fuse`. The default ignores text.
        """

    def start(self, stats: PipelineStats | None = None, *, live: bool = False) -> None:  # noqa: B027 - optional hook
        """Acquire what :meth:`submit` needs (threads, a device) before the first pair.

        Args:
            stats: Where the fuser may record its own stage latencies (on :meth:`close`).
            live: The input is live (the caller keeps :meth:`max_in_flight` ``(live=True)`` pairs in flight).
        """

    def close(self, *, timeout: float | None = None, cancel_pending: bool = False) -> None:  # noqa: B027
        """Release what :meth:`start` acquired; every submitted future is done afterwards. Idempotent.

        Args:
            timeout: Longest to wait for pairs in flight, in seconds (None: as long as they take).
            cancel_pending: Cancel pairs not yet started instead of fusing them.
        """

    def max_in_flight(self, *, live: bool) -> int:
        """Most pairs the caller should keep submitted but not yet delivered (1: :meth:`submit` is synchronous).

        Args:
            live: The input is live (more in flight only adds latency there).
        """
        return 1

    def warps(self, transform: Transform) -> bool:
        """True when :meth:`submit` warps a pair's infrared frame with ``transform`` itself (default: never).

        The pairing stage then leaves the frame unwarped and sets :attr:`FramePair.transform`.
        """
        return False

    def warm_up(self, pair: FramePair) -> bool:
        """Do the slow first run (allocation, autotuning) for frames shaped like ``pair``.

        The pipeline calls it with its first pair, whatever the source, before submitting it.

        Returns:
            True when it ran something (on a live feed the pair is then stale and skipped); the
            default does nothing and returns False.
        """
        return False

    def submit(self, pair: FramePair, routing) -> concurrent.futures.Future:
        """Fuse ``pair`` with ``routing``'s prompt; the future resolves to the fused image.

        Pairs are fused, and their futures resolved, in submission order. The default conditions
        on ``routing`` if it changed, then runs :meth:`fuse` at once; the future holds its result
        or its error.
        """
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            self._condition_once(routing)
            future.set_result(self.fuse(pair.ir.image, pair.vis.image, pair.valid))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def _condition_once(self, routing) -> None:
        """:meth:`condition` on ``routing`` unless it is the one already in use."""
        if routing is not self._routing:
            self.condition(routing)
            self._routing = routing

    def fuse(self, ir: np.ndarray, vis: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Fuse one pair.

        Args:
            ir: Infrared frame on the visible grid.
            vis: Visible frame.
            valid: Optional ``uint8`` mask, 1 where the infrared frame has data; elsewhere the
                output follows the visible frame.

        Raises:
            ValueError: A frame that is not a gray ``(H, W)``, ``(H, W, 1)`` or BGR ``(H, W, 3)`` array of 8-bit
                values, frames of different sizes, or a ``valid`` mask of another size.
        """
        ir, vis = (_image(image, which) for image, which in ((ir, "infrared"), (vis, "visible")))
        ir = as_gray(ir)
        if ir.shape[:2] != vis.shape[:2]:
            raise ValueError(f"infrared frame is {ir.shape[1]}x{ir.shape[0]} but visible frame is "
                             f"{vis.shape[1]}x{vis.shape[0]}; register them first (registration.mode)")
        if ir.dtype != np.uint8 or vis.dtype != np.uint8:
            raise ValueError(f"expected uint8 images, got infrared {ir.dtype} and visible {vis.dtype}"
                             + (" (map 16-bit thermal frames to 8 bits first: streamfuse.gain.AutoGain, as the "
                                "sources do)" if np.uint16 in (ir.dtype, vis.dtype) else ""))
        if valid is not None and np.shape(valid) != ir.shape[:2]:
            raise ValueError(f"the valid mask is {np.shape(valid)}; expected one value per pixel, {ir.shape[:2]}")
        return self._fuse(ir, vis, valid)

    def fuse_batch(self, irs: Sequence[np.ndarray], viss: Sequence[np.ndarray],
                   valids: Sequence[np.ndarray | None] | None = None) -> list[np.ndarray]:
        """Fuse several pairs (of possibly different sizes); returns outputs in input order."""
        if len(irs) != len(viss):
            raise ValueError(f"got {len(irs)} infrared and {len(viss)} visible frames")
        valids = valids if valids is not None else [None] * len(irs)
        return [self.fuse(ir, vis, valid) for ir, vis, valid in zip(irs, viss, valids, strict=True)]

    @abc.abstractmethod
    def _fuse(self, ir: np.ndarray, vis: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        """Fuse validated inputs (``ir`` gray, same size as ``vis``)."""


def _image(image: np.ndarray, which: str) -> np.ndarray:
    """``image`` as a fuser takes it (``(H, W, 1)`` as ``(H, W)``), or a ValueError naming what is wrong with it."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"the {which} frame must be a numpy array, got {type(image).__name__}")
    if image.size == 0:
        raise ValueError(f"the {which} frame is empty (shape {image.shape})")
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 4:
        raise ValueError(f"the {which} frame has 4 channels (BGRA); give it as BGR, e.g. "
                         "cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)")
    if image.ndim != 2 and not (image.ndim == 3 and image.shape[2] == 3):
        raise ValueError(f"the {which} frame must be gray (H, W) or BGR (H, W, 3), got shape {image.shape}")
    return image


#: (fuser, intent) pairs already warned about by :func:`warn_of_unknown_intents`.
_WARNED_INTENTS: set[tuple[str, str]] = set()


def warn_of_unknown_intents(fuser: str, weights: dict[str, float], known: Collection[str]) -> None:
    """Warn once per intent that a routing weighs but ``fuser`` has no behaviour for (an intent a bank of the
    user's own adds): it was routed and reported, then silently fused as something else."""
    for intent, weight in weights.items():
        if weight > 0 and intent not in known and (fuser, intent) not in _WARNED_INTENTS:
            _WARNED_INTENTS.add((fuser, intent))
            remedy = ("the model fuser has it" if intent in REQUIRED_INTENTS else
                      "an intent added to the bank needs a fuser trained for it")
            log.warning("intent %r (%.2f of the prompt) means nothing to the %s fuser, which knows %s: that share "
                        "of the prompt is fused as balanced (%s)", intent, weight, fuser, ", ".join(sorted(known)),
                        remedy)
