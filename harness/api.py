"""The public Python API, `import qkbench`: run a sweep, load a run, compare two runs.

The command line is a thin layer over these functions: everything `qkbench run` does apart from
parsing flags and printing happens here, so a notebook gets the same run directory, the same
checks and the same figures as the CLI.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qkbench.errors import UsageError
from qkbench.plan import config as config_module
from qkbench.plan.locate import DEFAULT_CONFIG, find_config
# The one loader is the public `qkbench.load_run` (re-exported, not wrapped).
from qkbench.records.run import META_FILE, Run, load_run, read_meta

if TYPE_CHECKING:  # pandas loads only when a run is made or read
    from qkbench.analysis.verdicts import Comparison
    from qkbench.bisect.find import FindResult
    from qkbench.cell_key import CellKey
    from qkbench.cluster.slurm import Submission
    from qkbench.plan.sweep import Shard

ConfigSource = str | os.PathLike | Mapping[str, Any] | config_module.Config


def load_config(source: ConfigSource, **overrides: Any) -> config_module.Config:
    """A validated Config from a path, a shipped config's name, a mapping or a Config.

    `overrides` replace top-level sections of the config; a mapping given for a section that
    is a mapping (`sweep`, `timing`, `agreement`, `output`) is merged into it key by key, so
    `load_config("quick", timing={"budget_s": 0.1})` keeps the rest of quick's timing."""
    data, origin = _config_data(source)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(data.get(key), Mapping):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return config_module.parse(data, origin)


def _config_data(source: ConfigSource) -> tuple[dict[str, Any], str]:
    if isinstance(source, config_module.Config):
        return source.model_dump(mode="json", exclude_unset=True, warnings=False), "config"
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source)), "config mapping"
    path = find_config(os.fspath(source))
    data = config_module.read_yaml(path)
    if not isinstance(data, dict):
        config_module.parse(data, str(path))  # raises the one-line error for a non-mapping
    return data, str(path)


def _config_text(source: ConfigSource, config: config_module.Config,
                 overridden: bool) -> tuple[str, str]:
    """(where the config came from, its text): the YAML file's own text when it was used as
    is, so a run directory keeps the comments its author wrote; else the validated config."""
    if isinstance(source, (str, os.PathLike)):
        path = find_config(os.fspath(source))
        if not overridden:
            return str(path), path.read_text(encoding="utf-8")
        return str(path), _yaml_of(config)
    return "<python>", _yaml_of(config)


def run(config: ConfigSource = DEFAULT_CONFIG, out: str | os.PathLike | None = None, *,
        progress: bool = False, plots: bool = False, shard: str | None = None,
        on_cell_done: Callable[[dict[str, Any]], None] | None = None,
        **overrides: Any) -> Run:
    """Run a sweep and return its run directory, read back.

    `config` is a path, the name of a shipped config (`"quick"`), a mapping shaped like the
    YAML file, or a `Config`; `overrides` replace its top-level sections (see `load_config`).
    `out` is the run directory (it must not exist or be empty); by default a time-stamped
    folder under the config's `output.dir`. A cell that fails is recorded with its status and
    reason and never stops the others; check `Run.failed`. Ctrl-C keeps every finished cell:
    the run directory is completed (state "interrupted") before KeyboardInterrupt propagates.
    """
    session = RunSession.new(config, out, shard, overrides)
    result = session.execute(progress=progress, on_cell_done=on_cell_done)
    if plots and result.state == "finished":
        from qkbench.present.plots import plot_runs

        plot_runs([result.path])
    if session.interrupted:
        raise KeyboardInterrupt
    return result


def resume(path: str | os.PathLike, *, progress: bool = False) -> Run:
    """Finish an interrupted run directory: only its missing cells run."""
    session = RunSession.resumed(Path(path), None)
    result = session.execute(progress=progress)
    if session.interrupted:
        raise KeyboardInterrupt
    return result


def compare(baseline: str | os.PathLike | Run, candidate: str | os.PathLike | Run | None = None,
            threshold: float | None = None, normalize_by: str | None = None, *,
            per_backend: Mapping[str, float] | None = None,
            allow_different_machines: bool = False,
            between: tuple[str, str] | None = None) -> Comparison:
    """Every cell's verdict (slower, faster, same, …) between two runs, or two folders of
    runs of one config (pooled). `threshold` is the smallest relative change that counts
    (default 0.1); `normalize_by` divides each sample by that backend's time in the same round
    first. With `between=(BASE, CANDIDATE)`, `baseline` is one run of several environments and
    each cell's verdict comes from its paired rounds (analysis/paired.py; default threshold
    `PAIRED_THRESHOLD`)."""
    from qkbench.analysis.verdicts import DEFAULT_THRESHOLD, Rule
    from qkbench.analysis.compare import compare_runs
    from qkbench.analysis.paired import PAIRED_THRESHOLD, compare_between

    if between is not None:
        if candidate is not None or normalize_by is not None:
            raise UsageError("compare(run, between=(BASE, CANDIDATE)) takes one run, and no "
                             "normalize_by (pairing cancels the drift already)")
        rule = Rule(threshold=PAIRED_THRESHOLD if threshold is None else threshold,
                    per_backend=dict(per_backend or {}))
        return compare_between(baseline, *between, rule)
    if candidate is None:
        raise UsageError("compare needs a baseline and a candidate, or between=(BASE, CANDIDATE)")
    rule = Rule(threshold=DEFAULT_THRESHOLD if threshold is None else threshold,
                per_backend=dict(per_backend or {}))
    return compare_runs(baseline, candidate, rule, normalize_by, allow_different_machines)


def find(good: str, bad: str, *, config: str | os.PathLike, backend: str,
         repo: str | os.PathLike = ".", cells: Mapping[str, Any] | None = None,
         threshold: float | None = None, out: str | os.PathLike | None = None,
         cache: str | os.PathLike | None = None,
         echo: Callable[[str], None] | None = None) -> FindResult:
    """`qkbench find`: bisect the commits after `good` up to `bad` of the git repository
    `repo` (qkbench or a plugin package) to the first one where `backend`'s cell of `config`
    (narrowed to one cell by `cells`, {axis: value}) is slower than at `good`. Each decision is
    one paired run of the tested commit's environment against `good`'s (docs/history.md);
    `echo` gets each step's line as it happens. The result's `.first_bad` is the commit, or
    None with `.candidates` saying where it can still be."""
    from qkbench.bisect.find import find as bisect

    return bisect(good, bad, config, backend, repo=repo, cells=cells, threshold=threshold,
                  out=out, cache=cache, echo=echo)


def submit_slurm(config: ConfigSource, out: str | os.PathLike, *, shards: int,
                 partitions: tuple[str, ...] | list[str] = (), exclusive: bool = True,
                 max_parallel: int | None = None, sbatch_args: tuple[str, ...] | list[str] = (),
                 shard_sbatch_args: tuple[str, ...] | list[str] = (),
                 dry_run: bool = False) -> Submission:
    """Submit a sweep to Slurm in `shards` shards per partition (docs/many-machines.md): a job
    array, a merge after it into `out/PARTITION/merged-PARTITION`, and with several
    partitions a report of them side by side. The tasks run in this interpreter and this
    qkbench; nodes are taken whole unless `exclusive=False` (`max_parallel` throttles the
    array on shared nodes). A dry run returns the scripts and commands without submitting."""
    from qkbench.cluster import slurm

    loaded = load_config(config)
    _, text = _config_text(config, loaded, False)
    plan = slurm.plan_sweep(loaded, out, shards, partitions=tuple(partitions),
                            exclusive=exclusive, max_parallel=max_parallel,
                            sbatch_args=tuple(sbatch_args),
                            shard_sbatch_args=tuple(shard_sbatch_args))
    return slurm.submit(plan, text, dry_run=dry_run)


def resume_slurm(out: str | os.PathLike, *, dry_run: bool = False) -> Submission:
    """Resubmit what a Slurm submission lacks: the shards that did not finish, and merges."""
    from qkbench.cluster import slurm

    return slurm.resume(out, dry_run=dry_run)


# ---------------------------------------------------------------------------------------------
# One run, new or resumed: what both the API and the CLI drive


@dataclass
class RunSession:
    """Everything one `run` needs, settled before anything is measured."""

    config: config_module.Config
    specs: list[Any]
    folder: Path
    meta: dict[str, Any]
    done: set[CellKey]
    shard: Shard
    interrupted: bool = False
    wall_s: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)
    environments: dict[str, Any] = field(default_factory=dict)  # name → probed Environment

    @classmethod
    def new(cls, source: ConfigSource, out: str | os.PathLike | None, shard: str | None,
            overrides: Mapping[str, Any] | None = None) -> RunSession:
        from qkbench.records.meta import new_meta

        config = load_config(source, **dict(overrides or {}))
        origin, text = _config_text(source, config, bool(overrides))
        specs = config_module.resolve_backends(config)
        parsed = parse_shard(shard)
        folder = _fresh_folder(Path(out) if out is not None else None, config)
        environments = _probe_environments(config, specs)
        meta = new_meta(config, specs, origin, text, parsed, sys.argv)
        if environments:
            meta["environments"] = {name: e.meta() for name, e in environments.items()}
        return cls(config, specs, folder, meta, set(), parsed, environments=environments)

    @classmethod
    def resumed(cls, folder: Path, shard: str | None) -> RunSession:
        from qkbench.machine.environment import differences, fingerprint
        from qkbench.plan.sweep import Shard
        from qkbench.records.results import finished_keys, repair_log

        about = read_meta(folder)  # UsageError when there is none
        if about.config_text is None:
            raise UsageError(f"{folder} is not a qkbench run directory (its {META_FILE} holds "
                             "no config)")
        config = config_module.parse(config_module.parse_yaml_text(about.config_text,
                                                                   str(folder)),
                                     f"{folder}/{META_FILE}")
        specs = config_module.resolve_backends(config)
        recorded = Shard(about.shard_index or 1, about.shard_count or 1)
        if shard is not None and parse_shard(shard) != recorded:
            raise UsageError(f"{folder} holds shard {recorded.index}/{recorded.count}, "
                             f"not {shard}")
        here = fingerprint()
        if here["comparability_key"] != about.comparability_key:
            changed = "; ".join(differences(about.environment, here)[:3])
            raise UsageError(f"{folder} was started on other hardware or software ({changed}); "
                             "resuming would mix machines in one table")
        environments = _probe_environments(config, specs)
        repair_log(folder)
        meta = copy.deepcopy(about.raw)  # the record being continued
        meta.setdefault("resumed_utc", []).append(here["created_utc"])
        meta["state"] = "running"
        return cls(config, specs, folder, meta, finished_keys(folder), recorded,
                   environments=environments)

    def execute(self, *, progress: bool = False,
                on_cell_done: Callable[[dict[str, Any]], None] | None = None) -> Run:
        """Measure every cell, write the run directory, and return it read back."""
        from qkbench.machine import peaks
        from qkbench.machine.environment import last_level_cache_bytes
        from qkbench.measure.plausible import ceilings
        from qkbench.present.console import Progress
        from qkbench.records.results import RunWriter
        from qkbench.runner import Runner

        try:
            writer = RunWriter(self.folder)
        except OSError as exc:
            raise UsageError(f"cannot create run directory {self.folder}: {exc.strerror}"
                             ) from None
        if peaks.ensure(self.meta["environment"].get("hardware_key", "")):
            self.meta["peaks_measured_now"] = True  # this machine's first run
        peaks_by_device, self.meta["environment"]["peaks"] = peaks.for_run(
            self.meta["environment"])
        writer.write_meta(self.meta)
        runner = Runner(self.config, self.specs, writer, peaks=peaks_by_device,
                        host_cache_bytes=last_level_cache_bytes(), shard=self.shard,
                        done=self.done,
                        ceilings=ceilings(self.meta["environment"]["peaks"] or {}),
                        environments=self.environments)
        label = (self.config.name if self.shard.count == 1
                 else f"{self.config.name} {self.shard.index}/{self.shard.count}")
        bar = Progress(len(runner.cells()), label, enabled=progress)

        def cell_done(row: dict[str, Any]) -> None:
            bar.cell_done(row)
            if on_cell_done is not None:
                on_cell_done(row)

        runner.on_cell_done = cell_done
        started = time.monotonic()
        try:
            self._calibrate("start", runner)
            runner.run()
            self._calibrate("end", runner)
        except KeyboardInterrupt:
            self.interrupted = True
        finally:
            bar.close()
            finishing = time.monotonic()
            summary, _ = writer.finish()
            runner.counts.spend("writing", time.monotonic() - finishing)
            self.wall_s = time.monotonic() - started
            self.seconds = dict(runner.counts.seconds)
            self.meta.update(
                state="interrupted" if self.interrupted else "finished",
                wall_s=round(self.wall_s, 3),
                cells_by_status=summary["status"].value_counts().to_dict(),
                time_split_s={k: round(v, 3) for k, v in self.seconds.items()})
            writer.write_meta(self.meta)
        return load_run(self.folder)


    def _calibrate(self, when: str, runner: Any) -> None:
        """The machine's own speed at the start and end of the run (machine.calibration),
        for compare's machine shift; a resumed run keeps its first start."""
        from qkbench.machine import calibration

        began = time.monotonic()
        record = self.meta.setdefault("calibration", {"product": calibration.PRODUCT})
        if when == "start" and "start" in record:
            return
        record[when] = calibration.reading()
        self.meta["calibration"] = record
        runner.counts.spend("calibration", time.monotonic() - began)


def _probe_environments(config: config_module.Config, specs: list[Any]) -> dict[str, Any]:
    """The config's environments, each asked what it has (UsageError for one that cannot
    run this run's workers); empty without any."""
    if not config.environments:
        return {}
    from qkbench.measure.environments import probe

    return probe(config.environments, [spec.path for spec in specs])


def parse_shard(text: str | None) -> Shard:
    from qkbench.plan.sweep import Shard

    if text is None:
        return Shard()
    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _fresh_folder(out: Path | None, config: config_module.Config) -> Path:
    if out is not None:
        folder = out
    else:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        folder = Path(config.output.dir) / f"{stamp}-{config.name}"
    # os.path.exists, not Path.exists: it answers False instead of raising (a name too long).
    if os.path.exists(folder) and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(f"run directory {folder} already exists and is not empty "
                         "(to finish an interrupted run there: qkbench run --resume DIR)")
    return folder


def _yaml_of(config: config_module.Config) -> str:
    import yaml

    return yaml.safe_dump(config.model_dump(mode="json", exclude_unset=True, warnings=False),
                          sort_keys=False)
