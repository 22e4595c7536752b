"""The workers' steady allocator (qkbench.machine.allocator): a buffer freed in a timed block is
reused by the next one rather than handed back to the OS and faulted in again."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc"
    or not Path("/proc/self/maps").exists(),
    reason="glibc's malloc thresholds, seen through /proc/self/maps (Linux)")

REPO = Path(__file__).resolve().parent.parent


def _in_fresh_process(steady: bool) -> str:
    code = ("from tests.plugins.heap_probe import where_one_mib_lands\n"
            + ("from qkbench.machine.allocator import steady_allocator\n"
               "assert steady_allocator()\n" if steady else "")
            + "print(where_one_mib_lands())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO, check=True)
    return result.stdout.strip()


def test_the_steady_allocator_serves_large_buffers_from_the_heap():
    # glibc's default: 1 MiB is above the 128 KiB mmap threshold, a mapping of its own,
    # unmapped when freed and faulted in afresh by the next allocation.
    assert _in_fresh_process(steady=False) == "mapped"
    assert _in_fresh_process(steady=True) == "heap"


def test_a_worker_runs_its_backend_with_the_steady_allocator():
    from qkbench.measure.worker import WorkerHandle

    worker = WorkerHandle("tests.plugins.heap_probe:HeapProbe", {})
    try:
        assert worker.request(("open",), 60.0) == {"unavailable": "heap"}
    finally:
        worker.stop()
