"""Sinks: where fused frames go (video file, image folder, ZeroMQ)."""

from __future__ import annotations

from streamfuse.config import ImagesSinkConfig, SinkConfig, VideoSinkConfig, ZmqSinkConfig
from streamfuse.sinks.base import Sink
from streamfuse.sinks.images import ImagesSink
from streamfuse.sinks.video import VideoSink, VideoWriter
from streamfuse.sinks.zmq import ReceivedFrame, Subscriber, ZmqSink
from streamfuse.stats import PipelineStats

__all__ = ["Sink", "ImagesSink", "VideoSink", "VideoWriter", "ZmqSink", "Subscriber", "ReceivedFrame",
           "build_sink"]


def build_sink(config: SinkConfig, *, key: str, fps: float = 30.0, stats: PipelineStats | None = None) -> Sink:
    """Create the sink described by ``config`` (its ``type`` picks the class).

    Args:
        config: The sink's config section.
        key: Its config key path (``sinks.0``), used in error messages.
        fps: Nominal frame rate of the stream (written in video headers).
        stats: Where the sink records latency.
    """
    if isinstance(config, VideoSinkConfig):
        return VideoSink(config.path, codec=config.codec, crf=config.crf, preset=config.preset, fps=fps,
                         overwrite=config.overwrite, fragmented=config.fragmented,
                         segment_minutes=config.segment_minutes, key=key,
                         queue_size=config.queue_size, stats=stats)
    if isinstance(config, ImagesSinkConfig):
        return ImagesSink(config.path, pattern=config.pattern, overwrite=config.overwrite, key=key,
                          queue_size=config.queue_size, stats=stats)
    if isinstance(config, ZmqSinkConfig):
        return ZmqSink(config.endpoint, bind=config.bind, topic=config.topic, encoding=config.encoding,
                       jpeg_quality=config.jpeg_quality, hwm=config.hwm, lossless=config.lossless,
                       wait_for_subscribers=config.wait_for_subscribers,
                       subscriber_timeout_s=config.subscriber_timeout_s, curve=config.curve, key=key,
                       queue_size=config.queue_size, stats=stats)
    raise TypeError(f"unknown sink config {type(config).__name__}")
