"""Thread pools that stop spinning soon after a call, in every qkbench process.

After a call, a thread pool's idle workers busy-wait before they sleep: OpenBLAS for 2^28
cycles (about 0.1 s), GNU OpenMP (PyTorch, MKL, Numba's omp layer) for 300000 spins (about
8 ms of CPU, measured here), Intel OpenMP for 200 ms. qkbench interleaves backends that run in
separate processes, so whatever ran last keeps a core busy through the next backend's turn.
Measured on a 2-core VM: OpenBLAS's spin took numba at n = m = 2048 from 199 to 74-117
GFLOP/s; GNU OpenMP's made numpy 25% slower at n = m = 512 in the rounds after numba and
torch-cpu; the main process's own OpenBLAS, spinning after it computed a shape's float64
reference, made the first round of the next group up to 60x slower for numpy.

The short values below (about 0.4 ms, 10000 spins, 1 ms) still cover the gaps between the
back-to-back calls of a block. The libraries read them once, when they load, so the main
process applies them before NumPy is imported and workers inherit them. A value the user set
is left alone.

This module imports nothing heavy on purpose.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

IDLE_SPIN_ENVIRONMENT = {"OPENBLAS_THREAD_TIMEOUT": "20", "GOMP_SPINCOUNT": "10000",
                         "KMP_BLOCKTIME": "1"}


def quiet_idle_threads(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Set the values the user has not set; return those that were added."""
    added = {k: v for k, v in IDLE_SPIN_ENVIRONMENT.items() if k not in environ}
    environ.update(added)
    return added
