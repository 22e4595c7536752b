"""A backend that says, through `unavailable()` (the one answer a worker gives before any
cell), where a 1 MiB buffer of the C allocator lands in its worker process: "heap" or
"mapped". Used to see the worker's allocator settings from outside (tests/test_allocator.py)."""

from __future__ import annotations

import ctypes

from qkbench.backends.base import Backend


def where_one_mib_lands() -> str:
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    address = libc.malloc(1 << 20)
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                low, high = (int(part, 16) for part in line.split()[0].split("-"))
                if low <= address < high:
                    return "heap" if line.rstrip().endswith("[heap]") else "mapped"
        return "unknown"
    finally:
        libc.free(address)


class HeapProbe(Backend):
    name = "heap-probe"
    dtypes = ("float64",)

    def unavailable(self) -> str | None:
        return where_one_mib_lands()

    def scores(self, q, k):
        return q @ k.T
