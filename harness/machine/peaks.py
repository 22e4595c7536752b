"""The machine's ceilings, for percent-of-peak and roofline figures (`qkbench peaks`).

Two kinds of peak, side by side. The *physical* CPU peak (`qkbench.machine.cpu_peak`: cores ×
FMA units × lanes × 2 × clock) is the ceiling percent-of-peak is taken against: no backend can
beat it, so a row above 100% is a measuring fault and is flagged. The *measured* peak per
precision is the best throughput of a large matrix product through the fastest library present
(NumPy's BLAS, PyTorch): what is achievable here, recorded beside it. Memory bandwidth is a
large array copy, counting bytes read plus bytes written. GPUs that were never measured fall
back to the datasheet table below (dense, no sparsity).

A machine's first run measures its peaks (`ensure`, a few seconds) and stores them where later
runs find them, keyed by the fingerprint's hardware key, so every roofline has its ceilings.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from qkbench.machine import cpu_peak

# Datasheet peaks in GFLOP/s (dense) and GB/s, by a substring of the name nvidia-smi reports.
# Checked in order, so more specific names come first.
GPU_DATASHEET: list[tuple[str, dict[str, float]]] = [
    ("H200", {"float64": 67_000, "float32": 67_000, "tf32": 494_700, "float16": 989_400,
              "bfloat16": 989_400, "bandwidth_gbs": 4_800}),
    ("H100 PCIe", {"float64": 51_000, "float32": 51_000, "tf32": 378_000, "float16": 756_000,
                   "bfloat16": 756_000, "bandwidth_gbs": 2_000}),
    ("H100", {"float64": 67_000, "float32": 67_000, "tf32": 494_700, "float16": 989_400,
              "bfloat16": 989_400, "bandwidth_gbs": 3_350}),
    ("A100", {"float64": 19_500, "float32": 19_500, "tf32": 156_000, "float16": 312_000,
              "bfloat16": 312_000, "bandwidth_gbs": 2_039}),
    ("L4", {"float32": 30_300, "tf32": 60_000, "float16": 121_000, "bfloat16": 121_000,
            "bandwidth_gbs": 300}),
    ("V100", {"float64": 7_800, "float32": 15_700, "float16": 125_000, "bandwidth_gbs": 900}),
]


def store_path() -> Path:
    """$QKBENCH_PEAKS, else the user's cache folder."""
    if os.environ.get("QKBENCH_PEAKS"):
        return Path(os.environ["QKBENCH_PEAKS"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "qkbench" / "peaks.json"


def load(hardware_key: str, path: Path | None = None) -> dict[str, Any] | None:
    """The stored peaks of this hardware, or None when never measured (or unreadable)."""
    try:
        stored = json.loads((path or store_path()).read_text())
    except (OSError, ValueError):
        return None
    entry = stored.get(hardware_key) if isinstance(stored, dict) else None
    return entry if isinstance(entry, dict) else None


def save(hardware_key: str, peaks: dict[str, Any], path: Path | None = None) -> Path:
    path = path or store_path()
    try:
        stored = json.loads(path.read_text())
        stored = stored if isinstance(stored, dict) else {}
    except (OSError, ValueError):
        stored = {}
    stored[hardware_key] = peaks
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(stored, indent=2))
    os.replace(tmp, path)
    return path


def datasheet(gpu_name: str) -> dict[str, float] | None:
    for fragment, peaks in GPU_DATASHEET:
        if fragment.lower() in gpu_name.lower():
            return dict(peaks)
    return None


def for_run(environment: dict[str, Any], path: Path | None = None
            ) -> tuple[dict[tuple[str, str], float], dict[str, Any]]:
    """((device, precision) → GFLOP/s for the runner, the peaks as recorded in meta.json)."""
    stored = load(environment.get("hardware_key", ""), path) or {}
    record: dict[str, Any] = {"cpu": stored.get("cpu"), "gpu": stored.get("gpu"),
                              "measured_utc": stored.get("measured_utc")}
    gpus = environment.get("gpus") or []
    if record["gpu"] is None and gpus:
        sheet = datasheet(gpus[0].get("name", ""))
        if sheet:
            record["gpu"] = {**sheet, "source": f"datasheet ({gpus[0]['name']})"}
    by_device: dict[tuple[str, str], float] = {}
    for device in ("cpu", "gpu"):
        for precision, value in (record[device] or {}).items():
            if precision != "bandwidth_gbs" and isinstance(value, (int, float)):
                by_device[(device, precision)] = float(value)
    # The CPU's percent-of-peak is against its physical ceiling (never below what was
    # measured on it), the measured figure stays in record["cpu"].
    record["cpu_physical"] = {}
    for precision in PHYSICAL_PRECISIONS:
        ceiling = cpu_peak.physical_peak(precision)
        if ceiling is None:
            continue
        ceiling = cpu_peak.with_measured(ceiling, by_device.get(("cpu", precision)))
        by_device[("cpu", precision)] = round(ceiling.gflops, 1)
        record["cpu_physical"][precision] = ceiling.as_record()
    return by_device, record


# The CPU precisions a physical ceiling is worked out for.
PHYSICAL_PRECISIONS = ("float32", "float64", "bfloat16", "float16")


def ensure(hardware_key: str, path: Path | None = None,
           measure_now: Callable[[], dict[str, Any]] | None = None) -> bool:
    """Measure and store this machine's peaks when it has none yet (its first run, a few
    seconds); True when it measured. An unwritable store costs only the cache."""
    if load(hardware_key, path) is not None:
        return False
    measured = (measure_now or quick_measure)()
    try:
        save(hardware_key, measured, path)
    except OSError:
        pass
    return True


def quick_measure() -> dict[str, Any]:
    """The first run's measurement: a 1024³ product for a few tenths of a second per
    library and dtype (about 3 s in all on a 2-core VM); `qkbench peaks --remeasure` takes the
    longer one."""
    return {"measured_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cpu": measure_cpu(size=1024, seconds=0.3, copy_mib=128),
            "gpu": measure_gpu(size=4096, seconds=0.3), "how": "first run (quick)"}


def _best_rate(work: Callable[[], None], amount: float, seconds: float = 1.0) -> float:
    """The best amount/second over repeated calls for about `seconds` (after one warm-up)."""
    work()
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        work()
        best = max(best, amount / (time.perf_counter() - start))
    return best


def measure_cpu(size: int = 2048, seconds: float = 1.0, copy_mib: int = 512) -> dict[str, float]:
    """GFLOP/s per dtype of the fastest large matmul here, and copy bandwidth in GB/s."""
    rng = np.random.default_rng(0)
    peaks: dict[str, float] = {}
    flops = 2.0 * size**3
    for dtype in ("float32", "float64"):
        a = rng.standard_normal((size, size)).astype(dtype)
        b = rng.standard_normal((size, size)).astype(dtype)
        rates = [_best_rate(lambda a=a, b=b: a @ b, flops, seconds)]
        try:
            import torch

            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            rates.append(_best_rate(lambda ta=ta, tb=tb: torch.matmul(ta, tb), flops, seconds))
        except ImportError:
            pass
        peaks[dtype] = round(max(rates) / 1e9, 1)
    src = np.ones(copy_mib << 17)  # 512 MiB of float64 by default: far beyond any cache
    dst = np.empty_like(src)
    peaks["bandwidth_gbs"] = round(_best_rate(lambda: np.copyto(dst, src), 2.0 * src.nbytes,
                                              seconds) / 1e9, 1)
    return peaks


def measure_gpu(size: int = 8192, seconds: float = 1.0) -> dict[str, float] | None:
    """Per precision (TF32 separately from float32) through torch on CUDA; None without one."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    peaks: dict[str, float] = {}
    flops = 2.0 * size**3
    previous_tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        for precision, dtype in (("float64", torch.float64), ("float32", torch.float32),
                                 ("tf32", torch.float32), ("float16", torch.float16),
                                 ("bfloat16", torch.bfloat16)):
            torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
            a = torch.randn(size, size, device="cuda", dtype=dtype)
            b = torch.randn(size, size, device="cuda", dtype=dtype)

            def product(a: Any = a, b: Any = b) -> None:
                torch.matmul(a, b)
                torch.cuda.synchronize()
            peaks[precision] = round(_best_rate(product, flops, seconds) / 1e9, 1)
        src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
        dst = torch.empty_like(src)

        def copy() -> None:
            dst.copy_(src)
            torch.cuda.synchronize()
        peaks["bandwidth_gbs"] = round(_best_rate(copy, 2.0 * src.numel(), seconds) / 1e9, 1)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous_tf32
    return peaks


def measure() -> dict[str, Any]:
    return {"measured_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cpu": measure_cpu(), "gpu": measure_gpu()}
