"""The fixed band-injection rule and the damage gates, written once for torch tensors and NumPy arrays.

Both the fusion network (:mod:`streamfuse.models.bands`, torch) and the classical fuser
(:mod:`streamfuse.fusers.classical`, OpenCV) use these; the functions need only arithmetic,
``.clip`` and a box filter of the caller's kind, so this module imports neither torch nor OpenCV.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TypeVar

Array = TypeVar("Array")  # a torch.Tensor or a numpy.ndarray

#: Guided-filter radius and regularisation (squared intensity) of the two chain levels, at half
#: resolution (4 and 12 px in the full image).
CHAIN = ((2, 0.03), (6, 0.03))
#: Number of coarse bands the injection maps address: D1, D2 and the base.
COARSE_BANDS = len(CHAIN) + 1

#: The finest band takes, per pixel, the source whose detail magnitude averaged over a (2r+1)^2 window
#: is larger (per-pixel magnitudes alone pick noise and lose edge continuity: Qabf 0.569 against 0.589
#: with r = 2 on the tuning pairs), softly where the two are close (:func:`fine_weight`).
FINE_RADIUS = 2
#: Slope of the finest band's infrared weight in the normalised magnitude difference: a hard choice
#: flips with sensor noise where the sources are about equally strong (flicker 0.249 against 0.157
#: grey levels on a noisy still of the tuning pairs, at equal Qabf).
FINE_STEEPNESS = 4.0

#: Detail bands: steepness, offset and energy floor (squared intensity) of the rule. The offset is the
#: normalised energy difference at which infrared gets half weight; slightly below 0 lets an infrared
#: band of about the visible band's strength in. All constants here were tuned on 25 RoadScene and
#: MSRS training pairs (never on the held-out TNO or LLVIP sets).
RULE_STEEPNESS, RULE_OFFSET, RULE_FLOOR = 8.0, -0.2, 1e-4
#: Base: the same on salience (local absolute deviation from the base's mean level, intensity units).
BASE_STEEPNESS, BASE_OFFSET, BASE_FLOOR = 8.0, -0.2, 0.03
#: Below its mean level, the visible base's deviation counts at most this times the base's own level
#: (:func:`visible_base_deviation`): darkness is no information at night. Measured against the frame mean
#: alone, glare or fog over one side of a night frame raised the mean and made the other side's dark
#: facades "salient", so they took the dark visible base (dark patches on warm buildings). Chosen among
#: 1 and 0.5 by looking at the synthetic night and day frames; ranked on the tuning pairs (docs/model.md).
DARK_SALIENCE_CAP = 0.5
#: The base logit is then aligned with the edges of both bases by a guided filter with the two bases as a
#: two-channel guide (radius at quarter resolution, regularisation; :func:`guided_filter_pair`): salience
#: spreads over its box, so a lit window at night claimed the dark visible base all around it (dark
#: patches on a thermal facade), and guided by the visible base alone the logit was box-blurred wherever
#: that base is flat, so a warm person invisible in a dark visible region took the thermal base in a
#: bright box around him (a glow). The weight-map refinement of Li, Kang and Hu ("Image fusion with guided
#: filtering", IEEE TIP 2013), on the logit, with the colour-guide form of He, Sun and Tang.
BASE_GUIDE = (8, 1e-3)
#: Where the base weight changes inside a region smooth in both bases, the fused base steps by the bases'
#: level difference: the outline of a patch that neither image has (a dark patch on a bright field whose
#: thermal image is dark, a blotch on a road, a glow band over a horizon). Those steps are taken out of
#: the fused base (:func:`base_step_correction`). A link between neighbouring quarter-resolution cells
#: is an edge of the bases where ``|step of base_IR| + |step of base_VIS|`` reaches the first value of
#: ``BASE_STEP_EDGE`` (fully at the second); only links more than ``BASE_STEP_CLEARANCE`` cells from any
#: edge are corrected (a warm person's own outline, and the transition right beside it, stay as the
#: rule draws them: corrected there, the person's level dropped with the glow around him). The
#: correction fades over about ``1 / sqrt(BASE_STEP_SCREENING)`` = 16 cells (64 px). Chosen on the
#: tuning pairs by a patch score (docs/model.md, "v5.6").
BASE_STEP_EDGE, BASE_STEP_CLEARANCE, BASE_STEP_SCREENING = (0.02, 0.06), 2, 1 / 256
#: Box radii (at quarter resolution, where the rule's logits live) of each detail band's energy and of
#: the base's salience: about the band's own guided-filter radius in the full image.
ENERGY_RADII = tuple(radius // 2 + 1 for radius, _ in CHAIN)
SALIENCE_RADIUS = CHAIN[-1][0] // 2

#: Where each damage gate starts and where it is full: local mean brightness for ``saturated`` and
#: ``dark``, local standard deviation of the visible image for ``low_contrast`` (intensities in [0, 1]).
SATURATED, DARK, LOW_CONTRAST = (0.9, 0.99), (0.25, 0.1), (0.03, 0.015)
#: Local standard deviation of the thermal image at which it starts to / fully counts as showing structure.
THERMAL_STRUCTURE = (0.02, 0.06)
#: Fog and smoke are bright (scattered light): the low-contrast gate also needs this local brightness.
HAZE_BRIGHTNESS = (0.4, 0.6)
#: A damaged region is repaired as a whole where the thermal image shows structure in enough of it: box
#: radius (quarter resolution: about 52 px in the frame) of the neighbourhood, and the share of its
#: damaged pixels with thermal structure at which the gate is full.
THERMAL_REGION, THERMAL_SHARE_FULL = 6, 0.5

#: Intents that describe damage to the visible image, and where that damage is (:func:`damage_gates`).
LOCAL_INTENTS = {"glare": "saturated", "low_light": "dark", "fog": "low_contrast"}

#: Medical pairs (MRI in the infrared slot, CT / PET / SPECT luminance in the visible slot) are fused by
#: the medical rule (:func:`medical_base_logit`, :data:`MEDICAL_DETAIL`): neither image is "the scene"
#: with the other's extras injected; each brings its own structures (bone, uptake, soft tissue).
MEDICAL_INTENTS = ("mri_ct", "mri_pet", "mri_spect")
#: Medical detail bands: the locally stronger band almost outright (steepness, offset 0, box radius at
#: quarter resolution). Medical base: the brighter base almost outright (logit slope per unit of
#: intensity), which keeps CT bone and tracer uptake at their level and the black background black.
#: Chosen on the training part of ``configs/medical_split.yaml`` (never on its held-out part).
MEDICAL_DETAIL = (30.0, 0.0, 1)
MEDICAL_BASE_SLOPE = 60.0


def guided_chain(half: Array, guided_smooth: Callable[[Array, int, float], Array]) -> list[Array]:
    """The coarse bands ``[D1, D2, base]`` of half-resolution images: the :data:`CHAIN` of edge-preserving
    smoothings ``S1, S2`` with ``D1 = half - S1``, ``D2 = S1 - S2``, ``base = S2``.

    ``guided_smooth(image, radius, eps)`` is the self-guided filter of the inputs' kind.
    """
    coarse, smooth = [], half
    for radius, eps in CHAIN:
        smoother = guided_smooth(smooth, radius, eps)
        coarse.append(smooth - smoother)
        smooth = smoother
    coarse.append(smooth)
    return coarse


def guided_filter_pair(guide_a: Array, guide_b: Array, image: Array, radius: int, eps: float,
                       box_filter: Callable[[Array, int], Array]) -> Array:
    """``image`` smoothed along the edges of either guide: locally ``a1 * guide_a + a2 * guide_b + b``
    (the guided filter with a two-channel guide, He, Sun and Tang, TPAMI 2013; ``eps`` on the diagonal)."""
    mean_a, mean_b, mean_image = box_filter(guide_a, radius), box_filter(guide_b, radius), box_filter(image, radius)
    var_a = box_filter(guide_a * guide_a, radius) - mean_a * mean_a + eps
    var_b = box_filter(guide_b * guide_b, radius) - mean_b * mean_b + eps
    cov_ab = box_filter(guide_a * guide_b, radius) - mean_a * mean_b
    cov_a = box_filter(guide_a * image, radius) - mean_a * mean_image
    cov_b = box_filter(guide_b * image, radius) - mean_b * mean_image
    determinant = var_a * var_b - cov_ab * cov_ab
    coef_a = (var_b * cov_a - cov_ab * cov_b) / determinant
    coef_b = (var_a * cov_b - cov_ab * cov_a) / determinant
    offset = mean_image - coef_a * mean_a - coef_b * mean_b
    return box_filter(coef_a, radius) * guide_a + box_filter(coef_b, radius) * guide_b + box_filter(offset, radius)


def base_step_correction(base_ir: Array, base_vis: Array, weight: Array,
                         screened_poisson: Callable[[Array, Array, float], Array],
                         box_filter: Callable[[Array, int], Array], repair: Array | None = None) -> Array:
    """What to add to the fused base ``base_vis + weight (base_ir - base_vis)`` to take out the steps that
    the weight's changes draw where both bases are smooth (:data:`BASE_STEP_EDGE`).

    All arguments at quarter resolution, ``(..., h, w)``. The correction is the change of level whose
    gradient is those steps, held to zero at large scales (``screened_poisson(flux_rows, flux_cols,
    screening)`` of the inputs' kind solves ``(screening - Laplacian) C = div(flux)`` with no flux across
    the borders); the corrected base stays between the two bases at every cell, so a region black in
    both stays black. ``box_filter(image, radius)`` of the inputs' kind. ``repair`` (None: 0 everywhere)
    is where, in [0, 1], a damage prompt replaces the visible image (:func:`damage_gates`): the steps its
    weight draws there are the repair itself and stay (taken out, they put a smoke cloud's or a bloom's
    brightness back over the thermal base the prompt chose).
    """
    if min(base_ir.shape[-2:]) < 2:  # a frame of a few pixels: no neighbours to step between
        return 0 * weight
    difference = base_ir - base_vis
    fluxes = []
    for step, mean in ((lambda a: a[..., 1:, :] - a[..., :-1, :], lambda a: (a[..., 1:, :] + a[..., :-1, :]) / 2),
                       (lambda a: a[..., 1:] - a[..., :-1], lambda a: (a[..., 1:] + a[..., :-1]) / 2)):
        edge = _ramp(abs(step(base_ir)) + abs(step(base_vis)), *BASE_STEP_EDGE)
        # An edge line across the clearance box covers a fifth of it: then the link is not corrected at all.
        clear = 1 - (10 * box_filter(edge, BASE_STEP_CLEARANCE)).clip(0, 1)
        if repair is not None:
            clear = clear * (1 - mean(repair))
        fluxes.append(mean(difference) * step(weight) * clear)
    correction = screened_poisson(*fluxes, BASE_STEP_SCREENING)
    spread = abs(difference)
    lowest = (base_ir + base_vis - spread) / 2 - (base_vis + weight * difference)
    return correction.clip(lowest, lowest + spread)


def fine_weight(magnitude_ir: Array, magnitude_vis: Array) -> Array:
    """Infrared weight of the finest band from both sources' local mean detail magnitudes."""
    return (0.5 + FINE_STEEPNESS * (magnitude_ir - magnitude_vis) / (magnitude_ir + magnitude_vis + 1e-4)).clip(0, 1)


def steep(strength_ir: Array, strength_vis: Array, floor: float, steepness: float, offset: float) -> Array:
    """Injection logit: steep in the normalised strength difference ``(S_IR - S_VIS) / (S_IR + S_VIS)``."""
    return steepness * ((strength_ir - strength_vis) / (strength_ir + strength_vis + floor) - offset)


def visible_base_deviation(base_vis: Array, mean: Array | float) -> Array:
    """``|base_vis - mean|``, except that below ``mean`` it is at most :data:`DARK_SALIENCE_CAP` times the
    base's own level: a dark region is as (non-)salient whatever raised the frame's mean level."""
    above = (base_vis - mean).clip(min=0)
    below = (mean - base_vis).clip(min=0)
    return above + below - (below - DARK_SALIENCE_CAP * base_vis.clip(min=0)).clip(min=0)


def medical_base_logit(base_ir: Array, base_vis: Array) -> Array:
    """The medical rule's base logit: steep in the difference of the two bases' levels (the brighter wins)."""
    return MEDICAL_BASE_SLOPE * (base_ir - base_vis)


def damage_gates(ir: Array, vis: Array, box_filter: Callable[[Array, int], Array],
                 kinds: Collection[str] = tuple(LOCAL_INTENTS.values())) -> dict[str, Array]:
    """Where the visible image is damaged, per kind of damage: maps in [0, 1] the size of the inputs.

    Args:
        ir: Quarter-resolution infrared in [0, 1].
        vis: Quarter-resolution visible luminance in [0, 1].
        box_filter: ``box_filter(image, radius)`` of the inputs' kind.
        kinds: The kinds of damage to map (the values of :data:`LOCAL_INTENTS`).

    ``saturated``: nearly clipped (:data:`SATURATED`): glare, blooms. ``dark``: dark (:data:`DARK`):
    night. ``low_contrast``: the visible local contrast is gone (:data:`LOW_CONTRAST`) in a bright
    region (:data:`HAZE_BRIGHTNESS`): fog, smoke, haze. Each only where the thermal image has
    something to show: in the damaged part of the neighbourhood (:data:`THERMAL_REGION`), enough
    pixels (:data:`THERMAL_SHARE_FULL`) with thermal structure (:data:`THERMAL_STRUCTURE`) stronger
    than the visible image's; a blown-out sky over a flat, cold thermal sky is not damage worth
    repairing. (Thresholds chosen on RoadScene and MSRS training pairs with partial damage: SSIM to the
    clean visible image outside the damage within 0.02 of balanced fusion.)
    """
    mean_ir, mean_vis = box_filter(ir, 2), box_filter(vis, 2)
    contrast_ir = (box_filter(ir * ir, 2) - mean_ir * mean_ir).clip(min=0) ** 0.5
    contrast_vis = (box_filter(vis * vis, 2) - mean_vis * mean_vis).clip(min=0) ** 0.5
    # Damage matters where the thermal image has something to show instead: structure of its own, stronger
    # than the visible image's (a blown-out sky over a flat, cold thermal sky is not worth replacing).
    thermal_shows = ((2 * (contrast_ir - contrast_vis) / (contrast_ir + contrast_vis + 0.02)).clip(0, 1)
                     * _ramp(contrast_ir, *THERMAL_STRUCTURE))
    damage = {
        "saturated": _ramp(mean_vis, *SATURATED),
        "dark": _ramp(mean_vis, *DARK),
        "low_contrast": _ramp(contrast_vis, *LOW_CONTRAST) * _ramp(mean_vis, *HAZE_BRIGHTNESS),
    }
    gates = {}
    for kind in kinds:
        damaged = damage[kind]
        # Per region, not per pixel: thermal structure sits at edges, and gating pixel by pixel would
        # repair a fog bank only along the thermal image's edges (dark outlines around flat walls).
        share = box_filter(damaged * thermal_shows, THERMAL_REGION) / (box_filter(damaged, THERMAL_REGION) + 1e-3)
        gates[kind] = box_filter(damaged * (share / THERMAL_SHARE_FULL).clip(0, 1), 2)
    return gates


def _ramp(value: Array, start: float, full: float) -> Array:
    """0 up to ``start``, rising linearly to 1 at ``full`` (either direction)."""
    return ((value - start) / (full - start)).clip(0, 1)
