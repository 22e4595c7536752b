"""Derive tests/data/runs/gpubox (a made-up GPU machine) from the recorded tests/data/runs/laptop.

The test suite needs a run with GPU rows and the newer summary columns, on a machine this
repository's CI does not have. This script makes one by hand, deterministically: it is test
data, not a measurement. Run it from the repository root after re-recording the laptop run:

    python tests/data/make_gpu_run.py

What it does (see tests/data/README.md):
- meta.json: hostname "gpubox", a server CPU, one H100 in `gpus`, and `peaks` per device (the
  layout `qkbench run` records: CPU as if measured, GPU from the datasheet);
- CPU rows: the laptop's rows with every time divided by 4 (a faster server), in both phases;
- GPU rows: `torch-cuda` and `cupy` (device "gpu"), their times from a simple model — launch
  overhead + FLOPs at a fraction of the GPU's peak (+ PCIe transfers in the end_to_end phase) —
  with lognormal noise on made-up samples;
- the columns the lead adds (precision, phase, cache, threads_requested, bytes, intensity,
  gbps, peak_gflops, pct_peak) are present, so the suite covers both table layouts.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from qkbench.measure.stats import median_ci

SOURCE = REPO / "tests" / "data" / "runs" / "laptop"
TARGET = REPO / "tests" / "data" / "runs" / "gpubox"
ITEMSIZE = {"float32": 4, "float64": 8}
CPU_SPEEDUP = 4.0  # the server's CPU against the laptop's
CPU_PEAK = {"float32": 3500.0, "float64": 1750.0}
GPU_PEAK = {"float32": 67000.0, "float64": 34000.0}  # H100 SXM, no tensor cores
GPU_EFFICIENCY = 0.55
GPU_LAUNCH_S = {"torch-cuda": 9e-6, "cupy": 14e-6}
PCIE_BYTES_PER_S = 22e9
END_TO_END_OVERHEAD_S = 25e-6


def main() -> None:
    summary = pd.read_parquet(SOURCE / "summary.parquet")
    samples = pd.read_parquet(SOURCE / "samples.parquet")
    meta = json.loads((SOURCE / "meta.json").read_text())
    rng = np.random.default_rng(7)

    rows, sample_rows = [], []
    for phase in ("kernel", "end_to_end"):
        for _, row in summary.iterrows():
            rows.append(cpu_row(row, phase))
            if row["status"] == "ok":
                cell = samples[(samples["backend"] == row["backend"])
                               & (samples["dtype"] == row["dtype"]) & (samples["n"] == row["n"])
                               & (samples["d_k"] == row["d_k"])]
                extra = 1.0 if phase == "kernel" else 1.03
                for _, s in cell.iterrows():
                    sample_rows.append({**s.to_dict(), "seconds": s["seconds"] / CPU_SPEEDUP
                                        * extra, "phase": phase})
        shapes = summary[summary["backend"] == "numpy"]
        for backend in ("torch-cuda", "cupy"):
            for _, row in shapes.iterrows():
                gpu, gpu_samples = gpu_row(row, backend, phase, rng)
                rows.append(gpu)
                sample_rows.extend(gpu_samples)

    out = pd.DataFrame(rows)
    out["precision"] = out["dtype"]
    out["cache"] = "warm"
    out["threads_requested"] = pd.array([pd.NA] * len(out), dtype="Int64")
    out["bytes"] = ((out["n"] * out["d_k"] + out["m"] * out["d_k"] + out["n"] * out["m"])
                    * out["dtype"].map(ITEMSIZE)).astype("Int64")
    out["intensity"] = out["flops"] / out["bytes"]
    out["gflops"] = out["flops"] / out["median_s"] / 1e9
    out["gbps"] = out["bytes"] / out["median_s"] / 1e9
    out["peak_gflops"] = [(GPU_PEAK if d == "gpu" else CPU_PEAK)[t]
                          for d, t in zip(out["device"], out["dtype"])]
    out["pct_peak"] = 100.0 * out["gflops"] / out["peak_gflops"]
    sample_frame = pd.DataFrame(sample_rows)
    sample_frame["precision"] = sample_frame["dtype"]
    sample_frame["cache"] = "warm"
    sample_frame["threads_requested"] = pd.array([pd.NA] * len(sample_frame), dtype="Int64")

    env = meta["environment"]
    env.update(hostname="gpubox", memory_gib=754.9,
               os="Linux-6.8.0-45-generic-x86_64-with-glibc2.39",
               gpus=[{"name": "NVIDIA H100 80GB HBM3", "memory_gib": 79.6,
                      "driver": "550.54.15", "max_sm_clock_mhz": 1980.0}],
               peaks={"cpu": {**CPU_PEAK, "bandwidth_gbs": 460.0},
                      "gpu": {**GPU_PEAK, "bandwidth_gbs": 3350.0,
                              "source": "datasheet (NVIDIA H100 80GB HBM3)"},
                      "measured_utc": "2026-11-20T09:12:44+00:00"},
               hardware_key="made-up-gpubox-hw", comparability_key="made-up-gpubox-sw")
    env["cpu"] = {"model": "AMD EPYC 9454 48-Core Processor", "logical_cores": 96,
                  "usable_cores": 96, "flags": ["avx", "avx2", "avx512f", "f16c", "fma"]}
    env["libraries"] = {**env.get("libraries", {}), "torch": "2.13.0+cu128",
                        "cupy-cuda12x": "13.6.0"}
    meta["command"] = ["qkbench", "run", ("tests/data/tiny.yaml (GPU rows made up, see "
                                          "tests/data/make_gpu_run.py)")]
    meta["backends"] = [b for b in meta.get("backends", [])] + [
        {"label": "torch-cuda", "path": "qkbench.backends.torch_backend:TorchCudaBackend",
         "origin": "builtin", "options": {}},
        {"label": "cupy", "path": "qkbench.backends.cupy_backend:CupyBackend", "origin": "builtin",
         "options": {}}]
    meta["cells_by_status"] = out["status"].value_counts().to_dict()

    if TARGET.exists():
        shutil.rmtree(TARGET)
    TARGET.mkdir(parents=True)
    out.to_parquet(TARGET / "summary.parquet", index=False)
    out.to_csv(TARGET / "summary.csv", index=False)
    sample_frame.to_parquet(TARGET / "samples.parquet", index=False)
    (TARGET / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {TARGET}: {len(out)} rows, {len(sample_frame)} samples")


def cpu_row(row: pd.Series, phase: str) -> dict:
    out = row.to_dict()
    out["phase"] = phase
    extra = 1.0 if phase == "kernel" else 1.03  # a host copy of S is nearly free on a CPU
    for column in ("median_s", "ci_low_s", "ci_high_s", "first_call_s"):
        out[column] = row[column] / CPU_SPEEDUP * extra
    return out


def gpu_row(row: pd.Series, backend: str, phase: str,
            rng: np.random.Generator) -> tuple[dict, list[dict]]:
    dtype, n, m, d_k = row["dtype"], int(row["n"]), int(row["m"]), int(row["d_k"])
    flops = 2 * n * m * d_k
    seconds = GPU_LAUNCH_S[backend] + flops / (GPU_EFFICIENCY * GPU_PEAK[dtype] * 1e9)
    if phase == "end_to_end":
        moved = (n * d_k + m * d_k + n * m) * ITEMSIZE[dtype]
        seconds += END_TO_END_OVERHEAD_S + moved / PCIE_BYTES_PER_S
    count = 30
    values = seconds * rng.lognormal(0.0, 0.04, count)
    ci = median_ci(list(values))
    key = {"backend": backend, "device": "gpu", "dtype": dtype, "n": n, "m": m, "d_k": d_k}
    out = {column: None for column in row.index}
    out.update(key, phase=phase, status="ok", reason="", median_s=ci.median, ci_low_s=ci.low,
               ci_high_s=ci.high, rel_ci=ci.rel_halfwidth, samples=count, calls_per_sample=8,
               converged=ci.rel_halfwidth <= 0.03, stopped_by="target_rel_ci"
               if ci.rel_halfwidth <= 0.03 else "budget",
               first_call_s=0.35 if n == 16 else 4 * seconds, flops=flops,
               max_err=row["max_err"], mean_err=row["mean_err"], err_bound=row["err_bound"],
               checked_rows=row["checked_rows"], threads=None,
               library_version="2.13.0+cu128" if backend == "torch-cuda" else "13.6.0")
    samples = [{**key, "phase": phase, "round": i, "t_start": 1000.0 + i * 10 * seconds,
                "seconds": float(v), "calls": 8} for i, v in enumerate(values)]
    return out, samples


if __name__ == "__main__":
    main()
