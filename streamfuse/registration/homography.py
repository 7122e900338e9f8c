"""Fixed registrations: identity, resize, and a calibrated homography with cached remap maps."""

from __future__ import annotations

import threading

import cv2
import numpy as np

from streamfuse.config import RegistrationConfig, calibrated_frame_sizes, check_homography
from streamfuse.errors import PipelineError
from streamfuse.registration.base import Registrar, Transform
from streamfuse.registry import REGISTRATIONS


def homography_maps(matrix: np.ndarray, ir_shape: tuple[int, int],
                    vis_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel infrared sampling coordinates for a visible grid (used by the CPU and the CUDA warp).

    Args:
        matrix: 3x3 homography mapping infrared pixel coordinates to visible pixel coordinates.
        ir_shape: Infrared ``(height, width)``.
        vis_shape: Visible ``(height, width)``.

    Returns:
        ``map_x``, ``map_y`` (``float32``, ``-1e6`` where the infrared camera sees nothing, so the
        constant border is sampled rather than garbage) and the boolean ``inside`` mask, all
        ``(height, width)`` of the visible grid.

    Raises:
        PipelineError: The homography maps the infrared image entirely outside the visible image.
    """
    height, width = vis_shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    points = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    source = np.linalg.inv(matrix) @ points
    with np.errstate(divide="ignore", invalid="ignore"):
        map_x = (source[0] / source[2]).reshape(height, width).astype(np.float32)
        map_y = (source[1] / source[2]).reshape(height, width).astype(np.float32)
    behind = (source[2] <= 0).reshape(height, width)
    inside = (map_x >= 0) & (map_x <= ir_shape[1] - 1) & (map_y >= 0) & (map_y <= ir_shape[0] - 1) & ~behind
    if not inside.any():
        raise PipelineError("the homography maps the infrared image entirely outside the visible image; check the "
                            "calibration (it maps IR pixels to VIS pixels)")
    map_x[~inside] = -1e6
    map_y[~inside] = -1e6
    return map_x, map_y, inside


class IdentityTransform(Transform):
    """The cameras are already registered: the infrared frame must have the visible frame's size."""

    def apply(self, ir: np.ndarray, vis_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
        if ir.shape[:2] != tuple(vis_shape):
            raise PipelineError(
                f"registration: infrared frames are {ir.shape[1]}x{ir.shape[0]} but visible frames are "
                f"{vis_shape[1]}x{vis_shape[0]}; set registration.mode to 'resize' (same field of view; "
                "on the command line --set registration.mode=resize) or 'homography' with a calibrated "
                "registration.matrix ('streamfuse calibrate', then registration.calibration: FILE in the config, or "
                "fuse --calibration FILE)")
        return ir, None


class ResizeTransform(Transform):
    """The cameras share a field of view but not a resolution: scale the infrared frame."""

    def apply(self, ir: np.ndarray, vis_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
        if ir.shape[:2] == tuple(vis_shape):
            return ir, None
        return cv2.resize(ir, (vis_shape[1], vis_shape[0]), interpolation=cv2.INTER_LINEAR), None


class Homography(Transform):
    """A 3x3 homography that maps infrared pixel coordinates to visible pixel coordinates.

    The sampling maps (OpenCV fixed point) and the valid-area mask are computed once per pair of
    frame sizes and cached, so each frame costs a single ``cv2.remap``.

    Args:
        matrix: The 3x3 homography (IR -> VIS).
        key: Where the matrix came from, for messages.
        frame_sizes: The infrared and visible ``(width, height)`` it was calibrated on, if known: frames of
            other sizes are refused (:meth:`check_frames`), since a homography holds for one resolution.

    Raises:
        ConfigError: The matrix is not a valid, invertible 3x3 homography.
    """

    def __init__(self, matrix, *, key: str = "registration.matrix",
                 frame_sizes: tuple[tuple[int, int], tuple[int, int]] | None = None) -> None:
        checked = check_homography(matrix, key)
        checked.flags.writeable = False
        self._matrix = checked
        self._key = key
        self.frame_sizes = frame_sizes
        self._maps: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}
        self._lock = threading.Lock()

    @property
    def matrix(self) -> np.ndarray:
        """The homography (read-only)."""
        return self._matrix

    def check_frames(self, ir_shape: tuple[int, int], vis_shape: tuple[int, int]) -> None:
        if self.frame_sizes is None:
            return
        given = ((ir_shape[1], ir_shape[0]), (vis_shape[1], vis_shape[0]))
        if given != self.frame_sizes:
            (ir_w, ir_h), (vis_w, vis_h) = self.frame_sizes
            raise PipelineError(
                f"{self._key}: calibrated on {ir_w}x{ir_h} infrared and {vis_w}x{vis_h} visible frames, but these are "
                f"{given[0][0]}x{given[0][1]} and {given[1][0]}x{given[1][1]}: a homography holds for one resolution; "
                "calibrate this camera pair at this resolution (streamfuse calibrate)")

    def maps(self, ir_shape: tuple[int, int],
             vis_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The cached ``cv2.remap`` maps (``CV_16SC2``) and ``uint8`` valid mask (None: all valid) for these sizes."""
        key = (tuple(ir_shape[:2]), tuple(vis_shape))
        with self._lock:
            maps = self._maps.get(key)
        if maps is None:
            try:
                map_x, map_y, inside = homography_maps(self._matrix, *key)
            except PipelineError as exc:
                raise PipelineError(f"{self._key}: {exc}") from None
            maps = (*cv2.convertMaps(map_x, map_y, cv2.CV_16SC2), None if inside.all() else inside.astype(np.uint8))
            with self._lock:
                self._maps[key] = maps
        return maps

    def prepare(self, ir_shape: tuple[int, int], vis_shape: tuple[int, int]) -> None:
        self.check_frames(ir_shape, vis_shape)
        self.maps(ir_shape, vis_shape)

    def apply(self, ir: np.ndarray, vis_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
        map1, map2, valid = self.maps(ir.shape[:2], vis_shape)
        warped = cv2.remap(ir, map1, map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return warped, valid


class IdentityRegistrar(Registrar):
    """Frames are already registered (:class:`IdentityTransform`)."""

    name = "identity"

    def __init__(self) -> None:
        super().__init__(IdentityTransform())


class ResizeRegistrar(Registrar):
    """Same field of view, different resolutions (:class:`ResizeTransform`)."""

    name = "resize"

    def __init__(self) -> None:
        super().__init__(ResizeTransform())


class HomographyRegistrar(Registrar):
    """A calibrated :class:`Homography`, replaceable while running with :meth:`~Registrar.set_matrix`.

    Args:
        matrix: The 3x3 homography (IR -> VIS).
    """

    name = "homography"

    def __init__(self, matrix, *, key: str = "registration.matrix",
                 frame_sizes: tuple[tuple[int, int], tuple[int, int]] | None = None) -> None:
        super().__init__(Homography(matrix, key=key, frame_sizes=frame_sizes))

    @property
    def matrix(self) -> np.ndarray:
        """The current homography (read-only)."""
        return self.transform.matrix


@REGISTRATIONS.register("identity")
def _identity(config: RegistrationConfig) -> Registrar:
    return IdentityRegistrar()


@REGISTRATIONS.register("resize")
def _resize(config: RegistrationConfig) -> Registrar:
    return ResizeRegistrar()


@REGISTRATIONS.register("homography")
def _homography(config: RegistrationConfig) -> Registrar:
    if config.calibration is None:
        return HomographyRegistrar(config.matrix)
    sizes = calibrated_frame_sizes(config.calibration, "registration.calibration")  # its errors name the file
    return HomographyRegistrar(config.matrix, key=f"registration.calibration ({config.calibration})", frame_sizes=sizes)
