"""Registration interfaces: an immutable :class:`Transform`, and the :class:`Registrar` holding the current one."""

from __future__ import annotations

import abc
import threading

import numpy as np


class Transform(abc.ABC):
    """An immutable mapping of the infrared frame onto the visible image grid.

    A transform never changes after it is made, so a frame in flight keeps the one it was paired
    with while a new estimate replaces the registrar's current transform. Whatever depends only on
    the frame sizes (sampling maps) may be cached inside it.
    """

    frame_sizes: tuple[tuple[int, int], tuple[int, int]] | None = None
    """The infrared and visible ``(width, height)`` it was made for, if it holds for one resolution only."""

    def check_frames(self, ir_shape: tuple[int, int], vis_shape: tuple[int, int]) -> None:
        """Raise :class:`~streamfuse.errors.PipelineError` when this transform was not made for frames of these
        ``(height, width)`` sizes (a calibration of another resolution); the default accepts any."""
        return None

    def prepare(self, ir_shape: tuple[int, int], vis_shape: tuple[int, int]) -> None:
        """Check that this transform can register frames of these ``(height, width)`` sizes, and make what
        warping them needs (raises :class:`~streamfuse.errors.PipelineError` when it cannot)."""
        self.check_frames(ir_shape, vis_shape)

    @abc.abstractmethod
    def apply(self, ir: np.ndarray, vis_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
        """Warp ``ir`` onto a visible grid of ``vis_shape`` ``(height, width)``.

        Returns:
            The warped infrared image of size ``vis_shape`` and a ``uint8`` valid-area mask (1 where
            the infrared camera has data), or None when every pixel is valid.
        """


class Registrar:
    """Holds the current :class:`Transform` of a camera pair and applies it to every frame.

    Registration is split, as in Norfair's transforms, into *estimate* (finding the geometric
    relation: a calibration, or an automatic estimator off the hot path) and *apply* (warping every
    frame with it, which must be cheap). An estimator publishes a new estimate with
    :meth:`set_transform`; it takes effect from the next pair on, on every fusion path (the CPU warp
    in the pairing stage and the warp a fuser does on its device alike), because each pair carries
    the transform that was current when it was paired.

    Args:
        transform: The initial transform.
    """

    name = "registrar"

    def __init__(self, transform: Transform) -> None:
        self._lock = threading.Lock()
        self._transform = transform
        self._shapes: tuple[tuple[int, int], tuple[int, int]] | None = None
        """``(ir_shape, vis_shape)`` of the latest pair, which a new transform is checked against."""
        self.quality: float | None = None
        """How well the current transform aligns recent frames (set by online refinement; None without it)."""

    @property
    def transform(self) -> Transform:
        """The current transform."""
        with self._lock:
            return self._transform

    def transform_for(self, ir_shape: tuple[int, int], vis_shape: tuple[int, int]) -> Transform:
        """The current transform, prepared for frames of these ``(height, width)`` sizes (read once per pair)."""
        transform = self.transform
        transform.prepare(ir_shape, vis_shape)
        self._shapes = (tuple(ir_shape), tuple(vis_shape))
        return transform

    def set_transform(self, transform: Transform) -> None:
        """Replace the current transform; pairs made after this call use the new one.

        Raises:
            TypeError: ``transform`` is not a :class:`Transform`.
            PipelineError: It cannot register the frames paired so far (made for another resolution, or it maps
                the infrared image entirely off the visible one); the current transform stays.
        """
        if not isinstance(transform, Transform):
            raise TypeError(f"set_transform: expected a Transform (such as registration.Homography(matrix)), got "
                            f"{type(transform).__name__}; set_matrix takes a 3x3 matrix")
        if self._shapes is not None:
            transform.prepare(*self._shapes)
        with self._lock:
            self._transform = transform

    def set_matrix(self, matrix, *, key: str = "set_matrix") -> None:
        """Replace the transform by the homography ``matrix`` (infrared pixel -> visible pixel), for example a new
        estimate, from the next pair on, on every path; it keeps the resolution the current one was calibrated at.

        Raises:
            ConfigError: ``matrix`` is not a valid, invertible 3x3 homography (named by ``key``).
            PipelineError: As :meth:`set_transform`.
        """
        from streamfuse.registration.homography import Homography  # that module builds on this one

        self.set_transform(Homography(matrix, key=key, frame_sizes=self.transform.frame_sizes))

    def apply(self, ir: np.ndarray, vis_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
        """Warp ``ir`` with the current transform (see :meth:`Transform.apply`)."""
        return self.transform.apply(ir, vis_shape)
