"""The Registrar interface: maps the infrared frame onto the visible image grid."""

from __future__ import annotations

import abc

import numpy as np


class Registrar(abc.ABC):
    """Aligns infrared frames to visible frames.

    Registration is split, as in Norfair's transforms, into *estimate* (finding the geometric
    relation: calibration now, automatic estimation off the hot path later) and *apply* (warping
    every frame with it, which must be cheap). Implementations cache whatever depends only on the
    frame sizes.
    """

    name = "registrar"

    @abc.abstractmethod
    def apply(self, ir: np.ndarray, vis_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
        """Warp ``ir`` onto a visible grid of ``vis_shape`` ``(height, width)``.

        Returns:
            The warped infrared image of size ``vis_shape`` and a ``uint8`` valid-area mask (1 where
            the infrared camera has data), or None when every pixel is valid.
        """
