"""Process-wide settings, made in one explicit call: library objects never change them on their own.

The ``streamfuse`` command calls :func:`setup_runtime` once, after building its pipeline and before running
it; an application embedding streamfuse may call it too (or make its own choices).
"""

from __future__ import annotations

import logging
import os

from streamfuse.config import FusionConfig
from streamfuse.memory import configure_for_live

log = logging.getLogger(__name__)


def setup_runtime(fusion: FusionConfig, *, live: bool) -> None:
    """Set what a pipeline with this ``fusion`` section runs best with.

    * ``model`` fuser: torch's CPU threads = ``fusion.threads``, or all cores but one. The spare
      core is for the rest of the pipeline (capture, encoding): torch's OpenMP threads spin-wait,
      and when they compete with other busy threads for every core, the forward pass's tail
      latency grows by an order of magnitude.
    * ``model`` fuser on CUDA: ``torch.backends.cudnn.benchmark`` (shapes are fixed: cuDNN picks
      the fastest kernels once).
    * ``live`` input: glibc's allocator settings for a long run (:func:`~streamfuse.memory.configure_for_live`).
    """
    if live:
        configure_for_live()
    if fusion.fuser != "model":
        return
    import torch  # only for the network

    from streamfuse.inference.worker import resolve_device

    torch.set_num_threads(fusion.threads or max(1, len(os.sched_getaffinity(0)) - 1))
    try:
        cuda = resolve_device(fusion.device).type == "cuda"
    except ValueError:  # reported, naming the key, when the worker is built
        return
    if cuda:
        torch.backends.cudnn.benchmark = True
