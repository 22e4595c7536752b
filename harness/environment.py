"""Step 6b: the environment fingerprint stored with every run (and shown by `qkbench env`).

Numbers are only comparable when the machine and software that produced them are known, so the
fingerprint records the CPU, memory, OS, Python, library versions, the BLAS NumPy uses and its
threads, and the qkbench version and git commit. Library versions are read from package
metadata, so fingerprinting never imports torch or numba into the main process.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import harness

LIBRARIES = ("numpy", "numba", "llvmlite", "torch", "cupy-cuda12x", "cupy-cuda11x", "cupy",
             "pandas", "pyarrow", "pydantic", "pyyaml", "threadpoolctl")


def fingerprint() -> dict[str, Any]:
    return {
        "qkbench_version": harness.__version__,
        "git": git_state(),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_info(),
        "memory_gib": _memory_gib(),
        "blas": blas_info(),
        "libraries": library_versions(),
    }


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def cpu_info() -> dict[str, Any]:
    info: dict[str, Any] = {"model": platform.processor() or platform.machine(),
                            "logical_cores": os.cpu_count(),
                            "usable_cores": len(os.sched_getaffinity(0))
                            if hasattr(os, "sched_getaffinity") else os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    if "model name" in fields:
        info["model"] = fields["model name"]
    flags = set(fields.get("flags", "").split())
    info["flags"] = sorted(flags & {"avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile",
                                    "avx512_fp16", "f16c"})
    return info


def blas_info() -> list[dict[str, Any]]:
    from threadpoolctl import threadpool_info

    import numpy  # noqa: F401 - loads the BLAS so threadpoolctl can see it

    return [{"library": p.get("internal_api"), "version": p.get("version"),
             "threads": p.get("num_threads"), "architecture": p.get("architecture")}
            for p in threadpool_info() if p.get("user_api") == "blas"]


def git_state() -> dict[str, Any]:
    """Commit and dirtiness of the qkbench source tree, when it is a git checkout."""
    root = Path(harness.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=5,
                               check=True).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def _memory_gib() -> float | None:
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages * page_size / 2**30, 1)
