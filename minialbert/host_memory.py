"""Host memory: keep the buffers a CPU training step frees, instead of handing them back to the OS.

A distillation step at the issue-#3 shape allocates and frees the same buffers every step (2048 x
1024 activations, the 216 x 30522 logits: 1 to 26 MB). glibc's malloc serves big requests with
mmap and trims the heap's free top, so each step maps fresh pages and the kernel zero-fills them
on first touch: 21,000 page faults a step measured (about 45 ms of system time, and the zeroing
evicts the caches). With every request up to 32 MB served from the heap and the heap never
trimmed, the same step takes 1,200 faults. The numbers computed are the same; the process keeps
its peak heap (a training process reaches it at the first step anyway).
"""

from __future__ import annotations

import ctypes
import functools
import sys

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed (HEAP_MAX_SIZE / 2 on 64-bit)


@functools.lru_cache(maxsize=None)
def retain_freed_memory() -> bool:
    """Tell glibc's malloc (Linux) to serve requests up to 32 MB from the heap and never trim it.
    Once per process; False (and nothing done) on another C library or OS."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library (no library search)
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
