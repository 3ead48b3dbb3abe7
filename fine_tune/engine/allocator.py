"""Host memory allocator settings for training on the CPU.

A training step allocates and frees the same large activations every step (a BERT feed-forward activation of
batch 32 x 128 tokens x 1536 is 25 MB). glibc serves blocks above its mmap threshold with a fresh ``mmap``,
and returns freed memory at the top of the heap to the kernel: either way the next step touches new pages,
and the kernel zero-fills every one of them (a minor page fault per 4 KB). Raising the mmap threshold to
glibc's maximum (32 MB on 64-bit) and keeping freed memory in the process lets every step reuse the pages of
the previous one. Results are unchanged (only where the bytes live); the measured effect is in
doc/performance.md.

The Hugging Face Trainer and TextBrewer leave glibc's defaults; ``FT_MALLOC_TUNING=0`` does too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's maximum on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 1 << 30  # keep up to 1 GiB of freed memory at the top of the heap
TOP_PAD = 64 * 1024 * 1024  # grow the heap 64 MB at a time


@functools.lru_cache(maxsize=1)
def tune_malloc_for_training() -> bool:
    """Apply the settings once per process (glibc on Linux only). Returns whether they were applied."""
    if os.environ.get("FT_MALLOC_TUNING", "1").strip().lower() in ("0", "false", "no"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok: bool = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1  # mallopt returns an int (restype c_int)
    ok = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    ok = mallopt(M_TOP_PAD, TOP_PAD) == 1 and ok
    return ok
