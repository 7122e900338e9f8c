"""Fusers: the algorithms that combine a registered infrared/visible pair into one image."""

from __future__ import annotations

from streamfuse.config import FusionConfig
from streamfuse.errors import ConfigError
from streamfuse.fusers.base import Fuser
from streamfuse.fusers.classical import ClassicalFuser, fuse_luminance

__all__ = ["Fuser", "ClassicalFuser", "fuse_luminance", "FUSERS", "build_fuser"]

#: Registered fuser names and what they are.
FUSERS = {
    "model": "the text-guided fusion network (DAFE + ITI), shipped weights",
    "classical": "Laplacian-pyramid luminance fusion (energy-weighted details, salience-weighted base)",
}


def build_fuser(config: FusionConfig) -> Fuser:
    """The fuser named by ``fusion.fuser``.

    Raises:
        ConfigError: The name is not a registered fuser.
    """
    if config.fuser == "classical":
        return ClassicalFuser(levels=config.classical.levels)
    if config.fuser == "model":
        from streamfuse.fusers.model import ModelFuser  # imports torch: only when the network is used

        return ModelFuser(config.weights, fusion=config)
    raise ConfigError(f"fusion.fuser: unknown fuser {config.fuser!r} (available: {', '.join(FUSERS)})")
