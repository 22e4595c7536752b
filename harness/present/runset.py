"""Presentation: run directories → one table for figures and reports, each run labelled by
its machine (the same backend gets the same colour, the same machine the same marker)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from qkbench.analysis.crossover import attention_words
from qkbench.cell_key import ATTENTION_AXES
from qkbench.errors import UsageError
from qkbench.records.run import Run, RunMeta, load_run

# What tells backends (colour) and machines (marker) apart in every figure of a run set.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

# ---------------------------------------------------------------------------------------------
# Machines and run sets

@dataclass(frozen=True)
class RunInfo:
    folder: Path
    meta: dict[str, Any]  # meta.json as a dict (`about` has it typed)
    host: str  # unique within a RunSet: the hostname, plus the folder name when two runs share it
    hardware: str  # CPU model, and GPU model(s) when the machine has any
    # The run as loaded (keyed): what a report compares, so that nothing is read twice.
    run: Run = field(compare=False, repr=False)

    @property
    def label(self) -> str:
        return f"{self.host} ({self.hardware})" if self.hardware else self.host

    @property
    def about(self) -> RunMeta:
        return self.run.about

    @property
    def environment(self) -> dict[str, Any]:
        return self.about.environment

    @property
    def config_name(self) -> str:
        return self.about.config_name or ""


@dataclass
class RunSet:
    """Several run directories as one table: `machine` (RunInfo.host) and `run` columns added."""

    runs: list[RunInfo]
    summary: pd.DataFrame
    samples: pd.DataFrame
    colors: dict[str, str] = field(default_factory=dict)  # backend → colour
    markers: dict[str, str] = field(default_factory=dict)  # machine → marker

    @property
    def machines(self) -> list[str]:
        return [run.host for run in self.runs]

    @property
    def ok(self) -> pd.DataFrame:
        frame = self.summary
        return frame[(frame["status"] == "ok") & (frame["median_s"] > 0)]

    def subtitle(self) -> str:
        """The machines, for a figure's subtitle: who produced these numbers."""
        if len(self.runs) == 1:
            run = self.runs[0]
            name = f" · sweep '{run.config_name}'" if run.config_name else ""
            return f"{run.label}{name} · run {run.folder.name}"
        return "machines: " + "; ".join(run.label for run in self.runs)


def machine_hardware(meta: dict[str, Any]) -> str:
    """CPU model, then GPU model(s): 'AMD EPYC 9454 48-Core Processor / NVIDIA H100 80GB HBM3'."""
    env = meta.get("environment") if isinstance(meta.get("environment"), dict) else {}
    cpu = env.get("cpu") if isinstance(env.get("cpu"), dict) else {}
    parts = []
    model = " ".join(str(cpu.get("model") or "").replace("(R)", "").replace("(TM)", "").split())
    core = cpu_identity(cpu)
    if model or core:
        parts.append(", ".join(part for part in (model, core) if part))
    names = [str(gpu.get("name")) for gpu in env.get("gpus") or []
             if isinstance(gpu, dict) and gpu.get("name")]
    if names:
        counted = [f"{names.count(name)}× {name}" if names.count(name) > 1 else name
                   for name in dict.fromkeys(names)]
        parts.append(", ".join(counted))
    return " / ".join(parts)


def cpu_identity(cpu: dict[str, Any]) -> str:
    """'zen5 family 26 model 2 stepping 1': the microarchitecture and the vendor's numbers,
    which tell apart CPUs a VM names alike ('AMD EPYC'); '' for runs that lack them."""
    numbers = " ".join(f"{word} {cpu[key]}" for word, key in
                       (("family", "family"), ("model", "model_number"), ("stepping", "stepping"))
                       if cpu.get(key) is not None)
    return " ".join(str(part) for part in (cpu.get("microarchitecture"), numbers) if part)


def load_runs(folders: list[Path | str | Run]) -> RunSet:
    """Load run directories (all checked before any is drawn; a `Run` given is used as it is)
    and label each by its machine."""
    if not folders:
        raise UsageError("no run directory given")
    # Through the one loader, with the cell keys every figure matches on.
    loaded = [load_run(folder).keyed() for folder in folders]
    hosts = [run.about.hostname or "unknown host" for run in loaded]
    labels = [(h, machine_hardware(run.meta)) for h, run in zip(hosts, loaded)]
    runs = []
    for i, (run, (host, hardware)) in enumerate(zip(loaded, labels)):
        folder = run.path
        if labels.count((host, hardware)) > 1 or hosts.count(host) > 1:
            host = f"{host} [{folder.name or folder.resolve().name}]"
            if sum(1 for other in loaded if other.path.name == folder.name) > 1:
                host = f"{host[:-1]} #{i + 1}]"
        runs.append(RunInfo(folder, run.meta, host, hardware, run))
    summaries, samples = [], []
    for info, run in zip(runs, loaded):
        summaries.append(with_attention_key(run.summary).assign(machine=info.host,
                                                                run=run.path.name))
        samples.append(with_attention_key(run.samples).assign(machine=info.host,
                                                              run=run.path.name))
    summary = pd.concat(summaries, ignore_index=True) if summaries else pd.DataFrame()
    sample = pd.concat(samples, ignore_index=True) if samples else pd.DataFrame()
    backends = sorted(summary["backend"].unique(),
                      key=lambda b: (_device_of(summary, b) != "cpu", b))
    colors = {b: PALETTE[i % len(PALETTE)] for i, b in enumerate(backends)}
    markers = {run.host: MARKERS[i % len(MARKERS)] for i, run in enumerate(runs)}
    return RunSet(runs, summary, sample, colors, markers)


def _device_of(summary: pd.DataFrame, backend: str) -> str:
    devices = summary.loc[summary["backend"] == backend, "device"].dropna().astype(str)
    return devices.iloc[0] if len(devices) else "cpu"


def with_attention_key(frame: pd.DataFrame) -> pd.DataFrame:
    """`attention_key`: a row's attention axes as one text variant ("llama-3-8b causal"; ""
    for the 2-D product), so that one model's or one mask's cells never join another's line."""
    columns = [c for c in ATTENTION_AXES if c in frame]
    words: dict[tuple[Any, ...], str] = {}
    keys = frame[columns].astype(object).itertuples(index=False, name=None)
    return frame.assign(attention_key=[
        words.setdefault(key, attention_words(dict(zip(columns, key))).strip()) for key in keys])
