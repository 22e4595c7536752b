"""compare: verdicts on synthetic runs with known samples, comparability, outputs, exit codes.

Every run here is built from seeded samples, so the verdicts are certain; one end-to-end test
runs the real harness twice and checks only the shape of the answer, never a timing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qkbench.cli import main
from qkbench.analysis.bootstrap import between_runs_interval
from qkbench.analysis.verdicts import Rule
from qkbench.analysis.bootstrap import bootstrap_ratio
from qkbench.machine.environment import environment_differences
from qkbench.analysis.compare import compare_runs
from tests.conftest import run_cli, write_config

ENVIRONMENT = {
    "created_utc": "2026-01-01T00:00:00+00:00",
    "git": {"commit": "0123456789abcdef", "dirty": False},
    "cpu": {"model": "Test CPU 9000", "logical_cores": 2},
    "libraries": {"numpy": "2.0.0"},
    "comparability_key": "aaaaaaaaaaaa",
}
SHAPES = (256, 512)
ROUNDS, PER_ROUND = 10, 4


def write_run(folder: Path, medians: dict[tuple[str, int], float], seed: int = 0,
              spread: float = 0.02, drift: float = 0.0, environment: dict | None = None,
              status: dict[tuple[str, int], str] | None = None,
              new_columns: bool = False, config: str = "synthetic",
              samples: dict[tuple[str, int], int] | None = None,
              foreign_load: float | None = None,
              process_levels: list[float] | None = None,
              unfit_rounds: set[int] | None = None) -> Path:
    """A run directory with lognormal samples around the given medians (seconds).

    Samples are taken in interleaved rounds like the harness's; `drift` raises every backend's
    time alike, growing from 0 in the first round to `drift` in the last (a machine heating up).
    `process_levels` makes the run one of len(levels) worker processes per backend, round r
    taken in process r mod len(levels) and scaled by its level (where its buffers landed).
    In `unfit_rounds` every backend ran 3x slower and the machine check set the round aside.
    """
    rng = np.random.default_rng(seed)
    status = status or {}
    summary, rows = [], []
    for (backend, n), median in medians.items():
        state = status.get((backend, n), "ok")
        count = (samples or {}).get((backend, n), ROUNDS * PER_ROUND)
        cell = {"backend": backend, "device": "cpu", "dtype": "float32", "n": n, "m": n,
                "d_k": 64}
        if new_columns:
            cell.update(phase="kernel", cache="warm", threads_requested=None)
        times = []
        if state == "ok":
            for i in range(count):
                round_number = i * ROUNDS // count
                factor = 1.0 + drift * round_number / (ROUNDS - 1)
                if process_levels:
                    factor *= process_levels[round_number % len(process_levels)]
                seconds = median * factor * float(np.exp(rng.normal(0.0, spread)))
                fit = {}
                if unfit_rounds is not None:
                    fit["machine_fit"] = round_number not in unfit_rounds
                    if not fit["machine_fit"]:
                        seconds *= 3.0
                    else:
                        times.append(seconds)
                else:
                    times.append(seconds)
                rows.append({**cell, "round": round_number, "t_start": float(i),
                             "seconds": seconds, "calls": 1, **fit})
        summary.append({**cell, "status": state, "reason": "" if state == "ok" else "boom",
                        "median_s": float(np.median(times)) if times else None,
                        "samples": len(times)}
                       | ({} if foreign_load is None else {"foreign_load": foreign_load})
                       | ({} if process_levels is None else {"processes": len(process_levels)}))
    folder.mkdir(parents=True)
    frame = pd.DataFrame(summary)
    if new_columns:
        frame["threads_requested"] = pd.array([pd.NA] * len(frame), dtype="Int64")
    frame.to_parquet(folder / "summary.parquet", index=False)
    samples_frame = pd.DataFrame(rows)
    if new_columns and len(samples_frame):
        samples_frame["threads_requested"] = pd.array([pd.NA] * len(samples_frame),
                                                      dtype="Int64")
    samples_frame.to_parquet(folder / "samples.parquet", index=False)
    meta = {"config": {"name": config}, "environment": environment or ENVIRONMENT,
            "state": "finished"}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def medians(numpy: float = 1e-3, other: float = 2e-3) -> dict[tuple[str, int], float]:
    return {(b, n): (numpy if b == "numpy" else other) * n / 256
            for b in ("numpy", "other") for n in SHAPES}


def verdicts(comparison) -> dict[tuple[str, int], str]:
    return {(c.key["backend"], c.key["n"]): c.verdict for c in comparison.cells}


def test_identical_distributions_are_the_same(tmp_path):
    base = write_run(tmp_path / "a", medians(), seed=1)
    cand = write_run(tmp_path / "b", medians(), seed=2)
    comparison = compare_runs(base, cand)
    assert set(verdicts(comparison).values()) == {"same"}
    assert comparison.exit_code == 0
    assert main(["compare", str(base), str(cand)]) == 0


def test_thirty_percent_slower_is_slower_and_exits_1(tmp_path, capsys):
    base = write_run(tmp_path / "a", medians(), seed=1)
    slow = medians()
    slow[("other", 512)] *= 1.3
    cand = write_run(tmp_path / "b", slow, seed=2)
    assert main(["compare", str(base), str(cand)]) == 1
    out = capsys.readouterr()
    assert "1 slower, 0 faster, 3 same" in out.out
    assert "regression" in out.err
    found = verdicts(compare_runs(base, cand))
    assert found[("other", 512)] == "slower"
    assert found[("other", 256)] == "same"


def test_a_run_sampled_on_a_busy_machine_is_pointed_out(tmp_path, capsys):
    base = write_run(tmp_path / "a", medians(), seed=1, foreign_load=0.02)
    slow = medians()
    slow[("other", 512)] *= 1.3
    cand = write_run(tmp_path / "b", slow, seed=2, foreign_load=0.9)
    cells = {(c.key["backend"], c.key["n"]): c for c in compare_runs(base, cand).cells}
    assert cells[("other", 512)].verdict == "slower"  # pointed out, not hidden
    assert "candidate sampled while other processes kept 0.90 cores busy" in \
        cells[("other", 512)].note
    assert "baseline" not in cells[("other", 512)].note  # 0.02 cores is a quiet machine
    assert main(["compare", str(base), str(cand)]) == 1
    out = capsys.readouterr().out
    assert "+30" in out and "0.90 cores busy" in out  # the table keeps the note beside the %
    assert "confirm with five runs a side" in out  # one run a side, and a slower cell
    quiet = compare_runs(base, write_run(tmp_path / "c", medians(), seed=3, foreign_load=0.0))
    assert all(c.note == "" for c in quiet.cells)


def test_a_run_whose_processes_disagree_gets_a_wide_interval(tmp_path):
    # Same code both times; only which processes drew a slow layout differs. Pooled, the
    # medians differ by 20%; resampling whole processes shows that this is how much a run's
    # processes disagree, so no verdict is made.
    base = write_run(tmp_path / "a", medians(), seed=1, process_levels=[1.0, 1.0, 1.2])
    cand = write_run(tmp_path / "b", medians(), seed=2, process_levels=[1.2, 1.2, 1.0])
    comparison = compare_runs(base, cand)
    assert set(verdicts(comparison).values()) == {"same"}
    assert all(c.ci_low < 1.0 < c.ci_high for c in comparison.cells)
    # The same samples without the process column (a run from before processes) read as
    # one process each, and the 20% reads as a regression: the column is what prevents it.
    for run in (base, cand):
        summary = pd.read_parquet(run / "summary.parquet").drop(columns=["processes"])
        summary.to_parquet(run / "summary.parquet", index=False)
    assert set(verdicts(compare_runs(base, cand)).values()) == {"slower"}


def test_a_real_slowdown_is_found_across_agreeing_processes(tmp_path):
    base = write_run(tmp_path / "a", medians(), seed=1, process_levels=[1.0, 1.03, 0.98])
    cand = write_run(tmp_path / "b", medians(numpy=1.3e-3, other=2.6e-3), seed=2,
                     process_levels=[1.02, 0.99, 1.0])
    assert set(verdicts(compare_runs(base, cand)).values()) == {"slower"}


def test_rounds_the_machine_check_set_aside_are_left_out(tmp_path):
    # The candidate's machine lost its parallel capacity for half of its rounds: those
    # samples are 3x slower but flagged, and the run's own medians did not use them either.
    base = write_run(tmp_path / "a", medians(), seed=1, unfit_rounds=set())
    cand = write_run(tmp_path / "b", medians(), seed=2, unfit_rounds={1, 3, 5, 7, 9})
    assert set(verdicts(compare_runs(base, cand)).values()) == {"same"}
    normalised = verdicts(compare_runs(base, cand, normalize_by="numpy"))
    assert {v for (backend, _), v in normalised.items() if backend != "numpy"} == {"same"}


def test_three_percent_slower_is_the_same(tmp_path):
    base = write_run(tmp_path / "a", medians(), seed=1, spread=0.005)
    cand = write_run(tmp_path / "b", medians(numpy=1.03e-3, other=2.06e-3), seed=2, spread=0.005)
    comparison = compare_runs(base, cand)
    # Significant (tight samples) but below the 10% threshold: not a regression.
    assert all(c.ci_low > 1.0 for c in comparison.cells)
    assert set(verdicts(comparison).values()) == {"same"}


def test_thirty_percent_faster_is_faster_and_exits_0(tmp_path):
    base = write_run(tmp_path / "a", medians(), seed=1)
    cand = write_run(tmp_path / "b", medians(other=2e-3 / 1.3), seed=2)
    comparison = compare_runs(base, cand)
    assert verdicts(comparison)[("other", 256)] == "faster"
    assert verdicts(comparison)[("numpy", 256)] == "same"
    assert comparison.exit_code == 0


def test_a_noisy_slowdown_is_not_called_without_evidence(tmp_path):
    base = write_run(tmp_path / "a", medians(), seed=1, spread=0.6)
    cand = write_run(tmp_path / "b", medians(other=2.4e-3), seed=2, spread=0.6)
    cell = next(c for c in compare_runs(base, cand).cells if c.key["backend"] == "other")
    assert cell.verdict == "same"
    assert "inconclusive" in cell.note


def test_machine_drift_cancels_with_normalisation(tmp_path):
    base = write_run(tmp_path / "a", medians(), seed=1)
    # The whole machine is 40% slower by the end of the candidate run, every backend alike.
    cand = write_run(tmp_path / "b", {k: v * 1.2 for k, v in medians().items()}, seed=2,
                     drift=0.4)
    raw = verdicts(compare_runs(base, cand))
    assert raw[("other", 512)] == "slower" and raw[("numpy", 512)] == "slower"
    normalised = verdicts(compare_runs(base, cand, normalize_by="numpy"))
    assert normalised[("other", 256)] == normalised[("other", 512)] == "same"
    assert normalised[("numpy", 256)] == "reference"
    assert main(["compare", str(base), str(cand), "--normalize-by", "numpy"]) == 0


def test_normalisation_still_catches_a_real_slowdown_under_drift(tmp_path):
    base = write_run(tmp_path / "a", medians(), seed=1)
    slowed = {k: v * (1.3 if k[0] == "other" else 1.0) for k, v in medians().items()}
    cand = write_run(tmp_path / "b", slowed, seed=2, drift=0.4)
    found = verdicts(compare_runs(base, cand, normalize_by="numpy"))
    assert found[("other", 256)] == found[("other", 512)] == "slower"


def test_threshold_global_and_per_backend(tmp_path):
    base = write_run(tmp_path / "a", medians(), seed=1)
    cand = write_run(tmp_path / "b", medians(numpy=1.3e-3, other=2.6e-3), seed=2)
    assert set(verdicts(compare_runs(base, cand)).values()) == {"slower"}
    loose = verdicts(compare_runs(base, cand, Rule(threshold=0.5)))
    assert set(loose.values()) == {"same"}
    mixed = verdicts(compare_runs(base, cand, Rule(per_backend={"other": 0.5})))
    assert mixed[("other", 256)] == "same" and mixed[("numpy", 256)] == "slower"
    assert main(["compare", str(base), str(cand), "--threshold", "50%"]) == 0
    assert main(["compare", str(base), str(cand), "--threshold-for", "other=0.5",
                 "--threshold-for", "numpy=0.5"]) == 0


def test_cells_on_one_side_are_listed(tmp_path, capsys):
    base_cells = medians()
    del base_cells[("other", 512)]
    cand_cells = medians()
    del cand_cells[("numpy", 256)]
    base = write_run(tmp_path / "a", base_cells, seed=1)
    cand = write_run(tmp_path / "b", cand_cells, seed=2)
    found = verdicts(compare_runs(base, cand))
    assert found[("numpy", 256)] == "only in baseline"
    assert found[("other", 512)] == "only in candidate"
    assert main(["compare", str(base), str(cand)]) == 0
    assert "1 only in baseline, 1 only in candidate" in capsys.readouterr().out


def test_failed_or_thin_cells_are_not_comparable(tmp_path):
    base = write_run(tmp_path / "a", medians(), seed=1,
                     status={("other", 256): "mismatch", ("numpy", 512): "error"},
                     samples={("other", 512): 4})
    cand = write_run(tmp_path / "b", medians(), seed=2)
    cells = {(c.key["backend"], c.key["n"]): c for c in compare_runs(base, cand).cells}
    assert cells[("other", 256)].verdict == "not comparable"
    assert "baseline mismatch (boom)" in cells[("other", 256)].note
    assert cells[("numpy", 512)].verdict == "not comparable"
    assert cells[("other", 512)].verdict == "not comparable"
    assert "too few samples (4 baseline" in cells[("other", 512)].note
    # With the reference failed in a group, that group's cells cannot be normalised.
    normalised = {(c.key["backend"], c.key["n"]): c
                  for c in compare_runs(base, cand, normalize_by="numpy").cells}
    assert normalised[("numpy", 512)].verdict == "reference"
    assert normalised[("other", 512)].verdict == "not comparable"
    assert "the reference numpy in the baseline: error" in normalised[("other", 512)].note


def test_runs_from_other_machines_are_refused_unless_allowed(tmp_path, capsys):
    base = write_run(tmp_path / "a", medians(), seed=1)
    other_env = {**ENVIRONMENT, "cpu": {"model": "Other CPU", "logical_cores": 64},
                 "comparability_key": "bbbbbbbbbbbb"}
    cand = write_run(tmp_path / "b", medians(), seed=2, environment=other_env)
    assert main(["compare", str(base), str(cand)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "cpu.model" in err and "cpu.logical_cores" in err and "--allow-different-machines" in err
    assert main(["compare", str(base), str(cand), "--allow-different-machines"]) == 0
    assert "environments differ" in capsys.readouterr().out


def test_older_runs_without_a_key_are_compared_field_by_field():
    old = {k: v for k, v in ENVIRONMENT.items() if k != "comparability_key"}
    assert environment_differences(old, dict(old)) == []
    newer_numpy = {**old, "libraries": {"numpy": "2.1.0"}}
    assert environment_differences(old, newer_numpy) == ["libraries.numpy: 2.0.0 vs 2.1.0"]
    # Only one side has the key: fall back to the fields, which agree.
    assert environment_differences(old, ENVIRONMENT) == []


def test_old_and_new_column_sets_match_on_the_cell_key(tmp_path):
    base = write_run(tmp_path / "a", medians(), seed=1)  # no phase/cache/threads columns
    cand = write_run(tmp_path / "b", medians(), seed=2, new_columns=True)
    assert set(verdicts(compare_runs(base, cand)).values()) == {"same"}


def test_markdown_and_json_outputs(tmp_path):
    base = write_run(tmp_path / "a", medians(), seed=1)
    slow = medians()
    slow[("other", 512)] *= 1.5
    cand = write_run(tmp_path / "b", slow, seed=2)
    md, js = tmp_path / "summary.md", tmp_path / "compare.json"
    assert main(["compare", str(base), str(cand), "--markdown", str(md), "--json", str(js)]) == 1
    text = md.read_text()
    assert text.startswith("### ") and "1 slower, 0 faster, 3 same" in text.splitlines()[0]
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert "verdict" in table[0] and "slower" in table[2]  # regressions first
    data = json.loads(js.read_text())
    assert data["counts"]["slower"] == 1 and data["rule"]["threshold"] == 0.1
    first = data["cells"][0]
    assert (first["backend"], first["n"], first["verdict"]) == ("other", 512, "slower")
    assert first["ci_low"] > 1.1 and first["threads_requested"] is None


def write_pool(folder: Path, factors: list[float], seed: int, **kwargs) -> Path:
    """Several runs of one config in one folder, each run's machine `factor` times slower."""
    for i, factor in enumerate(factors):
        write_run(folder / f"run{i}", {k: v * factor for k, v in medians().items()},
                  seed=seed + i, **kwargs)
    return folder


def test_pooled_runs_see_run_to_run_variation_that_one_run_cannot(tmp_path, capsys):
    # Unchanged code, but each run lands 10-20% off for reasons of its own (memory placement,
    # a neighbour): one run against one run sees a "significant" 33% slowdown...
    base = write_pool(tmp_path / "base", [1.0, 1.15, 0.9], seed=10)
    cand = write_pool(tmp_path / "cand", [1.2, 0.95, 1.05], seed=20)
    single = verdicts(compare_runs(base / "run2", cand / "run0"))
    assert set(single.values()) == {"slower"}
    # ...while three runs a side, resampled run by run, do not call it.
    pooled = compare_runs(base, cand)
    assert set(verdicts(pooled).values()) == {"same"}
    assert pooled.runs == (3, 3)
    assert main(["compare", str(base), str(cand)]) == 0
    assert "3 runs pooled" in capsys.readouterr().out


def test_pooled_runs_still_catch_a_real_slowdown(tmp_path):
    base = write_pool(tmp_path / "base", [1.0, 1.03, 0.98], seed=10)
    cand = write_pool(tmp_path / "cand", [1.3, 1.33, 1.28], seed=20)
    assert set(verdicts(compare_runs(base, cand)).values()) == {"slower"}


def test_pooled_runs_are_the_units_not_their_processes(tmp_path):
    # Measured on a 2-vCPU VM: the three processes of one run share its state, and a 3-vs-3
    # split of six runs of one commit put two fast runs and a slow one against the reverse.
    # Resampling the nine processes as if independent calls that a 19% slowdown...
    levels = [1.0, 1.0, 1.0]
    base = write_pool(tmp_path / "base", [1.0, 1.0, 1.15], seed=10, process_levels=levels)
    cand = write_pool(tmp_path / "cand", [1.15, 1.3, 1.3], seed=20, process_levels=levels)
    comparison = compare_runs(base, cand)
    cell = next(c for c in comparison.cells if c.key["backend"] == "numpy")
    units = [[np.full(10, f) for _ in levels] for f in (1.0, 1.0, 1.15)]
    _, low, _ = bootstrap_ratio([u for run in units for u in run],
                                [np.full(10, f) for f in (1.15, 1.3, 1.3) for _ in levels])
    assert low > 1.1  # ...which alone would be a false alarm,
    # ...while three runs a side, with the t quantile of three values each, do not.
    assert set(verdicts(comparison).values()) == {"same"}
    assert "runs of a side differ" in cell.note
    between = between_runs_interval([1.0, 1.0, 1.15], [1.15, 1.3, 1.3])
    assert between[0] < 1.1 < 1.19 < between[1]


def test_the_between_run_interval_needs_two_runs_on_a_side_and_centres_on_the_ratio():
    assert between_runs_interval([1.0], [1.2]) is None
    low, high = between_runs_interval([1.0, 1.1, 0.95], [1.25, 1.35, 1.2])
    assert low < 1.25 < high
    # One run on a side borrows the other side's spread: wider than with three.
    one_low, one_high = between_runs_interval([1.0], [1.25, 1.35, 1.2])
    assert one_high / one_low > high / low
    # Runs that agree exactly leave the bootstrap to judge: a point, not an error.
    assert between_runs_interval([1.0, 1.0], [2.0, 2.0]) == pytest.approx((2.0, 2.0))
    # More agreeing runs narrow it.
    rng = np.random.default_rng(0)
    few = between_runs_interval(rng.lognormal(0, 0.1, 3), rng.lognormal(0, 0.1, 3))
    many = between_runs_interval(rng.lognormal(0, 0.1, 30), rng.lognormal(0, 0.1, 30))
    assert many[1] / many[0] < few[1] / few[0]


def test_a_pool_must_hold_one_config(tmp_path, capsys):
    pool = write_pool(tmp_path / "pool", [1.0, 1.0], seed=1)
    write_run(pool / "other", medians(), seed=5, config="another")
    assert main(["compare", str(pool), str(pool)]) == 2
    assert "several configs" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["compare", "{missing}", "{base}"], "not found"),
    (["compare", "{empty}", "{base}"], "summary.parquet"),
    (["compare", "{base}", "{base}", "--threshold", "lots"], "not a number"),
    (["compare", "{base}", "{base}", "--threshold", "-0.1"], "≥ 0"),
    (["compare", "{base}", "{base}", "--threshold-for", "numpy"], "BACKEND=0.2"),
    (["compare", "{base}", "{base}", "--threshold-for", "nosuch=0.2"], "nosuch"),
    (["compare", "{base}", "{base}", "--normalize-by", "nosuch"], "nosuch"),
    (["compare", "{base}"], "candidate"),
    (["compare", "{base}", "{base}", "--markdown", "{missing}/x.md"], "cannot write"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    base = write_run(tmp_path / "a", medians(), seed=1)
    (tmp_path / "empty").mkdir()
    places = {"base": base, "missing": tmp_path / "missing", "empty": tmp_path / "empty"}
    assert main([a.format(**places) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err


def test_bootstrap_is_seeded_and_centred():
    rng = np.random.default_rng(3)
    a, b = rng.lognormal(0, 0.1, 200), rng.lognormal(0, 0.1, 200)
    first = bootstrap_ratio(a, b, rng=np.random.default_rng(0))
    assert first == bootstrap_ratio(a, b, rng=np.random.default_rng(0))
    ratio, low, high = first
    assert low < ratio < high and low < 1.0 < high
    ratio, low, high = bootstrap_ratio(a, 1.5 * b, rng=np.random.default_rng(0))
    assert 1.3 < low < ratio < high < 1.7


def test_a_real_run_twice_compares_cleanly(tmp_path):
    """The real pipeline end to end: two tiny runs, then compare. Verdicts depend on the
    machine, so only the shape of the answer is checked."""
    config = write_config(tmp_path, ["numpy", "tests.plugins.slowed:PlainNumpy"],
                          n=[64], d_k=[16])
    for name in ("a", "b"):
        result = run_cli("run", str(config), "--out", str(tmp_path / name), "--quiet",
                         timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
    out = tmp_path / "c.json"
    result = run_cli("compare", str(tmp_path / "a"), str(tmp_path / "b"), "--normalize-by",
                     "numpy", "--json", str(out))
    assert result.returncode in (0, 1), result.stderr
    data = json.loads(out.read_text())
    assert {(c["backend"], c["verdict"]) for c in data["cells"]} <= {
        ("numpy", "reference"), ("numpy-plain", "same"), ("numpy-plain", "slower"),
        ("numpy-plain", "faster"), ("numpy-plain", "not comparable")}
    assert len(data["cells"]) == 2
    assert result.returncode == (1 if data["counts"]["slower"] else 0)


def _with_calibration(folder, one_thread, all_threads):
    meta = json.loads((folder / "meta.json").read_text())
    meta["calibration"] = {kind: {"one_thread_gflops": one_thread,
                                  "all_threads_gflops": all_threads} for kind in ("start", "end")}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def test_compare_shows_the_machine_s_own_shift_beside_its_verdicts(tmp_path, capsys):
    base = _with_calibration(write_run(tmp_path / "a", medians(), seed=1), 10.0, 18.0)
    cand = _with_calibration(write_run(tmp_path / "b", medians(), seed=2), 9.9, 18.2)
    comparison = compare_runs(base, cand)
    assert comparison.machine_shift == pytest.approx({"one_thread": 0.99,
                                                      "all_threads": 18.2 / 18.0})
    assert not comparison.machine_shift_exceeds_threshold
    text = comparison.to_text()
    assert "machine: the candidate's own speed was 0.99x (one thread)" in text
    assert "cannot support a verdict" not in text
    assert comparison.to_json()["machine_shift"]["one_thread"] == pytest.approx(0.99)


def test_a_machine_that_shifted_beyond_the_threshold_cannot_support_one_run_a_side(tmp_path):
    base = _with_calibration(write_run(tmp_path / "a", medians(), seed=1), 10.0, 18.0)
    cand = _with_calibration(write_run(tmp_path / "b", medians(), seed=2), 10.0, 12.0)
    comparison = compare_runs(base, cand)
    assert comparison.machine_shift_exceeds_threshold
    assert "one run a side cannot support a verdict" in comparison.to_text()
    # Runs without calibration readings (older ones) show no shift at all.
    plain = compare_runs(write_run(tmp_path / "c", medians(), seed=3),
                         write_run(tmp_path / "d", medians(), seed=4))
    assert plain.machine_shift == {} and "machine:" not in plain.to_text()


def test_the_slowed_subject_answers_right_and_spins_for_its_measured_quarter():
    from tests.plugins.slowed import PlainNumpy, SlowedNumpy

    rng = np.random.default_rng(4)
    q, k = rng.standard_normal((64, 16)), rng.standard_normal((48, 16))
    plain, slowed = PlainNumpy(), SlowedNumpy()
    expected = plain.scores(*plain.prepare(q, k))
    prepared = slowed.prepare(q, k)
    assert slowed._extra_s > 0
    started = time.perf_counter()
    answer = slowed.scores(*prepared)
    assert time.perf_counter() - started >= slowed._extra_s  # the spin, not a speed claim
    np.testing.assert_allclose(answer, expected)
    np.testing.assert_allclose(answer, q @ k.T, rtol=1e-12)


def test_the_paired_subject_spins_its_share_of_each_calls_own_product(monkeypatch):
    from tests.plugins import slowed

    q, k = np.random.default_rng(3).standard_normal((2, 16, 8))
    readings = iter(range(1000))
    monkeypatch.setattr(slowed.time, "perf_counter", lambda: float(next(readings)))
    monkeypatch.setenv(slowed.SLOWDOWN_VARIABLE, "3")
    subject = slowed.Subject()
    prepared = subject.prepare(q, k)
    answer = subject.scores(*prepared)
    np.testing.assert_allclose(answer, q @ k.T)
    # The product read the clock at 0 and 1 (one unit); 3 units of spin end at the reading 4.
    assert next(readings) == 5
    monkeypatch.setenv(slowed.SLOWDOWN_VARIABLE, "0")
    plain = slowed.Subject()
    plain.prepare(q, k)
    plain.scores(*prepared)
    assert next(readings) == 6  # no slowdown: the plain product, no clock read
