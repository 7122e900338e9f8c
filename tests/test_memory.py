"""The allocator settings that keep a long live run's memory flat (glibc only)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from streamfuse.memory import c_heap_mb

pytestmark = pytest.mark.skipif(not c_heap_mb(), reason="needs glibc")

FRAME_BUFFERS = """
import json, sys
import numpy as np
from streamfuse.memory import c_heap_mb, configure_for_live
if sys.argv[1] == "live":
    configure_for_live()
first = np.ones(300_000 // 8)
del first  # glibc raises its mmap threshold past this size unless it is pinned
before = c_heap_mb()["heap_mapped_mb"]
frames = [np.ones(300_000 // 8) for _ in range(16)]
print(json.dumps(c_heap_mb()["heap_mapped_mb"] - before))
"""


def mapped_growth(mode: str) -> float:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(FRAME_BUFFERS), mode], capture_output=True,
                            text=True, timeout=60, check=True)
    return json.loads(result.stdout)


def test_live_runs_map_frame_buffers_from_the_os():
    """Pinned: sixteen 300 KB frames are separate mappings (returned on free); by default they come
    from the arenas, where freed ones stay with the process. (Margins: other threads of the
    interpreter may map or unmap a block meanwhile.)"""
    assert mapped_growth("live") >= 0.75 * 16 * 0.3
    assert mapped_growth("default") < 0.25 * 16 * 0.3


SCATTERED_FREES = """
import json
from streamfuse.memory import release_free_memory
def resident_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 1e6
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
