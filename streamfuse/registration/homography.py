"""Fixed registrations: identity, resize, and a calibrated homography with cached remap maps."""

from __future__ import annotations

import cv2
import numpy as np

from streamfuse.config import check_homography
from streamfuse.errors import PipelineError
from streamfuse.registration.base import Registrar


class IdentityRegistrar(Registrar):
    """The cameras are already registered: the infrared frame must have the visible frame's size."""

    name = "identity"

    def apply(self, ir: np.ndarray, vis_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
        if ir.shape[:2] != tuple(vis_shape):
            raise PipelineError(
                f"registration: infrared frames are {ir.shape[1]}x{ir.shape[0]} but visible frames are "
                f"{vis_shape[1]}x{vis_shape[0]}; set registration.mode to 'resize' (same field of view) or "
                "'homography' with a calibrated registration.matrix")
        return ir, None


class ResizeRegistrar(Registrar):
    """The cameras share a field of view but not a resolution: scale the infrared frame."""

    name = "resize"

    def apply(self, ir: np.ndarray, vis_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
        if ir.shape[:2] == tuple(vis_shape):
            return ir, None
        return cv2.resize(ir, (vis_shape[1], vis_shape[0]), interpolation=cv2.INTER_LINEAR), None


class HomographyRegistrar(Registrar):
    """Warp with a 3x3 homography that maps infrared pixel coordinates to visible pixel coordinates.

    The per-pixel sampling maps (and the valid-area mask) are computed once per pair of frame sizes
    and converted to OpenCV's fixed-point format, so each frame costs a single ``cv2.remap``.

    Args:
        matrix: The 3x3 homography (IR -> VIS).
    """

    name = "homography"

    def __init__(self, matrix) -> None:
        self._maps: tuple[np.ndarray, np.ndarray] | None = None
        self._key: tuple | None = None
        self._valid: np.ndarray | None = None
        self.set_matrix(matrix)

    @property
    def matrix(self) -> np.ndarray:
        """The current homography (a copy)."""
        return self._matrix.copy()

    def set_matrix(self, matrix) -> None:
        """Replace the homography (for example with a new estimate); cached maps are rebuilt lazily."""
        self._matrix = check_homography(matrix, "registration.matrix")
        self._key = None

    def _prepare(self, ir_shape: tuple[int, int], vis_shape: tuple[int, int]) -> None:
        height, width = vis_shape
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
        points = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
        source = np.linalg.inv(self._matrix) @ points
        with np.errstate(divide="ignore", invalid="ignore"):
            map_x = (source[0] / source[2]).reshape(height, width).astype(np.float32)
            map_y = (source[1] / source[2]).reshape(height, width).astype(np.float32)
        behind = (source[2] <= 0).reshape(height, width)
        inside = (map_x >= 0) & (map_x <= ir_shape[1] - 1) & (map_y >= 0) & (map_y <= ir_shape[0] - 1) & ~behind
        map_x[~inside] = -1e6  # sample the constant border, not garbage, where the IR camera sees nothing
        map_y[~inside] = -1e6
        self._maps = cv2.convertMaps(map_x, map_y, cv2.CV_16SC2)
        valid = inside.astype(np.uint8)
        if not valid.any():
            raise PipelineError("registration.matrix: the homography maps the infrared image entirely outside "
                                "the visible image; check the calibration (it maps IR pixels to VIS pixels)")
        self._valid = None if valid.all() else valid
        self._key = (ir_shape, tuple(vis_shape))

    def apply(self, ir: np.ndarray, vis_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
        if self._key != (ir.shape[:2], tuple(vis_shape)):
            self._prepare(ir.shape[:2], vis_shape)
        warped = cv2.remap(ir, *self._maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return warped, self._valid
