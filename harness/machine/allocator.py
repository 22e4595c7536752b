"""A steady C allocator in the worker processes: the harness's kept answer must not change
what a backend's allocations cost.

The kernel timer keeps one call's answer of each timed block, drawn at random, for the check
after timing (qkbench.measure.kernel_timer). While it is kept, the calls after it in the same
block need a second output buffer. glibc's malloc serves buffers above its mmap threshold
(128 KiB at start, raised by each free up to 32 MiB) from fresh mappings, and returns the top
of its heap to the OS once more than twice that is free, so that second buffer could be new,
untouched memory in every block: page faults and zeroing inside the timed calls, in blocks
whose kept call was not the last. Measured on the 2-vCPU Zen 5 VM, numba at n = m = 1024
(float32, one thread, a 4 MiB output): 652 µs per call in blocks of one call, 1085 µs in
blocks of two (tenth to ninetieth percentile 654-1569 µs: the blocks that kept their first
answer paid the faults); with the two settings below, 647 and 652 µs. Because the first worker
of a cell warms up longer and so times longer blocks, one worker in three of a cell ran at
twice the others' time per call, which a paired run reads as a process effect.

`steady_allocator` fixes the mmap threshold at glibc's largest (32 MiB: larger buffers are
mapped per allocation whatever is set) and does not trim the heap, so memory a worker has used
stays mapped and reused, as it does in a program that has run the same call a few times. It
is the steady state glibc reaches by itself in a loop with no kept answer. Elsewhere (musl,
macOS) it does nothing: their allocators keep no such thresholds.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt's parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc's largest mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX): above it a
# request is always mapped on its own.
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
# mallopt takes an int: the largest trim threshold it can set, far above a worker's free heap.
TRIM_THRESHOLD = 2**31 - 1


def steady_allocator() -> bool:
    """Set the worker's glibc malloc to reuse freed memory instead of returning it to the OS.
    True when both settings were taken (glibc), False elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    taken = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1
    return mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and taken
