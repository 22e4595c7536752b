"""What `qkbench merge` costs as the shard count grows: 10, 100 and 1,000 synthetic shards.

One sweep of 2,000 interleaving groups × 5 backends (10,000 cells) is dealt into N shards
exactly as `qkbench run --shard I/N` deals it (qkbench.plan.sweep). Each shard directory is
written through the run writer with a real cell's row and samples (one measured numpy cell,
cloned under every key), so the merge reads what a real shard holds; only the measuring is
skipped. The merge itself (`qkbench.records.merge.merge`) is timed from a cold Python process's
point of view minus start-up: the time of the call, with the shards already on disk.

    python benchmarks/merge_scale.py [--shards 10 100 1000] [--samples 20] [--work DIR]

Run it under `flock /work/measure.lock` on a shared machine; it prints the load beside the
figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import qkbench
from qkbench.plan import config as config_module
from qkbench.plan.sweep import Shard, expand
from qkbench.records.merge import merge
from qkbench.records.meta import new_meta
from qkbench.records.results import RunWriter, read_jsonl

# 250 sizes × 4 d_k × 2 dtypes = 2,000 interleaving groups; × 5 backends = 10,000 cells.
# Built-in CPU backends, whether or not they are installed here: merging never loads one.
SWEEP = {"name": "merge-scale", "seed": 0,
         "sweep": {"n": list(range(64, 64 + 250 * 8, 8)), "d_k": [32, 64, 96, 128],
                   "dtype": ["float32", "float64"]},
         "backends": ["numpy", "numba", "numba-loops", "torch-cpu", "jax-cpu"],
         "timing": {"budget_s": 0.02, "timeout_s": 60, "target_rel_ci": 0.5,
                    "min_samples": 6, "warmup_s": 0.0, "processes": 1}}


def template(work: Path) -> tuple[dict, list[dict]]:
    """One real cell's summary row and samples (numpy, the smallest shape)."""
    tiny = {**SWEEP, "name": "template", "backends": ["numpy"],
            "sweep": {"n": [64], "d_k": [32], "dtype": ["float32"]}}
    run = qkbench.run(tiny, out=work / "template")
    row = read_jsonl(run.path / "cells.jsonl")[0]
    samples = read_jsonl(run.path / "samples.jsonl")
    assert row["status"] == "ok", row
    return row, samples


def write_shards(config: config_module.Config, specs: list, count: int, row: dict,
                 samples: list[dict], samples_per_cell: int, folder: Path) -> list[Path]:
    text = json.dumps(SWEEP)  # YAML is a superset of JSON: the meta's config_text parses back
    labels = [spec.label for spec in specs]
    folders = []
    for index in range(1, count + 1):
        shard = Shard(index, count)
        path = folder / f"shard-{index}"
        writer = RunWriter(path)
        cell_lines, sample_lines = [], []
        for cell in expand(config, labels, shard):
            key = cell.key.as_dict()
            cell_lines.append(json.dumps({**row, **key}))
            sample_lines += [json.dumps({**sample, **key}) for sample in samples[:samples_per_cell]]
        writer.append_log(cell_lines, sample_lines)
        writer.finish()
        meta = new_meta(config, specs, "merge-scale.yaml", text, shard, ["merge_scale.py"])
        meta["state"] = "finished"
        writer.write_meta(meta)
        folders.append(path)
    return folders


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--samples", type=int, default=20, help="samples per cell")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temp folder)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="qkbench-merge-scale-"))
    config = config_module.parse(json.loads(json.dumps(SWEEP)), "merge-scale")
    specs = config_module.resolve_backends(config)
    cells = len(expand(config, [s.label for s in specs]))
    row, samples = template(work)
    samples = (samples * (args.samples // max(len(samples), 1) + 1))[:args.samples]
    print(f"sweep: {cells} cells, {args.samples} samples each; cpus: {os.cpu_count()}; "
          f"load before: {os.getloadavg()[0]:.2f}")
    print(f"{'shards':>7} {'merge_s':>8} {'per_shard_ms':>13} {'cells':>7}")
    for count in args.shards:
        shards = write_shards(config, specs, count, row, samples, args.samples,
                              work / f"shards-{count}")
        out = work / f"merged-{count}"
        began = time.perf_counter()
        meta, merged, missing = merge(shards, out)
        seconds = time.perf_counter() - began
        assert merged == cells and not missing and meta["state"] == "finished", (merged, missing)
        print(f"{count:>7} {seconds:>8.2f} {1000 * seconds / count:>13.2f} {merged:>7}"
              f"   (load {os.getloadavg()[0]:.2f})", flush=True)
        shutil.rmtree(work / f"shards-{count}")
        shutil.rmtree(out)
    if args.work is None:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
