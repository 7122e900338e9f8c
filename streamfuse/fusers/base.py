"""The Fuser interface."""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np

from streamfuse.fusers.colour import as_gray


class Fuser(abc.ABC):
    """Combines a registered infrared frame and a visible frame into one image.

    Inputs are ``uint8``: the visible frame BGR ``(H, W, 3)`` or gray ``(H, W)``, the infrared frame
    gray (a BGR infrared frame is reduced to its luminance) and already on the visible grid. The
    output has the visible frame's size and type.
    """

    name = "fuser"

    def condition(self, routing) -> None:  # noqa: B027 - optional hook, most fusers keep the default
        """Adapt to a prompt routing (a :class:`~streamfuse.text.Routing`, or None for no prompt).

        Called by the pipeline's fusion thread before the first frame fused with a new prompt, never
        concurrently with :meth:`fuse`. The default ignores text.
        """

    def fuse(self, ir: np.ndarray, vis: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Fuse one pair.

        Args:
            ir: Infrared frame on the visible grid.
            vis: Visible frame.
            valid: Optional ``uint8`` mask, 1 where the infrared frame has data; elsewhere the
                output follows the visible frame.

        Raises:
            ValueError: The infrared and visible frames differ in size, or are not 8-bit images.
        """
        ir = as_gray(ir)
        if ir.shape[:2] != vis.shape[:2]:
            raise ValueError(f"infrared frame is {ir.shape[1]}x{ir.shape[0]} but visible frame is "
                             f"{vis.shape[1]}x{vis.shape[0]}; register them first (registration.mode)")
        if ir.dtype != np.uint8 or vis.dtype != np.uint8:
            raise ValueError(f"expected uint8 images, got infrared {ir.dtype} and visible {vis.dtype}")
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
