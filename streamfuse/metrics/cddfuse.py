"""Fusion metrics as MMIF-CDDFuse computes them, so streamfuse numbers can sit beside CDDFuse/FILM tables.

This module re-implements (no code copied) the metric definitions of ``utils/Evaluator.py`` in
MMIF-CDDFuse (Z. Zhao et al., "CDDFuse: Correlation-Driven Dual-Branch Feature Decomposition for
Multi-Modality Image Fusion", CVPR 2023, https://github.com/Zhaozixiang1228/MMIF-CDDFuse; the same file is
used by FILM, https://github.com/Zhaozixiang1228/IF-FILM) together with the way its ``test_IVF.py`` feeds
it: every image (infrared, visible and the fused result, which CDDFuse first writes to an 8-bit PNG) is
read by ``image_read_cv2(path, 'GRAY')``, i.e. ``cv2.imread`` (3-channel BGR), ``float32``,
``cv2.cvtColor(BGR2GRAY)`` and ``np.round`` - a gray image with integer values 0..255.

Formulas (``F`` fused, ``A`` infrared, ``B`` visible; all gray, values 0..255; means over all pixels):

* **EN** (bits): ``-sum p log2 p`` over the 256-bin histogram of ``uint8(round(F))``.
* **SD**: population standard deviation of ``F`` (``ddof=0``).
* **SF**: ``sqrt(mean(dx**2) + mean(dy**2))`` with forward differences between horizontal (``dx``)
  and vertical (``dy``) neighbours; each mean is over its own ``H x (W-1)`` / ``(H-1) x W`` differences.
* **AG**: ``mean(sqrt((Gx**2 + Gy**2) / 2))``; ``Gx``, ``Gy`` central differences ``(x[i+1] - x[i-1]) / 2``
  inside, one-sided differences on the first/last column/row (what ``np.gradient`` gives).
* **MI** (nats): ``MI(F, A) + MI(F, B)``, each the plug-in mutual information of the joint histogram of
  the pixel values with one bin per distinct value and the natural log (``sklearn.metrics.mutual_info_score``
  on the flattened images). Note the different log base from EN.
* **SCD**: ``corr(A, F - B) + corr(B, F - A)`` with Pearson's correlation over all pixels.
* **VIF**: ``VIFP(A, F) + VIFP(B, F)``, the multi-scale pixel-domain VIF (``vifp_mscale``): 4 scales,
  Gaussian windows of size ``N = 2**(5 - s) + 1`` and sigma ``N / 5``, ``'valid'`` filtering, before
  scales 2..4 the images are filtered with that scale's window and decimated by 2; noise variance
  ``sigma_nsq = 2``, ``eps = 1e-10`` and the same clamping rules; numerator and denominator (``log10``)
  are summed over all scales before dividing. A 0/0 (constant reference image) counts as 1.0.
* **Qabf**: Xydeas-Petrovic edge preservation with Sobel filters (true convolution, zero padding,
  ``'same'`` size), orientation ``arctan(Sy / Sx)`` (``pi/2`` where ``Sx == 0``) and the constants
  ``Tg=0.9994, kg=-15, Dg=0.5, Ta=0.9879, ka=-22, Da=0.8``. CDDFuse quirk reproduced: where the two
  gradient magnitudes are exactly equal the "relative strength" is set to the fused magnitude itself
  (not 1), so ``Qabf(x, x, x)`` is ``0.9994 * 0.9879 / (1 + e**-4.4) = 0.97533`` for strong edges.
  NaN when both sources have zero Sobel response everywhere (all-black sources: with zero padding any
  other constant image has edges along its border).
* **SSIM**: ``SSIM(F, A) + SSIM(F, B)`` with scikit-image's ``structural_similarity`` defaults as the
  Evaluator calls it (no keyword arguments): 7x7 uniform window, ``use_sample_covariance=True`` (variances
  scaled by 49/48), ``K1=0.01``, ``K2=0.03``, mean of the SSIM map with a 3-pixel border cropped off.

Library-version-dependent choices:

* **SSIM data range = 2.0.** The Evaluator passes no ``data_range``; CDDFuse pins scikit-image 0.19.2
  (``requirements.txt``), which then takes the range from the dtype, and the images are ``float32``, whose
  skimage ``dtype_range`` is (-1, 1): ``data_range = 2``, so ``C1 = (0.01*2)**2 = 4e-4`` and
  ``C2 = (0.03*2)**2 = 3.6e-3`` although the pixels span 0..255. scikit-image >= 0.20 refuses float input
  without ``data_range``, so the pinned 0.19 behaviour is what produced the published numbers. They agree
  with it: on CDDFuse's 25 TNO pairs a plain 8-bit average fusion scores SSIM 1.01 with range 2 (CDDFuse
  reports 1.03 for itself) but 1.46 with range 255, which would put a trivial average far above
  CDDFuse's own score. Pass ``data_range=255.0`` to :func:`ssim` for the textbook constants.
* **Precision.** CDDFuse computes in ``float32`` (its images are ``float32``), except VIF, where scipy's
  ``convolve2d`` promotes to ``float64``. This module computes everything in ``float64``; the inputs are
  identical (integers are exact in both), so results differ only by float32 rounding: on the TNO pairs at
  most 3e-5 relative for SSIM (its ``C2 = 3.6e-3`` makes near-flat windows sensitive) and below 3e-7
  for the others - far below the 2-decimal precision of published tables.
* **MI on non-integer input.** sklearn treats every distinct value as its own label; so does this
  module. Quantise a float fused image to 8 bits first (as CDDFuse's PNG round trip does) to compare
  with published numbers.

Behaviour on degenerate input (matching CDDFuse): constant images give EN = SD = SF = AG = MI = 0;
SCD is NaN when an image or a difference image is constant; a constant source contributes 1.0 to VIF;
SSIM is always defined. Minimum sizes: 7x7 for SSIM, 41x41 for VIF (four scales). Everything is
vectorised with OpenCV (no scipy / scikit-image / scikit-learn at run time): all nine metrics on a 640x480
triple take about 0.13 s on a 2-core machine.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable

import cv2
import numpy as np

from streamfuse.metrics.qabf import weighted_qabf

NAMES: tuple[str, ...] = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM")

#: Direction of improvement per metric: every CDDFuse metric is "higher is better".
BETTER: dict[str, str] = {name: "higher" for name in NAMES}

#: SSIM data range that scikit-image 0.19 inferred for CDDFuse's float32 images (dtype range -1..1).
SSIM_DATA_RANGE = 2.0

ImageLike = str | os.PathLike | np.ndarray


# --------------------------------------------------------------------------------------------- loading


def load(image: ImageLike) -> np.ndarray:
    """An image as CDDFuse's ``image_read_cv2(path, 'GRAY')`` gives it, as ``float64`` gray 0..255.

    Args:
        image: A file path (read with ``cv2.imread`` as 3-channel BGR, like CDDFuse) or an array:
            ``(H, W)`` gray, ``(H, W, 1)``, ``(H, W, 3)`` **RGB** or ``(H, W, 4)`` RGBA, ``uint8`` or any
            integer/float dtype holding values on the 0..255 scale. Colour is converted with OpenCV's
            gray weights (0.299 R + 0.587 G + 0.114 B, computed in ``float32``) and rounded, exactly as
            CDDFuse does for files; gray arrays pass through unchanged (only converted to ``float64``).

    Returns:
        A new ``(H, W)`` ``float64`` array.

    Raises:
        FileNotFoundError: The path does not exist.
        ValueError: The file cannot be decoded or is not 8-bit, or the array shape is not an image.
        TypeError: The array dtype is not numeric.
    """
    if isinstance(image, str | os.PathLike):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image not found: {path}")
        # turned as its EXIF orientation says (cv2.imread does that too; IMREAD_UNCHANGED would not)
        data = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
        if data is None:
            raise ValueError(f"cannot decode image: {path}")
        if data.dtype != np.uint8:  # OpenCV's 8-bit reading would keep the high byte: a 16-bit thermal image flat
            raise ValueError(f"{path}: CDDFuse's metrics take 8-bit images, this file decodes to {data.dtype}")
        if data.ndim == 2:
            data = cv2.cvtColor(data, cv2.COLOR_GRAY2BGR)
        return np.round(cv2.cvtColor(data.astype(np.float32), cv2.COLOR_BGR2GRAY)).astype(np.float64)
    array = np.asarray(image)
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"image array must be integer or float, got dtype {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return array.astype(np.float64)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        code = cv2.COLOR_RGB2GRAY if array.shape[2] == 3 else cv2.COLOR_RGBA2GRAY
        return np.round(cv2.cvtColor(array.astype(np.float32), code)).astype(np.float64)
    raise ValueError(f"expected a gray (H, W) or colour (H, W, 3|4) image, got shape {array.shape}")


def _size(array: np.ndarray) -> str:
    return f"{array.shape[1]}x{array.shape[0]}" if array.ndim >= 2 else str(array.shape)


def _prepare(*images: np.ndarray) -> list[np.ndarray]:
    """The arguments as 2-D float64 arrays of one size (the Evaluator's ``input_check``)."""
    arrays = [np.asarray(image, dtype=np.float64) for image in images]
    for array in arrays:
        if array.ndim != 2:
            raise ValueError(f"metrics take gray 2-D arrays (use load() first), got shape {array.shape}")
    if any(array.shape != arrays[0].shape for array in arrays):
        raise ValueError("image sizes differ (WxH): " + ", ".join(_size(array) for array in arrays))
    return arrays


# --------------------------------------------------------------------------------- single-image metrics


def en(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """Entropy of the fused image in bits (``log2``) over its 256-level histogram.

    The fused image is rounded and clipped to 0..255 before counting (CDDFuse casts with ``np.uint8``,
    which is the same for in-range values). ``ir`` and ``vis`` are only checked for size.
    """
    fused = _prepare(ir, vis, fused)[2]
    levels = np.clip(np.round(fused), 0, 255).astype(np.int64).ravel()
    counts = np.bincount(levels, minlength=256)
    p = counts[counts > 0] / levels.size
    return float(-np.sum(p * np.log2(p)))


def sd(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """Population standard deviation (``ddof=0``) of the fused image."""
    fused = _prepare(ir, vis, fused)[2]
    return float(np.std(fused))


def sf(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """Spatial frequency ``sqrt(mean(dx**2) + mean(dy**2))`` of the fused image (forward differences)."""
    fused = _prepare(ir, vis, fused)[2]
    row_freq = np.mean(np.diff(fused, axis=1) ** 2)
    col_freq = np.mean(np.diff(fused, axis=0) ** 2)
    return float(np.sqrt(row_freq + col_freq))


def ag(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """Average gradient ``mean(sqrt((Gx**2 + Gy**2) / 2))`` (central differences, one-sided at the borders)."""
    fused = _prepare(ir, vis, fused)[2]
    if min(fused.shape) < 2:
        raise ValueError(f"AG needs an image of at least 2x2 pixels, got {_size(fused)}")
    grad_y, grad_x = np.gradient(fused)
    return float(np.mean(np.sqrt((grad_x**2 + grad_y**2) / 2.0)))


# ---------------------------------------------------------------------------------- reference metrics


def _labels(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense integer labels (0..n-1 for integer data, one per distinct value otherwise) and their count."""
    flat = values.ravel()
    low, high = flat.min(), flat.max()
    if high - low < 65536 and np.array_equal(flat, np.round(flat)):
        return (flat - low).astype(np.int64), int(high - low) + 1
    uniques, inverse = np.unique(flat, return_inverse=True)
    return inverse.ravel().astype(np.int64), int(uniques.size)


def _mutual_information(x: np.ndarray, y: np.ndarray) -> float:
    """Plug-in mutual information of two label images in nats (``sklearn.metrics.mutual_info_score``)."""
    labels_x, n_x = _labels(x)
    labels_y, n_y = _labels(y)
    if n_x * n_y <= 1 << 24:
        joint = np.bincount(labels_x * n_y + labels_y, minlength=n_x * n_y).reshape(n_x, n_y)
        rows, cols = np.nonzero(joint)
        counts = joint[rows, cols].astype(np.float64)
        count_x, count_y = joint.sum(axis=1), joint.sum(axis=0)
    else:  # many distinct float values: count the occupied cells only
        pairs, counts_int = np.unique(labels_x * n_y + labels_y, return_counts=True)
        rows, cols = pairs // n_y, pairs % n_y
        counts = counts_int.astype(np.float64)
        count_x, count_y = np.bincount(labels_x, minlength=n_x), np.bincount(labels_y, minlength=n_y)
    total = float(labels_x.size)
    expected = count_x[rows].astype(np.float64) * count_y[cols].astype(np.float64)
    terms = counts / total * (np.log(counts) + math.log(total) - np.log(expected))
    return max(float(np.sum(terms)), 0.0)


def mi(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """Mutual information in nats: ``MI(F, IR) + MI(F, VIS)``, one histogram bin per distinct value."""
    ir, vis, fused = _prepare(ir, vis, fused)
    return _mutual_information(fused, ir) + _mutual_information(fused, vis)


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation over all pixels (NaN when either image is constant)."""
    dx = x - x.mean()
    dy = y - y.mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.sum(dx * dy) / np.sqrt(np.sum(dx * dx) * np.sum(dy * dy)))


def scd(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """Sum of the correlations of differences: ``corr(IR, F - VIS) + corr(VIS, F - IR)``."""
    ir, vis, fused = _prepare(ir, vis, fused)
    return _correlation(ir, fused - vis) + _correlation(vis, fused - ir)


def _gaussian_1d(size: int) -> np.ndarray:
    """Normalised 1-D factor of the MATLAB-style ``size x size`` Gaussian window with sigma ``size / 5``.

    The 2-D window ``exp(-(x^2 + y^2) / (2 sigma^2)) / sum`` is the outer product of this vector with
    itself (the tiny-value cut-off of ``fspecial`` never triggers for these sizes).
    """
    sigma = size / 5.0
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable filtering with ``kernel`` on both axes, keeping only the ``'valid'`` part."""
    radius = (kernel.size - 1) // 2
    full = cv2.sepFilter2D(image, cv2.CV_64F, kernel, kernel, borderType=cv2.BORDER_REFLECT)
    return full[radius : image.shape[0] - radius, radius : image.shape[1] - radius]


# Smallest side for which all four VIF scales keep a non-empty 'valid' region:
# 41 -(9-tap valid, /2)-> 17 -(5-tap valid, /2)-> 7 -(3-tap valid, /2)-> 3 = the last window.
_VIF_MIN_SIZE = 41


def _vifp_mscale(ref: np.ndarray, dist: np.ndarray) -> float:
    """Multi-scale pixel-domain VIF of ``dist`` against ``ref`` (CDDFuse's ``compare_viff``)."""
    if min(ref.shape) < _VIF_MIN_SIZE:
        raise ValueError(f"VIF needs images of at least {_VIF_MIN_SIZE}x{_VIF_MIN_SIZE} pixels, got {_size(ref)}")
    sigma_nsq = 2.0
    eps = 1e-10
    num = 0.0
    den = 0.0
    for scale in range(1, 5):
        size = 2 ** (5 - scale) + 1
        kernel = _gaussian_1d(size)
        if scale > 1:
            ref = _filter_valid(ref, kernel)[::2, ::2]
            dist = _filter_valid(dist, kernel)[::2, ::2]
        mu1 = _filter_valid(ref, kernel)
        mu2 = _filter_valid(dist, kernel)
        sigma1_sq = np.maximum(_filter_valid(ref * ref, kernel) - mu1 * mu1, 0.0)
        sigma2_sq = np.maximum(_filter_valid(dist * dist, kernel) - mu2 * mu2, 0.0)
        sigma12 = _filter_valid(ref * dist, kernel) - mu1 * mu2

        gain = sigma12 / (sigma1_sq + eps)
        sv_sq = sigma2_sq - gain * sigma12
        flat_ref = sigma1_sq < eps
        gain[flat_ref] = 0.0
        sv_sq[flat_ref] = sigma2_sq[flat_ref]
        sigma1_sq[flat_ref] = 0.0
        flat_dist = sigma2_sq < eps
        gain[flat_dist] = 0.0
        sv_sq[flat_dist] = 0.0
        negative = gain < 0
        sv_sq[negative] = sigma2_sq[negative]
        gain[negative] = 0.0
        sv_sq = np.maximum(sv_sq, eps)

        num += float(np.sum(np.log10(1.0 + gain * gain * sigma1_sq / (sv_sq + sigma_nsq))))
        den += float(np.sum(np.log10(1.0 + sigma1_sq / sigma_nsq)))
    if den == 0.0:  # only when the reference is constant, so num == 0 too: CDDFuse maps that 0/0 to 1.0
        return 1.0
    return num / den


def vif(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """Visual information fidelity ``VIFP(IR, F) + VIFP(VIS, F)`` (multi-scale pixel domain, 4 scales)."""
    ir, vis, fused = _prepare(ir, vis, fused)
    return _vifp_mscale(ir, fused) + _vifp_mscale(vis, fused)


# Sobel kernels of the Evaluator, flipped so that OpenCV's correlation equals scipy's convolve2d.
_SOBEL_X = np.flip(np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)).copy()
_SOBEL_Y = np.flip(np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], dtype=np.float64)).copy()


def _sobel(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient magnitude and orientation ``arctan(Sy / Sx)`` (``pi/2`` where ``Sx == 0``), zero padding."""
    sx = cv2.filter2D(image, cv2.CV_64F, _SOBEL_X, borderType=cv2.BORDER_CONSTANT)
    sy = cv2.filter2D(image, cv2.CV_64F, _SOBEL_Y, borderType=cv2.BORDER_CONSTANT)
    magnitude = np.sqrt(sx * sx + sy * sy)
    nonzero = sx != 0
    angle = np.full(image.shape, math.pi / 2)
    angle[nonzero] = np.arctan(sy[nonzero] / sx[nonzero])
    return magnitude, angle


def qabf(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """Gradient-based edge preservation Q^{AB/F} (Xydeas & Petrovic, CDDFuse variant), weights = source magnitudes."""
    ir, vis, fused = _prepare(ir, vis, fused)
    g_a, a_a = _sobel(ir)
    g_b, a_b = _sobel(vis)
    g_f, a_f = _sobel(fused)
    return weighted_qabf(g_a, a_a, g_b, a_b, g_f, a_f)


def _ssim_skimage(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """scikit-image ``structural_similarity`` defaults: 7x7 uniform window, sample covariance, 3-px crop."""
    if min(x.shape) < 7:
        raise ValueError(f"SSIM needs images of at least 7x7 pixels, got {_size(x)}")
    win = 7
    cov_norm = win * win / (win * win - 1.0)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2

    def box(image: np.ndarray) -> np.ndarray:
        # Only windows lying fully inside the image survive the crop, so the border mode is irrelevant.
        return cv2.boxFilter(image, cv2.CV_64F, (win, win), normalize=True, borderType=cv2.BORDER_REFLECT)

    ux, uy = box(x), box(y)
    vx = cov_norm * (box(x * x) - ux * ux)
    vy = cov_norm * (box(y * y) - uy * uy)
    vxy = cov_norm * (box(x * y) - ux * uy)
    ssim_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    return float(np.mean(ssim_map[pad:-pad, pad:-pad]))


def ssim(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray, *, data_range: float = SSIM_DATA_RANGE) -> float:
    """Structural similarity ``SSIM(F, IR) + SSIM(F, VIS)`` (scikit-image 0.19 defaults, data range 2).

    Args:
        ir: Infrared image.
        vis: Visible image.
        fused: Fused image.
        data_range: SSIM data range ``L`` in ``C1 = (0.01 L)**2``, ``C2 = (0.03 L)**2``. The default 2.0
            is what CDDFuse's published numbers use (see the module docstring); 255.0 gives the usual
            constants for 8-bit data.
    """
    ir, vis, fused = _prepare(ir, vis, fused)
    return _ssim_skimage(fused, ir, data_range) + _ssim_skimage(fused, vis, data_range)


METRICS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], float]] = {
    "EN": en,
    "SD": sd,
    "SF": sf,
    "AG": ag,
    "MI": mi,
    "SCD": scd,
    "VIF": vif,
    "Qabf": qabf,
    "SSIM": ssim,
}


def _resolve(metrics: Iterable[str] | None) -> list[str]:
    if metrics is None:
        return list(NAMES)
    if isinstance(metrics, str):
        metrics = [metrics]
    by_lower = {name.lower(): name for name in NAMES}
    chosen: list[str] = []
    unknown: list[str] = []
    for name in metrics:
        canonical = by_lower.get(str(name).lower())
        if canonical is None:
            unknown.append(str(name))
        elif canonical not in chosen:
            chosen.append(canonical)
    if unknown:
        raise ValueError(f"unknown CDDFuse metric(s) {', '.join(map(repr, unknown))}; valid names: {', '.join(NAMES)}")
    return chosen


def compute(ir: ImageLike, vis: ImageLike, fused: ImageLike, metrics: Iterable[str] | None = None) -> dict[str, float]:
    """CDDFuse metrics for one infrared / visible / fused triple.

    Args:
        ir: Infrared image: path or array (see :func:`load`).
        vis: Visible image: path or array.
        fused: Fused image: path or array. For numbers comparable with CDDFuse tables give the 8-bit
            result (CDDFuse writes its output to PNG and reads it back).
        metrics: Names to compute (case-insensitive, any order; default all of :data:`NAMES`).

    Returns:
        ``{name: value}`` in the requested order (NAMES order by default).

    Raises:
        ValueError: Unknown metric name (the message lists the valid ones) or images of different sizes.
    """
    names = _resolve(metrics)
    ir_img, vis_img, fused_img = load(ir), load(vis), load(fused)
    if not ir_img.shape == vis_img.shape == fused_img.shape:
        raise ValueError(
            f"image sizes differ (WxH): ir {_size(ir_img)}, vis {_size(vis_img)}, fused {_size(fused_img)}"
        )
    return {name: float(METRICS[name](ir_img, vis_img, fused_img)) for name in names}
