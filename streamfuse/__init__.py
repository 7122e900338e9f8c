"""streamfuse: real-time, text-guided fusion of thermal (infrared) and visible video.

The public API is re-exported here flat::

    from streamfuse import Pipeline, load_config, ClassicalFuser, Subscriber
"""

from __future__ import annotations

__version__ = "0.1.0"

from streamfuse.config import Config, config_from_dict, load_config  # noqa: E402
from streamfuse.errors import ConfigError, PipelineError, SinkError, SourceError, StreamfuseError  # noqa: E402
from streamfuse.frames import Frame, FramePair, FusedFrame  # noqa: E402
from streamfuse.fusers import ClassicalFuser, Fuser, build_fuser  # noqa: E402
from streamfuse.pipeline import Pipeline  # noqa: E402
from streamfuse.registration import HomographyRegistrar, Registrar, build_registrar  # noqa: E402
from streamfuse.sinks import ImagesSink, Sink, Subscriber, VideoSink, VideoWriter, ZmqSink  # noqa: E402
from streamfuse.sources import Source, SyntheticScene, build_source  # noqa: E402
from streamfuse.stats import PipelineStats  # noqa: E402

__all__ = [
    "__version__", "Config", "config_from_dict", "load_config", "ConfigError", "PipelineError", "SinkError",
    "SourceError", "StreamfuseError", "Frame", "FramePair", "FusedFrame", "ClassicalFuser", "Fuser", "build_fuser",
    "Pipeline", "HomographyRegistrar", "Registrar", "build_registrar", "ImagesSink", "Sink", "Subscriber",
    "VideoSink", "VideoWriter", "ZmqSink", "Source", "SyntheticScene", "build_source", "PipelineStats",
]
