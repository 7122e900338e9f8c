"""Synthetic, physically motivated degradations of registered infrared/visible luminance pairs.

Training applies a degradation to the *inputs* of the fusion network while the loss looks at the clean
sources; evaluation applies the same degradations with fixed seeds (and usually fixed strengths) to held-out
pairs. Every function here is therefore:

* deterministic given the :class:`numpy.random.Generator` it is handed (all randomness comes from it);
* pure: it returns new ``float32`` arrays in ``[0, 1]`` and never modifies its inputs;
* vectorised, so it runs on 128x128 training crops and on full-size frames alike.

Images are luminance planes of shape ``(H, W)`` (Y of YCrCb for the visible image, gray for the thermal one),
``float32`` in ``[0, 1]``.

``strength`` picks a point inside a *realistic* range of each degradation: ``0`` is the mildest setting that
is still clearly degraded, ``1`` the most severe one. ``None`` draws it uniformly from ``[0, 1]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

#: Degradations :func:`degrade` knows, in a fixed order.
DEGRADATIONS: tuple[str, ...] = ("none", "low_light", "glare", "fog", "noise", "low_contrast_thermal")

#: Which degradation simulates the situation an intent of the prompt bank stands for (IR-VIS intents only;
#: it matches the ``recipe.degradation`` entries of ``streamfuse/text/prompt_bank.yaml``).
INTENT_DEGRADATION: dict[str, str] = {
    "balanced": "none",
    "thermal_targets": "none",
    "visible_detail": "none",
    "low_light": "low_light",
    "glare": "glare",
    "fog": "fog",
    "noise": "noise",
    "low_contrast_thermal": "low_contrast_thermal",
}

#: Display gamma used to move the visible image to (approximately) linear light and back.
_DISPLAY_GAMMA = 2.2


def _lerp(low: float, high: float, t: float) -> float:
    """``low`` at ``t = 0``, ``high`` at ``t = 1``."""
    return low + (high - low) * t


def _resolve_strength(strength: float | None, rng: np.random.Generator) -> float:
    """The strength to use: drawn uniformly from ``[0, 1]`` when ``None``, else validated."""
    if strength is None:
        return float(rng.uniform(0.0, 1.0))
    value = float(strength)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"strength must be in [0, 1] or None, got {strength!r}")
    return value


def _as_plane(image: np.ndarray, name: str) -> np.ndarray:
    """``image`` as a 2-D float32 array (the same object when it already is one; callers never write to it)."""
    array = np.asarray(image, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a luminance plane of shape (H, W), got shape {array.shape}")
    return array


def _clip01(image: np.ndarray) -> np.ndarray:
    """Clip to ``[0, 1]`` in place and return the (float32) array."""
    return np.clip(image, 0.0, 1.0, out=image)


def _poisson_gaussian(signal: np.ndarray, shot: float, read: float, rng: np.random.Generator) -> np.ndarray:
    """Add signal-dependent sensor noise (heteroscedastic Gaussian approximation of Poisson-Gaussian noise).

    The variance at a pixel of value ``x`` is ``shot * x + read**2``: photon shot noise whose variance grows
    with the signal (``1 / shot`` photo-electrons per unit signal) plus signal-independent read noise
    (Foi et al., "Practical Poissonian-Gaussian noise modeling", IEEE TIP 2008).
    """
    variance = np.maximum(signal, 0.0) * np.float32(shot) + np.float32(read * read)
    return signal + np.sqrt(variance) * rng.standard_normal(signal.shape, dtype=np.float32)


def _quantise_8bit(image: np.ndarray) -> np.ndarray:
    """Clip to ``[0, 1]`` and round to the 256 levels of an 8-bit camera output."""
    return np.round(_clip01(image) * 255.0) / np.float32(255.0)


def _smooth_field(shape: tuple[int, int], rng: np.random.Generator, cell: int = 96) -> np.ndarray:
    """A smooth random field of about unit amplitude: coarse Gaussian noise upsampled bicubically."""
    height, width = shape
    coarse = rng.standard_normal((max(2, round(height / cell) + 1), max(2, round(width / cell) + 1)))
    return cv2.resize(coarse.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)


def _gaussian_spot(shape: tuple[int, int], cy: float, cx: float, sigma: float, amplitude: float) -> np.ndarray:
    """``amplitude * exp(-r**2 / (2 sigma**2))`` around ``(cy, cx)``, built as a separable outer product."""
    height, width = shape
    gy = np.exp(-0.5 * ((np.arange(height, dtype=np.float32) - cy) / sigma) ** 2) * np.float32(amplitude)
    gx = np.exp(-0.5 * ((np.arange(width, dtype=np.float32) - cx) / sigma) ** 2)
    return np.outer(gy, gx).astype(np.float32, copy=False)


def _none(ir: np.ndarray, vis: np.ndarray, strength: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """No degradation: copies of the inputs."""
    return ir.copy(), vis.copy()


def _low_light(ir: np.ndarray, vis: np.ndarray, strength: float,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Night-time visible camera; the thermal camera does not need light and stays clean.

    * exposure scale 0.35 (dusk) .. 0.08 (night) and a gamma of 1.2 .. 2.0 that crushes the shadows more than
      the highlights (a dim scene lands on the toe of the camera's tone curve);
    * Poisson-Gaussian sensor noise on the darkened signal: shot-noise variance 0.002 .. 0.010 per unit signal
      (an effective 500 .. 100 photo-electrons at full scale, i.e. a small sensor at high ISO) and read noise
      sigma 0.004 .. 0.016 (1 .. 4 grey levels);
    * quantisation to 8 bits, which posterises the few remaining grey levels.
    """
    exposure = _lerp(0.35, 0.08, strength)
    gamma = _lerp(1.2, 2.0, strength)
    dark = np.power(np.clip(vis, 0.0, 1.0), np.float32(gamma)) * np.float32(exposure)
    noisy = _poisson_gaussian(dark, _lerp(0.002, 0.010, strength), _lerp(0.004, 0.016, strength), rng)
    return ir.copy(), _quantise_8bit(noisy)


def _glare(ir: np.ndarray, vis: np.ndarray, strength: float,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Headlights / low sun blinding the visible camera; the thermal camera is unaffected.

    Light adds linearly, so the visible image is linearised with a display gamma of 2.2 first. One to three
    light sources are placed in the upper three quarters of the frame; each one adds

    * a halo (Gaussian profile, sigma 5 .. 14 % of the short image side, jittered by x0.7 .. 1.3, linear
      amplitude 0.25 .. 0.8, jittered likewise) from scattering in the lens and on the windscreen, with a
      dimmer, three times wider tail (a quarter of the halo amplitude) for the heavy tail of real glare, and
    * a saturated core (sigma 30 % of the halo, linear amplitude 4, i.e. clipped to white well beyond its
      centre) where the sensor is overexposed;

    and a uniform veiling glare of 0.5 .. 4 % (linear) lifts the whole image and washes out the shadows.
    The result is clipped to 1 (sensor saturation) and re-encoded with the display gamma.
    """
    shape = vis.shape
    short_side = float(min(shape))
    light = np.power(np.clip(vis, 0.0, 1.0), np.float32(_DISPLAY_GAMMA))
    for _ in range(int(rng.integers(1, 4))):
        cy = rng.uniform(0.1, 0.75) * shape[0]
        cx = rng.uniform(0.0, 1.0) * shape[1]
        sigma = short_side * _lerp(0.05, 0.14, strength) * rng.uniform(0.7, 1.3)
        halo = _lerp(0.25, 0.8, strength) * rng.uniform(0.7, 1.3)
        light += _gaussian_spot(shape, cy, cx, 3.0 * sigma, 0.25 * halo)
        light += _gaussian_spot(shape, cy, cx, sigma, halo)
        light += _gaussian_spot(shape, cy, cx, max(1.0, 0.3 * sigma), 4.0)
    light += np.float32(_lerp(0.005, 0.04, strength))
    return ir.copy(), np.power(_clip01(light), np.float32(1.0 / _DISPLAY_GAMMA))


def _fog(ir: np.ndarray, vis: np.ndarray, strength: float,
         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Fog / haze on the visible image (atmospheric scattering model); long-wave infrared sees through it.

    ``I = J t + A (1 - t)`` with transmission ``t = exp(-beta d)``. The depth proxy ``d`` grows linearly from
    0.1 at the bottom row (near ground) to 1.0 at the top row (horizon / sky), plus a smooth random variation
    of +-0.15 (fog banks, uneven scene depth). The extinction coefficient ``beta`` goes from 0.7 (haze: 50 %
    transmission at the top) to 3.0 (dense fog: 5 %) with the strength; the airlight ``A`` is drawn from
    0.7 .. 0.95 (bright, slightly grey sky light). The thermal image is returned unchanged: scattering by fog
    droplets is much weaker at 8-14 um than in the visible band.
    """
    height, width = vis.shape
    rows = np.linspace(1.0, 0.1, height, dtype=np.float32)[:, None]
    depth = np.maximum(rows + np.float32(0.15) * _smooth_field((height, width), rng), 0.0)
    beta = _lerp(0.7, 3.0, strength)
    airlight = np.float32(rng.uniform(0.7, 0.95))
    transmission = np.exp(depth * np.float32(-beta))
    foggy = vis * transmission + airlight * (1.0 - transmission)
    return ir.copy(), _clip01(foggy)


def _noise(ir: np.ndarray, vis: np.ndarray, strength: float,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noisy sensors on both sides.

    * visible: Poisson-Gaussian noise with shot-noise variance 0.0005 .. 0.005 per unit signal (2000 .. 200
      photo-electrons at full scale) and read noise sigma 0.005 .. 0.03 (1.3 .. 8 grey levels), then 8-bit
      quantisation; the total sigma at mid-grey is about 0.017 (mild) .. 0.057 (severe);
    * thermal: temporal Gaussian noise sigma 0.01 .. 0.04 plus fixed-pattern *column* noise (per-column
      offsets, sigma 0.005 .. 0.025): uncooled microbolometers read out each column through its own amplifier,
      and imperfect non-uniformity correction leaves visible vertical stripes.
    """
    shot, read = _lerp(0.0005, 0.005, strength), _lerp(0.005, 0.03, strength)
    noisy_vis = _quantise_8bit(_poisson_gaussian(vis, shot, read, rng))
    sigma_ir = np.float32(_lerp(0.01, 0.04, strength))
    sigma_columns = np.float32(_lerp(0.005, 0.025, strength))
    temporal = rng.standard_normal(ir.shape, dtype=np.float32) * sigma_ir
    columns = rng.standard_normal((1, ir.shape[1]), dtype=np.float32) * sigma_columns
    return _clip01(ir + temporal + columns), noisy_vis


def _low_contrast_thermal(ir: np.ndarray, vis: np.ndarray, strength: float,
                          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Thermal crossover (dawn/dusk, rain): objects and background reach nearly the same temperature.

    The thermal image is compressed around its mean by a contrast factor of 0.4 .. 0.15, shifted by an offset
    drawn from +-0.05 (the automatic gain settles on a different level) and gets slight Gaussian noise
    (sigma 0.003 .. 0.01, which the reduced signal no longer masks). The visible image is unchanged.
    """
    contrast = np.float32(_lerp(0.4, 0.15, strength))
    mean = np.float32(ir.mean())
    offset = np.float32(rng.uniform(-0.05, 0.05))
    noise = rng.standard_normal(ir.shape, dtype=np.float32) * np.float32(_lerp(0.003, 0.01, strength))
    flat = (ir - mean) * contrast + (mean + offset) + noise
    return _clip01(flat), vis.copy()


_DEGRADE_FUNCTIONS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "none": _none,
    "low_light": _low_light,
    "glare": _glare,
    "fog": _fog,
    "noise": _noise,
    "low_contrast_thermal": _low_contrast_thermal,
}


def degrade(ir: np.ndarray, vis: np.ndarray, kind: str, rng: np.random.Generator, *,
            strength: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Apply one degradation to a registered infrared/visible luminance pair.

    Args:
        ir: Thermal luminance, float32 ``(H, W)`` in ``[0, 1]``; not modified.
        vis: Visible luminance (Y of YCrCb), float32 ``(H, W)`` in ``[0, 1]``; not modified.
        kind: One of :data:`DEGRADATIONS`.
        rng: Source of all randomness (the same seed gives the same result).
        strength: Severity within the realistic range of the degradation: 0 mildest, 1 most severe;
            ``None`` draws it uniformly from ``[0, 1]`` with ``rng``.

    Returns:
        ``(ir, vis)``: new float32 arrays of the input shape, in ``[0, 1]``. A modality the degradation does
        not touch is returned as an equal copy.

    Raises:
        ValueError: Unknown ``kind``, a strength outside ``[0, 1]``, or inputs that are not two 2-D planes of
            the same shape.
    """
    function = _DEGRADE_FUNCTIONS.get(kind)
    if function is None:
        raise ValueError(f"unknown degradation {kind!r}; expected one of {', '.join(DEGRADATIONS)}")
    ir_plane = _as_plane(ir, "ir")
    vis_plane = _as_plane(vis, "vis")
    if ir_plane.shape != vis_plane.shape:
        raise ValueError(f"ir and vis must have the same shape, got {ir_plane.shape} and {vis_plane.shape}")
    value = _resolve_strength(strength, rng)
    out_ir, out_vis = function(ir_plane, vis_plane, value, rng)
    return out_ir.astype(np.float32, copy=False), out_vis.astype(np.float32, copy=False)


def degrade_for_intent(ir: np.ndarray, vis: np.ndarray, intent_id: str, rng: np.random.Generator, *,
                       strength: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Apply the degradation that simulates the situation of an intent (see :data:`INTENT_DEGRADATION`).

    Args:
        ir: Thermal luminance, float32 ``(H, W)`` in ``[0, 1]``; not modified.
        vis: Visible luminance, float32 ``(H, W)`` in ``[0, 1]``; not modified.
        intent_id: An IR-VIS intent id of the prompt bank (``balanced``, ``fog``, ...).
        rng: Source of all randomness.
        strength: As for :func:`degrade`.

    Returns:
        ``(ir, vis)`` as for :func:`degrade`.

    Raises:
        ValueError: ``intent_id`` has no degradation here (unknown, or a medical intent).
    """
    kind = INTENT_DEGRADATION.get(intent_id)
    if kind is None:
        raise ValueError(f"intent {intent_id!r} has no IR-VIS training degradation; "
                         f"expected one of {', '.join(INTENT_DEGRADATION)}")
    return degrade(ir, vis, kind, rng, strength=strength)
