"""The prompt bank (intents and their phrasings) and the router that turns a prompt into intent weights."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml

from streamfuse.errors import ConfigError
from streamfuse.text.cache import EmbeddingCache
from streamfuse.text.encoders import HashingTextEncoder, TextEncoder

#: Intents every bank must define (the fusion network and the training recipes refer to them).
REQUIRED_INTENTS = ("balanced", "thermal_targets", "visible_detail", "low_light", "glare", "fog", "noise",
                    "low_contrast_thermal", "mri_ct", "mri_pet", "mri_spect")


@dataclass(frozen=True)
class Intent:
    """One thing an operator can ask for."""

    id: str
    description: str
    phrasings: tuple[str, ...]
    recipe: dict[str, Any]
    """Training recipe: ``degradation`` to simulate and loss ``emphasis`` (used by the trainer)."""


@dataclass(frozen=True)
class PromptBank:
    """All intents, loaded from a YAML file; :attr:`version` changes whenever the file does."""

    intents: tuple[Intent, ...]
    default: str
    version: str
    source: str

    @property
    def ids(self) -> list[str]:
        """Intent ids in bank order."""
        return [intent.id for intent in self.intents]

    def intent(self, intent_id: str) -> Intent:
        """The intent with this id (KeyError if none)."""
        for intent in self.intents:
            if intent.id == intent_id:
                return intent
        raise KeyError(intent_id)


def load_bank(path: str | Path | None = None) -> PromptBank:
    """Load and validate a prompt bank (the packaged one when ``path`` is None).

    Raises:
        ConfigError: Missing file, invalid YAML, or a bank that lacks required intents or fields.
    """
    if path is None:
        text = (resources.files("streamfuse.text") / "prompt_bank.yaml").read_text(encoding="utf-8")
        source = "packaged prompt_bank.yaml"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"text.bank: cannot read prompt bank {path} ({exc.strerror})") from None
        source = str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"text.bank: {source} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("intents"), list):
        raise ConfigError(f"text.bank: {source} must be a mapping with a list 'intents'")
    intents = []
    for index, item in enumerate(data["intents"]):
        where = f"text.bank ({source}) intents.{index}"
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise ConfigError(f"{where}: each intent needs an 'id' string")
        phrasings = item.get("phrasings")
        if not isinstance(phrasings, list) or not phrasings or not all(isinstance(p, str) and p for p in phrasings):
            raise ConfigError(f"{where}.phrasings: expected a non-empty list of strings")
        intents.append(Intent(item["id"], str(item.get("description", "")), tuple(phrasings),
                              dict(item.get("recipe") or {})))
    ids = [intent.id for intent in intents]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise ConfigError(f"text.bank ({source}): intent id {sorted(duplicates)[0]!r} appears twice")
    missing = [i for i in REQUIRED_INTENTS if i not in ids]
    if missing:
        raise ConfigError(f"text.bank ({source}): missing required intents: {', '.join(missing)}")
    default = data.get("default", "balanced")
    if default not in ids:
        raise ConfigError(f"text.bank ({source}): default intent {default!r} is not defined")
    version = hashlib.sha256(text.encode()).hexdigest()[:16]
    return PromptBank(tuple(intents), default, version, source)


@dataclass
class Routing:
    """How a prompt maps onto the bank's intents.

    Attributes:
        prompt: The text routed.
        encoder: Id of the text encoder that ran.
        weights: Intent id -> weight; the weights sum to 1.
        similarity: Intent id -> best cosine similarity of the prompt to that intent's phrasings.
        matched: Intent id -> the phrasing that matched best.
        fallback: True when no intent matched clearly and the bank's default took all the weight.
    """

    prompt: str
    encoder: str
    weights: dict[str, float]
    similarity: dict[str, float] = field(default_factory=dict)
    matched: dict[str, str] = field(default_factory=dict)
    fallback: bool = False

    def active(self, minimum: float = 0.01) -> dict[str, float]:
        """Intents with a weight of at least ``minimum``, largest first."""
        return dict(sorted(((k, v) for k, v in self.weights.items() if v >= minimum), key=lambda kv: -kv[1]))

    def summary(self) -> str:
        """One line: ``thermal_targets 0.62, low_light 0.38``."""
        return ", ".join(f"{k} {v:.2f}" for k, v in self.active().items())

    def explain(self) -> str:
        """A readable table of every intent's similarity, weight and best phrasing."""
        lines = [f"prompt: {self.prompt!r}", f"encoder: {self.encoder}",
                 "routing: " + (self.summary() + (" (no intent matched clearly: default)" if self.fallback else ""))]
        lines.append(f"{'intent':<22}{'similarity':>11}{'weight':>8}  best phrasing")
        for intent_id, weight in self.weights.items():
            lines.append(f"{intent_id:<22}{self.similarity.get(intent_id, 0.0):>11.3f}{weight:>8.3f}  "
                         f"{self.matched.get(intent_id, '')}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for JSON output, headers and the cache)."""
        return {"prompt": self.prompt, "encoder": self.encoder, "weights": self.weights,
                "similarity": self.similarity, "matched": self.matched, "fallback": self.fallback}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Routing:
        """Inverse of :meth:`as_dict`."""
        return cls(data["prompt"], data["encoder"], dict(data["weights"]), dict(data["similarity"]),
                   dict(data["matched"]), bool(data["fallback"]))


#: Default routing floors: how far above the median intent an intent's similarity must be to count.
#: Keyword vectors are near 0 for unrelated texts; CLIP similarities between any two texts are high
#: and differ by a few hundredths, so its floor is lower.
DEFAULT_FLOOR = {"hashing": 0.15, "open_clip": 0.03}


class Router:
    """Routes prompts to intent weights with one text encoder.

    Embedding dimensions are weighted by their inverse intent frequency (smooth IDF over the bank):
    a dimension that many intents use, such as the bucket of a word like "infrared" in the keyword
    encoder, says little about which intent is meant. Dense encoders (CLIP) use every dimension in
    every intent, so their weights are all equal and this changes nothing for them.

    For each intent, the prompt's best cosine similarity over the intent's phrasings is taken; an
    intent is active when that similarity exceeds the median over all intents by at least
    ``floor``; active intents share the weight in proportion to the square of that excess (so a
    clear match dominates a word shared in passing, yet several clear matches stay active together).
    No active intent means the prompt says nothing the bank knows: the default intent (balanced)
    takes all the weight.

    Args:
        encoder: The text encoder (the same one embeds prompts and phrasings).
        bank: The prompt bank.
        cache: Embedding and routing cache (an in-memory one if None).
        floor: Routing floor; None picks the encoder's default (:data:`DEFAULT_FLOOR`).
    """

    def __init__(self, encoder: TextEncoder, bank: PromptBank, *, cache: EmbeddingCache | None = None,
                 floor: float | None = None) -> None:
        self.encoder = encoder
        self.bank = bank
        self.cache = cache or EmbeddingCache(None)
        kind = "hashing" if isinstance(encoder, HashingTextEncoder) else "open_clip"
        self.floor = DEFAULT_FLOOR[kind] if floor is None else floor
        self._phrasings = [(intent.id, p) for intent in bank.intents for p in intent.phrasings]
        self._phrasing_embeddings: torch.Tensor | None = None
        self._dimension_weights: torch.Tensor | None = None

    def _weighted(self, embeddings: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(embeddings * self._dimension_weights, dim=-1)

    def _bank_embeddings(self) -> torch.Tensor:
        if self._phrasing_embeddings is None:
            texts = [p for _, p in self._phrasings]
            raw = self.cache.embed(self.encoder, texts, self.bank.version)
            intents = self.bank.ids
            used = torch.zeros(len(intents), raw.shape[1], dtype=torch.bool)
            for (intent_id, _), row in zip(self._phrasings, raw, strict=True):
                used[intents.index(intent_id)] |= row.abs() > 1e-6
            frequency = used.sum(dim=0).float()
            self._dimension_weights = torch.log((1 + len(intents)) / (1 + frequency)) + 1
            self._phrasing_embeddings = self._weighted(raw)
        return self._phrasing_embeddings

    def route(self, prompt: str) -> Routing:
        """The routing of ``prompt`` (cached by encoder, bank version, floor and text)."""
        key = f"route|{self.encoder.id}|{self.bank.version}|{self.floor}|{prompt}"
        cached = self.cache.get_json(key)
        if cached is not None:
            return Routing.from_dict(cached)
        routing = self._route(prompt)
        self.cache.put_json(key, routing.as_dict())
        return routing

    def _route(self, prompt: str) -> Routing:
        ids = self.bank.ids
        if not prompt.strip():
            return Routing(prompt, self.encoder.id, {i: float(i == self.bank.default) for i in ids}, fallback=True)
        bank_embeddings = self._bank_embeddings()
        prompt_embedding = self._weighted(self.cache.embed(self.encoder, [prompt], self.bank.version))[0]
        scores = (bank_embeddings @ prompt_embedding).tolist()
        best: dict[str, tuple[float, str]] = {}
        for (intent_id, phrasing), score in zip(self._phrasings, scores, strict=True):
            if intent_id not in best or score > best[intent_id][0]:
                best[intent_id] = (score, phrasing)
        similarity = {i: round(best[i][0], 6) for i in ids}
        median = float(torch.tensor(list(similarity.values())).median())
        excess = {i: (similarity[i] - median) ** 2 for i in ids if similarity[i] - median >= self.floor}
        if excess:
            total = sum(excess.values())
            weights = {i: excess.get(i, 0.0) / total for i in ids}
        else:
            weights = {i: float(i == self.bank.default) for i in ids}
        return Routing(prompt, self.encoder.id, weights, similarity, {i: best[i][1] for i in ids},
                       fallback=not excess)
