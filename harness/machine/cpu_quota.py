"""How many cores qkbench may really use: the affinity mask and the cgroup's CPU quota.

A container with a CPU limit (Docker `--cpus=1.5`, a Kubernetes CPU limit, a Slurm job's
cgroup) still shows every CPU of the host in its affinity mask; the limit is a CFS bandwidth
quota: the cgroup may run `quota` µs of CPU in every `period` µs, then every thread of it stops
until the next period. A two-threaded BLAS call under a 1.5-core quota runs out of quota in
each period and waits, so it measures the quota, not the hardware.

The quota is read the way the Go runtime and the JVM read it: find the cgroup this process is
in (`/proc/self/cgroup`), find where that hierarchy is mounted (`/proc/self/mountinfo`; inside a
container the mount's root is the container's own cgroup), and walk from the process's cgroup up
to the mount point, taking the smallest quota on the way (a limit may sit on any ancestor: a
pod's, a job's). cgroup v2 holds it in `cpu.max` (`max 100000` or `150000 100000`), v1 in
`cpu.cfs_quota_us` (-1 = none) and `cpu.cfs_period_us`. v1's cpu controller is used when it is
mounted, else the v2 hierarchy.

    usable cores = min(CPUs in the affinity mask, max(1, floor(quota / period)))

A quota of 1.5 cores is one whole core: a second thread gets half a core in bursts and is
throttled in every period. Whatever cannot be read (another OS, no cpu controller, a sandbox)
means "no quota found", never an error.

This module imports nothing heavy on purpose (workers and the CLI read it at start-up).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")


@dataclass(frozen=True)
class CpuLimits:
    """The cores this process may use and why."""

    affinity: int  # CPUs in the affinity mask
    quota_cores: float | None  # the smallest CFS quota on the way to the root, in cores
    quota_source: str | None  # the file it was read from

    @property
    def usable(self) -> int:
        if self.quota_cores is None:
            return self.affinity
        return max(1, min(self.affinity, math.floor(self.quota_cores + 1e-9)))

    @property
    def quota_binds(self) -> bool:
        """The quota, not the affinity mask, decides the usable cores."""
        return self.quota_cores is not None and self.usable < self.affinity

    def quota_measured(self, threads: int | None) -> bool | None:
        """Whether `threads` need more CPU than the quota gives (the cell then times the
        quota, not the hardware); None when no quota below the affinity mask is set."""
        if self.quota_cores is None or self.quota_cores >= self.affinity:
            return None
        return threads is not None and threads > self.quota_cores

    def as_record(self) -> dict[str, object]:
        return {"affinity_cores": self.affinity, "quota_cores": self.quota_cores,
                "quota_source": self.quota_source, "usable_cores": self.usable}

    def describe(self) -> str:
        if self.quota_cores is None:
            return f"{self.usable} usable core(s): the affinity mask (no CPU quota found)"
        return (f"{self.usable} usable core(s): affinity mask {self.affinity}, CPU quota "
                f"{self.quota_cores:g} core(s) ({self.quota_source})")


def affinity_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_limits(proc: Path = _PROC) -> CpuLimits:
    quota = smallest_quota(cpu_cgroup_folders(proc))
    return CpuLimits(affinity_cores(), *(quota or (None, None)))


def usable_cores(proc: Path = _PROC) -> int:
    """The one count of usable cores every part of qkbench plans and reports with."""
    return cpu_limits(proc).usable


def cgroup_mounts(proc: Path = _PROC) -> list[tuple[str, str, str, set[str]]]:
    """(mount root, mount point, fstype, super options) of every cgroup mount."""
    try:
        lines = (proc / "self" / "mountinfo").read_text().splitlines()
    except OSError:
        return []
    mounts = []
    for line in lines:
        left, _, right = line.partition(" - ")
        before, after = left.split(), right.split()
        if len(before) < 5 or len(after) < 3 or after[0] not in ("cgroup", "cgroup2"):
            continue
        mounts.append((before[3], before[4], after[0], set(after[2].split(","))))
    return mounts


def cpu_cgroup_folders(proc: Path = _PROC) -> tuple[str, list[Path]]:
    """("v1" or "v2", the folders of the process's cgroup and of each ancestor up to the mount
    point, the process's own first); ("", []) when none is found. v1's cpu controller when it
    is mounted, else the v2 hierarchy (which may have no cpu controller: a hybrid layout)."""
    try:
        entries = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return "", []
    v1_path = v2_path = None
    for entry in entries:
        parts = entry.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2_path = parts[2]
        elif "cpu" in parts[1].split(","):
            v1_path = parts[2]
    mounts = cgroup_mounts(proc)
    for root, point, fstype, options in mounts:
        if fstype == "cgroup" and v1_path is not None and "cpu" in options:
            return "v1", _up_to_mount(Path(point), root, v1_path)
    for root, point, fstype, _options in mounts:
        if fstype == "cgroup2" and v2_path is not None:
            return "v2", _up_to_mount(Path(point), root, v2_path)
    return "", []


def _up_to_mount(mount_point: Path, mount_root: str, cgroup_path: str) -> list[Path]:
    relative = cgroup_path
    if mount_root != "/" and relative.startswith(mount_root):
        relative = relative[len(mount_root):]  # a container sees its own cgroup as the root
    folder = mount_point / relative.lstrip("/")
    out = []
    while True:
        if folder.is_dir():
            out.append(folder)
        if folder == mount_point or mount_point not in folder.parents:
            return out
        folder = folder.parent


def smallest_quota(found: tuple[str, list[Path]]) -> tuple[float, str] | None:
    """(cores, the file) of the smallest quota over the folders, or None when none is set."""
    version, folders = found
    best: tuple[float, str] | None = None
    for folder in folders:
        quota = _v2_quota(folder) if version == "v2" else _v1_quota(folder)
        if quota is not None and (best is None or quota[0] < best[0]):
            best = quota
    return best


def _v2_quota(folder: Path) -> tuple[float, str] | None:
    path = folder / "cpu.max"
    try:
        fields = path.read_text().split()
    except OSError:
        return None
    if len(fields) < 1 or fields[0] == "max":
        return None
    period = fields[1] if len(fields) > 1 else "100000"  # the kernel's default period
    return _cores(fields[0], period, str(path))


def _v1_quota(folder: Path) -> tuple[float, str] | None:
    quota_path, period_path = folder / "cpu.cfs_quota_us", folder / "cpu.cfs_period_us"
    try:
        quota, period = quota_path.read_text().strip(), period_path.read_text().strip()
    except OSError:
        return None
    return _cores(quota, period, str(quota_path))


def _cores(quota: str, period: str, source: str) -> tuple[float, str] | None:
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return None
    if quota_us <= 0 or period_us <= 0:  # v1's -1: no limit
        return None
    return quota_us / period_us, source
