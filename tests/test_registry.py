"""One registry decides what a backend name means: built-ins, entry points, import paths."""

import pytest

from qkbench.backends import registry
from qkbench.errors import UsageError
from tests.conftest import REPO, install_entry_point_plugin, read_summary, run_cli, write_config


def test_builtins_resolve_without_importing_their_libraries():
    spec = registry.resolve("torch-cpu")
    assert spec.origin == "builtin" and spec.path.endswith(":TorchCpuBackend")
    assert spec.label == "torch-cpu"


def test_import_path_resolves_to_the_class_and_its_declared_name():
    spec = registry.resolve("tests.plugins.good_plugin:EinsumBackend")
    assert (spec.label, spec.origin) == ("einsum", "import path")


def test_label_overrides_the_declared_name():
    spec = registry.resolve("numpy", label="numpy-again")
    assert spec.label == "numpy-again"


@pytest.mark.parametrize("path, problem", [
    ("tests.plugins.good_plugin:Nope", "has no class 'Nope'"),
    ("no_such_module_xyz:Thing", "cannot import backend module"),
    ("json:JSONDecoder", "is not a backend class"),
    (":Thing", "must look like"),
])
def test_broken_import_paths_are_usage_errors(path, problem):
    with pytest.raises(UsageError, match=problem):
        registry.resolve(path)


def test_plugins_may_not_shadow_builtins():
    with pytest.raises(UsageError, match="shadow"):
        registry.resolve("tests.plugins.good_plugin:EinsumBackend", label="numpy")


def test_entry_point_plugin_is_listed_and_runs(tmp_path):
    site = tmp_path / "site"
    install_entry_point_plugin(site, "einsum", "tests.plugins.good_plugin:EinsumBackend")
    listed = run_cli("backends", extra_path=site)
    assert listed.returncode == 0
    line = next(li for li in listed.stdout.splitlines() if li.startswith("einsum"))
    assert "plugin" in line and "available" in line
    config = write_config(tmp_path, ["numpy", "einsum"])
    out = tmp_path / "run"
    result = run_cli("run", str(config), "--out", str(out), "--no-progress", extra_path=site)
    assert result.returncode == 0, result.stderr
    assert "einsum" in result.stdout


def test_entry_point_shadowing_a_builtin_is_ignored(tmp_path):
    site = tmp_path / "site"
    install_entry_point_plugin(site, "numpy", "tests.plugins.misbehaving:Raises")
    listed = run_cli("backends", extra_path=site)
    assert "ignored: shadows a built-in" in listed.stdout
    config = write_config(tmp_path, ["numpy"])
    result = run_cli("run", str(config), "--out", str(tmp_path / "run"), "--no-progress",
                     extra_path=site)
    assert result.returncode == 0, result.stderr  # the built-in numpy ran, not the plugin


def test_backends_command_lists_every_builtin_with_a_state():
    result = run_cli("backends")
    assert result.returncode == 0
    for name in registry.BUILTINS:
        line = next(li for li in result.stdout.splitlines() if li.split()[0] == name)
        assert "available" in line  # "available" or "unavailable: <reason>"


def test_readme_plugin_example_runs_as_written(tmp_path):
    """The README's plugin, extracted from the README itself, works as a real backend."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Writing a backend"):]
    code = section[section.index("```python") + len("```python"):]
    code = code[:code.index("```")]
    assert len(code.strip().splitlines()) <= 12
    package = tmp_path / "mypackage"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "einsum_backend.py").write_text(code)
    config = write_config(tmp_path, ["numpy", "mypackage.einsum_backend:EinsumBackend"],
                          dtype=["float32", "float64"])
    out = tmp_path / "run"
    result = run_cli("run", str(config), "--out", str(out), "--no-progress", extra_path=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = read_summary(out)
    assert set(summary["status"]) == {"ok"} and "einsum" in set(summary["backend"])


def test_a_plugin_without_the_base_class_gets_the_default_hooks(tmp_path):
    # Written to docs/plugins.md's required members only: no cleanup, load, telemetry, ...
    cls = registry.load_class("tests.plugins.duck_typed:DuckTyped")
    backend = cls()
    for hook in ("load", "cleanup", "telemetry", "set_threads", "set_problem", "precision",
                 "device_clock", "pending", "cache_bytes", "device_memory"):
        assert callable(getattr(backend, hook)), hook
    assert backend.info() == {"written_without": "qkbench.Backend"}  # its own members first
    config = write_config(tmp_path, ["tests.plugins.duck_typed:DuckTyped"], n=[32, 64],
                          dtype=["float32", "float64"], threads=[1, 2])
    out = tmp_path / "run"
    result = run_cli("run", str(config), "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = read_summary(out)
    assert len(summary) == 8 and set(summary["status"]) == {"ok"}, summary["reason"].tolist()
