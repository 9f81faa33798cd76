"""glibc's allocator told to keep the memory a training step frees for the next step.

By default glibc gives large blocks their own mappings and trims the top of its heap once more than twice its
(adaptive) mmap threshold is free there, which happens at the end of every training step; the next step's
activations are then fresh pages that the kernel faults in and zeroes again. With fixed thresholds (a block below
256 MB comes from the heap, which is trimmed only once 1 GB at its top is free) the next step reuses them, at the
same peak (measured: docs/speed-history.md). Setting either parameter turns the adaptive threshold off, so both
are set. A low threshold, the opposite, made every activation fresh pages (README, "Speed and memory").

Touches no Python library: mallopt's parameters are glibc's documented ABI (malloc.h); any other C library
(musl, macOS) keeps its own policy.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)


def keep_freed_memory() -> None:
    """Fix glibc's mmap and trim thresholds for the rest of the process; nothing without glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, macOS): its allocator keeps its own policy
        return
    libc.mallopt(M_MMAP_THRESHOLD, 256 << 20)
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
