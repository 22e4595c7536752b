"""The environments axis: config and --env, the cell key, workers in each interpreter,
interleaved rounds in a seeded order, fingerprints, and the refusals before any cell runs."""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from qkbench.errors import UsageError
from qkbench.measure.timing import Sample, StopRule, interleave
from qkbench.measure.worker import PROTOCOL_VERSION
from qkbench.plan import config as config_module
from qkbench.plan.sweep import expand, groups
from qkbench.cell_key import CellKey
from tests.conftest import FAST_TIMING, REPO, run_cli
from tests.venvs import make_venv

NAMES = st.text(alphabet="abcxyz019._-", min_size=1, max_size=8).filter(
    lambda name: name[0].isalnum())


def _config(environments, backends=("numpy", "numba-loops"), n=(32, 64)):
    return config_module.parse({"name": "t", "sweep": {"n": list(n), "d_k": [16]},
                                "backends": list(backends), "environments": environments})


@settings(max_examples=40, deadline=None)
@given(st.lists(NAMES, min_size=2, max_size=4, unique=True),
       st.lists(st.sampled_from(["numpy", "numba-loops", "numba"]), min_size=1, max_size=3,
                unique=True))
def test_every_backend_runs_in_every_environment_of_a_group(names, backends):
    config = _config([{"name": name, "python": sys.executable} for name in names], backends)
    for _, shape_groups in groups(config, backends):
        for group in shape_groups:
            members = [(cell.backend, cell.environment) for cell in group]
            assert sorted(members) == sorted((b, e) for b in backends for e in names)
            keys = [cell.key for cell in group]
            assert len(set(keys)) == len(keys)  # the environment tells them apart
            assert {key.environment for key in keys} == set(names)
            assert len({key.group() for key in keys}) == 1  # one interleaving group
            assert all(CellKey.of(key.as_dict()) == key for key in keys)
    assert len(expand(config, backends)) == len(backends) * len(names) * 2


def test_without_environments_nothing_changes():
    config = config_module.parse({"name": "t", "sweep": {"n": [32], "d_k": [16]},
                                  "backends": ["numpy"]})
    (cell,) = expand(config, ["numpy"])
    assert cell.environment is None and cell.member == "numpy"
    assert cell.key == CellKey.of({k: v for k, v in cell.key.as_dict().items()
                                                 if k != "environment"})


@settings(max_examples=40, deadline=None)
@given(st.lists(NAMES, min_size=1, max_size=4))
def test_environment_names_must_be_two_or_more_and_distinct(names):
    entries = [{"name": name, "python": sys.executable} for name in names]
    if len(set(names)) == len(names) and len(names) >= 2:
        assert [e.name for e in _config(entries).environments] == names
    else:
        with pytest.raises(UsageError) as raised:
            _config(entries)
        assert "\n" not in str(raised.value) and "environments" in str(raised.value)


@settings(max_examples=40, deadline=None)
@given(st.lists(NAMES, min_size=2, max_size=3, unique=True), st.lists(NAMES, max_size=3))
def test_env_flags_set_a_listed_interpreter_or_add_an_environment(listed, given_names):
    config = _config([{"name": name, "python": "old", "env": {"X": name}} for name in listed])
    merged = config_module.with_environments(config, [f"{name}=new-{name}" for name in given_names])
    by_name = {entry["name"]: entry for entry in merged}
    assert list(by_name) == list(dict.fromkeys(listed + given_names))
    for name in listed:
        assert by_name[name]["env"] == {"X": name}  # variables kept
        assert by_name[name]["python"] == (f"new-{name}" if name in given_names else "old")


def test_an_env_flag_without_an_interpreter_is_refused():
    with pytest.raises(UsageError, match="NAME=PYTHON"):
        config_module.with_environments(_config([]), ["base"])


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 5), st.integers(0, 2**32 - 1))
def test_a_round_order_is_kept_for_every_member_and_every_round(members, seed):
    """interleave runs each round in the order `order` gives; every member samples in every
    round (lockstep), so pairing by round is possible for any two of them."""
    calls: list[tuple[int, str]] = []

    def sampler(name):
        def take(count, round_number):
            calls.append((round_number, name))
            return [Sample(round_number, 0.0, 1e-3, 1) for _ in range(count)]
        return take

    names = [f"m{i}" for i in range(members)]
    rng = random.Random(seed)
    orders: list[list[str]] = []

    def order(active):
        rng.shuffle(active)
        orders.append(list(active))
        return active

    rule = StopRule(target_rel_ci=1e-9, min_samples=6, budget_s=0.05)
    interleave({name: sampler(name) for name in names}, dict.fromkeys(names, 1e-3), rule,
               min_rounds=12, order=order)
    rounds = sorted({r for r, _ in calls})
    assert len(rounds) >= 12
    for number, expected in zip(rounds, orders):
        assert [name for r, name in calls if r == number] == expected


# ------------------------------------------------------------------------------- real runs


def _wrapper(folder: Path, python: Path, log: Path) -> Path:
    """An interpreter that is a shell script: it notes each start, then runs `python`."""
    script = folder / "python-wrapper"
    script.write_text(f'#!/bin/sh\necho started >> "{log}"\nexec "{python}" "$@"\n')
    script.chmod(0o755)
    return script


def _write(folder: Path, environments, backends, n=(32, 48), processes=2) -> Path:
    config = {"name": "envs", "sweep": {"n": list(n), "d_k": [16], "dtype": ["float32"]},
              "backends": backends, "environments": environments,
              "timing": {**FAST_TIMING, "processes": processes, "min_samples": 12,
                         "target_rel_ci": 0.001, "budget_s": 0.06}}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def paired_run(tmp_path_factory):
    """One real run of two environments: a venv behind a wrapper script, and another venv
    with a variable of its own; a real NumPy product and a backend that reports where it ran."""
    folder = tmp_path_factory.mktemp("paired")
    base_python = make_venv(folder / "venv-base")
    cand_python = make_venv(folder / "venv-cand")
    log = folder / "wrapper.log"
    environments = [{"name": "base", "python": str(_wrapper(folder, base_python, log))},
                    {"name": "cand", "python": str(cand_python),
                     "env": {"QKBENCH_TEST_MARK": "candidate"}}]
    config = _write(folder, environments,
                    ["numpy", {"name": "tests.plugins.where_am_i:WhereAmI", "label": "where"}])
    out = folder / "run"
    result = run_cli("run", str(config), "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    return {"out": out, "log": log, "base": base_python, "cand": cand_python,
            "wrapper": environments[0]["python"]}


def test_each_environment_runs_its_own_interpreter_and_variables(paired_run):
    summary = pd.read_parquet(paired_run["out"] / "summary.parquet")
    assert sorted(zip(summary["backend"], summary["environment"], summary["n"])) == sorted(
        (b, e, n) for b in ("numpy", "where") for e in ("base", "cand") for n in (32, 48))
    assert (summary["status"] == "ok").all(), summary[["backend", "status", "reason"]]
    where = summary[summary["backend"] == "where"]
    for environment, python, mark in (("base", paired_run["base"], ""),
                                      ("cand", paired_run["cand"], "candidate")):
        infos = [json.loads(text) for text in where[where["environment"] == environment]["info"]]
        assert {info["executable"] for info in infos} == {str(python)}
        assert {info["mark"] for info in infos} == {mark}
    # The wrapper script was the interpreter: the probe and each base worker started it.
    starts = paired_run["log"].read_text().split()
    assert len(starts) >= 1 + 2 * 2  # probe + 2 backends × 2 processes


def test_meta_keeps_each_environments_fingerprint(paired_run):
    meta = json.loads((paired_run["out"] / "meta.json").read_text())
    assert list(meta["environments"]) == ["base", "cand"]
    for name, facts in meta["environments"].items():
        assert facts["qkbench_file"].startswith(str(REPO / "harness"))
        assert facts["protocol"] == PROTOCOL_VERSION
        fingerprint = facts["fingerprint"]
        assert fingerprint["libraries"]["numpy"] and fingerprint["blas"] is not None
        assert fingerprint["git"]["commit"] == meta["environment"]["git"]["commit"]
    assert meta["environments"]["base"]["python"] == paired_run["wrapper"]
    assert meta["environments"]["cand"]["variables"] == {"QKBENCH_TEST_MARK": "candidate"}


def test_members_of_a_group_share_rounds_in_a_shuffled_order(paired_run):
    samples = pd.read_parquet(paired_run["out"] / "samples.parquet")
    first_in_round = []
    for (backend, n), cells in samples.groupby(["backend", "n"]):
        rounds = {env: set(part["round"]) for env, part in cells.groupby("environment")}
        assert rounds["base"] & rounds["cand"], (backend, n)  # sampled in the same rounds
    for n, group in samples.groupby("n"):
        for _, one_round in group.groupby("round"):
            if one_round["environment"].nunique() == 2:
                first_in_round.append(one_round.sort_values("t_start")["environment"].iloc[0])
    # Neither environment always goes first (the order is shuffled, seeded by the config).
    assert set(first_in_round) == {"base", "cand"}, first_in_round


# ------------------------------------------------------------------------------- refusals


def _refused(tmp_path, environments, backends=("numpy",)):
    config = _write(tmp_path, environments, list(backends))
    out = tmp_path / "run"
    result = run_cli("run", str(config), "--out", str(out), "--quiet")
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()  # refused before any cell ran, or any folder was made
    return result.stderr.strip()


def test_a_missing_interpreter_is_refused(tmp_path):
    message = _refused(tmp_path, [{"name": "base", "python": sys.executable},
                                  {"name": "gone", "python": str(tmp_path / "no" / "python")}])
    assert "environment gone" in message and "not found" in message


def test_an_interpreter_without_qkbench_is_refused(tmp_path):
    bare = make_venv(tmp_path / "bare", qkbench=False, system_site=False)
    message = _refused(tmp_path, [{"name": "base", "python": sys.executable},
                                  {"name": "bare", "python": str(bare)}])
    assert "environment bare" in message and "cannot import qkbench" in message


def _other_qkbench(folder: Path, protocol: int | None) -> Path:
    """A qkbench of another version on an import path: one from before the protocol was
    versioned (no PROTOCOL_VERSION), or one that speaks another."""
    package = folder / "qkbench"
    (package / "measure").mkdir(parents=True)
    (package / "__init__.py").write_text('__version__ = "9.9.9"\n')
    (package / "measure" / "__init__.py").write_text("")
    (package / "measure" / "worker.py").write_text(
        "" if protocol is None else f"PROTOCOL_VERSION = {protocol}\n")
    return folder


@pytest.mark.parametrize("protocol, words", [(None, "predates"), (99, "worker protocol 99")])
def test_a_qkbench_of_another_protocol_is_refused_naming_both(tmp_path, protocol, words):
    other = _other_qkbench(tmp_path / "other", protocol)
    message = _refused(tmp_path, [{"name": "base", "python": sys.executable},
                                  {"name": "old", "python": sys.executable,
                                   "paths": [str(other)]}])
    assert "environment old" in message and "9.9.9" in message and words in message
    assert f"worker protocol {PROTOCOL_VERSION}" in message  # this side's version too


def test_cli_env_flags_make_the_axis_and_resume_refuses_them(tmp_path):
    result = run_cli("run", "quick", "--env", "base", "--out", str(tmp_path / "r"))
    assert result.returncode == 2 and "NAME=PYTHON" in result.stderr
    result = run_cli("run", "--resume", str(tmp_path), "--env", f"a={sys.executable}")
    assert result.returncode == 2 and "--env" in result.stderr


def test_a_backend_an_environment_lacks_is_skipped_there(tmp_path):
    """The plugin is importable here (and in `base`), not in `bare`: its cells there are
    skipped with the reason, and every other cell runs."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "only_here.py").write_text(
        "from qkbench.backends.base import Backend\n\n\nclass OnlyHere(Backend):\n"
        "    dtypes = ('float32',)\n\n    def scores(self, q, k):\n        return q @ k.T\n")
    environments = [{"name": "base", "python": sys.executable},
                    {"name": "bare", "python": sys.executable,
                     "env": {"PYTHONPATH": os.pathsep.join([str(REPO)])}}]
    config = _write(tmp_path, environments, ["numpy", {"name": "only_here:OnlyHere",
                                                       "label": "only"}], n=(32,), processes=1)
    out = tmp_path / "run"
    result = run_cli("run", str(config), "--out", str(out), "--quiet", extra_path=plugins)
    assert result.returncode == 0, result.stderr
    summary = pd.read_parquet(out / "summary.parquet").set_index(["backend", "environment"])
    assert summary.loc[("only", "bare"), "status"] == "skipped"
    assert "cannot be loaded in environment bare" in summary.loc[("only", "bare"), "reason"]
    assert "only_here" in summary.loc[("only", "bare"), "reason"]
    for member in (("only", "base"), ("numpy", "base"), ("numpy", "bare")):
        assert summary.loc[member, "status"] == "ok", summary.loc[member, "reason"]


def test_validate_counts_the_environments(tmp_path):
    config = _write(tmp_path, [{"name": "a", "python": sys.executable},
                               {"name": "b", "python": sys.executable},
                               {"name": "c", "python": sys.executable}], ["numpy"], n=(32, 64))
    result = run_cli("validate", str(config))
    assert result.returncode == 0, result.stderr
    assert "6 cells (1 backends × 3 environments × 2 shapes" in result.stdout
