"""Tensor versions of the fusion pre- and post-processing, bit-exact to OpenCV's 8-bit arithmetic.

The inference worker runs these on the GPU so that a frame crosses the bus once each way (``uint8``
up, ``uint8`` down). They work on any device, which is how the tests check them against OpenCV on a
machine without a GPU:

* :func:`bgr_to_ycrcb` / :func:`ycrcb_to_bgr` reproduce ``cv2.cvtColor`` (``COLOR_BGR2YCrCb`` and
  back) with OpenCV's 14-bit fixed-point BT.601 coefficients, so the network sees exactly the
  luminance the CPU path gives it and the chroma comes back exactly as on the CPU (shrunk where it does
  not fit at the fused luminance, :func:`~streamfuse.colour.fitting_chroma`).
* :func:`remap_table` / :func:`remap` reproduce :class:`~streamfuse.registration.Homography`
  (``cv2.remap`` with ``CV_16SC2`` maps, bilinear, constant 0 border): coordinates are rounded to
  1/32 pixel and the four taps weighted with integer weights summing to 2**15, as OpenCV does.
  ``F.grid_sample`` would be one kernel instead of a few, but its float coordinates differ from
  OpenCV's fixed point by a rounding step, which moves pixels by one level between the CPU and GPU
  paths; a gather with precomputed taps is exact and, once per-size tables are cached, as cheap.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from streamfuse.colour import CB2B, CB2G, CHROMA_DELTA, CR2G, CR2R, fitting_chroma
from streamfuse.registration.homography import homography_maps

# OpenCV's fixed-point BT.601 coefficients for 8-bit YCrCb (imgproc color_yuv: yuv_shift = 14).
_SHIFT = 14
_HALF = 1 << (_SHIFT - 1)
_R2Y, _G2Y, _B2Y = 4899, 9617, 1868
_CR_SCALE, _CB_SCALE = 11682, 9241

# cv2.remap with CV_16SC2 maps: coordinates in 1/32 pixel, weights scaled to 2**15.
_INTER_BITS = 5
_INTER_SIZE = 1 << _INTER_BITS
_COEF_BITS = 15


def _descale(value: torch.Tensor) -> torch.Tensor:
    """OpenCV's ``CV_DESCALE(x, 14)``: round to nearest (halves up) after a 14-bit fixed-point product."""
    return (value + _HALF) >> _SHIFT


def bgr_to_ycrcb(bgr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split ``uint8`` BGR pixels into Y, Cr and Cb as ``cv2.COLOR_BGR2YCrCb`` does.

    Args:
        bgr: ``(..., 3)`` ``uint8`` (or integer) BGR pixels.

    Returns:
        Y, Cr, Cb, each ``(...)`` ``int32`` in 0..255.
    """
    pixels = bgr.to(torch.int32)
    blue, green, red = pixels.unbind(-1)
    luma = _descale(blue * _B2Y + green * _G2Y + red * _R2Y)
    delta = CHROMA_DELTA << _SHIFT
    cr = _descale((red - luma) * _CR_SCALE + delta).clamp_(0, 255)
    cb = _descale((blue - luma) * _CB_SCALE + delta).clamp_(0, 255)
    return luma, cr, cb


def ycrcb_to_bgr(luma: torch.Tensor, cr: torch.Tensor, cb: torch.Tensor) -> torch.Tensor:
    """Combine Y, Cr and Cb (``int32`` levels) into ``uint8`` BGR ``(..., 3)`` as ``cv2.COLOR_YCrCb2BGR`` does."""
    cr = cr - CHROMA_DELTA
    cb = cb - CHROMA_DELTA
    blue = luma + _descale(cb * CB2B)
    green = luma + _descale(cb * CB2G + cr * CR2G)
    red = luma + _descale(cr * CR2R)
    return torch.stack([blue, green, red], dim=-1).clamp_(0, 255).to(torch.uint8)


def remap_table(matrix: np.ndarray, ir_shape: tuple[int, int],
                vis_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Four-tap bilinear sampling table of a homography warp, in OpenCV's fixed point.

    Returns:
        ``index`` ``(4, H*W)`` ``int64`` positions in the flattened infrared image, ``weight``
        ``(4, H*W)`` ``int32`` (sum 2**15 per pixel; 0 for taps outside the infrared image, the
        constant-0 border), and the ``(H, W)`` boolean valid mask (None when every pixel is valid).

    Raises:
        PipelineError: The homography maps the infrared image entirely outside the visible image.
    """
    map_x, map_y, inside = homography_maps(matrix, ir_shape, vis_shape)
    ir_height, ir_width = ir_shape
    # cv2.convertMaps(CV_16SC2): cvRound (half to even) of the coordinate in 1/32 pixel.
    fixed_x = np.rint(map_x.ravel() * np.float32(_INTER_SIZE)).astype(np.int64)
    fixed_y = np.rint(map_y.ravel() * np.float32(_INTER_SIZE)).astype(np.int64)
    inside_flat = inside.ravel()
    fixed_x[~inside_flat] = 0
    fixed_y[~inside_flat] = 0
    x0, fx = fixed_x >> _INTER_BITS, fixed_x & (_INTER_SIZE - 1)
    y0, fy = fixed_y >> _INTER_BITS, fixed_y & (_INTER_SIZE - 1)
    scale = (1 << _COEF_BITS) // (_INTER_SIZE * _INTER_SIZE)
    index = np.empty((4, x0.size), np.int64)
    weight = np.empty((4, x0.size), np.int32)
    for tap, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        xs, ys = x0 + dx, y0 + dy
        wx = fx if dx else _INTER_SIZE - fx
        wy = fy if dy else _INTER_SIZE - fy
        usable = inside_flat & (xs < ir_width) & (ys < ir_height)
        index[tap] = np.where(usable, ys * ir_width + xs, 0)
        weight[tap] = np.where(usable, wx * wy * scale, 0)
    return index, weight, None if inside.all() else inside


def remap(ir: torch.Tensor, index: torch.Tensor, weight: torch.Tensor, vis_shape: tuple[int, int]) -> torch.Tensor:
    """Warp a batch of infrared images with per-sample tables from :func:`remap_table`.

    Args:
        ir: ``(B, h, w)`` ``uint8`` infrared images.
        index: ``(B, 4, H*W)`` ``int64`` tap positions.
        weight: ``(B, 4, H*W)`` ``int32`` tap weights.
        vis_shape: ``(H, W)`` of the output grid.

    Returns:
        ``(B, H, W)`` ``int32`` warped levels, equal to ``cv2.remap``'s output.
    """
    batch = ir.shape[0]
    flat = ir.reshape(batch, 1, -1).expand(batch, 4, -1)
    taps = torch.gather(flat, 2, index).to(torch.int32)
    total = (taps * weight).sum(dim=1, dtype=torch.int32)
    return ((total + (1 << (_COEF_BITS - 1))) >> _COEF_BITS).view(batch, *vis_shape)


def fuse_tensors(network: nn.Module, vis: torch.Tensor, ir: torch.Tensor, weights: torch.Tensor, *,
                 remap_index: torch.Tensor | None = None, remap_weight: torch.Tensor | None = None,
                 valid: torch.Tensor | None = None, dtype: torch.dtype = torch.float32,
                 memory: torch.Tensor | None = None, momentum: float = 0.0):
    """Fuse a batch of ``uint8`` frames entirely in tensors (the worker's GPU compute step).

    Matches the CPU path (OpenCV colour conversion and remap, then the network on the luminance,
    then the visible chroma restored) exactly, up to the network's own floating-point arithmetic.

    Args:
        network: The fusion network, already on the tensors' device and in ``dtype``.
        vis: ``(B, H, W, 3)`` ``uint8`` BGR or ``(B, H, W)`` ``uint8`` gray visible frames.
        ir: ``(B, h, w)`` ``uint8`` infrared frames (``(B, H, W)`` when not warped).
        weights: ``(B, K)`` intent weights (``float32``).
        remap_index: ``(B, 4, H*W)`` warp taps (None: the infrared frames are on the visible grid).
        remap_weight: ``(B, 4, H*W)`` warp weights (with ``remap_index``).
        valid: ``(B, 1, H, W)`` boolean mask where the warped infrared has data (None: everywhere);
            elsewhere the output keeps the visible luminance.
        dtype: Precision the network runs in; its output is converted back to ``float32``.
        memory: Each item's temporal memory from its stream's previous frame, in ``dtype``
            (see :meth:`FusionNet.forward`); None fuses every frame on its own.
        momentum: Weight of the previous frame's decisions (with ``memory``).

    Returns:
        The fused frames, ``uint8``, shaped like ``vis``; with ``memory`` given, also the new memory.
    """
    colour = vis.dim() == 4
    if colour:
        luma, cr, cb = bgr_to_ycrcb(vis)
    else:
        luma = vis.to(torch.int32)
    height, width = luma.shape[-2:]
    if remap_index is not None:
        ir_levels = remap(ir, remap_index, remap_weight, (height, width))
    else:
        ir_levels = ir
    luma_in = luma.unsqueeze(1).to(torch.float32).div_(255.0)
    ir_in = ir_levels.unsqueeze(1).to(torch.float32).div_(255.0)
    if memory is None:
        fused, new_memory = network(ir_in.to(dtype), luma_in.to(dtype), weights.to(dtype)), None
    else:
        fused, new_memory = network(ir_in.to(dtype), luma_in.to(dtype), weights.to(dtype), memory, momentum)
    fused = fused.float()
    # The CPU path's quantisation: x * 255 + 0.5, clamped, truncated to uint8.
    levels = fused.mul_(255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.int32)
    if valid is not None:
        levels = torch.where(valid, levels, luma.unsqueeze(1))
    levels = levels[:, 0]
    if colour:
        cr, cb = fitting_chroma(levels.float(), cr.float(), cb.float())
        frames = ycrcb_to_bgr(levels, CHROMA_DELTA + cr.to(torch.int32), CHROMA_DELTA + cb.to(torch.int32))
    else:
        frames = levels.to(torch.uint8)
    return frames if memory is None else (frames, new_memory)
