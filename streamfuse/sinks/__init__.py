"""Sinks: where fused frames go (video file, image folder, ZeroMQ, RTSP).

Each kind registers a factory with its config dataclass in :data:`streamfuse.registry.SINKS`.
"""

from __future__ import annotations

from streamfuse.config import SinkConfig
from streamfuse.registry import SINKS
from streamfuse.sinks.base import Sink, SinkContext
from streamfuse.sinks.images import ImagesSink
from streamfuse.sinks.rtsp import RtspSink
from streamfuse.sinks.video import VideoSink, VideoWriter
from streamfuse.sinks.zmq import ReceivedFrame, Subscriber, ZmqSink
from streamfuse.stats import PipelineStats

__all__ = ["Sink", "SinkContext", "ImagesSink", "VideoSink", "VideoWriter", "ZmqSink", "Subscriber", "ReceivedFrame",
           "RtspSink", "build_sink"]


def build_sink(config: SinkConfig, *, key: str, fps: float = 30.0, stats: PipelineStats | None = None) -> Sink:
    """Create the sink described by ``config`` (the factory registered for its type).

    Args:
        config: The sink's config section.
        key: Its config key path (``sinks.0``), used in error messages.
        fps: Nominal frame rate of the stream (written in video headers).
        stats: Where the sink records latency.
    """
    return SINKS.for_config(config).factory(config, SinkContext(key, fps, stats))
