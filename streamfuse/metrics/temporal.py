"""Temporal stability of fused video: flicker beyond what the sources themselves change.

For consecutive frames ``t-1, t`` (gray, float, 0..255 scale) let

* ``dF = F_t - F_{t-1}`` be the change of the fused frame,
* ``dI = IR_t - IR_{t-1}`` and ``dV = VIS_t - VIS_{t-1}`` the changes of the sources.

A fused video is temporally faithful where ``dF`` is a change the sources explain. The per-pixel
residual is the distance from ``dF`` to the set of explained changes, ``flicker_t`` is the mean residual
over the frame, and the sequence score is the mean of ``flicker_t`` over all ``T - 1`` transitions
(gray levels; **lower is better**; 0 when every change of the fused video is explained).

Two sets of "explained changes" are offered (``mode``):

``"interval"`` (default)
    Every change between the two source changes, ``[min(dI, dV), max(dI, dV)]``; the residual is
    ``max(0, min(dI, dV) - dF, dF - max(dI, dV))``.
``"nearest"``
    Only the two source changes themselves; the residual is ``min(|dF - dI|, |dF - dV|)``, i.e.
    ``|dF - nearest(dI, dV)|`` with the fused output free to follow either source at each pixel.

Why ``"interval"`` is the default (a refinement of the nearest-source rule): a fusion that blends the
sources with fixed per-pixel weights, ``F = w IR + (1 - w) VIS`` with ``0 <= w <= 1`` (average fusion,
most pyramid / weighted-average fusers on a static weight map), changes by ``w dI + (1 - w) dV``, which
lies between ``dI`` and ``dV``. It is perfectly stable, yet the nearest-source rule charges it
``min(w, 1 - w) |dI - dV|`` at every pixel - a number that measures how much the *sources* disagree,
not flicker (for average fusion it is half the disagreement). The interval rule scores any such blend 0
and coincides with the nearest-source rule wherever ``dF`` falls outside the interval (overshoot,
changes against both sources, changes where both sources are still), which is where flicker shows.
Both rules give 0 for a fused video that equals one of its sources and both reduce to ``mean |dF|`` on a
static scene.

Expected values for i.i.d. Gaussian noise ``n_t ~ N(0, s^2)`` added to a fused video that otherwise
follows a moving source (with the other source far away): ``dF - dI = n_t - n_{t-1} ~ N(0, 2 s^2)``,
so ``"nearest"`` gives ``E|N(0, 2 s^2)| = 2 s / sqrt(pi)``; with ``"interval"`` only the half of the
errors that overshoot the source change count: ``E[max(0, N(0, 2 s^2))] = s / sqrt(pi)``.

Frames may be ``uint8`` or float, gray ``(H, W)`` (or ``(H, W, 1)``) or colour; colour arrays are RGB
(``(H, W, 3)``; a 4th alpha channel is ignored) and are reduced to BT.601 luma ``0.299 R + 0.587 G +
0.114 B`` without rounding. :func:`flicker` streams: it keeps only the previous frame triple in memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np

MODES: tuple[str, ...] = ("interval", "nearest")

_LUMA = np.array([0.299, 0.587, 0.114])


def to_luma(frame: np.ndarray) -> np.ndarray:
    """A frame as a 2-D ``float64`` gray image (RGB colour -> BT.601 luma, gray unchanged).

    Raises:
        TypeError: Non-numeric dtype.
        ValueError: Not a gray or colour image shape.
    """
    array = np.asarray(frame)
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"frame must be integer or float, got dtype {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return array.astype(np.float64)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return array[:, :, :3].astype(np.float64) @ _LUMA
    raise ValueError(f"expected a gray (H, W) or colour (H, W, 3) frame, got shape {array.shape}")


def _residual(d_fused: np.ndarray, d_ir: np.ndarray, d_vis: np.ndarray, mode: str) -> np.ndarray:
    """Per-pixel distance from the fused change to the changes the sources explain."""
    if mode == "nearest":
        return np.minimum(np.abs(d_fused - d_ir), np.abs(d_fused - d_vis))
    low = np.minimum(d_ir, d_vis)
    high = np.maximum(d_ir, d_vis)
    return np.maximum(np.maximum(low - d_fused, d_fused - high), 0.0)


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"


class FlickerMeter:
    """Incremental flicker measurement: call :meth:`update` once per frame triple.

    Attributes are read through properties: :attr:`frames` (triples seen), :attr:`value` (mean flicker
    over all transitions so far; NaN before the second frame) and :attr:`last` (flicker of the latest
    transition). Memory use is one previous frame triple.

    Args:
        mode: ``"interval"`` (default) or ``"nearest"``; see the module docstring.

    Raises:
        ValueError: Unknown mode.
    """

    def __init__(self, mode: str = "interval") -> None:
        if mode not in MODES:
            raise ValueError(f"unknown flicker mode {mode!r}; valid modes: {', '.join(MODES)}")
        self.mode = mode
        self.reset()

    def reset(self) -> None:
        """Forget all frames (start a new sequence)."""
        self._previous: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._frames = 0
        self._total = 0.0
        self._last = math.nan

    @property
    def frames(self) -> int:
        """Number of frame triples passed to :meth:`update`."""
        return self._frames

    @property
    def transitions(self) -> int:
        """Number of frame-to-frame transitions measured (``frames - 1`` once a frame was seen)."""
        return max(self._frames - 1, 0)

    @property
    def value(self) -> float:
        """Mean flicker (gray levels) over all transitions so far; NaN with fewer than two frames."""
        return self._total / self.transitions if self.transitions else math.nan

    @property
    def last(self) -> float:
        """Flicker of the most recent transition; NaN with fewer than two frames."""
        return self._last

    def update(self, ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
        """Add the next frame triple.

        Args:
            ir: Infrared frame.
            vis: Visible frame.
            fused: Fused frame.

        Returns:
            The flicker of the transition from the previous triple to this one (NaN for the first).

        Raises:
            ValueError: The three frames differ in size, or their size differs from the previous frame's.
            TypeError: Non-numeric frame.
        """
        current = (to_luma(ir), to_luma(vis), to_luma(fused))
        shapes = [frame.shape for frame in current]
        if not shapes[0] == shapes[1] == shapes[2]:
            raise ValueError(
                f"frame {self._frames}: sizes differ (WxH): ir {_size(shapes[0])}, vis {_size(shapes[1])}, "
                f"fused {_size(shapes[2])}"
            )
        previous = self._previous
        if previous is not None and previous[0].shape != shapes[0]:
            raise ValueError(
                f"frame {self._frames}: size changed from {_size(previous[0].shape)} to {_size(shapes[0])} (WxH)"
            )
        self._previous = current
        self._frames += 1
        if previous is None:
            return math.nan
        d_ir, d_vis, d_fused = (now - before for now, before in zip(current, previous, strict=True))
        self._last = float(np.mean(_residual(d_fused, d_ir, d_vis, self.mode)))
        self._total += self._last
        return self._last


def flicker(
    ir_frames: Iterable[np.ndarray],
    vis_frames: Iterable[np.ndarray],
    fused_frames: Iterable[np.ndarray],
    mode: str = "interval",
) -> float:
    """Mean flicker of a fused video against its infrared and visible sources (lower is better).

    Args:
        ir_frames: Infrared frames (any iterable, consumed once; a generator keeps memory O(1)).
        vis_frames: Visible frames, same count and size.
        fused_frames: Fused frames, same count and size.
        mode: ``"interval"`` (default) or ``"nearest"``; see the module docstring.

    Returns:
        Mean over the ``T - 1`` transitions of the per-frame mean residual, in gray levels (0..255 scale).

    Raises:
        ValueError: Fewer than two frames, iterables of unequal length, frames of different sizes, or
            an unknown mode.
    """
    meter = FlickerMeter(mode)
    iterators: list[Iterator[np.ndarray]] = [iter(ir_frames), iter(vis_frames), iter(fused_frames)]
    labels = ("ir_frames", "vis_frames", "fused_frames")
    sentinel = object()
    while True:
        items = [next(iterator, sentinel) for iterator in iterators]
        ended = [label for label, item in zip(labels, items, strict=True) if item is sentinel]
        if ended:
            if len(ended) != len(labels):
                going = [label for label in labels if label not in ended]
                raise ValueError(
                    f"unequal lengths: {', '.join(ended)} ended after {meter.frames} frames "
                    f"but {', '.join(going)} had more"
                )
            break
        meter.update(*items)
    if meter.frames < 2:
        raise ValueError(f"flicker needs at least 2 frames, got {meter.frames}")
    return meter.value
