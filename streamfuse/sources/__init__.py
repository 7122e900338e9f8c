"""Frame sources, each running on its own capture thread: synthetic, video, images, camera.

Each kind registers a factory with its config dataclass in :data:`streamfuse.registry.SOURCES`.
"""

from __future__ import annotations

from streamfuse.config import SourceConfig, SyntheticConfig
from streamfuse.registry import SOURCES
from streamfuse.sources.base import Capture, Source, SourceContext, SourceOptions, SourceState
from streamfuse.sources.camera import CameraSource
from streamfuse.sources.images import ImagesSource
from streamfuse.sources.synthetic import SyntheticSource, build_scene
from streamfuse.sources.synthetic_scene import SyntheticScene
from streamfuse.sources.video import VideoSource, is_url
from streamfuse.stats import PipelineStats

__all__ = ["Capture", "Source", "SourceContext", "SourceOptions", "SourceState", "CameraSource", "ImagesSource",
           "SyntheticScene", "SyntheticSource", "VideoSource", "build_scene", "build_source", "is_url"]


def build_source(name: str, config: SourceConfig, *, synthetic: SyntheticConfig | None = None,
                 scene: SyntheticScene | None = None, stats: PipelineStats | None = None) -> Source:
    """Create the source described by ``config`` (the factory registered for its type).

    Args:
        name: ``ir`` or ``vis``.
        config: The source's config section.
        synthetic: Scene settings for ``synthetic`` sources (default settings if None).
        scene: An already built scene to share between the two synthetic cameras.
        stats: Where the source records capture latency and drops.
    """
    return SOURCES.for_config(config).factory(name, config, SourceContext(stats, synthetic, scene))
