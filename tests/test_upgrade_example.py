"""docs/environments.md's upgrade comparison, as a user would copy it: two virtual environments
that differ in one library's version, one paired run, one verdict table.

The library is a small kernel package with two releases, each an installed distribution
(package and dist-info) on its environment's import path, so the test needs no package index.
Which verdict the table gives is the machine's business; the test checks that each environment
ran its own release and that the table judges every cell from the paired rounds."""

from __future__ import annotations

import json

import pandas as pd
import yaml
from tests.conftest import FAST_TIMING, run_cli
from tests.venvs import make_venv

RELEASE = '''"""demo-kernel {version}: S = Q·Kᵀ, with {extra} extra product(s) per call."""

from importlib.metadata import version

from qkbench.backends.base import Backend


class Kernel(Backend):
    name = "demo-kernel"
    dtypes = ("float32",)

    def scores(self, q, k):
        s = q @ k.T
        for _ in range({extra}):
            s = q @ k.T
        return s

    def info(self):
        return {{"library_version": version("demo-kernel")}}
'''


def _release(folder, version, extra):
    package = folder / "demo_kernel"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(RELEASE.format(version=version, extra=extra))
    dist = folder / f"demo_kernel-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: demo-kernel\n"
                                   f"Version: {version}\n")
    return folder


def test_two_releases_of_a_library_in_one_paired_run(tmp_path):
    old, new = _release(tmp_path / "old", "1.0", 0), _release(tmp_path / "new", "1.1", 1)
    config = {"name": "upgrade", "sweep": {"n": [32, 64], "d_k": [16], "threads": [1]},
              "backends": ["numpy", {"name": "demo_kernel:Kernel", "label": "kernel"}],
              "timing": {**FAST_TIMING, "processes": 2, "min_samples": 12,
                         "target_rel_ci": 0.001, "budget_s": 0.2},
              "environments": [
                  {"name": "old", "python": str(make_venv(tmp_path / "venv-old")),
                   "paths": [str(old)]},
                  {"name": "new", "python": str(make_venv(tmp_path / "venv-new")),
                   "paths": [str(new)]}]}
    (tmp_path / "upgrade.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "runs" / "upgrade"
    result = run_cli("run", str(tmp_path / "upgrade.yaml"), "--out", str(run), "--quiet",
                     extra_path=old)  # the main process validates the backend too
    assert result.returncode == 0, result.stderr
    summary = pd.read_parquet(run / "summary.parquet")
    kernel = summary[summary["backend"] == "kernel"]
    assert dict(zip(kernel["environment"], kernel["library_version"])) == {"old": "1.0",
                                                                          "new": "1.1"}
    result = run_cli("compare", str(run), "--between", "old", "new", "--markdown",
                     str(tmp_path / "upgrade.md"), "--json", str(tmp_path / "upgrade.json"))
    assert result.returncode in (0, 1), result.stderr  # 1: something got slower
    table = json.loads((tmp_path / "upgrade.json").read_text())
    assert table["between"] == ["old", "new"]
    assert sorted((c["backend"], c["n"]) for c in table["cells"]) == [
        ("kernel", 32), ("kernel", 64), ("numpy", 32), ("numpy", 64)]
    judged = [cell for cell in table["cells"] if cell["verdict"] != "not comparable"]
    for cell in table["cells"]:
        if cell["verdict"] == "not comparable":
            # A loaded machine can end a member's turns early (its first round spends its
            # capped budget); then the cell says so rather than judge on a few rounds.
            assert "too few rounds sampled in both" in cell["note"], cell
    assert judged, table["cells"]
    for cell in judged:
        assert cell["verdict"] in ("same", "slower", "faster"), cell
        assert cell["ci_low"] <= cell["ratio"] <= cell["ci_high"]
        assert "paired rounds" in cell["note"]
    markdown = (tmp_path / "upgrade.md").read_text()
    assert "environment new of" in markdown and "| kernel |" in markdown
