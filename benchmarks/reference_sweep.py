"""The reference sweep of the device check: runs, the TF32 trap, and the figures worth keeping.

Runs, each a run directory under OUT:
  kernel/     configs/gpu-reference.yaml plus a backend that computes float32 in TF32 while
              claiming float32 (tests/plugins/silent_tf32.py): its cells must be `mismatch`;
  transfers/  float32 end to end (host arrays in and out), CPU and GPU, for the crossover;
  attention/  batched, grouped and causal cells, where this qkbench's sweep has those axes.
Then FIGURES.md in OUT: % of the datasheet peak (bf16, fp16, tf32, fp32, fp64) and of the
memory roofline for the largest cells, the CPU-vs-GPU crossover with and without transfers,
and whether TF32 was caught. `--dry-run` shrinks every sweep to one tiny shape (for a CPU).

    python benchmarks/reference_sweep.py OUT [--dry-run]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
TRAP = "tests.plugins.silent_tf32:SilentTf32TorchCuda"
TRAP_LABEL = "torch-cuda-silent-tf32"
CPU_BACKENDS = ["numpy", "torch-cpu"]
ATTENTION_BACKENDS = ["torch-cuda", "cupy", "jax-cuda", "torch-compile-cuda", "triton",
                      "numba-cuda"]


def configs(dry_run: bool) -> dict[str, dict[str, Any]]:
    import qkbench
    from qkbench.plan.config import Sweep

    base = qkbench.load_config("gpu-reference").model_dump(exclude_none=True)
    gpu_backends = [b for b in base["backends"] if b not in CPU_BACKENDS]
    kernel = {**base, "backends": base["backends"] + [{"name": TRAP, "label": TRAP_LABEL}]}
    transfers = {**base, "name": "gpu-reference-transfers",
                 "sweep": {**base["sweep"], "dtype": ["float32"], "phase": ["end_to_end"]},
                 "backends": CPU_BACKENDS + ["torch-cuda", "cupy", "jax-cuda"]}
    runs = {"kernel": kernel, "transfers": transfers}
    if "batch" in Sweep.model_fields:  # the attention axes (batch, heads, kv_heads, causal)
        runs["attention"] = {**base, "name": "gpu-reference-attention",
                             "sweep": {"n": [2048], "d_k": [128], "batch": [2], "heads": [16],
                                       "kv_heads": [4], "causal": [False, True],
                                       "scaled": [True], "dtype": ["bfloat16", "float32"]},
                             "backends": [b for b in ATTENTION_BACKENDS if b in gpu_backends]}
    if dry_run:
        for config in runs.values():
            config["sweep"] = {**config["sweep"], "n": [64], "d_k": [32]}
            config["timing"] = {**config["timing"], "budget_s": 0.02, "timeout_s": 60}
    return runs


def largest_cells(summary: pd.DataFrame, datasheet: dict[str, float] | None) -> pd.DataFrame:
    """Per GPU backend and precision, its largest ok cell: GFLOP/s, % of the datasheet peak of
    that precision, GB/s and % of the datasheet memory bandwidth."""
    ok = summary[(summary["status"] == "ok") & (summary["device"] == "gpu")]
    if ok.empty:
        return pd.DataFrame()
    rows = []
    for (backend, precision), group in ok.groupby(["backend", "precision"]):
        cell = group.loc[group["flops"].idxmax()]
        peak = (datasheet or {}).get(str(precision))
        bandwidth = (datasheet or {}).get("bandwidth_gbs")
        rows.append({"backend": backend, "precision": precision, "n": int(cell["n"]),
                     "d_k": int(cell["d_k"]), "median_us": 1e6 * cell["median_s"],
                     "clock": cell["clock"], "gflops": cell["gflops"],
                     "pct_datasheet_peak": 100 * cell["gflops"] / peak if peak else None,
                     "gbps": cell["gbps"],
                     "pct_memory_roofline": 100 * cell["gbps"] / bandwidth if bandwidth else None,
                     "launch_overhead_us": 1e6 * cell["launch_overhead_s"]})
    return pd.DataFrame(rows)


def trap_verdict(summary: pd.DataFrame) -> tuple[bool, str]:
    trap = summary[summary["backend"] == TRAP_LABEL]
    ran = trap[trap["status"] != "skipped"]
    if ran.empty:
        return True, "not run (no GPU): " + (trap["reason"].iloc[0] if len(trap) else "no rows")
    caught = bool((ran["status"] == "mismatch").all())
    figures = ", ".join(f"n={r.n}: {r.status} (max_err {r.max_err:.2e}, bound {r.err_bound:.2e})"
                        for r in ran.itertuples())
    return caught, figures


def _markdown(frame: pd.DataFrame) -> str:
    """A Markdown table, three significant digits (no dependency on tabulate)."""
    if frame.empty:
        return "(no rows)"

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "" if value != value else f"{value:.3g}"
        return str(value)

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def write_figures(out: Path, runs: dict[str, Any]) -> bool:
    from qkbench.analysis import crossover
    from qkbench.machine import peaks

    kernel = runs["kernel"]
    environment = kernel.meta.get("environment", {})
    gpus = environment.get("gpus") or []
    gpu_name = gpus[0].get("name", "") if gpus else ""
    datasheet = peaks.datasheet(gpu_name) if gpu_name else None
    lines = [f"# Reference run: {gpu_name or 'no GPU'}", ""]
    caught, detail = trap_verdict(kernel.summary)
    answer = "not checked" if detail.startswith("not run") else "yes" if caught else "NO"
    lines += [f"TF32 behind a float32 label caught by the agreement check: {answer} — {detail}",
              ""]
    table = largest_cells(kernel.summary, datasheet)
    lines += ["## Largest cells (kernel time), % of datasheet peak and of memory roofline", "",
              _markdown(table), ""]
    for label in ("kernel", "transfers"):
        if label in runs:
            found = crossover.speedups(runs[label].summary)
            lines += [f"## CPU vs GPU: {label}", "",
                      _markdown(found), ""]
    statuses = {label: run.summary["status"].value_counts().to_dict()
                for label, run in runs.items()}
    lines += ["## Cells by status", "", *(f"- {k}: {v}" for k, v in statuses.items()), ""]
    (out / "FIGURES.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return caught


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    import qkbench

    # The TF32 trap lives in tests/plugins: importable here and in the worker processes.
    sys.path.insert(0, str(REPO))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO),
                                                             os.environ.get("PYTHONPATH")]))
    args.out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for label, config in configs(args.dry_run).items():
        print(f"--- {label}: {config['name']}", flush=True)
        runs[label] = qkbench.run(config, out=args.out / label)
    caught = write_figures(args.out, runs)
    failed = [label for label, run in runs.items()
              if run.summary[(run.summary["backend"] != TRAP_LABEL)]["status"].isin(
                  ["mismatch", "error", "crashed", "timeout"]).any()]
    if failed:
        print(f"failed cells in: {', '.join(failed)}")
    return 0 if caught and not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
