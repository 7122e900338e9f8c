"""Fusers: the algorithms that combine a registered infrared/visible pair into one image.

Each fuser registers a factory taking the ``fusion`` section in :data:`streamfuse.registry.FUSERS`;
``fusion.fuser`` names it.
"""

from __future__ import annotations

import logging

from streamfuse.config import FusionConfig
from streamfuse.fusers.base import Fuser
from streamfuse.fusers.classical import ClassicalFuser, fuse_luminance
from streamfuse.registry import FUSERS

__all__ = ["Fuser", "ClassicalFuser", "fuse_luminance", "FUSERS", "build_fuser"]

log = logging.getLogger(__name__)


@FUSERS.register("model")
def _model(config: FusionConfig) -> Fuser:
    """The text-guided fusion network (DAFE + ITI), shipped weights."""
    from streamfuse.fusers.model import ModelFuser  # imports torch: only when the network is used

    return ModelFuser(config.weights, fusion=config)


@FUSERS.register("classical")
def _classical(config: FusionConfig) -> Fuser:
    """Band-selection luminance fusion: the network's fixed rule, in OpenCV."""
    if config.device not in ("auto", "cpu"):
        log.warning("fusion.device=%s has no effect: the classical fuser runs on the CPU (the model fuser uses "
                    "the GPU)", config.device)
    return ClassicalFuser()


def build_fuser(config: FusionConfig) -> Fuser:
    """The fuser named by ``fusion.fuser``.

    Raises:
        ConfigError: The name is not a registered fuser.
    """
    return FUSERS.find(config.fuser, key="fusion.fuser").factory(config)
