"""Shared helpers: write a config, run the real CLI in a subprocess, read a run directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent

# torch.compile's first compile in a process starts a pool of compile workers, each a Python
# that imports torch: 1.4 CPU-s a process, for the one small graph a test compiles (6 of 48 s
# of the torch-compile tests on 2 cores, with a cold cache). Compiling in the process itself
# gives the same kernels; set here, it reaches every process the tests start.
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

# Settings that keep test sweeps short; precision is not what these tests check. One worker
# process per backend: several (the default, 3) mix where each process's buffers landed into
# every run, which is precision again, and each costs a start-up and a set-up per cell. The
# tests of several processes ask for them (test_processes.py, test_cheats.py), and the quick
# run in test_run.py keeps the default.
FAST_TIMING = {"budget_s": 0.05, "timeout_s": 60, "target_rel_ci": 0.5, "min_samples": 6,
               "warmup_s": 0.0, "processes": 1}


def cli_env(extra_path: Path | None = None, extra_env: dict[str, str] | None = None
            ) -> dict[str, str]:
    env = {**os.environ, **(extra_env or {})}
    paths = [str(REPO)] + ([str(extra_path)] if extra_path else [])
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")])
    return env


def interruptible() -> None:
    """For Popen's preexec_fn: SIGINT back to its default in the child. A shell runs a
    background job (`.ci/run &`, a CI runner's step) with SIGINT ignored, the child inherits
    that, and Python then installs no Ctrl-C handler: a test that interrupts a run must give it
    the Ctrl-C a user's terminal would."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(*args: str, extra_path: Path | None = None, timeout: float = 240,
            cwd: Path = REPO, plots: bool = False,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`qkbench ARGS` in a subprocess. Runs draw no figures unless asked (`plots=True`): the
    figures are tested on their own, and drawing them costs seconds per run."""
    if args and args[0] == "run" and not plots:
        args = (*args, "--no-plots")
    return subprocess.run([sys.executable, "-m", "qkbench", *args], cwd=cwd,
                          env=cli_env(extra_path, env), capture_output=True, text=True,
                          timeout=timeout, check=False)


def write_config(folder: Path, backends: list, timing: dict | None = None, **sweep) -> Path:
    sweep = {"n": [32], "d_k": [16], "dtype": ["float32"], **sweep}
    config = {"name": "test", "sweep": sweep, "backends": backends,
              "timing": {**FAST_TIMING, **(timing or {})}}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def install_entry_point_plugin(site: Path, name: str, target: str,
                               dist: str = "qkbench_test_plugin") -> None:
    """A real installed distribution (dist-info with entry_points.txt) in a folder on sys.path:
    `name` in the `qkbench.backends` group points at `target` ("module:Class")."""
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist.replace('_', '-')}\n"
                                   "Version: 1.0\n")
    (info / "entry_points.txt").write_text(f"[qkbench.backends]\n{name} = {target}\n")


def install_plugin_package(site: Path, source: Path, name: str, class_name: str) -> None:
    """A third-party plugin package as pip would leave it: the module `source` as the package
    `qkbench_plugin_<stem>` in `site`, and its distribution's entry point `name`."""
    package = f"qkbench_plugin_{source.stem}"
    (site / package).mkdir(parents=True)
    (site / package / "__init__.py").write_text(source.read_text())
    install_entry_point_plugin(site, name, f"{package}:{class_name}", dist=package)


def read_summary(run_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "summary.parquet")


@pytest.fixture
def repo() -> Path:
    return REPO


def _cuda_gpu_present() -> bool:
    """True when torch or CuPy sees a CUDA GPU (checked without failing on a missing one)."""
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return True
    if importlib.util.find_spec("cupy") is not None:
        try:
            import cupy

            return cupy.cuda.runtime.getDeviceCount() > 0
        except Exception:
            return False
    return False


def _shares_a_fixture(item: pytest.Item) -> bool:
    """True when the test uses a module- or session-scoped fixture of the test suite's own
    (a run directory, a built wheel, a cluster), which each worker would make for itself."""
    defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    return any(d.scope in ("module", "session")
               and getattr(d.func, "__module__", "").startswith("tests.")
               for chain in defs.values() for d in chain)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if gpu_items and not _cuda_gpu_present():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (none seen by torch or CuPy)")
        for item in gpu_items:
            item.add_marker(skip)
    # `--dist loadgroup` (the README's command): the tests of a module that share a fixture
    # are one group, on one worker, so it is made once; every other test goes to whichever
    # worker is free. Slow tests first, so that no long one starts while the other worker has
    # nothing left to do.
    for item in items:
        if getattr(item, "module", None) is not None and _shares_a_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    items.sort(key=lambda item: "slow" not in item.keywords)


# Hypothesis profiles (tests/test_properties.py, tests/test_config_fuzz.py). `ci`, the default:
# derandomized, so every run of the suite draws the same points and a failure reproduces
# anywhere; no example database, so nothing a previous run found changes what this one draws.
# `nightly`: ten times the examples, drawn afresh each run (a failure prints the blob that
# replays it). Chosen with QKBENCH_HYPOTHESIS_PROFILE=nightly.
def _register_hypothesis_profiles() -> None:
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:  # the property tests skip themselves without Hypothesis
        return
    slow_ok = [HealthCheck.too_slow, HealthCheck.data_too_large]
    settings.register_profile("ci", max_examples=200, derandomize=True, database=None,
                              deadline=None, print_blob=True, suppress_health_check=slow_ok)
    settings.register_profile("nightly", max_examples=2000, derandomize=False, database=None,
                              deadline=None, print_blob=True, suppress_health_check=slow_ok)
    settings.load_profile(os.environ.get("QKBENCH_HYPOTHESIS_PROFILE", "ci"))


_register_hypothesis_profiles()
