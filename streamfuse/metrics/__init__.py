"""Fusion quality metrics in two conventions: VIFB (default) and MMIF-CDDFuse.

``compute(ir, vis, fused, convention="vifb")`` returns every metric of a convention for one
triple of images (file paths or arrays: ``uint8`` or float, gray ``(H, W)`` or colour ``(H, W, 3)``;
colour ARRAYS are RGB order, files are read as the convention's own code reads them).
``flicker`` measures temporal stability of fused video. See docs/metrics.md for every formula.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import ModuleType

import numpy as np

from streamfuse.metrics import cddfuse, vifb
from streamfuse.metrics.temporal import FlickerMeter, flicker

ImageLike = str | np.ndarray

#: Convention name -> module with NAMES, BETTER, METRICS, load() and compute().
CONVENTIONS: dict[str, ModuleType] = {"vifb": vifb, "cddfuse": cddfuse}

__all__ = ["CONVENTIONS", "compute", "convention_module", "flicker", "FlickerMeter"]


def convention_module(convention: str) -> ModuleType:
    """The module implementing ``convention``.

    Raises:
        ValueError: Unknown convention name.
    """
    try:
        return CONVENTIONS[convention]
    except KeyError:
        raise ValueError(f"unknown metric convention {convention!r} (available: {', '.join(CONVENTIONS)})") from None


def compute(ir: ImageLike, vis: ImageLike, fused: ImageLike, convention: str = "vifb",
            metrics: Iterable[str] | None = None) -> dict[str, float]:
    """All (or the named) metrics of ``convention`` for one infrared / visible / fused triple.

    Raises:
        ValueError: Unknown convention or metric name, or images of different sizes.
    """
    return convention_module(convention).compute(ir, vis, fused, metrics)
