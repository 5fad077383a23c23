"""Keep freed memory in the process: a train step's big temporaries are not paged in afresh.

A convolution's train step allocates and frees several megabytes of temporaries (im2col
columns and their gradients). With glibc's defaults the heap is trimmed back to the operating
system at the end of each step, and the next step pays a page fault for every 4 KiB it touches
again: measured on the LeNet benchmark, half of the step's CPU time. Asking malloc to keep a
pad at the top of the heap (M_TOP_PAD, up to TOP_PAD bytes) removes that cost, keeps glibc's
adaptive mmap threshold, and bounds the memory kept to TOP_PAD. Elsewhere than glibc this does
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TOP_PAD = -2  # glibc's malloc.h
TOP_PAD = 64 << 20


def keep_heap_pad(size: int = TOP_PAD) -> bool:
    """Ask glibc's malloc to keep `size` bytes at the top of the heap; return whether it agreed."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_TOP_PAD, size))
    except (OSError, AttributeError):
        return False
