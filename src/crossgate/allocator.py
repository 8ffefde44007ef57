"""How this process's C allocator treats freed memory: one switch, for the processes that run models."""
from __future__ import annotations

_ALLOCATOR_TUNED = False
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4  # glibc's mallopt parameters (malloc.h)
KEEP_FREED_BYTES = 1 << 30


def keep_freed_memory() -> None:
    """Make glibc's malloc keep freed memory for the next batch instead of handing it back to the kernel.

    A CPU forward of a conv net allocates and frees activations of tens of MB per layer; by default glibc
    maps each above 32 MB afresh and returns smaller ones at once, and every batch page-faults them back in:
    on a 2-core machine the kernel time equalled the compute and lite ran at 19-24 img/s. Here everything
    comes from the heap (no mmap) and up to 1 GiB freed stays there: 43-50 img/s over 1,000 images
    (benchmarks/extract_throughput.py); the training loops' fits gain 5-40%. The floats are the same. Once
    per process, Linux with glibc only, and not where the user set MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_
    or MALLOC_MMAP_MAX_."""
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return
    _ALLOCATOR_TUNED = True
    import ctypes
    import os
    import sys

    if not sys.platform.startswith("linux") or any(v in os.environ for v in ("MALLOC_TRIM_THRESHOLD_",
                                                                               "MALLOC_TOP_PAD_",
                                                                               "MALLOC_MMAP_MAX_")):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES)
        libc.mallopt(M_TOP_PAD, KEEP_FREED_BYTES)
        libc.mallopt(M_MMAP_MAX, 0)  # a request glibc cannot serve from one thread's heap goes to the main one
    except (OSError, AttributeError):  # not glibc (musl, ...): its allocator as it is
        pass
