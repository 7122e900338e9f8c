"""The 13 fusion quality metrics of the VIFB benchmark, reproduced in NumPy/OpenCV.

Reference:
    X. Zhang, P. Ye, G. Xiao, "VIFB: A Visible and Infrared Image Fusion Benchmark", in Proc. IEEE/CVF
    Conference on Computer Vision and Pattern Recognition Workshops (CVPRW), 2020.
    Code: GitHub repository ``xingchenzhang/VIFB``.

Every definition follows the arithmetic of the MATLAB files ``metrics/metrics<Name>.m`` of that repository
(``metricsCross_entropy.m``, ``metricsEntropy.m``, ``metricsMutinf.m``, ``metricsPsnr.m``,
``metricsAvg_gradient.m``, ``metricsEdge_intensity.m``, ``metricsQabf.m``, ``metricsVariance.m``,
``metricsSpatial_frequency.m``, ``metricsRmse.m``, ``metricsSsim.m``, ``metricsQcb.m``, ``metricsQcv.m``) as
called by ``compute_metrics.m``: each receives the visible image, the infrared image and the fused image as
``imread`` returns them (``uint8``; colour as ``H x W x 3`` RGB). The code here is an independent
re-implementation of those formulas, including their quirks, which are kept on purpose so that numbers are
comparable with published VIFB tables:

* ``Rmse`` is ``(e(vis, F) + e(ir, F)) / 2`` with ``e(a, b) = sqrt(sum((a - b)^2)) / (M * N)`` -- the root of
  the *sum* of squared errors divided by the pixel count, not a root mean square; ``Psnr`` is
  ``20 log10(255 / sqrt((e(vis, F) + e(ir, F)) / 2))`` with the same ``e``. (VIFB's published
  ``carLight_CBF`` values, Psnr 58.91 and Rmse 0.083579, satisfy exactly this relation.)
* ``Variance`` is the (population) standard deviation of the fused image.
* ``Mutinf`` uses natural logarithms (nats) and is the *sum* MI(vis, F) + MI(ir, F); ``Ssim`` is the *sum*
  SSIM(vis, F) + SSIM(ir, F), so it is 2 (not 1) when the fused image equals both sources.
* ``Cross_entropy`` is the mean over the two sources of ``sum p_src log2(p_src / p_F)`` over the grey levels
  present in both histograms.
* ``Qabf`` scales the images by 255 before the Sobel filtering, and where the source and fused gradient
  magnitudes are equal it uses the fused magnitude itself (not 1) as the "relative strength".

Colour handling is VIFB's: most metrics (Cross_entropy, Entropy, Mutinf, Psnr, Rmse, Qabf, Variance, Ssim,
Qcb, Qcv) loop over the channels of an RGB fused image -- pairing channel k of the fused image with channel k
of each RGB source, or with the whole of a grey source -- and average the per-channel values. When the fused
image is grey and a source is RGB, the source is converted with MATLAB's ``rgb2gray`` (weights
0.298936021293775, 0.587043074451121, 0.114020904255103; rounded half away from zero back to ``uint8`` where
VIFB passes it ``uint8``, kept unrounded where VIFB has already converted it to ``double``: Psnr, Rmse, Qabf).
Avg_gradient averages per-channel values, Edge_intensity averages over all pixels of all channels, and
Spatial_frequency treats an ``H x W x 3`` image as the ``H x 3W`` matrix MATLAB's two-subscript indexing sees
(the three channels side by side, including the two seams between them).

Where exact agreement with MATLAB is impossible or uncertain, and why:

* Image decoding: :func:`load` uses OpenCV. PNG/BMP/TIFF decode bit-exactly; JPEG decoders (MATLAB's libjpeg
  vs. OpenCV's libjpeg-turbo) may differ by +-1 grey level in some pixels, which moves every metric a little.
* Floating point: summation order, OpenCV's filters (``filter2D``/``sepFilter2D``; large kernels may be applied
  through a DFT) and NumPy's FFT (vs. FFTW in MATLAB) give relative differences of about 1e-12 or below.
* Qcb and Qcv filter in the frequency domain; MATLAB's ``ifft2`` returns complex arrays whose imaginary parts
  are round-off (about 1e-16, the filters are even), which then pass through ``abs`` / ``.^2``. Here the real
  inverse transform is used; the difference is at round-off level.
* ``freqspace`` (Qcb, Qcv) is taken as documented by MATLAB, ``((0:n-1) - floor(n/2)) * 2/n``, and ``blkproc``
  (Qcv) as documented, zero-padding the image to a multiple of the 16 x 16 block (a padded block's mean is
  still taken over 256 values). Neither could be run against MATLAB here.
* Inputs VIFB's code cannot take (it raises an error and records no value) are given a defined meaning: an RGB
  fused image with a grey *visible* image (VIFB only handles a grey infrared image there) pairs every fused
  channel with the grey image; a grey fused image with an RGB source in Qcb or Qcv converts the source with
  ``rgb2gray`` (unrounded) first.
* Non-finite results are VIFB's own and are kept (``compute_metrics.m`` averages over images with
  ``nanmean``): Psnr is ``inf`` when the fused image equals both sources; Qabf is NaN when both sources are
  all zero (0/0; constant non-zero sources still have border gradients because ``conv2`` zero-pads); Qcb and
  Qcv are NaN when any of the three images is constant and non-zero (``normalize1`` divides 0 by 0); Qcb is
  also NaN for an all-zero image (its local contrast is 0/0) and Qcv when both sources are all zero. Ssim
  is NaN for images smaller than 11 x 11 (empty 'valid' window). No warnings are emitted for these.
* Qabf with a grey fused image and an RGB source: the source goes through the unrounded ``rgb2gray``, so its
  Sobel responses are not integers and whether one is exactly 0 (angle ``pi/2``) or +-1e-11 (angle
  ``+-pi/2``) depends on the order of the additions in ``conv2``; such pixels can move the value by ~1e-3.
  For ``uint8`` inputs otherwise all of Qabf's filtering is exact integer arithmetic and agrees exactly.
* Float inputs are not what VIFB sees; they are quantised as ``imwrite`` + ``imread`` would (see :func:`load`).

Verification: the VIFB ``.m`` files were run in GNU Octave 7.3 (with MATLAB-semantics stand-ins for
``rgb2gray``, ``freqspace`` and ``blkproc``, which Octave lacks or defines differently) on grey, RGB and mixed
inputs, odd sizes and constant images; all 13 metrics agree to better than 1e-12 relative (NaN where Octave
gives NaN), except the Qabf case above. VIFB's published per-image values could not be checked directly:
its fused images are not available here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable

import cv2
import numpy as np

from streamfuse.metrics.qabf import weighted_qabf

NAMES: tuple[str, ...] = ("Cross_entropy", "Entropy", "Mutinf", "Psnr", "Avg_gradient", "Edge_intensity", "Qabf",
                          "Variance", "Spatial_frequency", "Rmse", "Ssim", "Qcb", "Qcv")
"""The VIFB metric names, in the order of the VIFB paper's tables."""

BETTER: dict[str, str] = {name: ("lower" if name in ("Cross_entropy", "Rmse", "Qcv") else "higher") for name in NAMES}
"""Whether a higher or a lower value is better, as stated in the VIFB paper."""

_GRAY_WEIGHTS = (0.298936021293775, 0.587043074451121, 0.114020904255103)  # MATLAB rgb2gray

# Qabf model parameters (Xydeas & Petrovic), as in metricsQabf.m.
_SOBEL_H1 = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])  # fspecial('sobel')
_SOBEL_H3 = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


# ----------------------------------------------------------------------------------------------------------------
# Input handling
# ----------------------------------------------------------------------------------------------------------------

def _matlab_round(x: np.ndarray) -> np.ndarray:
    """Round half away from zero, as MATLAB's ``round`` and its integer casts do (NumPy rounds half to even)."""
    ax = np.abs(x)
    fl = np.floor(ax)
    return np.copysign(fl + (ax - fl >= 0.5), x)


def _as_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Validate an array and bring it to what ``imread`` would give: ``uint8``, ``(H, W)`` or ``(H, W, 3)``."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3) or arr.size == 0:
        raise ValueError(f"{what}: expected a grey (H, W) or RGB (H, W, 3) image, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        raise ValueError(f"{what}: boolean images are not supported")
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"{what}: integer image values must lie in [0, 255] (VIFB uses 8-bit images), "
                             f"got [{lo}, {hi}]")
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        data = arr.astype(np.float64)
        if not np.all(np.isfinite(data)):
            raise ValueError(f"{what}: the image holds NaN or infinite values")
        if data.max() <= 1.0:
            data = data * 255.0
        return np.clip(_matlab_round(data), 0, 255).astype(np.uint8)
    raise ValueError(f"{what}: unsupported dtype {arr.dtype}")


def load(image: str | os.PathLike | np.ndarray) -> np.ndarray:
    """An image as MATLAB's ``imread`` gives it to VIFB's metrics.

    Args:
        image: A path to an image file, or an array.

            * Files are read with OpenCV as stored, but turned as their EXIF orientation says (as ``streamfuse
              fuse`` reads them, so that its outputs are scored against the images it fused; MATLAB's ``imread``
              ignores the tag, which the benchmark's images do not have); colour is returned in RGB order, an
              alpha channel is dropped. Files that are not 8-bit raise ``ValueError``. (A paletted
              image is expanded to its colours, where ``imread`` would return the palette indices.)
            * ``uint8`` arrays are passed through (an ``(H, W, 1)`` array becomes ``(H, W)``, a 4th channel is
              dropped). Colour arrays are taken to be RGB already.
            * Other integer arrays must hold values in [0, 255] and are cast to ``uint8``.
            * Float arrays are quantised as MATLAB's ``imwrite`` + ``imread`` would store them: an array whose
              maximum is <= 1 is taken to be in [0, 1] and multiplied by 255, anything else is taken to be in
              [0, 255]; values are then rounded half away from zero and clipped to [0, 255]. (A float image in
              [0, 255] that is so dark that its maximum is <= 1 is therefore misread as a [0, 1] image.)

    Returns:
        ``uint8`` array, ``(H, W)`` for grey or ``(H, W, 3)`` RGB.

    Raises:
        FileNotFoundError: The path does not exist.
        ValueError: The file cannot be decoded, is not 8-bit, or the array has an unsupported shape or dtype.
    """
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such image file")
        data = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
        if data is None:
            raise ValueError(f"{path}: not a readable image")
        if data.dtype != np.uint8:
            raise ValueError(f"{path}: VIFB's metrics take 8-bit images, this file decodes to {data.dtype}")
        if data.ndim == 3 and data.shape[2] == 3:
            data = cv2.cvtColor(data, cv2.COLOR_BGR2RGB)
        return _as_image(data, path)
    return _as_image(image)


def _prepare(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate three arrays and check that their sizes agree."""
    ir, vis, fused = _as_image(ir, "ir"), _as_image(vis, "vis"), _as_image(fused, "fused")
    sizes = {"ir": ir.shape[:2], "vis": vis.shape[:2], "fused": fused.shape[:2]}
    if len(set(sizes.values())) > 1:
        described = ", ".join(f"{k} {h}x{w}" for k, (h, w) in sizes.items())
        raise ValueError(f"image sizes differ (height x width): {described}")
    return ir, vis, fused


def _rgb2gray(image: np.ndarray, rounded: bool) -> np.ndarray:
    """MATLAB ``rgb2gray``: float result, rounded half away from zero to ``uint8`` if ``rounded``."""
    if image.ndim == 2:
        return image
    rgb = image.astype(np.float64)
    gray = rgb[:, :, 0] * _GRAY_WEIGHTS[0] + rgb[:, :, 1] * _GRAY_WEIGHTS[1] + rgb[:, :, 2] * _GRAY_WEIGHTS[2]
    if rounded:
        return np.clip(_matlab_round(gray), 0, 255).astype(np.uint8)
    return gray


def _channel_triples(ir: np.ndarray, vis: np.ndarray,
                     fused: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """VIFB's channel loop: ``(vis_k, ir_k, fused_k)`` per fused channel, or one triple for a grey fused image.

    For a grey fused image the sources are passed whole (possibly RGB) and each metric converts them as VIFB's
    inner function does. For an RGB fused image channel k of an RGB source, or a grey source whole, is used.
    """
    if fused.ndim == 2:
        return [(vis, ir, fused)]

    def pick(img: np.ndarray, k: int) -> np.ndarray:
        return img[:, :, k] if img.ndim == 3 else img

    return [(pick(vis, k), pick(ir, k), fused[:, :, k]) for k in range(fused.shape[2])]


def _per_channel_mean(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray,
                      single: Callable[[np.ndarray, np.ndarray, np.ndarray], float]) -> float:
    """Mean of ``single(vis_k, ir_k, fused_k)`` over VIFB's channel loop."""
    values = [single(v, i, f) for v, i, f in _channel_triples(ir, vis, fused)]
    return float(np.mean(values))


def _histogram(image: np.ndarray) -> np.ndarray:
    """256-bin histogram of a ``uint8`` image (bin k counts grey level k)."""
    return np.bincount(image.ravel(), minlength=256).astype(np.float64)


def _filter_same(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """MATLAB ``filter2(kernel, image, 'same')``: correlation, zero padding, odd square kernel."""
    return cv2.filter2D(image, cv2.CV_64F, kernel, borderType=cv2.BORDER_CONSTANT)


def _gaussian_1d(radius: int, sigma: float) -> np.ndarray:
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    return np.exp(-(x * x) / (2.0 * sigma * sigma))


# ----------------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------------

def _cross_entropy_pair(src: np.ndarray, fused: np.ndarray) -> float:
    p1 = _histogram(_rgb2gray(src, rounded=True)) / src.shape[0] / src.shape[1]
    p2 = _histogram(fused) / src.shape[0] / src.shape[1]
    both = (p1 != 0) & (p2 != 0)
    return float(np.sum(p1[both] * np.log2(p1[both] / p2[both])))


def cross_entropy(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """VIFB ``Cross_entropy`` (lower is better).

    ``(CE(vis, F) + CE(ir, F)) / 2`` with ``CE(S, F) = sum_l p_S(l) log2(p_S(l) / p_F(l))`` over the grey levels
    l whose frequency is non-zero in both 256-bin histograms. Per fused channel, averaged; a grey fused image
    with an RGB source uses ``rgb2gray`` (rounded) of the source.
    """
    ir, vis, fused = _prepare(ir, vis, fused)
    return _per_channel_mean(ir, vis, fused,
                             lambda v, i, f: (_cross_entropy_pair(v, f) + _cross_entropy_pair(i, f)) / 2.0)


def _entropy_single(fused: np.ndarray) -> float:
    p = _histogram(fused) / fused.size
    p = p[p != 0]
    return float(-np.sum(p * np.log2(p)))


def entropy(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """VIFB ``Entropy`` (higher is better): ``-sum p log2 p`` of the fused 256-bin histogram, mean over channels.

    The sources are not used (they are checked for size only).
    """
    ir, vis, fused = _prepare(ir, vis, fused)
    return _per_channel_mean(ir, vis, fused, lambda v, i, f: _entropy_single(f))


def _mi_levels(image: np.ndarray) -> np.ndarray:
    """Min-max normalise to [0, 1], scale by 255 and round as ``int16`` does (levels 0..255)."""
    data = image.astype(np.float64)
    lo, hi = data.min(), data.max()
    if hi != lo:
        data = (data - lo) / (hi - lo)
    else:
        data = np.zeros_like(data)
    return _matlab_round(data * 255.0).astype(np.int64)


def _plogp_sum(counts: np.ndarray) -> float:
    p = counts[counts != 0] / counts.sum()
    return float(np.sum(-p * np.log(p)))


def _mutual_information(src: np.ndarray, fused: np.ndarray) -> float:
    a = _mi_levels(_rgb2gray(src, rounded=True))
    b = _mi_levels(fused)
    joint = np.bincount((a * 256 + b).ravel(), minlength=256 * 256).astype(np.float64)
    ha = np.bincount(a.ravel(), minlength=256).astype(np.float64)
    hb = np.bincount(b.ravel(), minlength=256).astype(np.float64)
    return _plogp_sum(ha) + _plogp_sum(hb) - _plogp_sum(joint)


def mutinf(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """VIFB ``Mutinf`` (higher is better): ``MI(vis, F) + MI(ir, F)`` in nats (natural log).

    Each image of a pair is min-max normalised and rounded to 256 levels (a constant image becomes all 0)
    before its 256 x 256 joint histogram is taken; ``MI = H(a) + H(b) - H(a, b)``. Per fused channel,
    averaged; a grey fused image with an RGB source uses ``rgb2gray`` (rounded) of the source.
    """
    ir, vis, fused = _prepare(ir, vis, fused)
    return _per_channel_mean(ir, vis, fused,
                             lambda v, i, f: _mutual_information(v, f) + _mutual_information(i, f))


def _vifb_error(src: np.ndarray, fused: np.ndarray) -> float:
    """VIFB's ``mse``: ``sqrt(sum((a - b)^2)) / (M * N)`` on doubles (RGB source: unrounded rgb2gray)."""
    a = _rgb2gray(src.astype(np.float64), rounded=False)
    diff = a - fused.astype(np.float64)
    return math.sqrt(float(np.sum(diff * diff))) / (a.shape[0] * a.shape[1])


def _psnr_single(vis: np.ndarray, ir: np.ndarray, fused: np.ndarray) -> float:
    mes = (_vifb_error(vis, fused) + _vifb_error(ir, fused)) / 2.0
    if mes == 0.0:
        return math.inf  # MATLAB: 20*log10(255/0) = Inf
    return 20.0 * math.log10(255.0 / math.sqrt(mes))


def psnr(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """VIFB ``Psnr`` (higher is better): ``20 log10(255 / sqrt((e(vis, F) + e(ir, F)) / 2))``.

    ``e(a, b) = sqrt(sum((a - b)^2)) / (M * N)`` (VIFB's "mse", see the module docstring), so values are
    around 55-65 dB for typical images. Per fused channel, averaged; ``inf`` if F equals both sources.
    """
    ir, vis, fused = _prepare(ir, vis, fused)
    return _per_channel_mean(ir, vis, fused, _psnr_single)


def rmse(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """VIFB ``Rmse`` (lower is better): ``(e(vis, F) + e(ir, F)) / 2``, ``e(a, b) = sqrt(sum((a-b)^2)) / (M*N)``.

    Per fused channel, averaged; a grey fused image with an RGB source uses the unrounded ``rgb2gray``.
    """
    ir, vis, fused = _prepare(ir, vis, fused)
    return _per_channel_mean(ir, vis, fused,
                             lambda v, i, f: (_vifb_error(v, f) + _vifb_error(i, f)) / 2.0)


def avg_gradient(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """VIFB ``Avg_gradient`` (higher is better), fused image only, mean over its channels.

    Per channel ``sum(sqrt((Gx^2 + Gy^2) / 2)) / ((M - 1) (N - 1))`` with MATLAB ``gradient`` (central
    differences inside, one-sided differences on the border); the sum runs over all M x N pixels.
    """
    ir, vis, fused = _prepare(ir, vis, fused)
    data = fused.astype(np.float64)
    if data.ndim == 2:
        data = data[:, :, None]
    rows, cols = data.shape[:2]
    if rows < 2 or cols < 2:
        raise ValueError(f"Avg_gradient needs an image of at least 2 x 2 pixels, got {rows} x {cols}")
    values = []
    for k in range(data.shape[2]):
        gy, gx = np.gradient(data[:, :, k])
        values.append(float(np.sum(np.sqrt((gx * gx + gy * gy) / 2.0))) / ((rows - 1) * (cols - 1)))
    return float(np.mean(values))


def edge_intensity(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """VIFB ``Edge_intensity`` (higher is better): mean Sobel magnitude of the fused image.

    ``gx = imfilter(F, fspecial('sobel'), 'replicate')``, ``gy`` with the transposed kernel (correlation,
    replicated border); the mean of ``sqrt(gx^2 + gy^2)`` is taken over all pixels of all channels.
    """
    ir, vis, fused = _prepare(ir, vis, fused)
    data = fused.astype(np.float64)
    gx = cv2.filter2D(data, cv2.CV_64F, _SOBEL_H1, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.filter2D(data, cv2.CV_64F, np.ascontiguousarray(_SOBEL_H1.T), borderType=cv2.BORDER_REPLICATE)
    return float(np.mean(np.sqrt(gx * gx + gy * gy)))


def _sobel_conv_same(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``conv2(p, h3, 'same')`` and ``conv2(p, h1, 'same')`` (true convolution, zero padding)."""
    sx = _filter_same(image, np.ascontiguousarray(_SOBEL_H3[::-1, ::-1]))
    sy = _filter_same(image, np.ascontiguousarray(_SOBEL_H1[::-1, ::-1]))
    return sx, sy


def qabf_edges(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel magnitude and orientation as metricsQabf.m computes them (``pi/2`` where the x response is 0)."""
    sx, sy = _sobel_conv_same(image)
    magnitude = np.sqrt(sx * sx + sy * sy)
    zero = sx == 0
    angle = np.where(zero, np.pi / 2, np.arctan(sy / np.where(zero, 1.0, sx)))
    return magnitude, angle


def _qabf_single(vis: np.ndarray, ir: np.ndarray, fused: np.ndarray) -> float:
    p_a = 255.0 * _rgb2gray(vis.astype(np.float64), rounded=False)
    p_b = 255.0 * _rgb2gray(ir.astype(np.float64), rounded=False)
    p_f = 255.0 * fused.astype(np.float64)
    g_a, a_a = qabf_edges(p_a)
    g_b, a_b = qabf_edges(p_b)
    g_f, a_f = qabf_edges(p_f)
    return weighted_qabf(g_a, a_a, g_b, a_b, g_f, a_f)  # NaN like MATLAB's 0/0 for two constant sources


def qabf(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """VIFB ``Qabf`` (Xydeas-Petrovic edge preservation, higher is better).

    Sobel responses by ``conv2(., 'same')`` of the images scaled by 255; strength ratio ``G`` (smaller over
    larger magnitude, or the fused magnitude where they are equal) and orientation agreement
    ``A = 1 - |alpha_S - alpha_F| / (pi/2)`` (``alpha = atan(Sy/Sx)``, ``pi/2`` where ``Sx = 0``) give
    ``Q = 0.9994 / (1 + e^(-15 (G - 0.5))) * 0.9879 / (1 + e^(-22 (A - 0.8)))``; the result is
    ``sum(Q_AF gA + Q_BF gB) / sum(gA + gB)``. Per fused channel, averaged; a grey fused image with an RGB
    source uses the unrounded ``rgb2gray``. NaN when both sources are all zero. The best value, for
    ``F = vis = ir``, is ``0.9994 * 0.9879 / (1 + e^-4.4) = 0.97533``.
    """
    ir, vis, fused = _prepare(ir, vis, fused)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _per_channel_mean(ir, vis, fused, _qabf_single)


def variance(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """VIFB ``Variance`` (higher is better): ``sqrt(mean((F - mean(F))^2))`` -- a standard deviation.

    Per fused channel, averaged. The sources are not used (they are checked for size only).
    """
    ir, vis, fused = _prepare(ir, vis, fused)

    def single(v: np.ndarray, i: np.ndarray, f: np.ndarray) -> float:
        data = f.astype(np.float64)
        return math.sqrt(float(np.sum((data - data.mean()) ** 2)) / data.size)

    return _per_channel_mean(ir, vis, fused, single)


def spatial_frequency(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """VIFB ``Spatial_frequency`` (higher is better): ``sqrt(RF + CF)`` of the fused image.

    ``RF = sum (F(i, j) - F(i, j-1))^2 / (M N)``, ``CF = sum (F(i, j) - F(i-1, j))^2 / (M N)``. An RGB image is
    processed, as MATLAB's ``[m, n] = size(F)`` and ``F(i, j)`` see it, as the M x 3N matrix ``[R G B]``: its
    horizontal differences include the two seams between the channels, and ``N`` is three times the width.
    """
    ir, vis, fused = _prepare(ir, vis, fused)
    data = fused.astype(np.float64)
    if data.ndim == 3:
        data = np.concatenate([data[:, :, k] for k in range(data.shape[2])], axis=1)
    rows, cols = data.shape
    row_diff = np.diff(data, axis=1)
    col_diff = np.diff(data, axis=0)
    rf = float(np.sum(row_diff * row_diff)) / (rows * cols)
    cf = float(np.sum(col_diff * col_diff)) / (rows * cols)
    return math.sqrt(rf + cf)


def _ssim_single_pair(src: np.ndarray, fused: np.ndarray) -> float:
    a = _rgb2gray(src, rounded=True).astype(np.float64)
    b = fused.astype(np.float64)
    if a.shape[0] < 11 or a.shape[1] < 11:
        return math.nan  # MATLAB: mean2 of an empty 'valid' map
    g = _gaussian_1d(5, 1.5)
    g /= g.sum()

    def valid(x: np.ndarray) -> np.ndarray:
        return cv2.sepFilter2D(x, cv2.CV_64F, g, g, borderType=cv2.BORDER_REFLECT)[5:-5, 5:-5]

    c1 = (0.01 * 255) ** 2
    c2 = (0.03 * 255) ** 2
    mu_a, mu_b = valid(a), valid(b)
    mu_a_sq, mu_b_sq, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    var_a = valid(a * a) - mu_a_sq
    var_b = valid(b * b) - mu_b_sq
    cov = valid(a * b) - mu_ab
    ssim_map = ((2 * mu_ab + c1) * (2 * cov + c2)) / ((mu_a_sq + mu_b_sq + c1) * (var_a + var_b + c2))
    return float(np.mean(ssim_map))


def ssim(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """VIFB ``Ssim`` (higher is better): ``SSIM(vis, F) + SSIM(ir, F)`` (so 2 at best).

    Wang et al. SSIM with an 11 x 11 Gaussian window (sigma 1.5), ``filter2(.., 'valid')``, ``K = (0.01, 0.03)``,
    ``L = 255``, mean of the map. Per fused channel, averaged; a grey fused image with an RGB source uses
    ``rgb2gray`` (rounded) of the source.
    """
    ir, vis, fused = _prepare(ir, vis, fused)
    return _per_channel_mean(ir, vis, fused, lambda v, i, f: _ssim_single_pair(v, f) + _ssim_single_pair(i, f))


def _normalize1(image: np.ndarray) -> np.ndarray:
    """Z. Liu's ``normalize1``: min-max to [0, 255] and round; all-zero images unchanged; NaN if constant != 0."""
    data = image.astype(np.float64)
    hi, lo = data.max(), data.min()
    if hi == 0 and lo == 0:
        return data
    if hi == lo:
        return np.full_like(data, np.nan)  # MATLAB: (data - lo) / 0 = 0/0
    return _matlab_round((data - lo) / (hi - lo) * 255.0)


def _freqspace(n: int) -> np.ndarray:
    """MATLAB ``freqspace`` for one dimension: ``((0:n-1) - floor(n/2)) * 2/n``."""
    return (np.arange(n, dtype=np.float64) - (n // 2)) * (2.0 / n)


def _radial_frequency(rows: int, cols: int, scale_rows: float, scale_cols: float) -> np.ndarray:
    """``r = sqrt(u^2 + v^2)`` with ``[u, v] = freqspace([rows, cols], 'meshgrid')`` scaled, centred layout."""
    u = scale_cols * _freqspace(cols)
    v = scale_rows * _freqspace(rows)
    return np.sqrt(u[None, :] ** 2 + v[:, None] ** 2)


def _frequency_filter(image: np.ndarray, centred_response: np.ndarray) -> np.ndarray:
    """``ifft2(ifftshift(fftshift(fft2(image)) .* response))`` for an even real response (real result)."""
    response = np.fft.ifftshift(centred_response)[:, : image.shape[1] // 2 + 1]
    return np.fft.irfft2(np.fft.rfft2(image) * response, s=image.shape)


def _qcb_contrast_power(image: np.ndarray, csf: np.ndarray) -> np.ndarray:
    """CSF filtering, then Peli's band-limited contrast ``|G2 * I / G4 * I - 1|`` and the masking ``C^3/(C^2+Z)``."""
    filtered = _frequency_filter(image, csf)
    k1 = _gaussian_1d(15, 2.0)
    k2 = _gaussian_1d(15, 4.0)
    # gaussian2d(): exp(-(x^2+y^2)/(2 s^2)) / (2 pi s^2) on a 31 x 31 grid, unnormalised; separable.
    buff = cv2.sepFilter2D(filtered, cv2.CV_64F, k1, k1 / (2 * np.pi * 4.0), borderType=cv2.BORDER_CONSTANT)
    buff1 = cv2.sepFilter2D(filtered, cv2.CV_64F, k2, k2 / (2 * np.pi * 16.0), borderType=cv2.BORDER_CONSTANT)
    contrast = np.abs(buff / buff1 - 1.0)
    return contrast ** 3 / (contrast ** 2 + 0.0001)


def _qcb_single(vis: np.ndarray, ir: np.ndarray, fused: np.ndarray) -> float:
    im1 = _normalize1(_rgb2gray(vis.astype(np.float64), rounded=False))
    im2 = _normalize1(_rgb2gray(ir.astype(np.float64), rounded=False))
    imf = _normalize1(fused.astype(np.float64))
    rows, cols = im1.shape
    r = _radial_frequency(rows, cols, rows / 30, cols / 30)
    csf = np.exp(-((r / 15.3870) ** 2)) - 0.7622 * np.exp(-((r / 1.3456) ** 2))  # DoG contrast sensitivity
    c1p = _qcb_contrast_power(im1, csf)
    c2p = _qcb_contrast_power(im2, csf)
    cfp = _qcb_contrast_power(imf, csf)
    # Evaluated exactly as the MATLAB expression, both quotients everywhere (0 * inf gives NaN there too).
    mask = (c1p < cfp).astype(np.float64)
    q1f = (c1p / cfp) * mask + (cfp / c1p) * (1 - mask)
    mask = (c2p < cfp).astype(np.float64)
    q2f = (c2p / cfp) * mask + (cfp / c2p) * (1 - mask)
    ramda1 = (c1p * c1p) / (c1p * c1p + c2p * c2p)
    ramda2 = (c2p * c2p) / (c1p * c1p + c2p * c2p)
    return float(np.mean(ramda1 * q1f + ramda2 * q2f))


def qcb(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """VIFB ``Qcb`` (Chen-Blum, higher is better).

    Images min-max normalised to rounded [0, 255]; filtered in the frequency domain with the DoG contrast
    sensitivity ``exp(-(r/15.387)^2) - 0.7622 exp(-(r/1.3456)^2)`` (``r`` from ``freqspace`` scaled by size/30);
    local contrast ``C = |G_2 * I / G_4 * I - 1|`` (31 x 31 Gaussians, sigma 2 and 4, zero padding) masked as
    ``C' = C^3 / (C^2 + 1e-4)``; preservation ``Q_SF = min(C'_S, C'_F) / max(C'_S, C'_F)`` weighted by
    saliency ``C'_S^2 / (C'_vis^2 + C'_ir^2)``; mean of the map. Per fused channel, averaged. 1 when
    ``F = vis = ir``; NaN when any image is constant (as in VIFB).
    """
    ir, vis, fused = _prepare(ir, vis, fused)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _per_channel_mean(ir, vis, fused, _qcb_single)


def _block_sum(data: np.ndarray, size: int = 16) -> np.ndarray:
    """``blkproc(data, [size size], @(x) sum(x(:)))`` with zero padding to a multiple of the block size."""
    rows, cols = data.shape
    pad_r, pad_c = -rows % size, -cols % size
    if pad_r or pad_c:
        data = np.pad(data, ((0, pad_r), (0, pad_c)))
    return data.reshape(data.shape[0] // size, size, data.shape[1] // size, size).sum(axis=(1, 3))


def _qcv_single(vis: np.ndarray, ir: np.ndarray, fused: np.ndarray) -> float:
    im1 = _normalize1(_rgb2gray(vis.astype(np.float64), rounded=False))
    im2 = _normalize1(_rgb2gray(ir.astype(np.float64), rounded=False))
    imf = _normalize1(fused.astype(np.float64))
    flt1 = _SOBEL_H3  # [-1 0 1; -2 0 2; -1 0 1]
    flt2 = -_SOBEL_H1  # [-1 -2 -1; 0 0 0; 1 2 1]

    def saliency(image: np.ndarray) -> np.ndarray:
        gx = _filter_same(image, flt1)
        gy = _filter_same(image, flt2)
        return _block_sum(np.sqrt(gx * gx + gy * gy) ** 5)

    ramda1 = saliency(im1)
    ramda2 = saliency(im2)
    rows, cols = im1.shape
    r = _radial_frequency(rows, cols, rows / 8, cols / 8)
    mannos = 2.6 * (0.0192 + 0.144 * r) * np.exp(-((0.144 * r) ** 1.1))  # Mannos-Sakrison CSF
    d1 = _block_sum(_frequency_filter(im1 - imf, mannos) ** 2) / 256.0
    d2 = _block_sum(_frequency_filter(im2 - imf, mannos) ** 2) / 256.0
    return float(np.sum(ramda1 * d1 + ramda2 * d2) / np.sum(ramda1 + ramda2))  # 0/0 -> NaN, as in MATLAB


def qcv(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """VIFB ``Qcv`` (Chen-Varshney, lower is better).

    Images min-max normalised to rounded [0, 255]; per 16 x 16 block the saliency ``lambda = sum(G^5)`` of the
    source's Sobel magnitude (``filter2``, zero padding) and the mean square ``D`` of the source-minus-fused
    difference filtered with the Mannos-Sakrison CSF (``r`` from ``freqspace`` scaled by size/8); the result is
    ``sum(lambda_vis D_vis + lambda_ir D_ir) / sum(lambda_vis + lambda_ir)``. Partial blocks are zero-padded.
    Per fused channel, averaged. 0 when ``F = vis = ir``. NaN for a constant non-zero image or two all-zero
    sources (as in VIFB).
    """
    ir, vis, fused = _prepare(ir, vis, fused)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _per_channel_mean(ir, vis, fused, _qcv_single)


METRICS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], float]] = {
    "Cross_entropy": cross_entropy,
    "Entropy": entropy,
    "Mutinf": mutinf,
    "Psnr": psnr,
    "Avg_gradient": avg_gradient,
    "Edge_intensity": edge_intensity,
    "Qabf": qabf,
    "Variance": variance,
    "Spatial_frequency": spatial_frequency,
    "Rmse": rmse,
    "Ssim": ssim,
    "Qcb": qcb,
    "Qcv": qcv,
}
"""VIFB metric name -> function taking ``(ir, vis, fused)`` arrays."""


def compute(ir: str | os.PathLike | np.ndarray, vis: str | os.PathLike | np.ndarray,
            fused: str | os.PathLike | np.ndarray, metrics: Iterable[str] | None = None) -> dict[str, float]:
    """Compute VIFB metrics for one infrared / visible / fused triple.

    Args:
        ir: Infrared image (path or array, see :func:`load`).
        vis: Visible image (path or array).
        fused: Fused image (path or array).
        metrics: VIFB metric names (see :data:`NAMES`; matched case-insensitively); all 13 when ``None``.

    Returns:
        ``{name: value}`` in the order requested (VIFB's canonical spelling of the names).

    Raises:
        ValueError: An unknown metric name, or images whose sizes differ.
    """
    by_lower = {name.lower(): name for name in NAMES}
    if metrics is None:
        wanted = list(NAMES)
    else:
        if isinstance(metrics, str):
            metrics = [metrics]
        wanted = []
        for name in metrics:
            canonical = by_lower.get(str(name).lower())
            if canonical is None:
                raise ValueError(f"unknown VIFB metric {name!r}; valid names: {', '.join(NAMES)}")
            if canonical not in wanted:
                wanted.append(canonical)
    ir_img, vis_img, fused_img = _prepare(load(ir), load(vis), load(fused))
    return {name: METRICS[name](ir_img, vis_img, fused_img) for name in wanted}
