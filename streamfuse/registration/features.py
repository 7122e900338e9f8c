"""Learned cross-modal structure images for automatic registration.

Hand-made edge images (:func:`streamfuse.registration.estimate.structure_image`) of an infrared and a
visible frame often disagree: a warm wall without texture is an edge-free blank in one modality and a
field of edges in the other, and a dark visible night scene has almost no edges at all. Two small
convolutional networks, one per modality, turn each frame into a one-channel *structure image* that was
trained to correlate with the other modality's only where the frames are aligned
(:mod:`streamfuse.train.registration`: registered pairs, a contrastive loss over shifts). The estimator
then aligns these images exactly as it aligns edge images (correlation search, ECC, agreement), so the
learned part only replaces what the images look like, not how the transform is found.

Each network: the gray frame contrast-normalised over :data:`NORM_WINDOW` pixels, then 3x3
convolutions of increasing dilation with ReLUs (reflected padding) and a 1x1 convolution to one
channel. It runs here in NumPy and OpenCV, so calibrating a rig does not load torch (whose import alone
takes about 2 s); training (torch) writes the weights as a plain ``.npz`` file, shipped in the package
(``streamfuse/models/weights/regfeatures.npz``, about 60 kB).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from streamfuse.errors import ConfigError

#: Name stored in (and required of) a weights file.
ARCHITECTURE = "streamfuse-regfeatures-v1"
#: Side (pixels) of the window the inputs are contrast-normalised over.
NORM_WINDOW = 15
#: Flat regions are not amplified beyond this local standard deviation (grey units of a ``[0, 1]`` image).
NORM_EPS = 0.02
#: Dilations of the 3x3 convolutions of a new network, in order (about 31 pixels of context around each
#: output pixel); a weights file stores its own.
DILATIONS = (1, 2, 4, 1)
#: The two networks' names.
MODALITIES = ("ir", "vis")


def default_weights_path() -> Path:
    """The structure networks shipped in the package."""
    return Path(str(resources.files("streamfuse.models") / "weights" / "regfeatures.npz"))


@dataclasses.dataclass(frozen=True)
class StructureWeights:
    """The weights of both networks: per modality, ``(weight, bias)`` of each layer, torch's layout
    (``(out, in, k, k)``), the 3x3 layers first and the 1x1 output layer last; the 3x3 layers' dilations."""

    layers: dict[str, tuple[tuple[np.ndarray, np.ndarray], ...]]
    metadata: dict[str, Any]
    dilations: tuple[int, ...] = DILATIONS


def save_structure_weights(layers: dict[str, list[tuple[np.ndarray, np.ndarray]]], path: str | Path,
                           metadata: dict[str, Any] | None = None, dilations: tuple[int, ...] = DILATIONS) -> Path:
    """Write both networks' layers (as :class:`StructureWeights` holds them) to an ``.npz`` file, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"architecture": np.array(ARCHITECTURE), "metadata": np.array(json.dumps(metadata or {})),
              "dilations": np.array(dilations, np.int64)}
    for modality in MODALITIES:
        for index, (weight, bias) in enumerate(layers[modality]):
            arrays[f"{modality}.{index}.weight"] = np.asarray(weight, np.float32)
            arrays[f"{modality}.{index}.bias"] = np.asarray(bias, np.float32)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return path


def load_structure_weights(path: str | Path | None = None) -> StructureWeights:
    """Read the networks' weights (the shipped ones when ``path`` is None); no code is run from the file.

    Raises:
        ConfigError: The file is missing, not such a weights file, or its layers have the wrong shapes.
    """
    path = Path(path) if path is not None else default_weights_path()
    if not path.is_file():
        raise ConfigError(f"registration features: no weights at {path}; train them with "
                          "`python tools/train_registration_features.py` or use `--structure edges`")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ConfigError(f"registration features: {path} is not a readable weights file "
                          f"({str(exc).splitlines()[0][:120]})") from None
    found = str(arrays.get("architecture", "nothing named"))
    if found != ARCHITECTURE:
        raise ConfigError(f"registration features: {path} holds {found!r}, not {ARCHITECTURE} weights")
    dilations = tuple(int(d) for d in arrays.get("dilations", np.array(DILATIONS)).ravel())
    if not dilations or min(dilations) < 1:
        raise ConfigError(f"registration features: {path}: dilations {dilations} are not positive integers")
    layers = {}
    for modality in MODALITIES:
        names = [(f"{modality}.{i}.weight", f"{modality}.{i}.bias") for i in range(len(dilations) + 1)]
        missing = [name for pair in names for name in pair if name not in arrays]
        if missing:
            raise ConfigError(f"registration features: {path} lacks {', '.join(missing)}")
        layers[modality] = tuple((arrays[w].astype(np.float32), arrays[b].astype(np.float32)) for w, b in names)
        _check_shapes(layers[modality], path)
    return StructureWeights(layers, json.loads(str(arrays["metadata"])), dilations)


def _check_shapes(layers: tuple[tuple[np.ndarray, np.ndarray], ...], path: Path) -> None:
    inputs = 1
    for index, (weight, bias) in enumerate(layers):
        last = index == len(layers) - 1
        kernel = 1 if last else 3
        if (weight.ndim != 4 or weight.shape[1:] != (inputs, kernel, kernel) or bias.shape != (weight.shape[0],)
                or (last and weight.shape[0] != 1)):
            raise ConfigError(f"registration features: {path}: layer {index} has shape {weight.shape} "
                              f"(bias {bias.shape}); expected (C, {inputs}, {kernel}, {kernel})")
        inputs = weight.shape[0]


_shipped: StructureWeights | None = None
_shipped_lock = threading.Lock()


def shipped_structure() -> StructureWeights:
    """The shipped networks' weights, read once per process."""
    global _shipped
    with _shipped_lock:
        if _shipped is None:
            _shipped = load_structure_weights()
        return _shipped


def local_contrast_normalise(gray: np.ndarray) -> np.ndarray:
    """``(x - local mean) / local standard deviation`` over :data:`NORM_WINDOW` pixels (``float32``, ``[0, 1]`` in).

    Makes the networks indifferent to exposure, gain and the camera's overall contrast.
    """
    size = (NORM_WINDOW, NORM_WINDOW)
    centred = gray - cv2.blur(gray, size, borderType=cv2.BORDER_REPLICATE)
    variance = cv2.blur(centred * centred, size, borderType=cv2.BORDER_REPLICATE)
    return centred / np.sqrt(variance + NORM_EPS * NORM_EPS)


def _conv3x3(planes: np.ndarray, weight: np.ndarray, bias: np.ndarray, dilation: int) -> np.ndarray:
    """``(H, W, C_in)`` -> ``(H, W, C_out)``: a dilated 3x3 convolution with reflected padding.

    On the padded image flattened to ``(pixels, C_in)``, each of the nine taps is the same matrix shifted
    by a constant number of rows, so every tap is one matrix product on a contiguous view (no copies);
    the products for positions in the padding columns are computed and then dropped.
    """
    height, width = planes.shape[:2]
    padded = cv2.copyMakeBorder(planes, dilation, dilation, dilation, dilation, cv2.BORDER_REFLECT_101)
    padded_width = width + 2 * dilation
    flat = padded.reshape(-1, weight.shape[1])
    count = (height - 1) * padded_width + width
    out = np.empty((height * padded_width, weight.shape[0]), np.float32)
    out[count:] = 0.0
    out[:count] = bias
    for ky in range(3):
        for kx in range(3):
            start = ky * dilation * padded_width + kx * dilation
            out[:count] += flat[start:start + count] @ weight[:, :, ky, kx].T
    return out.reshape(height, padded_width, -1)[:, :width]


def learned_structure(gray: np.ndarray, modality: str, weights: StructureWeights | None = None) -> np.ndarray:
    """Structure image (``float32``, same size, zero mean) of a gray ``uint8``/``float`` (``[0, 1]``) frame
    of ``modality`` (``"ir"`` or ``"vis"``), with ``weights`` or the shipped networks.

    Zero mean, so that the zeros a warp fills in where a frame does not reach are neutral.
    """
    weights = weights if weights is not None else shipped_structure()
    layers = weights.layers[modality]
    scale = 255.0 if gray.dtype == np.uint8 else 1.0
    planes = local_contrast_normalise(np.asarray(gray, np.float32) / scale)[..., None]
    for (weight, bias), dilation in zip(layers[:-1], weights.dilations, strict=True):
        planes = np.maximum(_conv3x3(np.ascontiguousarray(planes), weight, bias, dilation), 0.0)
    weight, bias = layers[-1]
    structure = planes @ weight[0, :, 0, 0] + bias[0]
    return (structure - structure.mean()).astype(np.float32, copy=False)
