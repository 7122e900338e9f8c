"""Colour handling shared by fusers: luminance extraction and chroma restoration (YCrCb)."""

from __future__ import annotations

import cv2
import numpy as np


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


def merge_luminance(luma: np.ndarray, ycrcb: np.ndarray | None) -> np.ndarray:
    """Put a fused luminance back with the visible chroma; gray output when the visible input was gray."""
    if ycrcb is None:
        return luma
    ycrcb[:, :, 0] = luma
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR)
