"""A sharded sweep sent to Slurm with sbatch; a submission's missing shards resent.

`submit` writes the scripts (cluster.slurm_scripts) and the sweep's config into the output
folder, then submits per partition a job array of the shards and a merge that waits for every
task however it ended (`afterany`), and with several partitions one report after the merges.
`submission.json` records what was sent, so `resume` can resend only the shards that did not
finish (cancelled, failed, timed out): their tasks resume their own run directories.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from qkbench.cluster.slurm_scripts import (
    PARTITION_NAME,
    SweepPlan,
    array_range,
    environment,
    merge_script,
    report_script,
    shard_script,
)
from qkbench.errors import UsageError
from qkbench.records.run import RunMeta, read_meta

SUBMISSION_FILE = "submission.json"


@dataclass(frozen=True)
class Job:
    """One sbatch call: what it runs, for which partition folder, its job id once submitted."""

    what: str  # "shards", "merge" or "report"
    folder: str | None
    command: tuple[str, ...]
    job_id: str | None = None  # None in a dry run
    array: str | None = None


@dataclass
class Submission:
    """What `submit` (or a resubmission) sent, or would send in a dry run."""

    out: Path
    plan: SweepPlan
    scripts: dict[str, str]  # file name under `out` → its text
    jobs: list[Job] = field(default_factory=list)
    dry_run: bool = False

    @property
    def merged_runs(self) -> dict[str, Path]:
        """Per partition folder, the run directory its merge writes."""
        return {folder: Path(self.plan.merged_run(folder)) for folder in self.plan.folders}

    def job_ids(self) -> list[str]:
        return [job.job_id for job in self.jobs if job.job_id is not None]


def plan_sweep(config: Any, out: str | os.PathLike, shards: int, *,
               partitions: tuple[str, ...] | list[str] = (), exclusive: bool = True,
               max_parallel: int | None = None, sbatch_args: tuple[str, ...] | list[str] = (),
               shard_sbatch_args: tuple[str, ...] | list[str] = ()) -> SweepPlan:
    """A checked plan: every problem of the request is one UsageError before anything is
    written or submitted."""
    from qkbench.plan import config as config_module
    from qkbench.plan.sweep import groups

    labels = [spec.label for spec in config_module.resolve_backends(config)]
    group_count = sum(len(shape_groups) for _, shape_groups in groups(config, labels))
    if not isinstance(shards, int) or isinstance(shards, bool) or shards < 1:
        raise UsageError(f"--shards must be a whole number of at least 1, got {shards!r}")
    if shards > group_count:
        raise UsageError(f"--shards {shards}: the sweep has only {group_count} interleaving "
                         f"group(s) to deal out; use at most {group_count} shards")
    if max_parallel is not None and (isinstance(max_parallel, bool) or max_parallel < 1):
        raise UsageError(f"--max-parallel must be at least 1, got {max_parallel!r}")
    for name in partitions:
        if not PARTITION_NAME.match(name):
            raise UsageError(f"--partition {name!r}: a partition name here is letters, digits, "
                             "'_' and '-' (it names a folder)")
    if len(set(partitions)) != len(partitions):
        raise UsageError("--partition: each partition may be given once")
    for arg in (*sbatch_args, *shard_sbatch_args):
        if not arg.startswith("-") or any(c.isspace() for c in arg.strip()) or "\n" in arg:
            raise UsageError(f"--sbatch-arg {arg!r}: give one sbatch option per flag, as "
                             "--sbatch-arg=--time=30 (no spaces)")
    folder = os.path.abspath(os.fspath(out))
    if any(c.isspace() for c in folder):
        raise UsageError(f"--out {folder!r}: Slurm's #SBATCH lines cannot hold a path with "
                         "spaces; choose a folder without them")
    if os.path.exists(folder) and (not os.path.isdir(folder) or os.listdir(folder)):
        raise UsageError(f"--out {folder} already exists and is not empty (to resend what a "
                         f"submission lacks: qkbench submit slurm --resume {folder})")
    return SweepPlan(out=PurePosixPath(folder), config_name=_job_word(config.name),
                     shards=shards, partitions=tuple(partitions), python=sys.executable,
                     environment=environment(), workdir=os.getcwd(),
                     exclusive=exclusive, max_parallel=max_parallel,
                     sbatch_args=tuple(sbatch_args), shard_sbatch_args=tuple(shard_sbatch_args))


def scripts_of(plan: SweepPlan) -> dict[str, str]:
    scripts = {}
    for folder in plan.folders:
        scripts[f"{folder}/shard.sbatch"] = shard_script(plan, folder)
        scripts[f"{folder}/merge.sbatch"] = merge_script(plan, folder)
    if len(plan.folders) > 1:
        scripts["report.sbatch"] = report_script(plan)
    return scripts


def submit(plan: SweepPlan, config_text: str, *, dry_run: bool = False) -> Submission:
    """Write the output folder and submit every job (a dry run writes and submits nothing)."""
    out = Path(plan.out)
    submission = Submission(out, plan, scripts_of(plan), dry_run=dry_run)
    if not dry_run:
        _sbatch_command()  # no sbatch here: refuse before anything is written
        for folder in plan.folders:
            (out / folder / "logs").mkdir(parents=True, exist_ok=True)
        Path(plan.config_path()).write_text(config_text, encoding="utf-8")
        for name, text in submission.scripts.items():
            (out / name).write_text(text, encoding="utf-8")
            (out / name).chmod(0o755)
        # Written before the first sbatch: a submission that sbatch refuses part-way can be
        # completed with --resume once the cause is fixed.
        _write_record(out, {"plan": {**asdict(plan), "out": str(plan.out)}, "submissions": []})
    _send(submission, {folder: list(range(1, plan.shards + 1)) for folder in plan.folders},
          list(plan.folders), first=True)
    return submission


def resume(out: str | os.PathLike, *, dry_run: bool = False) -> Submission:
    """Resend what an earlier submission lacks: per partition, the shards that did not finish
    (their tasks resume them) and its merge; a merge alone where the shards are all there."""
    out = Path(os.path.abspath(os.fspath(out)))
    record = _read_record(out)
    try:
        plan = SweepPlan(**{**record["plan"], "out": PurePosixPath(record["plan"]["out"]),
                            **{k: tuple(record["plan"][k]) for k in
                               ("partitions", "sbatch_args", "shard_sbatch_args")}})
    except (TypeError, KeyError):
        raise UsageError(f"{out}/{SUBMISSION_FILE} was written by another qkbench version; "
                         "resubmit from that version") from None
    here, there = (sys.executable, environment()), (plan.python, plan.environment)
    if here != there:
        raise UsageError(f"{out} was submitted from {', '.join(there)}; this is "
                         f"{', '.join(here)}: resubmit from the same environment")
    if not dry_run:
        queued = sorted(set(_all_submitted(record)) & _queued_job_ids())
        if queued:
            raise UsageError(f"job(s) {', '.join(queued)} of {out} are still queued or "
                             "running; wait for them to end (or scancel them) first")
    shards, merges = {}, []
    for folder in plan.folders:
        missing = unfinished_shards(plan, folder)
        if missing:
            shards[folder] = missing
        merged = _meta(Path(plan.merged_run(folder)))
        if (missing or merged is None or merged.state != "finished"
                or merged.missing_cells):
            merges.append(folder)
    submission = Submission(out, plan, {}, dry_run=dry_run)
    _send(submission, shards, merges, first=False)
    return submission


def unfinished_shards(plan: SweepPlan, folder: str) -> list[int]:
    """The shards of a partition to resubmit: every one whose run directory is absent or did
    not end `finished` (interrupted, still `running` after a SIGKILL, or unreadable)."""
    return [index for index in range(1, plan.shards + 1)
            if _state(Path(plan.shard_run(folder, index))) != "finished"]


def _send(submission: Submission, shards: dict[str, list[int]], merges: list[str],
          first: bool) -> None:
    """sbatch the shard arrays, the merges after them, the report after the merges."""
    plan, out = submission.plan, submission.out
    merge_ids = []
    for folder in plan.folders:
        after = None
        if folder in shards:
            # On a first submission the array is the script's own; a resubmission names it.
            array = array_range(shards[folder], plan.max_parallel)
            job = _sbatch(submission, "shards", folder, out / folder / "shard.sbatch",
                          array=None if first else array,
                          shown_array=array_range(shards[folder], None))
            after = job.job_id or f"<shards {folder}>"
        if folder in merges:
            job = _sbatch(submission, "merge", folder, out / folder / "merge.sbatch",
                          after=[after] if after else [])
            merge_ids.append(job.job_id or f"<merge {folder}>")
    if merge_ids and len(plan.folders) > 1:
        _sbatch(submission, "report", None, out / "report.sbatch", after=merge_ids)


def _sbatch(submission: Submission, what: str, folder: str | None, script: Path, *,
            array: str | None = None, shown_array: str | None = None,
            after: list[str] | tuple[()] = ()) -> Job:
    command = ["sbatch", "--parsable"]
    if array:
        command.append(f"--array={array}")
    if after:
        command.append("--dependency=afterany:" + ":".join(after))
    command.append(str(script))
    job = Job(what, folder, tuple(command), array=shown_array)
    if not submission.dry_run:
        command[0] = _sbatch_command()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sent = ", ".join(f"{j.what} {j.folder or ''} job {j.job_id}".replace("  ", " ")
                             for j in submission.jobs) or "nothing"
            reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise UsageError(f"sbatch refused {script}: {reason} (already submitted: {sent}; "
                             "send the rest with: qkbench submit slurm --resume "
                             f"{submission.out})")
        job = Job(what, folder, tuple(command), done.stdout.strip().split(";")[0],
                  shown_array)
    submission.jobs.append(job)
    if not submission.dry_run:
        _record(submission)
    return job


def _record(submission: Submission) -> None:
    """submission.json: the plan, and every sbatch call of every submission, as sent."""
    record = _read_record(submission.out)
    if len(submission.jobs) == 1:  # this submission's first job: its entry starts
        record["submissions"].append([])
    record["submissions"][-1] = [asdict(job) for job in submission.jobs]
    _write_record(submission.out, record)


def _write_record(out: Path, record: dict[str, Any]) -> None:
    path = out / SUBMISSION_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def _read_record(out: Path) -> dict[str, Any]:
    try:
        record = json.loads((out / SUBMISSION_FILE).read_text(encoding="utf-8"))
        record["plan"]["out"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"{out} holds no Slurm submission (no readable {SUBMISSION_FILE})"
                         ) from None
    return record


def _all_submitted(record: dict[str, Any]) -> list[str]:
    return [job["job_id"] for jobs in record["submissions"] for job in jobs if job["job_id"]]


def _queued_job_ids() -> set[str]:
    """The ids of every job Slurm still has queued or running (an array's tasks by the
    array's id)."""
    squeue = shutil.which("squeue")
    if squeue is None:
        raise UsageError("squeue not found: Slurm's commands are not on PATH here")
    done = subprocess.run([squeue, "--noheader", "--format=%F"], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise UsageError(f"squeue failed: {(done.stderr.strip().splitlines() or [''])[-1]}")
    return {line.strip() for line in done.stdout.splitlines() if line.strip()}


def _sbatch_command() -> str:
    found = shutil.which("sbatch")
    if found is None:
        raise UsageError("sbatch not found: Slurm's commands are not on PATH here "
                         "(--dry-run prints the scripts without submitting)")
    return found


def _meta(folder: Path) -> RunMeta | None:
    """A run directory's meta.json; None when it is absent or unreadable (not run yet)."""
    try:
        return read_meta(folder)
    except UsageError:
        return None


def _state(folder: Path) -> str | None:
    meta = _meta(folder)
    return None if meta is None else meta.state


def _job_word(name: str) -> str:
    # A config's name goes into job names: keep it one plain word.
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "sweep"
