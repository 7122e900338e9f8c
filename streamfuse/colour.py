"""Colour handling shared by the pipeline stages: luminance extraction and chroma restoration (YCrCb)."""

from __future__ import annotations

from typing import TypeVar

import cv2
import numpy as np

Array = TypeVar("Array")  # a numpy.ndarray or a torch.Tensor (float32)

#: OpenCV's 14-bit fixed-point BT.601 coefficients of ``COLOR_YCrCb2BGR``: Cr to R, Cr to G, Cb to G, Cb to B.
CR2R, CR2G, CB2G, CB2B = 22987, -11698, -5636, 29049
#: The chroma level of gray in 8-bit YCrCb.
CHROMA_DELTA = 128
#: How far each of B, G, R lies from the luminance per level of chroma (``Cr - 128``, ``Cb - 128``).
_CHROMA_TO_BGR = ((0.0, CB2B / 16384), (CR2G / 16384, CB2G / 16384), (CR2R / 16384, 0.0))


def as_gray(image: np.ndarray) -> np.ndarray:
    """A single-channel view of ``image`` (BGR is converted with ITU-R BT.601 luma weights)."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    raise ValueError(f"expected a gray (H, W) or BGR (H, W, 3) image, got shape {image.shape}")


def has_colour(image: np.ndarray) -> bool:
    """True for a BGR image whose channels differ (on average by more than one grey level): not gray stored as RGB."""
    if image.ndim != 3 or image.shape[2] != 3:
        return False
    channels = image.astype(np.int16)
    return float(np.abs(channels - channels.mean(axis=2, keepdims=True)).mean()) > 1.0


def split_luminance(vis: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Split a visible image into its luminance and its YCrCb image (None for gray input)."""
    if vis.ndim == 2:
        return vis, None
    ycrcb = cv2.cvtColor(vis, cv2.COLOR_BGR2YCrCb)
    return ycrcb[:, :, 0], ycrcb


def fitting_chroma(luma: Array, cr: Array, cb: Array) -> tuple[Array, Array]:
    """The chroma offsets ``(Cr - 128, Cb - 128)``, shrunk towards gray just enough that the colour at
    ``luma`` fits in the RGB cube (0..255 per channel): float32 levels, the same for NumPy and torch.

    Clipping the channels instead would change the luminance the fuser chose: a hot target fused into a
    saturated red sign, or a bright MRI region under a dark blue PET colour, would come out darker than
    the fused image says. Desaturating keeps the luminance (to within a level) and the hue.
    """
    cr, cb = cr - CHROMA_DELTA, cb - CHROMA_DELTA
    scale = 1.0 + 0.0 * luma  # ones of luma's kind (NumPy or torch)
    for per_cr, per_cb in _CHROMA_TO_BGR:
        offset = per_cr * cr + per_cb * cb
        room = (offset > 0) * (255 - luma) + (offset < 0) * luma + (offset == 0)  # no offset: no limit
        scale = scale.clip(max=room / (abs(offset) + 1e-6))
    return cr * scale, cb * scale


def merge_luminance(luma: np.ndarray, ycrcb: np.ndarray | None) -> np.ndarray:
    """Put a fused luminance back with the visible chroma (:func:`fitting_chroma`); gray output when the
    visible input was gray."""
    if ycrcb is None:
        return luma
    ycrcb[:, :, 0] = luma
    bgr = cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR)
    # Only pixels with a channel at 0 or 255 can have been clipped; everywhere else the chroma fits as it is.
    rows, cols = np.nonzero(cv2.inRange(bgr, (1, 1, 1), (254, 254, 254)) == 0)
    if rows.size:
        pixels = ycrcb[rows, cols].astype(np.float32)
        cr, cb = fitting_chroma(pixels[:, 0], pixels[:, 1], pixels[:, 2])
        fitted = np.stack([pixels[:, 0], CHROMA_DELTA + cr.astype(np.int32), CHROMA_DELTA + cb.astype(np.int32)],
                          axis=-1)
        # truncated towards 0: never more colour than fits
        bgr[rows, cols] = cv2.cvtColor(fitted.astype(np.uint8)[:, None], cv2.COLOR_YCrCb2BGR)[:, 0]
    return bgr
