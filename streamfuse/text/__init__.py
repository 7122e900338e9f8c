"""Text guidance: encoders (open_clip, offline keywords), the prompt bank, the router and its cache."""

from __future__ import annotations

from streamfuse.config import TextConfig
from streamfuse.text.cache import EmbeddingCache, default_cache_dir
from streamfuse.text.encoders import HashingTextEncoder, OpenClipTextEncoder, TextEncoder, build_encoder
from streamfuse.text.prompts import Intent, PromptBank, Router, Routing, load_bank

__all__ = ["EmbeddingCache", "HashingTextEncoder", "OpenClipTextEncoder", "TextEncoder", "Intent", "PromptBank",
           "Router", "Routing", "build_encoder", "build_router", "load_bank"]


def build_router(config: TextConfig) -> Router:
    """The router described by the ``text`` config section (encoder, bank, cache, floor)."""
    encoder = build_encoder(config.encoder, model=config.open_clip.model, pretrained=config.open_clip.pretrained,
                            model_config=config.open_clip.model_config)
    if config.cache_dir is None:
        directory = None
    else:
        directory = default_cache_dir() if config.cache_dir == "default" else config.cache_dir
    return Router(encoder, load_bank(config.bank), cache=EmbeddingCache(directory), floor=config.floor)
