"""What a wheel installs: one import name (`qkbench`), every subpackage, the shipped configs —
and, in a fresh virtual environment, the commands and a third-party plugin working from any
folder."""

from __future__ import annotations

import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parent.parent
# The repository's folders and the import names setuptools maps them to (pyproject package-dir).
MAPPED = {"harness": "qkbench", "backends": "qkbench.backends", "configs": "qkbench.configs"}
PLUGIN = REPO / "docs" / "examples" / "qkbench-einsum"


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_package_folder_is_listed_in_pyproject():
    tool = _pyproject()["tool"]["setuptools"]
    assert tool["package-dir"] == {name: folder for folder, name in MAPPED.items()}
    found = set()
    for folder, name in MAPPED.items():
        for init in (REPO / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(REPO / folder).parts
            found.add(".".join((name, *parts)))
    assert found == set(tool["packages"]), "add new subpackages to pyproject's `packages`"


def test_extras_cover_what_people_install():
    extras = _pyproject()["project"]["optional-dependencies"]
    names = {extra: {req.split(">")[0].split("=")[0].split("[")[0] for req in reqs}
             for extra, reqs in extras.items()}
    assert {"numba", "torch", "ml_dtypes"} <= names["all"]  # every CPU backend
    assert {"cupy-cuda12x", "torch"} <= names["gpu"]
    assert "pytest-benchmark" in names["bench"] and "pytest-benchmark" in names["test"]


def _can_build_wheels() -> bool:
    """setuptools builds wheels itself from 70.1; older ones need the `wheel` package."""
    import importlib.util

    import setuptools

    major, minor = (int(p) for p in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def _build_wheels(out: Path, *sources: Path) -> list[Path]:
    """The wheel of each source folder, in that order, from one `pip wheel` (one start-up)."""
    if not _can_build_wheels():
        pytest.skip("building a wheel offline needs setuptools >= 70.1 or the `wheel` package "
                    "(pip install -e '.[test]' brings it)")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", *map(str, sources), "-w", str(out)], check=True, capture_output=True,
                   timeout=300)
    names = [tomllib.loads((source / "pyproject.toml").read_text(encoding="utf-8"))
             ["project"]["name"].replace("-", "_") for source in sources]
    return [next(out.glob(f"{name}-*.whl")) for name in names]


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> tuple[Path, Path]:
    """qkbench's wheel and the example plugin's (docs/examples/qkbench-einsum)."""
    qkbench_wheel, plugin_wheel = _build_wheels(tmp_path_factory.mktemp("wheels"), REPO, PLUGIN)
    return qkbench_wheel, plugin_wheel


def _pip_can_target_another_python() -> bool:
    from importlib.metadata import version

    major, minor = (int(p) for p in version("pip").split(".")[:2])
    return (major, minor) >= (22, 3)  # `pip --python`


@pytest.mark.slow
def test_the_wheel_holds_only_qkbench_and_its_configs(wheels):
    wheel = wheels[0]
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"qkbench"}
    shipped = {Path(n).name for n in names if n.startswith("qkbench/configs/")}
    assert {f.name for f in (REPO / "configs").glob("*.yaml")} <= shipped
    # The published site's chart script and style (qkbench publish copies them).
    assert {"qkbench/present/site/qkbench-chart.js", "qkbench/present/site/style.css"} <= set(names)
    (top_level,) = [n for n in names if n.endswith("top_level.txt")] or [None]
    if top_level:
        assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["qkbench"]
    assert not any(n.startswith(("harness/", "backends/", "tests/")) for n in names)


def _see_the_running_environment(python: Path) -> None:
    """Put the running interpreter's site-packages on the new venv's path, after its own.

    `--system-site-packages` shows a venv the packages of the BASE interpreter: when the suite
    itself runs from a virtual environment (as a newcomer following the README would), its
    dependencies (threadpoolctl, pandas, …) are in that environment and not in the base. A
    `.pth` line adds a folder without running that folder's own `.pth` files, so the running
    environment's editable qkbench cannot shadow the venv's installed wheel."""
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"], check=True,
                             capture_output=True, text=True, timeout=60).stdout.strip()
    folders = [p for p in (*site.getsitepackages(), site.getusersitepackages())
               if Path(p).is_dir()]
    Path(purelib, "running-environment.pth").write_text("\n".join(folders) + "\n")


@pytest.mark.slow
def test_a_fresh_environment_runs_from_any_folder_with_a_plugin(wheels, tmp_path):
    """pip install (not editable) into a new venv, then from an unrelated folder: the shipped
    configs by name, the API, and a plugin package found through its entry point."""
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    # System site packages provide numpy, pandas, … offline; the venv's own qkbench comes first.
    # This pip installs into the venv (`pip --python`, run by the venv's interpreter, so the
    # scripts' shebangs are the venv's): seeding the venv with a pip of its own costs ~5 s.
    own_pip = not _pip_can_target_another_python()
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages",
                    *([] if own_pip else ["--without-pip"]), str(venv)], check=True, timeout=120)
    _see_the_running_environment(python)
    pip = [str(python), "-m", "pip"] if own_pip else [sys.executable, "-m", "pip", "--python",
                                                      str(python)]
    subprocess.run([*pip, "install", "-q", "--no-deps", *map(str, wheels)], check=True,
                   capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=elsewhere, capture_output=True, text=True, timeout=300,
                              check=False,
                              env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)})

    where = run(str(python), "-c", "import qkbench; print(qkbench.__file__)")
    assert where.stdout.strip().startswith(str(venv)), where.stdout + where.stderr
    for name in ("default", "quick"):
        validated = run(str(venv / "bin" / "qkbench"), "validate", name)
        assert validated.returncode == 0 and "valid" in validated.stdout, validated.stderr
    listed = run(str(venv / "bin" / "qkbench"), "backends")
    einsum = [line.split() for line in listed.stdout.splitlines() if line.startswith("einsum")]
    assert einsum and einsum[0][3:5] == ["plugin", "available"], listed.stdout
    script = ("import qkbench; r = qkbench.run({'name': 'p', 'sweep': {'n': [32], 'd_k': [16], "
              "'dtype': ['float32']}, 'backends': ['numpy', 'einsum'], 'timing': {'budget_s': "
              "0.05, 'min_samples': 6, 'target_rel_ci': 0.5, 'warmup_s': 0, 'processes': 1}}, "
              "out='run'); "
              "print(sorted(zip(r.summary.backend, r.summary.status)), list(r.summary['info']))")
    ran = run(str(python), "-c", script)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "('einsum', 'ok')" in ran.stdout and "('numpy', 'ok')" in ran.stdout
    assert "contraction" in ran.stdout  # the plugin's own fact, kept in `info`
