"""The web view: the live streams, the prompt box and the pipeline's health in a browser (docs/view.md)."""

from streamfuse.view.board import FrameBoard
from streamfuse.view.server import ViewServer

__all__ = ["FrameBoard", "ViewServer"]
