"""Keeping a long live run's memory flat (glibc).

A live pipeline allocates and frees frame-sized buffers on a dozen threads, and every camera
reconnect or new video segment starts decoder or encoder threads of its own. By default glibc
serves a large block from a fresh mapping until a block of that size is freed, then raises its mmap
(and trim) threshold and serves blocks of that size from its arenas; so each new decoder or encoder
moves a few more buffers from mappings into the arenas, where freed buffers stay scattered:
measured with tools/soak.py, memory held by the allocator grew by ~36 MB per hour under a camera
drop every 30 s while the memory in use stayed flat.

:func:`configure_for_live` fixes the allocator in the state that this adjustment reaches anyway
after the first frames (blocks up to :data:`MMAP_THRESHOLD` from the arenas, no automatic trimming
below :data:`TRIM_THRESHOLD`), so it no longer changes while the run goes on, and limits the
arenas to :data:`ARENAS`; :func:`release_free_memory` returns free pages to the OS
(``malloc_trim``). :func:`streamfuse.runtime.setup_runtime` calls the first for live inputs (the CLI
calls it before a run), and the pipeline the second every :data:`TRIM_EVERY_S` on live inputs. Both do
nothing where the C library is not glibc. (A low fixed mmap threshold such as glibc's initial 128 KiB
also keeps the arenas flat, but makes every large torch tensor a fresh mapping: the model fuser ran
2.5x slower.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)

TRIM_EVERY_S = 10.0
"""How often a live pipeline releases free memory (``malloc_trim`` takes well under a millisecond
on these heaps; once a minute left RSS swinging by 1-2 MB between trims)."""

ARENAS = 2
"""Malloc arenas a live run's threads share (glibc's default is 8 per core): fewer arenas leave
fewer partly used heaps behind as decoder and encoder threads come and go; each thread's cache of
small blocks keeps them from contending."""

MMAP_THRESHOLD = 32 * 1024 * 1024
"""Blocks at least this large get their own mapping (glibc's upper limit of its own adjustment)."""

TRIM_THRESHOLD = 2 * MMAP_THRESHOLD
"""Free memory at the top of a heap that glibc keeps without being asked to trim (its adjusted value)."""

# mallopt parameter numbers in glibc's malloc.h
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 - both exist on glibc only
    except (OSError, AttributeError):
        log.debug("not glibc: the allocator is left as it is")
        return None
    return libc


def configure_for_live() -> bool:
    """Fix glibc's thresholds and limit its arenas (see the module docstring); False where that is
    not possible."""
    libc = _glibc()
    if libc is None:
        return False
    settings = ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_ARENA_MAX, ARENAS))
    return all([libc.mallopt(parameter, value) for parameter, value in settings])  # a list: every setting is tried


def release_free_memory() -> bool:
    """Return the C heap's free pages to the OS (``malloc_trim``); False where not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(ctypes.c_size_t(0))
    return True


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (all arenas; sizes in bytes)."""

    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


def c_heap_mb() -> dict[str, float]:
    """The C heap in MB (glibc ``mallinfo2``, all arenas): ``heap_mb`` handed out and not freed,
    ``heap_held_mb`` obtained from the OS, ``heap_mapped_mb`` of it in separate mappings (large
    blocks); empty where not glibc. RSS growing while ``heap_mb`` stays flat is memory the
    allocator keeps, not a leak."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return {}
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return {"heap_mb": round((info.uordblks + info.hblkhd) / 1e6, 2),
            "heap_held_mb": round((info.arena + info.hblkhd) / 1e6, 2),
            "heap_mapped_mb": round(info.hblkhd / 1e6, 2)}
