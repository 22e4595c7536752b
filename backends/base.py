"""The backend protocol: what every backend (built-in or plugin) implements.

A backend turns host NumPy inputs into its own arrays (`prepare`, not timed), computes the
scores S = Q·Kᵀ on them (`scores`, timed), waits for queued device work (`sync`) and hands
the result back as a host array (`to_numpy`, not timed in the kernel phase).

Only `scores` is required; everything else has a default suited to a synchronous CPU
library, so a plugin can be ten lines:

    class MyBackend(Backend):
        name = "mylib"
        dtypes = ("float32",)

        def scores(self, q, k):
            return mylib.matmul(q, mylib.transpose(k))

Constructors must be cheap and must not import heavy libraries: the harness instantiates a
backend in the main process to validate a config, and imports the library only inside the
worker process that runs it (see `qkbench.measure.worker`). Options given in a config are passed to
the constructor as keyword arguments.

Attention cells (batch × heads, grouped key heads, causal masks, the 1/√d_k scale) are opt-in.
A backend lists what it takes in `attention`, a subset of ATTENTION_FEATURES:

    "batched"  4-D inputs: q (B, H, n, d_k), k (B, H_kv, m, d_k); S is (B, H, n, m)
    "grouped"  H_kv < H: query head h reads key head h // (H / H_kv)   (GQA, MQA)
    "causal"   S[..., i, j] = −inf where j > i + (m − n)                 (bottom-right aligned)
    "scaled"   S = Q·Kᵀ / √d_k

Before each cell the harness calls `set_problem(problem)` with the cell's `Problem` (also for a
plain 2-D cell), so `prepare` and `scores` read `self.problem` to learn what to compute. A cell
that is the plain 2-D product (B = H = H_kv = 1, not causal, not scaled) is handed 2-D arrays
exactly as always; any other cell gets the 4-D arrays, and only backends that list every
feature the cell needs are given it: the others record the cell as `skipped`, with the missing
features as the reason. So a 2-D-only plugin keeps working unchanged. A backend that copies K
H/H_kv times to compute grouped heads says so through `info()["kv_materialised"] = True`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from qkbench.cell_key import axis_fields

# Every dtype a cell may ask for, and the unit roundoff of each (used by the agreement bound).
KNOWN_DTYPES = ("float16", "bfloat16", "float32", "float64")
DEVICES = ("cpu", "gpu")
# What a backend may declare in `Backend.attention` (see the module docstring).
ATTENTION_FEATURES = ("batched", "grouped", "causal", "scaled")


@dataclass(frozen=True)
@axis_fields(lambda axis: axis.problem)  # n, m, d_k, batch, heads, kv_heads, causal, scaled
class Problem:
    """What one cell asks `scores` to compute: the semantics of attention cells, defined once.

    Q is (batch, heads, n, d_k), K is (batch, kv_heads, m, d_k), S is (batch, heads, n, m).
    Query head h reads key head h // (heads / kv_heads). With `causal`, key j is masked for
    query i when j > i + (m − n): aligned to the bottom right, as when n new queries attend to
    a cache of m keys that ends with them (for n = m, the usual lower triangle); masked entries
    of S are −inf. With `scaled`, S = Q·Kᵀ / √d_k (the next step of attention divides by it).
    """

    @property
    def plain(self) -> bool:
        """The 2-D product of every backend: 2-D arrays in and out."""
        return not self.needs()

    @property
    def group(self) -> int:
        """Query heads per key head: 1 for multi-head, heads for multi-query attention."""
        return self.heads // self.kv_heads

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.d_k) if self.scaled else 1.0

    @property
    def offset(self) -> int:
        """m − n: query i sees keys 0 … i + offset when causal."""
        return self.m - self.n

    def needs(self) -> frozenset[str]:
        """The ATTENTION_FEATURES a backend must take to compute this cell."""
        needed = set()
        if self.batch > 1 or self.heads > 1 or self.causal or self.scaled:
            needed.add("batched")
        if self.kv_heads < self.heads:
            needed.add("grouped")
        if self.causal:
            needed.add("causal")
        if self.scaled:
            needed.add("scaled")
        return frozenset(needed)

    def key_head(self, head: int) -> int:
        return head // self.group

    def q_shape(self) -> tuple[int, ...]:
        return (self.n, self.d_k) if self.plain else (self.batch, self.heads, self.n, self.d_k)

    def k_shape(self) -> tuple[int, ...]:
        return (self.m, self.d_k) if self.plain else (self.batch, self.kv_heads, self.m, self.d_k)

    def s_shape(self) -> tuple[int, ...]:
        return (self.n, self.m) if self.plain else (self.batch, self.heads, self.n, self.m)

    def visible_keys(self, row: int) -> int:
        """How many keys query `row` sees: keys 0 … visible − 1 (all m unless causal)."""
        if not self.causal:
            return self.m
        return min(self.m, max(0, row + self.offset + 1))

    def unmasked_per_head(self) -> int:
        """Entries of one head's n × m block of S that are not masked."""
        if not self.causal:
            return self.n * self.m
        return _causal_count(self.n, self.m)

    def masked(self) -> np.ndarray:
        """(n, m) booleans, True where S is −inf (all False unless causal)."""
        rows = np.arange(self.n)[:, None]
        cols = np.arange(self.m)[None, :]
        return (cols > rows + self.offset) if self.causal else np.zeros((self.n, self.m), bool)


def _causal_count(n: int, m: int) -> int:
    """Σ_i visible_keys(i) over i < n in closed form: row i sees i + m − n + 1 keys (never more
    than m, since i < n), or none for the first n − m rows when n > m."""
    offset = m - n
    first = max(0, -offset)  # the first row that sees any key
    count = n - first
    low = first + offset + 1
    return count * low + count * (count - 1) // 2


class Backend:
    """Base class with defaults for everything except `scores`."""

    #: Stable identifier, ``library[-variant][-device]`` style: "numpy", "torch-cpu", ...
    name: str = ""
    #: "cpu" or "gpu": which side of a CPU-vs-GPU comparison the backend is on.
    device: str = "cpu"
    #: The dtypes this backend computes in; cells of other dtypes are recorded as skipped.
    dtypes: tuple[str, ...] = ("float32", "float64")
    #: The attention cells `scores` takes, from ATTENTION_FEATURES; empty: the 2-D product only.
    attention: frozenset[str] = frozenset()
    #: The cell being computed, set by the harness through `set_problem` before `prepare`.
    problem: Problem | None = None

    def __init__(self, **options: Any) -> None:
        if options:
            unknown = ", ".join(sorted(options))
            raise TypeError(f"{type(self).__name__} takes no options (got {unknown})")

    def unavailable(self) -> str | None:
        """Why this backend cannot run on this machine (missing package, no GPU), or None."""
        return None

    def load(self) -> None:
        """Import the library and do its one-time set-up in this process. The harness calls
        it once in each worker as the run starts, before any cell and in all workers at once
        (so the imports overlap): it is start-up, not a cell's setup. May fail (a missing
        library): `unavailable` or the first cell then says why. Default: nothing."""

    def set_problem(self, problem: Problem) -> None:
        """What the next cell computes (see `Problem`); called before `prepare` for every cell."""
        self.problem = problem

    def prepare(self, q: np.ndarray, k: np.ndarray) -> tuple[Any, Any]:
        """Host arrays (already in the cell's dtype) in, the backend's own arrays out."""
        return q, k

    def scores(self, q: Any, k: Any) -> Any:
        """Return S = q·kᵀ for prepared inputs. This is the timed call; it may be asynchronous."""
        raise NotImplementedError

    def sync(self) -> None:
        """Wait until all work queued by `scores` has finished (a no-op for synchronous code)."""

    def to_numpy(self, s: Any) -> np.ndarray:
        """The result of `scores` as a host NumPy array."""
        return np.asarray(s)

    def info(self) -> dict[str, Any]:
        """Facts worth recording with each row (library version, threads in force, ...)."""
        return {}

    def set_threads(self, count: int | None) -> None:
        """Compute with `count` threads from now on; None restores the library's default.

        The default limits every BLAS and OpenMP thread pool loaded in this (worker) process
        through threadpoolctl; libraries with pools of their own (Numba, PyTorch) override it.
        """
        from threadpoolctl import threadpool_limits

        previous = getattr(self, "_thread_limits", None)
        if previous is not None:
            previous.restore_original_limits()
            self._thread_limits = None
        if count is not None:
            self._thread_limits = threadpool_limits(limits=count)

    def precision(self, dtype: str) -> str:
        """The precision a dtype is computed in: the dtype itself, unless the backend computes
        in less (a TF32 variant returns "tf32" for float32; rows record it and the agreement
        bound uses its unit roundoff)."""
        return dtype

    def cache_bytes(self) -> int | None:
        """Size of the last cache level the backend's data passes through, for cold-cache runs;
        None means the host CPU's last-level cache (right for CPU backends)."""
        return None

    # ------------------------------------------------------------------ device hooks
    # Optional; the defaults suit a CPU library. GPU backends override them.

    def device_memory(self) -> tuple[int, int] | None:
        """(free, total) bytes of device memory, so a cell that cannot fit is skipped rather
        than failing; None for host memory (the harness checks that itself)."""
        return None

    def reset_peak_memory(self) -> None:
        """Start counting peak device memory for a new cell."""

    def peak_memory_bytes(self) -> int | None:
        """Peak device memory since `reset_peak_memory`, or None when not tracked."""
        return None

    def pending(self) -> bool | None:
        """True when work queued by `scores` is still running; asked right after `sync()`
        returned, when the answer must be False (see docs/correctness.md). None: the backend
        cannot tell. The harness also watches the process's CPU time and synchronizes the
        whole device itself, so this hook only adds what the backend knows of its streams."""
        return None

    def telemetry(self) -> dict[str, float]:
        """Clock, temperature, power now (keys: sm_clock_mhz, temperature_c, power_w), read at
        the start and the end of each cell so throttling shows; {} when unknown."""
        return {}

    def cleanup(self) -> None:
        """Undo per-cell global settings (TF32 mode, ...) after a cell."""

    def device_clock(self) -> Any:
        """A `qkbench.measure.timing.DeviceClock` (CUDA events on the stream `scores` runs
        on, an L2 flush, graph capture) for timing on the device, or None: the host clock
        around `sync()` times the block. Called in the worker after `prepare`."""
        return None


def missing_package_reason(module: str, extra: str) -> str | None:
    """The 'why not' for a backend whose library is not importable, or None if it is."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed (pip install 'qkbench[{extra}]')"
    return None
