"""The prompt bank (intents and their phrasings) and the router that turns a prompt into intent weights."""

from __future__ import annotations

import hashlib
import logging
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from streamfuse.config import yaml_problem
from streamfuse.errors import ConfigError
from streamfuse.text.cache import EmbeddingCache
from streamfuse.text.encoders import TextEncoder

log = logging.getLogger(__name__)

#: Words that turn a prompt's topic around ("no fog", "not dark", "don't use thermal"): routing follows the topic.
#: ("avoid glare", "less noise" ask for what the glare and noise intents do, and are not warned about.)
NEGATION = re.compile(r"\b(no|not|never|without|don'?t|do not)\b", re.IGNORECASE)

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
        raise ConfigError(f"text.bank: {source} is not valid YAML ({yaml_problem(exc)})") from None
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
        part: Intent id -> the part of the prompt (all of it, or one clause) that matched best.
        excess: Intent id -> its best similarity above the median intent of the same part.
        floor: The routing floor: the excess an intent needs to be active.
        min_similarity: The encoder's fall-back floor: below it, the best match says nothing.
    """

    prompt: str
    encoder: str
    weights: dict[str, float]
    similarity: dict[str, float] = field(default_factory=dict)
    matched: dict[str, str] = field(default_factory=dict)
    fallback: bool = False
    part: dict[str, str] = field(default_factory=dict)
    excess: dict[str, float] = field(default_factory=dict)
    floor: float = 0.0
    min_similarity: float = 0.0

    def active(self, minimum: float = 0.01) -> dict[str, float]:
        """Intents with a weight of at least ``minimum``, largest first."""
        return dict(sorted(((k, v) for k, v in self.weights.items() if v >= minimum), key=lambda kv: -kv[1]))

    def summary(self) -> str:
        """One line: ``thermal_targets 0.62, low_light 0.38``."""
        return ", ".join(f"{k} {v:.2f}" for k, v in self.active().items())

    def reasons(self) -> list[str]:
        """Why each active intent was chosen (or why none was), one line each."""
        if not self.similarity:
            return ["the prompt is empty: default"]
        closest = max(self.similarity, key=self.similarity.get)
        if self.fallback and self.similarity[closest] < self.min_similarity:
            return [f"the closest phrasing, {self.matched[closest]!r} ({closest}), is only "
                    f"{self.similarity[closest]:.3f} similar, under this encoder's fall-back floor "
                    f"{self.min_similarity:.2f}: default"]
        if self.fallback:
            return [f"no intent is {self.floor:.2f} above the median intent (closest: {closest}, "
                    f"{self.excess.get(closest, 0.0):+.3f}): default"]
        return [f"{i}: {self.part.get(i, self.prompt)!r} ~ {self.matched[i]!r} (similarity {self.similarity[i]:.3f}, "
                f"{self.excess.get(i, 0.0):+.3f} over the median intent; floor {self.floor:.2f})"
                for i in self.active()]

    def explain(self) -> str:
        """A readable table of every intent's similarity, weight and best phrasing, with the reasons."""
        lines = [f"prompt: {self.prompt!r}", f"encoder: {self.encoder}",
                 "routing: " + (self.summary() + (" (no intent matched clearly: default)" if self.fallback else ""))]
        lines += ["why: " + reason for reason in self.reasons()]
        lines.append(f"{'intent':<22}{'similarity':>11}{'weight':>8}  best phrasing")
        for intent_id, weight in self.weights.items():
            lines.append(f"{intent_id:<22}{self.similarity.get(intent_id, 0.0):>11.3f}{weight:>8.3f}  "
                         f"{self.matched.get(intent_id, '')}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for JSON output, headers and the cache)."""
        return {"prompt": self.prompt, "encoder": self.encoder, "weights": self.weights,
                "similarity": self.similarity, "matched": self.matched, "fallback": self.fallback,
                "part": self.part, "excess": self.excess, "floor": self.floor, "min_similarity": self.min_similarity}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Routing:
        """Inverse of :meth:`as_dict`."""
        return cls(data["prompt"], data["encoder"], dict(data["weights"]), dict(data["similarity"]),
                   dict(data["matched"]), bool(data["fallback"]), dict(data.get("part", {})),
                   dict(data.get("excess", {})), float(data.get("floor", 0.0)), float(data.get("min_similarity", 0.0)))


#: A second intent is active only when its excess over the median is at least this share of the top one's.
SECOND_INTENT_SHARE = 0.7


def prompt_parts(prompt: str) -> list[str]:
    """The prompt and, when it has several, its clauses (split at punctuation and and/but/while/so).

    A prompt that names two problems ("past midnight, and find the deer") is compared with the bank
    clause by clause as well as whole, so each problem is matched on its own words.
    """
    clauses = [c.strip() for c in re.split(r"[,;.!?]|\b(?:and|but|while|so|also|plus)\b", prompt, flags=re.I)]
    clauses = [c for c in clauses if c]
    return [prompt] + clauses if len(clauses) > 1 else [prompt]


class Router:
    """Routes prompts to intent weights with one text encoder.

    Embedding dimensions are weighted by their inverse intent frequency (smooth IDF over the bank):
    a dimension that many intents use, such as the bucket of a word like "infrared" in the keyword
    encoder, says little about which intent is meant. Dense encoders (CLIP, MiniLM) use every
    dimension in every intent, so their weights are all equal and this changes nothing for them.

    The prompt and each of its clauses (:func:`prompt_parts`) are compared with every phrasing; an
    intent's similarity is its best match. An intent is active when that similarity exceeds the
    median over all intents by at least ``floor`` and by at least :data:`SECOND_INTENT_SHARE` of the
    top intent's excess (so a word shared in passing does not activate a second intent, while two
    problems named in one prompt both do); active intents share the weight in proportion to their
    excess. No active intent means the prompt says nothing the bank knows: the default intent
    (balanced) takes all the weight.

    Args:
        encoder: The text encoder (the same one embeds prompts and phrasings).
        bank: The prompt bank.
        cache: Embedding and routing cache (an in-memory one if None).
        floor: Routing floor; None takes the encoder's own (``encoder.floor``).
    """

    def __init__(self, encoder: TextEncoder, bank: PromptBank, *, cache: EmbeddingCache | None = None,
                 floor: float | None = None) -> None:
        self.encoder = encoder
        self.bank = bank
        self.cache = cache or EmbeddingCache(None)
        self.floor = encoder.floor if floor is None else floor
        self._phrasings = [(intent.id, p) for intent in bank.intents for p in intent.phrasings]
        self._phrasing_embeddings: np.ndarray | None = None
        self._dimension_weights: np.ndarray | None = None

    def _weighted(self, embeddings: np.ndarray) -> np.ndarray:
        weighted = embeddings * self._dimension_weights
        norms = np.linalg.norm(weighted, axis=1, keepdims=True)
        return weighted / np.maximum(norms, 1e-12)

    def _bank_embeddings(self) -> np.ndarray:
        if self._phrasing_embeddings is None:
            texts = [p for _, p in self._phrasings]
            raw = self.cache.embed(self.encoder, texts, self.bank.version)
            intents = self.bank.ids
            used = np.zeros((len(intents), raw.shape[1]), dtype=bool)
            for (intent_id, _), row in zip(self._phrasings, raw, strict=True):
                used[intents.index(intent_id)] |= np.abs(row) > 1e-6
            frequency = used.sum(axis=0)
            self._dimension_weights = (np.log((1 + len(intents)) / (1 + frequency)) + 1).astype(np.float32)
            self._phrasing_embeddings = self._weighted(raw)
        return self._phrasing_embeddings

    def warm(self) -> None:
        """Load the encoder's model and embed the prompt bank now: the first new prompt then costs one
        encoding, not a model load and a bank's worth of them."""
        self.encoder.warm()
        self._bank_embeddings()

    def route(self, prompt: str) -> Routing:
        """The routing of ``prompt`` (cached by encoder, bank version, floor and text; a hit loads no model)."""
        # Bytes that could not be decoded as UTF-8 reach Python as surrogates (a Latin-1 terminal's 'é' on the
        # command line), which failed later with a traceback: they become U+FFFD, the replacement character.
        prompt = prompt.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        key = f"route|{self.encoder.id}|{self.bank.version}|{self.floor}|{prompt}"
        routing = self.cache.get_json(key, self._cached_routing)
        if routing is None:
            routing = self._route(prompt)
            self.cache.put_json(key, routing.as_dict())
        if (negation := NEGATION.search(prompt)) is not None:
            log.warning("prompt %r says %r: routing follows what a prompt is about, not a negation (here: %s); if "
                        "that is what you meant to avoid, say what to favour instead, e.g. 'trust the visible camera' "
                        "rather than 'no thermal'", prompt, negation.group(0), routing.summary())
        return routing

    def _cached_routing(self, data: Any) -> Routing:
        """A cached routing, checked: its weights name this bank's intents and are finite (ValueError if not)."""
        routing = Routing.from_dict(data)
        weights = list(routing.weights.values())
        if set(routing.weights) != set(self.bank.ids) or not all(math.isfinite(w) and w >= 0 for w in weights) \
                or abs(sum(weights) - 1.0) > 1e-3:  # routings are shares of the prompt: none negative, sum 1
            raise ValueError("not a routing over this bank's intents")
        return routing

    def _route(self, prompt: str) -> Routing:
        ids = self.bank.ids
        if not prompt.strip():
            return Routing(prompt, self.encoder.id, {i: float(i == self.bank.default) for i in ids}, fallback=True)
        bank_embeddings = self._bank_embeddings()
        parts = prompt_parts(prompt)
        scores = self._weighted(self.cache.embed(self.encoder, parts, self.bank.version)) @ bank_embeddings.T
        # part x intent: the best phrasing of each intent for each part of the prompt
        part_scores = np.full((len(parts), len(ids)), -np.inf)
        best_phrasing = np.zeros((len(parts), len(ids)), dtype=int)
        for column, (intent_id, _) in enumerate(self._phrasings):
            k = ids.index(intent_id)
            better = scores[:, column] > part_scores[:, k]
            part_scores[better, k] = scores[better, column]
            best_phrasing[better, k] = column
        excess = part_scores - np.median(part_scores, axis=1, keepdims=True)
        whole = excess[0]
        active = {k: float(whole[k]) for k in range(len(ids))
                  if whole[k] >= self.floor and whole[k] >= SECOND_INTENT_SHARE * whole.max()}
        for row in excess[1:]:  # each clause adds its own top intent
            k = int(row.argmax())
            if row[k] >= self.floor:
                active[k] = max(active.get(k, 0.0), float(row[k]))
        if part_scores.max() < self.encoder.min_similarity:
            active = {}
        if active:
            total = sum(active.values())
            weights = {i: active.get(k, 0.0) / total for k, i in enumerate(ids)}
        else:
            weights = {i: float(i == self.bank.default) for i in ids}
        best_part = part_scores.argmax(axis=0)
        similarity = {i: round(float(part_scores[best_part[k], k]), 6) for k, i in enumerate(ids)}
        matched = {i: self._phrasings[best_phrasing[best_part[k], k]][1] for k, i in enumerate(ids)}
        best_excess = excess.max(axis=0)
        return Routing(prompt, self.encoder.id, weights, similarity, matched, fallback=not active,
                       part={i: parts[best_part[k]] for k, i in enumerate(ids)},
                       excess={i: round(float(best_excess[k]), 6) for k, i in enumerate(ids)}, floor=self.floor,
                       min_similarity=self.encoder.min_similarity)
