"""Keep freed memory in the process: a train step's big temporaries are not paged in afresh.

A train step allocates and frees megabytes of temporaries (im2col columns, an LSTM's gates and
their gradients, a batch's activations). glibc's malloc serves each block of 128 KiB or more
with a mapping of its own, unmapped when freed, so the next step pays a page fault for every
4 KiB it touches again; its default raises that threshold to the largest block freed so far,
and trims the heap's top back to the system at the end of each step. Two settings remove that
cost: a pad kept at the top of the heap (M_TOP_PAD, TOP_PAD bytes), and, because setting any
of them turns glibc's adaptive threshold off, the mmap threshold fixed at that adaptation's own
ceiling (MMAP_THRESHOLD). Without the second, every block over 128 KiB was mapped anew each
step in the main thread (a training loop using core in-process): an LSTM step (T=50, H=128,
batch 32) took 16 ms instead of 6.5. The service's worker threads were spared, their arenas
starting with the pad. A threshold given in the environment (MALLOC_MMAP_THRESHOLD_) is left
as it is. Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TOP_PAD, M_MMAP_THRESHOLD = -2, -3  # glibc's malloc.h
TOP_PAD = 64 << 20
MMAP_THRESHOLD = 32 << 20  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: where the adaptive threshold stops


def keep_heap_pad(size: int = TOP_PAD) -> bool:
    """Ask glibc's malloc to keep `size` bytes at the top of the heap and to serve blocks up to
    MMAP_THRESHOLD from it; return whether it agreed."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if "MALLOC_MMAP_THRESHOLD_" not in os.environ and not libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD):
            return False
        return bool(libc.mallopt(M_TOP_PAD, size))
    except (OSError, AttributeError):
        return False
