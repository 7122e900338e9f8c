"""``streamfuse eval``: metric tables for fused image folders or fusers, per image and per method.

Pairing rule: files are matched by name stem. For every visible image ``S.ext`` the infrared image
must have the same stem ``S``; a fused image matches when its stem is ``S`` or starts with ``S_``
(``S_method.png``), so outputs of other tools that append a method name pair up too. A pair whose
partner is missing or whose sizes differ is reported by name and skipped.
"""

from __future__ import annotations

import csv
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np
from tqdm import tqdm

from streamfuse.errors import StreamfuseError, UsageError
from streamfuse.imageio import images_by_stem, list_images, natural_key, read_image, stem_of
from streamfuse.metrics import convention_module

log = logging.getLogger(__name__)


@dataclass
class MethodResult:
    """Per-image metrics of one method (a fused folder or a fuser)."""

    name: str
    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    mean_over: dict[str, set[str]] = field(default_factory=dict)
    """Per metric, the images its mean covers when not all of them (:func:`on_common_images`)."""

    def mean(self, names: Sequence[str]) -> dict[str, float]:
        """Mean of each metric over the images where it is defined (VIFB averages with ``nanmean``: Qcb is NaN
        for a constant image; and only over :attr:`mean_over` where set); NaN where no image has a value."""
        means = {}
        for name in names:
            over = self.mean_over.get(name)
            values = np.array([row[name] for stem, row in self.rows.items() if over is None or stem in over],
                              dtype=np.float64)
            defined = values[~np.isnan(values)]
            means[name] = float(defined.mean()) if defined.size else float("nan")
        return means


def find_fused(folder: Path, stem: str, files: list[Path] | None = None,
               stems: Sequence[str] = ()) -> Path | None:
    """The fused file for input ``stem`` in ``folder`` (``stem.*``, else ``stem_*.*``), or None. ``stems``: all
    input stems, so that ``a_b_x.png`` is the fused ``a_b`` when both ``a`` and ``a_b`` are inputs.

    Raises:
        StreamfuseError: Two files fit equally (``01.png`` and ``01.jpg``, or ``01_a.png`` and ``01_b.png``):
            which one was meant would be a guess.
    """
    files = files if files is not None else list_images(folder)
    longer = [other for other in stems if other.startswith(stem + "_")]

    def owned_by_longer(name: str) -> bool:
        return any(name == other or name.startswith(other + "_") for other in longer)

    for candidates in ([p for p in files if stem_of(p) == stem],
                       [p for p in files if stem_of(p).startswith(stem + "_") and not owned_by_longer(stem_of(p))]):
        if len(candidates) > 1:
            raise StreamfuseError(f"{folder}: {len(candidates)} files could be the fused {stem!r} "
                                  f"({', '.join(p.name for p in candidates[:3])}); keep one per input image")
        if candidates:
            return candidates[0]
    return None


def input_pairs(ir_dir: str | Path, vis_dir: str | Path, *,
                pair_by: str = "stem") -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """``(stem, ir_path, vis_path)`` for every visible image with an infrared partner, and the problems.

    ``pair_by="stem"`` pairs files of the same name; ``"order"`` pairs by sorted position (equal counts
    needed), as ``streamfuse fuse --pair-by order`` does, which names its outputs after the visible images.
    """
    if pair_by == "order":
        ir_files, vis_files = list_images(ir_dir), list_images(vis_dir)
        if len(ir_files) != len(vis_files):
            raise UsageError(f"--ir {ir_dir} has {len(ir_files)} images but --vis {vis_dir} has {len(vis_files)}; "
                             "images paired by sorted order need the same number")
        return [(stem_of(vis), ir, vis) for ir, vis in zip(ir_files, vis_files, strict=True)], []
    ir_by_stem, vis_by_stem = images_by_stem(ir_dir), images_by_stem(vis_dir)
    pairs, problems = [], []
    for stem, vis_path in vis_by_stem.items():
        ir_path = ir_by_stem.get(stem)
        if ir_path is None:
            problems.append(f"{vis_path.name}: no infrared image with stem {stem!r} in {ir_dir}")
        else:
            pairs.append((stem, ir_path, vis_path))
    problems += [f"{ir_path.name}: no visible image with stem {stem!r} in {vis_dir}"
                 for stem, ir_path in ir_by_stem.items() if stem not in vis_by_stem]
    if not pairs:
        raise StreamfuseError(f"no image pairs: no file in {vis_dir} has a same-name partner in {ir_dir}; images "
                              "are paired by name: pass --pair-by order to pair them by sorted order")
    return pairs, problems


def metric_names(convention: str, requested: Sequence[str] | None) -> list[str]:
    """The convention's spelling of the ``requested`` metric names (any case; None: all of them)."""
    names = convention_module(convention).NAMES
    if requested is None:
        return list(names)
    by_lower = {name.lower(): name for name in names}
    unknown = [name for name in requested if name.lower() not in by_lower]
    if unknown:
        raise UsageError(f"--metrics: unknown {convention} metric {unknown[0]!r} (available: {', '.join(names)})")
    return list(dict.fromkeys(by_lower[name.lower()] for name in requested))  # each once: a repeat would weigh twice


def to_rgb(image: np.ndarray) -> np.ndarray:
    """A streamfuse (BGR) image in the RGB order the metrics take for colour arrays; gray unchanged."""
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if image.ndim == 3 else image


def evaluate(pairs: list[tuple[str, Path, Path]], methods: dict[str, Callable[[str, Path, Path], object]],
             *, convention: str, metrics: Sequence[str] | None = None,
             progress: bool = False) -> tuple[list[MethodResult], list[str]]:
    """Compute metrics for every pair and method: the results, and the pairs whose own images could not be scored
    (unreadable, or the two of different sizes), once each; a method's own misses are in its ``skipped``.

    Args:
        pairs: From :func:`input_pairs`.
        methods: Method name -> function ``(stem, ir_path, vis_path)`` returning the fused image (a
            path, or an RGB/gray array) or None when it has no result for that pair (reported).
        convention: ``vifb`` or ``cddfuse``.
        metrics: Subset of metric names, in any case (default: all of the convention).
        progress: Show a progress bar.
    """
    module = convention_module(convention)
    names = metric_names(convention, metrics)
    results = [MethodResult(name) for name in methods]
    problems = []
    bar = tqdm(total=len(pairs) * len(methods), unit="image", disable=not progress, file=sys.stderr)
    for stem, ir_path, vis_path in pairs:
        try:
            ir, vis = module.load(ir_path), module.load(vis_path)
        except ValueError as exc:  # not a readable 8-bit image
            problems.append(str(exc))
            bar.update(len(results))
            continue
        if ir.shape[:2] != vis.shape[:2]:
            problems.append(f"{stem}: infrared is {ir.shape[1]}x{ir.shape[0]} but visible is "
                            f"{vis.shape[1]}x{vis.shape[0]}")
            bar.update(len(results))
            continue
        for result, fuse in zip(results, methods.values(), strict=True):
            bar.update()
            fused = fuse(stem, ir_path, vis_path)
            if fused is None:
                result.skipped.append(f"{stem}: no fused image")
                continue
            try:
                fused = module.load(fused)
            except ValueError as exc:
                result.skipped.append(str(exc))
                continue
            if fused.shape[:2] != vis.shape[:2]:
                result.skipped.append(f"{stem}: fused image is {fused.shape[1]}x{fused.shape[0]} but the inputs are "
                                      f"{vis.shape[1]}x{vis.shape[0]}")
                continue
            result.rows[stem] = module.compute(ir, vis, fused, names)
    bar.close()
    return results, problems


def on_common_images(results: list[MethodResult]) -> tuple[list[MethodResult], list[str]]:
    """The results restricted to the images every method scored, and each metric's means to the images where it is
    defined for every method (a constant image's Qcb is NaN: its method's mean would cover fewer images), so that
    means and ranks compare like with like; and what was left out (``"method: stem, stem"``, ``"Qcb: stem, ...
    (undefined for method)"``). A metric some method defines on no image at all keeps every image: that method's
    NaN mean ranks last. Raises when no image was scored by all."""
    common = set.intersection(*(set(result.rows) for result in results))
    if not common:
        raise StreamfuseError("eval: no image pair was scored for every method: "
                              + "; ".join(f"{r.name} scored {len(r.rows)}" for r in results))
    trimmed, left_out = [], []
    for result in results:
        extra = [stem for stem in result.rows if stem not in common]
        if extra:
            left_out.append(f"{result.name}: {', '.join(extra)}")
        trimmed.append(MethodResult(result.name, {stem: row for stem, row in result.rows.items() if stem in common},
                                    result.skipped))
    if len(trimmed) < 2:
        return trimmed, left_out
    stems = sorted(common, key=natural_key)
    for name in trimmed[0].rows[stems[0]]:
        undefined = {r.name: [s for s in stems if np.isnan(r.rows[s][name])] for r in trimmed}
        nowhere = [method for method, where in undefined.items() if len(where) == len(stems)]
        out = sorted({s for where in undefined.values() for s in where}, key=natural_key)
        if nowhere or not out:
            continue
        for result in trimmed:
            result.mean_over[name] = set(stems) - set(out)
        left_out.append(f"{name}: {', '.join(out[:5])}{', ...' if len(out) > 5 else ''} (undefined for "
                        f"{', '.join(method for method, where in undefined.items() if where)})")
    return trimmed, left_out


def folder_labels(folders: Sequence[str | Path]) -> list[str]:
    """A distinct table label per folder: its name, or as many parent folders as tell it apart
    (``a/tno`` and ``b/tno``, not ``tno`` twice)."""
    parts = [Path(os.path.abspath(folder)).parts for folder in folders]
    labels = []
    for own in parts:
        depth = 1
        while depth < len(own) and sum(other[-depth:] == own[-depth:] for other in parts) > 1:
            depth += 1
        labels.append("/".join(own[-depth:]))
    return labels


def folder_method(folder: str | Path, stems: Sequence[str] = ()) -> Callable[[str, Path, Path], Path | None]:
    """A method that looks up already fused files in ``folder`` (see the pairing rule; ``stems``: all input
    stems, as for :func:`find_fused`)."""
    files = list_images(folder)
    return lambda stem, _ir, _vis: find_fused(Path(folder), stem, files, stems)


def fuser_method(fuser) -> Callable[[str, Path, Path], np.ndarray]:
    """A method that fuses each pair with a :class:`~streamfuse.fusers.Fuser` (registration: identity)."""
    return lambda _stem, ir, vis: to_rgb(fuser.fuse(read_image(ir), read_image(vis)))


def mean_ranks(results: list[MethodResult], names: Sequence[str], better: dict[str, str]) -> dict[str, float]:
    """Mean over metrics of each method's rank (1 = best, ties share the average rank; a NaN mean, a metric
    no image of that method defines, ranks last)."""
    means = [r.mean(names) for r in results]
    ranks = np.zeros((len(results), len(names)))
    for j, name in enumerate(names):
        values = np.array([m[name] for m in means])
        keys = -values if better[name] == "higher" else values
        keys = np.where(np.isnan(keys), np.inf, keys)  # NaN compares false with everything: it ranked first
        for i in range(len(results)):
            ranks[i, j] = 1 + np.sum(keys < keys[i]) + 0.5 * (np.sum(keys == keys[i]) - 1)
    return {r.name: float(ranks[i].mean()) for i, r in enumerate(results)}


def format_table(results: list[MethodResult], names: Sequence[str], better: dict[str, str]) -> str:
    """Per-image table for one method; per-method comparison (means + mean rank) for several."""
    arrows = {n: "↑" if better[n] == "higher" else "↓" for n in names}
    if len(results) == 1:
        result = results[0]
        rows = [(stem, row) for stem, row in result.rows.items()] + [("mean", result.mean(names))]
        return _columns("image", rows, names, arrows)
    ranks = mean_ranks(results, names, better)
    rows = [(r.name, {**r.mean(names), "mean rank": ranks[r.name]}) for r in results]
    return _columns("method", rows, names, arrows, rank_column=True)


def _columns(title: str, rows: list[tuple[str, dict[str, float]]], names: Sequence[str], arrows: dict[str, str],
             rank_column: bool = False) -> str:
    """Rows of values (4 decimals; the mean rank 2) under their headers, each column as wide as its widest cell
    plus two spaces (a Qcv of 2040.0177 ran into the column before it)."""
    columns = [(f"{n}{arrows[n]}", n, 4) for n in names] + ([("mean rank", "mean rank", 2)] if rank_column else [])
    label = max(len(title), *(len(label) for label, _ in rows))
    widths = [2 + max(len(header), *(len(f"{row[key]:.{digits}f}") for _, row in rows))
              for header, key, digits in columns]
    headers = (header.rjust(width) for (header, _, _), width in zip(columns, widths, strict=True))
    lines = [f"{title:<{label}}" + "".join(headers)]
    for name, row in rows:
        lines.append(f"{name:<{label}}" + "".join(f"{row[key]:>{width}.{digits}f}"
                                                  for (_, key, digits), width in zip(columns, widths, strict=True)))
    return "\n".join(lines)


def write_csv(handle: TextIO, results: list[MethodResult], names: Sequence[str], better: dict[str, str]) -> None:
    """One row per method and image, plus a ``mean`` row per method carrying its mean rank, to ``handle`` (a file
    opened with ``newline=""``, or standard output)."""
    ranks = mean_ranks(results, names, better)
    writer = csv.writer(handle)
    writer.writerow(["method", "image", *names, "mean_rank"])
    for result in results:
        for stem, row in result.rows.items():
            writer.writerow([result.name, stem, *(f"{row[n]:.6f}" for n in names), ""])
        mean = result.mean(names)
        writer.writerow([result.name, "mean", *(f"{mean[n]:.6f}" for n in names), f"{ranks[result.name]:.4f}"])


# ------------------------------------------------------------------------------ prompt effect studies
#: For each synthetic degradation, a prompt an operator would type for it (not a bank phrasing).
MATCHING_PROMPTS = {
    "low_light": "night time, the colour camera is almost black",
    "glare": "oncoming headlights are blinding",
    "fog": "thick fog, rely on thermal",
    "noise": "the footage is grainy and noisy",
    "low_contrast_thermal": "the thermal picture is flat and washed out",
}


def _luma(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image


def degrade_pair(ir: np.ndarray, vis: np.ndarray, kind: str, *, seed: int, strength: float = 0.6
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``uint8`` luminance pair degraded reproducibly (fixed seed and strength)."""
    from streamfuse.train.degrade import degrade

    ir_in, vis_in = degrade(_luma(ir).astype(np.float32) / 255, _luma(vis).astype(np.float32) / 255, kind,
                            np.random.default_rng(seed), strength=strength)
    return (np.round(ir_in * 255).astype(np.uint8), np.round(vis_in * 255).astype(np.uint8))


def restoration_scores(fuser, routing, pairs: Sequence[tuple[np.ndarray, np.ndarray]], kind: str,
                       *, seed: int = 0, strength: float = 0.6) -> dict[str, float]:
    """Mean VIFB ``Qabf`` and ``Ssim`` of fusing degraded inputs, scored against the CLEAN sources.

    Args:
        fuser: Any fuser; it is conditioned with ``routing`` first.
        routing: The prompt routing to use.
        pairs: Clean ``(ir, vis)`` uint8 luminance pairs.
        kind: Degradation (see :mod:`streamfuse.train.degrade`).
        seed: Seed of pair ``i`` is ``seed + i``.
        strength: Degradation strength in [0, 1].
    """
    from streamfuse.metrics import vifb

    fuser.condition(routing)
    qabf, ssim = [], []
    for index, (ir, vis) in enumerate(pairs):
        ir_in, vis_in = degrade_pair(ir, vis, kind, seed=seed + index, strength=strength)
        fused = fuser.fuse(ir_in, vis_in)
        qabf.append(vifb.qabf(_luma(ir), _luma(vis), fused))
        ssim.append(vifb.ssim(_luma(ir), _luma(vis), fused))
    return {"Qabf": float(np.mean(qabf)), "Ssim": float(np.mean(ssim))}


#: Partial damage (:func:`local_damage_scores`): the left part of the frame is damaged up to this
#: fraction of the width, fading out over :data:`DAMAGE_FADE` of the width after it.
DAMAGE_EXTENT, DAMAGE_FADE = 0.4, 0.1


def damage_mask(height: int, width: int) -> np.ndarray:
    """``(H, W)`` float mask of the partial damage: 1 on the left, a linear fade, 0 on the right."""
    columns = (np.arange(width, dtype=np.float32) + 0.5) / width
    ramp = np.clip((DAMAGE_EXTENT + DAMAGE_FADE - columns) / DAMAGE_FADE, 0.0, 1.0)
    return np.repeat(ramp[None, :], height, axis=0)


def partially_degraded(ir: np.ndarray, vis: np.ndarray, kind: str, *, seed: int, strength: float = 0.6
                       ) -> np.ndarray:
    """The ``uint8`` visible luminance with ``kind`` (as :func:`degrade_pair`) over :func:`damage_mask` only."""
    _, degraded = degrade_pair(ir, vis, kind, seed=seed, strength=strength)
    mask = damage_mask(*vis.shape)
    return np.round(mask * degraded + (1 - mask) * vis).astype(np.uint8)


def local_damage_scores(fuser, routing, pairs: Sequence[tuple[np.ndarray, np.ndarray]], kind: str,
                        *, seed: int = 0, strength: float = 0.6) -> dict[str, float]:
    """How a prompt handles damage over part of the frame.

    The visible image of each pair is degraded (``kind``, as :func:`degrade_pair`) over the left 40% of
    the frame only (:func:`damage_mask`); the infrared image is unchanged. Returns the mean SSIM of the
    fused image with the CLEAN infrared inside the damage (the left 35%), and with the CLEAN visible
    image outside it (the right 40%, well past the fade). A prompt that acts where the problem is
    raises the first and leaves the second as balanced fusion has it.
    """
    from streamfuse.metrics import vifb

    fuser.condition(routing)
    inside, outside = [], []
    for index, (ir, vis) in enumerate(pairs):
        ir, vis = _luma(ir), _luma(vis)
        fused = fuser.fuse(ir, partially_degraded(ir, vis, kind, seed=seed + index, strength=strength))
        left, right = int(0.35 * vis.shape[1]), int(0.6 * vis.shape[1])
        inside.append(vifb.ssim(ir[:, :left], ir[:, :left], fused[:, :left]) / 2)
        outside.append(vifb.ssim(vis[:, right:], vis[:, right:], fused[:, right:]) / 2)
    return {"inside_ssim_ir": float(np.mean(inside)), "outside_ssim_vis": float(np.mean(outside))}


def warm_object_contrast(fused: np.ndarray, mask: np.ndarray, ring: int = 9) -> float:
    """Mean luminance of the masked (warm) objects minus that of a ``ring``-pixel band around them."""
    objects = mask.astype(bool)
    around = cv2.dilate(objects.astype(np.uint8), np.ones((2 * ring + 1, 2 * ring + 1), np.uint8)).astype(bool)
    around &= ~objects
    luma = _luma(fused).astype(np.float64)
    return float(luma[objects].mean() - luma[around].mean())


def hot_mask(ir: np.ndarray, sigmas: float = 2.0) -> np.ndarray:
    """Warm-object mask of a thermal image without ground truth: pixels ``sigmas`` std above the mean
    (or, where no pixel is that hot, the hottest 1%)."""
    values = _luma(ir).astype(np.float64)
    threshold = min(values.mean() + sigmas * values.std(), np.percentile(values, 99))
    return (values >= threshold).astype(np.uint8)
