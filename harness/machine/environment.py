"""The environment fingerprint stored with every run (and shown by `qkbench env`).

Numbers are only comparable when the machine and software that produced them are known, so the
fingerprint records the CPU, memory, OS, Python, library versions, the BLAS NumPy uses and its
threads, and the qkbench version and git commit. Library versions are read from package
metadata, so fingerprinting never imports torch or numba into the main process.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import qkbench.version
from qkbench.version import __version__
from qkbench.machine import cpu_peak, library_env, microarch
from qkbench.machine.cpu_quota import cpu_limits

LIBRARIES = ("numpy", "numba", "llvmlite", "torch", "cupy-cuda12x", "cupy-cuda11x", "cupy",
             "pandas", "pyarrow", "pydantic", "pyyaml", "threadpoolctl")


# The fields that decide whether two runs' numbers are comparable: the same hardware and the
# same software. Hostname, time, clock readings and the git commit are deliberately left out.
HARDWARE_FIELDS = ("cpu.model", "cpu.family", "cpu.model_number", "cpu.stepping",
                   "cpu.microarchitecture", "cpu.flags", "cpu.logical_cores", "cpu.usable_cores",
                   "cpu.caches", "memory_gib", "gpus")
# library_env: the variables that change what a library computes (machine.library_env).
SOFTWARE_FIELDS = ("os", "python", "libraries", "blas", "library_env")


def fingerprint() -> dict[str, Any]:
    facts: dict[str, Any] = {
        "qkbench_version": __version__,
        "git": git_state(),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_info(),
        "memory_gib": _memory_gib(),
        "blas": blas_info(),
        "libraries": library_versions(),
        "gpus": gpu_info(),
        "library_env": library_env.library_variables(),
    }
    facts["library_env_warnings"] = environment_warnings(facts)
    facts["hardware_key"] = digest(facts, HARDWARE_FIELDS)
    facts["comparability_key"] = digest(facts, HARDWARE_FIELDS + SOFTWARE_FIELDS)
    return facts


def environment_warnings(facts: dict[str, Any]) -> list[str]:
    """One line per variable that holds a library below this CPU (machine.library_env)."""
    cpu = facts.get("cpu") or {}
    return library_env.warnings(facts.get("library_env") or {}, cpu_peak.vector_bits(),
                                int(cpu.get("usable_cores") or 1))


def lookup(facts: dict[str, Any], dotted: str) -> Any:
    value: Any = facts
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def digest(facts: dict[str, Any], fields: tuple[str, ...]) -> str:
    """A short, stable hash of the named fields: equal keys mean comparable runs."""
    chosen = {name: lookup(facts, name) for name in fields}
    text = json.dumps(chosen, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def differences(a: dict[str, Any], b: dict[str, Any],
                fields: tuple[str, ...] = HARDWARE_FIELDS + SOFTWARE_FIELDS) -> list[str]:
    """Human-readable 'field: A vs B' lines for the fields in which two fingerprints differ."""
    out = []
    for name in fields:
        left, right = lookup(a, name), lookup(b, name)
        if isinstance(left, dict) and isinstance(right, dict):
            for key in sorted(set(left) | set(right)):
                if left.get(key) != right.get(key):
                    out.append(f"{name}.{key}: {left.get(key)} vs {right.get(key)}")
        elif left != right:
            out.append(f"{name}: {left} vs {right}")
    return out


def cache_sizes() -> dict[str, int]:
    """CPU cache sizes in bytes by level ("L1d", "L2", "L3"), from sysfs (Linux)."""
    sizes: dict[str, int] = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        multiplier = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1:], 1)
        number = size.rstrip("KMG")
        if number.isdigit():
            sizes[f"L{level}{'d' if kind == 'Data' else ''}"] = int(number) * multiplier
    return sizes


def last_level_cache_bytes() -> int:
    """The largest CPU cache; 32 MiB when the OS does not say (a generous server L3)."""
    sizes = cache_sizes()
    return max(sizes.values()) if sizes else 32 << 20


def gpu_info() -> list[dict[str, Any]]:
    """NVIDIA GPUs via nvidia-smi (no CUDA library is imported); empty without one."""
    if shutil.which("nvidia-smi") is None:
        return []
    query = "name,memory.total,driver_version,clocks.max.sm"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4:
            name, memory_mib, driver, max_sm_mhz = parts
            gpus.append({"name": name, "memory_gib": _number(memory_mib, 1 / 1024),
                         "driver": driver, "max_sm_clock_mhz": _number(max_sm_mhz)})
    return gpus


def _number(text: str, scale: float = 1.0) -> float | None:
    try:
        return round(float(text) * scale, 1)
    except ValueError:
        return None


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def cpu_info() -> dict[str, Any]:
    limits = cpu_limits()
    # usable_cores: the affinity mask capped by the cgroup's CPU quota (machine.cpu_quota),
    # with the quota and the file it came from.
    info: dict[str, Any] = {"model": platform.processor() or platform.machine(),
                            "logical_cores": os.cpu_count(), **limits.as_record()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    if "model name" in fields:
        info["model"] = fields["model name"]
    if "cpu MHz" in fields:
        info["clock_mhz"] = _number(fields["cpu MHz"])
    info.update(microarch.describe())
    info["caches"] = cache_sizes()
    flags = set(fields.get("flags", "").split())
    info["flags"] = sorted(flags & {"avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile",
                                    "avx512_fp16", "f16c"})
    return info


def blas_info() -> list[dict[str, Any]]:
    import numpy  # noqa: F401 - loads the BLAS so threadpoolctl can see it
    from threadpoolctl import threadpool_info

    return [{"library": p.get("internal_api"), "version": p.get("version"),
             "threads": p.get("num_threads"), "architecture": p.get("architecture")}
            for p in threadpool_info() if p.get("user_api") == "blas"]


def git_state() -> dict[str, Any]:
    """Commit and dirtiness of qkbench's own source tree, when it runs from a checkout of it.

    An installed wheel lives in site-packages, which may sit inside some other project's git
    repository (a venv in a project folder): that project's commit says nothing about qkbench,
    so a commit is recorded only when the folder above the package is the top of a git
    checkout whose pyproject.toml names qkbench."""
    root = Path(qkbench.version.__file__).resolve().parent.parent
    unknown: dict[str, Any] = {"commit": None, "dirty": None}
    try:
        if 'name = "qkbench"' not in (root / "pyproject.toml").read_text(encoding="utf-8"):
            return unknown
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root,
                             capture_output=True, text=True, timeout=5, check=True).stdout
        if Path(top.strip()).resolve() != root:
            return unknown
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=5,
                               check=True).stdout.strip() != ""
    except (OSError, UnicodeDecodeError, subprocess.SubprocessError):
        return unknown
    return {"commit": commit, "dirty": dirty}


def _memory_gib() -> float | None:
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages * page_size / 2**30, 1)


# What runs written before the fingerprint had a comparability_key are compared on.
LEGACY_FIELDS = ("cpu.model", "cpu.logical_cores", "libraries")


def environment_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """What makes two runs' timings not comparable, as 'field: A vs B' strings (empty: none).

    Runs that both carry the fingerprint's `comparability_key` (a hash of the hardware and
    software fields above) are compared on it; runs written before it existed
    are compared on CPU model, core count and library versions."""
    key_a, key_b = a.get("comparability_key"), b.get("comparability_key")
    if key_a is not None and key_b is not None:
        if key_a == key_b:
            return []
        return (differences(dict(a), dict(b))
                or [f"comparability_key: {key_a} vs {key_b}"])
    return differences(dict(a), dict(b), LEGACY_FIELDS)
