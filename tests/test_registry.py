"""Extension points found by name: a source defined outside the package runs in a pipeline from config alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pytest

from streamfuse.config import SourceConfig, config_from_dict
from streamfuse.errors import ConfigError
from streamfuse.pipeline import Pipeline
from streamfuse.registry import FUSERS, SOURCES
from streamfuse.sources import Capture, Source, SourceContext, SourceOptions


@dataclass
class RampSourceConfig(SourceConfig):
    type: Literal["ramp"] = "ramp"
    frames: int = 5


class RampSource(Source):
    """A finite source of horizontal gradients at 10 fps."""

    def __init__(self, name: str, frames: int, *, options: SourceOptions | None = None) -> None:
        super().__init__(name, options=options)
        self.frames = frames

    def open(self) -> None:
        pass

    def read(self) -> Capture | None:
        if self.frames_read >= self.frames:
            return None
        ramp = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (24, 1))
        return Capture(ramp if self.name == "ir" else np.dstack([ramp] * 3), self.frames_read / 10)


@SOURCES.register("ramp", RampSourceConfig)
def ramp_source(name: str, config: RampSourceConfig, context: SourceContext) -> RampSource:
    return RampSource(name, config.frames, options=context.options(config, live=False))


def test_a_registered_source_is_built_from_its_config_type():
    data = {"sources": {"ir": {"type": "ramp", "frames": 4}, "vis": {"type": "ramp", "frames": 4}},
            "fusion": {"fuser": "classical"}, "stats": {"log_every_s": 0}}
    config = config_from_dict(data)
    assert isinstance(config.sources.ir, RampSourceConfig) and config.sources.ir.frames == 4
    stats = Pipeline(config).run(install_signal_handlers=False)
    assert stats.frames_out == 4


def test_unknown_names_list_the_registered_ones():
    with pytest.raises(ConfigError, match=r"sources.ir.type: unknown type 'webcam' \(expected one of: .*ramp"):
        config_from_dict({"sources": {"ir": {"type": "webcam"}}})
    assert list(FUSERS)[:2] == ["model", "classical"]
    with pytest.raises(ValueError, match="registered twice"):
        SOURCES.register("ramp", RampSourceConfig)(ramp_source)
