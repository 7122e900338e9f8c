"""streamfuse: real-time, text-guided fusion of thermal (infrared) and visible video.

The public API is re-exported here flat::

    from streamfuse import Pipeline, load_config, ClassicalFuser, Subscriber

Names are imported on first use, so ``import streamfuse.inference`` on a bare GPU machine does not
pull in ZeroMQ, PyAV or open_clip.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "streamfuse.config": ["Config", "config_from_dict", "load_config"],
    "streamfuse.errors": ["ConfigError", "PipelineError", "SinkError", "SourceError", "StreamfuseError"],
    "streamfuse.frames": ["Frame", "FramePair", "FusedFrame"],
    "streamfuse.fusers": ["ClassicalFuser", "Fuser", "build_fuser"],
    "streamfuse.fusers.model": ["ModelFuser"],
    "streamfuse.pipeline": ["Pipeline"],
    "streamfuse.runtime": ["setup_runtime"],
    "streamfuse.registration": ["HomographyRegistrar", "Registrar", "build_registrar"],
    "streamfuse.sinks": ["ImagesSink", "Sink", "Subscriber", "VideoSink", "VideoWriter", "ZmqSink"],
    "streamfuse.sources": ["Source", "SyntheticScene", "build_source"],
    "streamfuse.stats": ["PipelineStats"],
    "streamfuse.inference": ["InferenceWorker"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = ["__version__", *_WHERE]


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'streamfuse' has no attribute {name!r}")
