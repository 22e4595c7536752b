"""The command line, sweeps on a cluster: submit slurm (and its --resume)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from qkbench.cli.common import EXIT_OK
from qkbench.errors import UsageError


def add_parsers(commands: Any) -> None:
    submit = commands.add_parser("submit", help="send a sharded sweep to a cluster's scheduler")
    schedulers = submit.add_subparsers(dest="scheduler", required=True,
                                       parser_class=type(submit))
    slurm = schedulers.add_parser(
        "slurm", help="a job array of shards per partition, merged after it (sbatch)")
    slurm.add_argument("config", nargs="?", help="a YAML file, or the name of a shipped config")
    slurm.add_argument("--out", type=Path, help="the folder the shards and merged runs go "
                       "under, one folder per partition")
    slurm.add_argument("--shards", type=int, help="shards per partition (array tasks)")
    slurm.add_argument("--partition", action="append", default=[], metavar="P",
                       help="a partition (a kind of machine); repeat for one sweep on each")
    slurm.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                       help="an sbatch option for every job, as --sbatch-arg=--account=proj")
    slurm.add_argument("--shard-sbatch-arg", action="append", default=[], metavar="ARG",
                       help="an sbatch option for the shard tasks only (--gpus=1, "
                       "--constraint=...)")
    slurm.add_argument("--no-exclusive", action="store_true",
                       help="share nodes with other jobs (default: each shard task takes its "
                       "node whole)")
    slurm.add_argument("--max-parallel", type=int, metavar="K",
                       help="run at most K shard tasks at once (for shared nodes)")
    slurm.add_argument("--resume", type=Path, metavar="OUT",
                       help="resubmit what an earlier submission lacks (shards that did not "
                       "finish, and their merge)")
    slurm.add_argument("--dry-run", action="store_true",
                       help="print the scripts and sbatch commands; submit nothing")
    slurm.set_defaults(handler=cmd_submit_slurm)


def cmd_submit_slurm(args: argparse.Namespace) -> int:
    from qkbench import api

    if args.resume is not None:
        given = [flag for flag, value in (
            ("CONFIG", args.config), ("--out", args.out), ("--shards", args.shards),
            ("--partition", args.partition), ("--sbatch-arg", args.sbatch_arg),
            ("--shard-sbatch-arg", args.shard_sbatch_arg), ("--no-exclusive", args.no_exclusive),
            ("--max-parallel", args.max_parallel)) if value]
        if given:
            raise UsageError(f"--resume takes everything from the submission; drop "
                             f"{', '.join(given)}")
        submission = api.resume_slurm(args.resume, dry_run=args.dry_run)
    else:
        if args.config is None or args.out is None or args.shards is None:
            raise UsageError("submit slurm needs CONFIG, --out DIR and --shards N "
                             "(or --resume OUT)")
        submission = api.submit_slurm(
            args.config, args.out, shards=args.shards, partitions=args.partition,
            exclusive=not args.no_exclusive, max_parallel=args.max_parallel,
            sbatch_args=args.sbatch_arg, shard_sbatch_args=args.shard_sbatch_arg,
            dry_run=args.dry_run)
    if args.dry_run:
        for name, text in submission.scripts.items():
            print(f"# ---- {submission.out / name}\n{text}")
        print("# ---- the sbatch commands, in order (<...>: the id an earlier one prints)")
    if not submission.jobs:
        print(f"nothing to resubmit: every shard and merge of {submission.out} finished")
        return EXIT_OK
    for job in submission.jobs:
        if args.dry_run:
            print(" ".join(job.command))
            continue
        what = {"shards": f"shards {job.array}", "merge": "merge", "report": "report"}[job.what]
        print(f"{job.folder or 'all'}: {what} job {job.job_id}")
    for folder, run in submission.merged_runs.items():
        if any(job.folder == folder and job.what == "merge" for job in submission.jobs):
            print(f"{folder}: merged run {run}")
    if any(job.what == "report" for job in submission.jobs):
        print(f"report: {submission.out / 'report.html'}")
    if not args.dry_run:
        print(f"follow with: squeue -j {','.join(submission.job_ids())}")
    return EXIT_OK
