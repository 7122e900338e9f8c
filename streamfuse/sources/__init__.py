"""Frame sources, each running on its own capture thread: synthetic, video, images, camera."""

from __future__ import annotations

import dataclasses

from streamfuse.config import (
    CameraSourceConfig,
    ImagesSourceConfig,
    SourceConfig,
    SyntheticConfig,
    SyntheticSourceConfig,
    VideoSourceConfig,
)
from streamfuse.sources.base import Capture, Source, SourceState
from streamfuse.sources.camera import CameraSource
from streamfuse.sources.images import ImagesSource
from streamfuse.sources.synthetic import SyntheticSource, build_scene
from streamfuse.sources.synthetic_scene import SyntheticScene
from streamfuse.sources.video import VideoSource, is_url
from streamfuse.stats import PipelineStats

__all__ = ["Capture", "Source", "SourceState", "CameraSource", "ImagesSource", "SyntheticScene", "SyntheticSource",
           "VideoSource", "build_source"]


def build_source(name: str, config: SourceConfig, *, synthetic: SyntheticConfig | None = None,
                 scene: SyntheticScene | None = None, stats: PipelineStats | None = None) -> Source:
    """Create the source described by ``config`` (its ``type`` picks the class).

    Args:
        name: ``ir`` or ``vis``.
        config: The source's config section.
        synthetic: Scene settings for ``synthetic`` sources (default settings if None).
        scene: An already built scene to share between the two synthetic cameras.
        stats: Where the source records capture latency and drops.
    """
    live = isinstance(config, CameraSourceConfig) or (isinstance(config, VideoSourceConfig) and is_url(config.uri))
    reconnect = config.reconnect
    if reconnect.enabled is None:
        reconnect = dataclasses.replace(reconnect, enabled=live)
    common = {"drop_policy": config.drop_policy, "queue_size": config.queue_size, "stats": stats,
              "reconnect": reconnect}
    if isinstance(config, SyntheticSourceConfig):
        scene = scene or build_scene(synthetic or SyntheticConfig())
        return SyntheticSource(name, scene, fps=config.fps, frames=config.frames, realtime=config.realtime,
                               **common)
    if isinstance(config, VideoSourceConfig):
        return VideoSource(name, config.uri, realtime=config.realtime, **common)
    if isinstance(config, ImagesSourceConfig):
        return ImagesSource(name, config.path, fps=config.fps, realtime=config.realtime, **common)
    if isinstance(config, CameraSourceConfig):
        return CameraSource(name, config.device, width=config.width, height=config.height, fps=config.fps,
                            **common)
    raise TypeError(f"unknown source config {type(config).__name__}")
