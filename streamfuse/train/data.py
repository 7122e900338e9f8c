"""Registered infrared/visible training pairs: discovery, loading and a random crop sampler.

The data root (e.g. ``shared/data``) holds one folder per data set. :func:`find_pair_folders` picks the
registered IR-VIS *training* sets from it and never the held-out evaluation set (``tno_cddfuse``) nor the
medical or deliberately misaligned sets; :func:`load_pairs` reads them as float32 luminance planes;
:class:`CropSampler` draws training batches: random crops of the clean sources plus the inputs degraded for a
randomly drawn intent (see :mod:`streamfuse.train.degrade`).

Note that some training images are copies (or neighbouring video frames) of held-out TNO test images; use
:func:`load_training_pairs` (or ``load_pairs(..., holdout_dirs=...)``) to drop the exact copies.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from streamfuse.errors import SourceError
from streamfuse.imageio import IMAGE_EXTENSIONS, natural_key, read_image
from streamfuse.train.degrade import INTENT_DEGRADATION, degrade_for_intent

logger = logging.getLogger(__name__)

#: Training sets laid out as ``<set>/ir`` + ``<set>/vi`` with matching file names.
IR_VI_SETS: tuple[str, ...] = ("roadscene", "m3fd_tardal_samples", "superfusion_reg_msrs",
                               "superfusion_reg_roadscene")
#: Folder of TNO video sequences: ``<folder>/<sequence>/thermal`` + ``<sequence>/visual``, paired by sorted order.
TNO_SEQUENCES = "tno_video_sequences"
#: Folders that must never be used for training: the held-out evaluation sets, medical data, misaligned pairs.
EXCLUDED_SETS: tuple[str, ...] = ("tno_cddfuse", "llvip_samples", "medical_harvard", "murf_rgbir_misaligned")
#: Held-out evaluation sets whose images are dropped from training by :func:`load_training_pairs`.
HELDOUT_SETS: tuple[str, ...] = ("tno_cddfuse", "llvip_samples")

#: Aspect ratios of an IR and a visible image may differ by this fraction for the IR to be resized.
_ASPECT_TOLERANCE = 0.01
#: Side of the thumbnails compared to recognise copies of held-out images.
_THUMB = 16


@dataclass(frozen=True)
class PairSource:
    """One folder pair of registered infrared and visible images.

    Attributes:
        name: Name of the set (``roadscene``, ``tno_video_sequences/Tree_sequence``, ...).
        ir_dir: Folder of the infrared images.
        vis_dir: Folder of the visible images.
    """

    name: str
    ir_dir: Path
    vis_dir: Path


def _has_images(folder: Path) -> bool:
    """Whether ``folder`` is a directory holding at least one image file."""
    return folder.is_dir() and any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir())


def _image_files(folder: Path) -> list[Path]:
    """Image files of ``folder``, sorted naturally by name."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=natural_key)


def find_pair_folders(root: Path) -> list[PairSource]:
    """Find the registered IR-VIS training sets under a data root.

    Looks for ``ir/`` + ``vi/`` in ``root`` itself (the user's own pairs), for :data:`IR_VI_SETS` (``ir/`` +
    ``vi/``; for the SuperFusion sets the aligned ``ir/``, not ``ir_warp/``) and for every sequence in
    ``tno_video_sequences/`` (``thermal/`` + ``visual/``). Anything else is ignored, in particular
    :data:`EXCLUDED_SETS`. Sets that are missing or hold no images are skipped.

    Args:
        root: The data root (e.g. ``shared/data``).

    Returns:
        The sets found, in the order of :data:`IR_VI_SETS` followed by the TNO sequences sorted by name.

    Raises:
        ValueError: No training set was found under ``root``.
    """
    root = Path(root)
    sources: list[PairSource] = []
    if _has_images(root / "ir") and _has_images(root / "vi"):  # a folder of the user's own pairs
        if root.resolve().name in EXCLUDED_SETS:
            raise ValueError(f"{root} is {root.resolve().name}, held out for evaluation (or not infrared-visible): "
                             "never trained on; give a folder of other pairs, or the folder of the shared data sets")
        sources.append(PairSource(root.resolve().name, root / "ir", root / "vi"))
    for name in IR_VI_SETS:
        ir_dir, vis_dir = root / name / "ir", root / name / "vi"
        if _has_images(ir_dir) and _has_images(vis_dir):
            sources.append(PairSource(name, ir_dir, vis_dir))
        elif (root / name).exists():
            logger.warning("%s: no images in ir/ and vi/; skipped", root / name)
    sequences = root / TNO_SEQUENCES
    if sequences.is_dir():
        for folder in sorted((p for p in sequences.iterdir() if p.is_dir()), key=natural_key):
            ir_dir, vis_dir = folder / "thermal", folder / "visual"
            if _has_images(ir_dir) and _has_images(vis_dir):
                sources.append(PairSource(f"{TNO_SEQUENCES}/{folder.name}", ir_dir, vis_dir))
    if not sources:
        raise ValueError(f"{root}: no IR-VIS training sets found (expected ir/ and vi/ folders of your own pairs "
                         f"in it, or any of {', '.join(IR_VI_SETS)} with ir/ and vi/ folders, or "
                         f"{TNO_SEQUENCES}/<sequence>/ with thermal/ and visual/)")
    return sources


def _match_files(source: PairSource) -> list[tuple[Path, Path]]:
    """Pair the IR and visible files of a source: by file stem when stems match, else by sorted position."""
    ir_files, vis_files = _image_files(source.ir_dir), _image_files(source.vis_dir)
    vis_by_stem = {p.stem: p for p in vis_files}
    common = [p for p in ir_files if p.stem in vis_by_stem]
    if common:
        unmatched = len(ir_files) + len(vis_files) - 2 * len(common)
        if unmatched:
            logger.warning("%s: %d image(s) without a partner of the same name; ignored", source.name, unmatched)
        return [(p, vis_by_stem[p.stem]) for p in common]
    if len(ir_files) != len(vis_files):
        logger.warning("%s: no common file names and %d IR vs %d visible images; cannot pair them, skipped",
                       source.name, len(ir_files), len(vis_files))
        return []
    pairs = list(zip(ir_files, vis_files, strict=True))
    # By position, as the TNO sequences need (1800i.bmp with 1800v.bmp): their numbers should agree.
    differing = [(ir, vis) for ir, vis in pairs if re.sub(r"\D", "", ir.stem) != re.sub(r"\D", "", vis.stem)]
    if differing:
        ir, vis = differing[0]
        logger.warning("%s: no common file names, so the images are paired by sorted position, and the numbers in "
                       "%d pair(s) differ (e.g. %s with %s): check that they show the same moment, or name each "
                       "pair's files alike", source.name, len(differing), ir.name, vis.name)
    return pairs


def _luminance(image: np.ndarray) -> np.ndarray:
    """Float32 luminance in ``[0, 1]`` of a uint8 gray or BGR image (Y of YCrCb, BT.601 weights)."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2YCrCb)[:, :, 0]
    return image.astype(np.float32) / np.float32(255.0)


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize with area averaging when shrinking and bilinear interpolation when enlarging."""
    shrinking = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def _thumbnail(image: np.ndarray) -> np.ndarray:
    """A tiny, size-independent summary of an image used to recognise copies."""
    return cv2.resize(image, (_THUMB, _THUMB), interpolation=cv2.INTER_AREA)


def _load_pair(ir_path: Path, vis_path: Path, name: str, max_side: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Read one pair as luminance planes of equal size, or ``None`` (with a warning) when it cannot be used."""
    try:
        ir, vis = _luminance(read_image(ir_path)), _luminance(read_image(vis_path))
    except SourceError as error:
        logger.warning("%s: %s; pair skipped", name, error)
        return None
    if ir.shape != vis.shape:
        ir_aspect, vis_aspect = ir.shape[1] / ir.shape[0], vis.shape[1] / vis.shape[0]
        if abs(ir_aspect / vis_aspect - 1.0) > _ASPECT_TOLERANCE:
            logger.warning("%s: IR %dx%d and visible %dx%d differ in aspect ratio; pair skipped",
                           name, ir.shape[1], ir.shape[0], vis.shape[1], vis.shape[0])
            return None
        ir = _resize(ir, vis.shape[1], vis.shape[0])
    scale = max_side / max(vis.shape)
    if scale < 1.0:
        width, height = max(1, round(vis.shape[1] * scale)), max(1, round(vis.shape[0] * scale))
        ir = cv2.resize(ir, (width, height), interpolation=cv2.INTER_AREA)
        vis = cv2.resize(vis, (width, height), interpolation=cv2.INTER_AREA)
    return ir, vis


def _heldout_thumbnails(holdout_dirs: Sequence[Path]) -> list[np.ndarray]:
    """Thumbnails of the IR images in the held-out folders."""
    thumbs = []
    for folder in holdout_dirs:
        for path in _image_files(Path(folder)):
            try:
                thumbs.append(_thumbnail(_luminance(read_image(path))))
            except SourceError as error:
                logger.warning("held-out image %s: %s; not checked for copies", path, error)
    return thumbs


def load_pairs(sources: Sequence[PairSource], *, max_side: int = 640, holdout_dirs: Sequence[Path] = (),
               holdout_tolerance: float = 0.5 / 255.0,
               drop_sources_with_copies: bool = False) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """Read the registered pairs of some sources as luminance planes.

    Files are paired by stem when the two folders share file names, else by sorted position (TNO sequences:
    ``1800i.bmp`` <-> ``1800v.bmp``). A pair whose sizes differ gets its IR resized to the visible size when the
    aspect ratios agree within 1 %, and is skipped with a warning otherwise. Both planes are then shrunk
    (area averaging) so that the longer side is at most ``max_side``.

    Args:
        sources: Folder pairs, e.g. from :func:`find_pair_folders`.
        max_side: Longest side after loading, in pixels.
        holdout_dirs: IR folders of held-out evaluation images; a pair whose IR image is a copy of one of them
            (mean absolute difference of 16x16 thumbnails at most ``holdout_tolerance``) is dropped with a
            warning.
        holdout_tolerance: Threshold of that comparison, in ``[0, 1]`` grey units. The default only catches
            copies (re-encoded or resized); neighbouring frames of a video differ by about 0.6 .. 8 grey levels.
        drop_sources_with_copies: Drop a whole source (e.g. a video sequence of the same scene as a held-out
            frame) when any of its pairs is such a copy, not just the copies.

    Returns:
        ``(ir, vis, name)`` per pair: float32 ``(H, W)`` planes in ``[0, 1]`` of the same size (visible: Y of
        YCrCb; IR: gray) and ``"<set>:<IR file stem>"``.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be a positive number of pixels, got {max_side}")
    heldout = _heldout_thumbnails(holdout_dirs)
    pairs: list[tuple[np.ndarray, np.ndarray, str]] = []
    for source in sources:
        kept: list[tuple[np.ndarray, np.ndarray, str]] = []
        copies: list[str] = []
        for ir_path, vis_path in _match_files(source):
            name = f"{source.name}:{ir_path.stem}"
            loaded = _load_pair(ir_path, vis_path, name, max_side)
            if loaded is None:
                continue
            if heldout:
                thumb = _thumbnail(loaded[0])
                if any(float(np.abs(thumb - other).mean()) <= holdout_tolerance for other in heldout):
                    copies.append(name)
                    continue
            kept.append((loaded[0], loaded[1], name))
        if copies and drop_sources_with_copies:
            logger.warning("%s: holds copies of held-out evaluation images (%s); whole source dropped",
                           source.name, ", ".join(copies))
            continue
        for name in copies:
            logger.warning("%s: copy of a held-out evaluation image; pair dropped", name)
        pairs.extend(kept)
    return pairs


def load_training_pairs(root: Path, *, max_side: int = 640, drop_sources_with_copies: bool = False,
                        sources: Sequence[PairSource] | None = None) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """All training pairs under a data root, without copies of the held-out evaluation images.

    :func:`find_pair_folders` followed by :func:`load_pairs` with the IR folders of :data:`HELDOUT_SETS`
    (where present, in ``root`` or beside it) as ``holdout_dirs``. In ``shared/data`` that drops
    ``m3fd_tardal_samples:TNO_028`` (= ``tno_cddfuse/11``), ``Nato_camp_sequence:1816i`` (= ``19``) and
    ``Tree_sequence:4915i`` (= ``20``); with ``drop_sources_with_copies`` the whole m3fd sample set and both
    TNO sequences go. ``sources``: what :func:`find_pair_folders` already found under ``root`` (None: look).

    Raises:
        ValueError: No training set under ``root``.
    """
    root = Path(root)
    # The held-out sets beside a folder of one's own pairs count too (a copy of one of their images in it).
    holdout = [folder / name / "ir" for folder in dict.fromkeys((root, root.resolve().parent))
               for name in HELDOUT_SETS if (folder / name / "ir").is_dir()]
    return load_pairs(find_pair_folders(root) if sources is None else sources, max_side=max_side, holdout_dirs=holdout,
                      drop_sources_with_copies=drop_sources_with_copies)


class CropSampler:
    """Draws training batches of random crops from loaded pairs, with inputs degraded per intent.

    All randomness (pair, crop position, flip, intent, degradation) comes from one generator seeded at
    construction, so the sequence of batches is the same for the same seed and pairs.

    Args:
        pairs: ``(ir, vis, name)`` tuples as returned by :func:`load_pairs`.
        crop: Side of the square crops. Images smaller than that are mirror-padded.
        seed: Seed of the sampler's generator.
        pair_weights: Relative probability of drawing each pair; ``None`` draws pairs uniformly.
    """

    def __init__(self, pairs: Sequence[tuple[np.ndarray, np.ndarray, str]], *, crop: int = 128, seed: int = 0,
                 pair_weights: Sequence[float] | None = None) -> None:
        if not pairs:
            raise ValueError("CropSampler needs at least one pair")
        if crop < 1:
            raise ValueError(f"crop must be a positive number of pixels, got {crop}")
        for ir, vis, name in pairs:
            if ir.ndim != 2 or ir.shape != vis.shape:
                raise ValueError(f"{name}: IR {ir.shape} and visible {vis.shape} must be equal 2-D planes")
        self.pairs = list(pairs)
        self.crop = crop
        self.rng = np.random.default_rng(seed)
        self._pair_p = None if pair_weights is None else _probabilities(pair_weights, len(self.pairs), "pair_weights")

    def _crop(self, ir: np.ndarray, vis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A random ``crop`` x ``crop`` window of the pair, mirror-padding images that are too small."""
        size = self.crop
        pad_y, pad_x = max(0, size - ir.shape[0]), max(0, size - ir.shape[1])
        if pad_y or pad_x:
            padding = ((pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2))
            ir, vis = np.pad(ir, padding, mode="symmetric"), np.pad(vis, padding, mode="symmetric")
        top = int(self.rng.integers(0, ir.shape[0] - size + 1))
        left = int(self.rng.integers(0, ir.shape[1] - size + 1))
        window = (slice(top, top + size), slice(left, left + size))
        return ir[window], vis[window]

    def batch(self, batch_size: int, intents: Sequence[str],
              weights: Sequence[float] | None = None) -> dict[str, torch.Tensor | list[str]]:
        """Draw one batch.

        Each sample: a pair (uniformly, or by ``pair_weights``), a random crop, a horizontal flip with
        probability 1/2, an intent from ``intents`` (by ``weights``), and the inputs degraded with
        :func:`~streamfuse.train.degrade.degrade_for_intent` at a random strength. The clean crops are left as
        they are.

        Args:
            batch_size: Number of samples.
            intents: IR-VIS intent ids to draw from (keys of ``INTENT_DEGRADATION``).
            weights: Relative probability of each intent; ``None`` draws them uniformly.

        Returns:
            ``ir_in``, ``vis_in`` (degraded inputs), ``ir``, ``vis`` (clean sources): float32 tensors of shape
            ``(B, 1, crop, crop)`` in ``[0, 1]``; ``intent``: the intent id of each sample; ``name``: the pair
            each crop comes from.

        Raises:
            ValueError: ``batch_size < 1``, no or unknown intents, or unusable weights.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not intents:
            raise ValueError("intents must name at least one intent")
        unknown = [intent for intent in intents if intent not in INTENT_DEGRADATION]
        if unknown:
            raise ValueError(f"intents without an IR-VIS training degradation: {', '.join(map(repr, unknown))}; "
                             f"expected some of {', '.join(INTENT_DEGRADATION)}")
        intent_p = None if weights is None else _probabilities(weights, len(intents), "weights")
        arrays: dict[str, list[np.ndarray]] = {"ir_in": [], "vis_in": [], "ir": [], "vis": []}
        chosen: list[str] = []
        names: list[str] = []
        for _ in range(batch_size):
            ir, vis, name = self.pairs[int(self.rng.choice(len(self.pairs), p=self._pair_p))]
            ir, vis = self._crop(ir, vis)
            if self.rng.random() < 0.5:
                ir, vis = ir[:, ::-1], vis[:, ::-1]
            intent = intents[int(self.rng.choice(len(intents), p=intent_p))]
            ir_in, vis_in = degrade_for_intent(ir, vis, intent, self.rng)
            for key, array in (("ir_in", ir_in), ("vis_in", vis_in), ("ir", ir), ("vis", vis)):
                arrays[key].append(array)
            chosen.append(intent)
            names.append(name)
        batch: dict[str, torch.Tensor | list[str]] = {
            key: torch.from_numpy(np.stack(planes)[:, None].astype(np.float32, copy=False))
            for key, planes in arrays.items()
        }
        batch["intent"] = chosen
        batch["name"] = names
        return batch


def _probabilities(weights: Sequence[float], count: int, what: str) -> np.ndarray:
    """Normalise non-negative weights (one per item) to probabilities."""
    values = np.asarray(weights, dtype=np.float64)
    if values.shape != (count,):
        raise ValueError(f"{what} must have one entry per item ({count}), got {values.size}")
    if not np.all(np.isfinite(values)) or np.any(values < 0) or values.sum() <= 0:
        raise ValueError(f"{what} must be finite, non-negative and not all zero, got {list(values)}")
    return values / values.sum()
