"""A sweep under a container-like CPU quota set from outside qkbench: does qkbench plan for the
cores the quota allows?

Makes a child cgroup with a CPU quota (default 1.5 cores, what `docker run --cpus=1.5` sets; v1
`cpu.cfs_quota_us` or v2 `cpu.max`), runs the same sweep in it twice — library-default threads,
then `threads: [2]` — and reports for each: the usable cores and quota qkbench recorded, the
threads each cell ran, the share of samples set aside (and why), `quota_measured`, and the
end-of-run note. The cgroup is removed afterwards. Needs root and a writable cgroup cpu
controller.

    sudo python benchmarks/quota_sweep.py [--quota 1.5] [--config FILE] [--keep DIR]

Expected (docs/methodology.md, section 1b): 1 usable core under 1.5; the default cells run on
1 thread with few samples set aside; the 2-thread cells run, are throttled, and say that the
quota was measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
V1_CPU, V2_ROOT, PERIOD_US = Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup"), 100_000

SWEEP = {"name": "quota-sweep", "sweep": {"n": [256, 512, 1024], "d_k": [64],
                                          "dtype": ["float32"]},
         "backends": ["numpy", "numba", "torch-cpu"],
         "timing": {"budget_s": 1.0, "timeout_s": 120, "target_rel_ci": 0.02}}


def make_cgroup(cores: float) -> Path:
    name = f"qkbench-quota-sweep-{os.getpid()}"
    if (V1_CPU / "cpu.cfs_quota_us").exists():
        folder = V1_CPU / name
        folder.mkdir()
        (folder / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (folder / "cpu.cfs_quota_us").write_text(str(int(cores * PERIOD_US)))
        return folder
    folder = V2_ROOT / name
    folder.mkdir()
    (folder / "cpu.max").write_text(f"{int(cores * PERIOD_US)} {PERIOD_US}")
    return folder


def remove_cgroup(folder: Path) -> None:
    try:
        for pid in (folder / "cgroup.procs").read_text().split():
            (folder.parent / "cgroup.procs").write_text(pid)
    except OSError:
        pass
    try:
        folder.rmdir()
    except OSError as error:
        print(f"could not remove {folder}: {error}", file=sys.stderr)


def run_in(cgroup: Path, config: dict, out: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict, str]:
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH",
                                                                                  "")]))
    wrapper = f'echo $$ > {cgroup / "cgroup.procs"} && exec "$@"'
    command = ["sh", "-c", wrapper, "sh", sys.executable, "-m", "qkbench", "run", str(path),
               "--out", str(out), "--quiet", "--no-plots"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            check=False)
    if not (out / "summary.parquet").is_file():
        raise SystemExit(f"the run failed: {result.stderr[-2000:]}")
    meta = json.loads((out / "meta.json").read_text())
    return (pd.read_parquet(out / "summary.parquet"), pd.read_parquet(out / "samples.parquet"),
            meta, result.stderr)


def report(label: str, summary: pd.DataFrame, samples: pd.DataFrame, meta: dict,
           stderr: str) -> None:
    cpu = meta["environment"]["cpu"]
    print(f"\n## {label}: usable cores {cpu['usable_cores']} (affinity {cpu['affinity_cores']}, "
          f"quota {cpu['quota_cores']} from {cpu['quota_source']}); wall {meta.get('wall_s', 0):.1f} s")
    aside = samples[~samples["machine_fit"]]
    print(f"samples set aside: {len(aside)} of {len(samples)} "
          f"({len(aside) / max(len(samples), 1):.1%}); causes: "
          f"{aside['set_aside_cause'].value_counts().to_dict()}")
    columns = ["backend", "n", "status", "threads_requested", "threads", "quota_measured",
               "unfit_share", "samples", "median_s", "pct_peak"]
    print(summary[[c for c in columns if c in summary]].to_string(index=False))
    notes = [line for line in stderr.splitlines() if "quota" in line]
    print("end-of-run note: " + (notes[0] if notes else "(none about the quota)"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quota", type=float, default=1.5, help="cores (default 1.5)")
    parser.add_argument("--config", type=Path, help="a config to run instead of the built-in")
    parser.add_argument("--keep", type=Path, help="keep the run directories here")
    args = parser.parse_args()
    config = yaml.safe_load(args.config.read_text()) if args.config else SWEEP
    out = args.keep or Path(tempfile.mkdtemp(prefix="qkbench-quota-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {os.getloadavg()}")
    cgroup = make_cgroup(args.quota)
    try:
        report("library-default threads", *run_in(cgroup, config, out / "default"))
        asked = {**config, "sweep": {**config["sweep"], "threads": [2]}}
        report("threads: [2]", *run_in(cgroup, asked, out / "two"))
    finally:
        remove_cgroup(cgroup)
        if args.keep is None:
            shutil.rmtree(out, ignore_errors=True)
    print(f"\nload average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
