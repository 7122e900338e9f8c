"""The allocator settings that keep a long live run's memory flat (glibc only)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from streamfuse.memory import c_heap_mb

pytestmark = pytest.mark.skipif(not c_heap_mb(), reason="needs glibc")

SCATTERED_FREES = """
import json, os
from streamfuse.memory import release_free_memory
def resident_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
blocks = [bytes(20_000) for _ in range(5_000)]  # 100 MB in malloc'd blocks below the mmap threshold
del blocks[:-1]  # all free but the last, which keeps the heap from shrinking at its top
kept = resident_mb()
release_free_memory()
print(json.dumps([kept, resident_mb()]))
"""


def test_release_free_memory_gives_free_pages_back():
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(SCATTERED_FREES)], capture_output=True,
                            text=True, timeout=60, check=True)
    kept, after = json.loads(result.stdout)
    assert kept - after > 50, (kept, after)


LARGE_BLOCK = """
import ctypes, json, sys
from streamfuse.memory import c_heap_mb, configure_for_live
if sys.argv[1] == "live":
    assert configure_for_live()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
block = libc.malloc(8_000_000)  # a frame buffer of 4K video
print(json.dumps(c_heap_mb()["heap_mapped_mb"]))
libc.free(ctypes.c_void_p(block))
"""


@pytest.mark.parametrize("mode", ["default", "live"])
def test_live_settings_serve_large_buffers_from_the_arenas_from_the_start(mode):
    # glibc's default maps a large block on its own until one of that size is freed; the live settings
    # start in the state it would reach, so later decoders and encoders do not move buffers into the arenas.
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(LARGE_BLOCK), mode], capture_output=True,
                            text=True, timeout=60, check=True)
    mapped_mb = json.loads(result.stdout)
    if mode == "live":
        assert mapped_mb < 8, mapped_mb
    else:
        assert mapped_mb >= 8, mapped_mb
