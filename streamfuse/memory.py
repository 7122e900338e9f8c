"""Giving freed memory back to the operating system during long live runs.

A live pipeline allocates and frees frame-sized buffers on a dozen threads. glibc's allocator keeps
much of what is freed in per-thread arenas (and, after the first frames, serves buffers of this
size from them instead of fresh mappings), so the process's resident size drifts up in steps while
the memory actually in use stays flat. :func:`release_free_memory` asks the allocator to hand free
pages back (``malloc_trim``), which the pipeline does once a minute on live inputs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)

TRIM_EVERY_S = 60.0
"""How often a live pipeline releases free memory."""


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows): nothing to do
        log.debug("malloc_trim is not available: freed memory stays with the allocator")
        return None


def release_free_memory() -> bool:
    """Return the C heap's free pages to the OS; False where the allocator cannot (not glibc)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(ctypes.c_size_t(0))
    return True
