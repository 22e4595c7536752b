"""history: lasting changes found in known series, and the command on synthetic run folders."""

from __future__ import annotations

import pandas as pd
import pytest

from qkbench.cli import main
from qkbench.analysis.history import find_steps
from tests.test_compare import ENVIRONMENT, write_run


def test_a_flat_series_has_no_step():
    assert find_steps([1.0, 1.02, 0.99, 1.01, 1.0, 0.98, 1.01, 1.0]) == []


def test_a_lasting_slowdown_is_found_where_it_starts():
    steps = find_steps([1.0, 1.01, 0.99, 1.0, 1.3, 1.31, 1.29, 1.3])
    assert [s.index for s in steps] == [4]
    assert steps[0].change == pytest.approx(0.3, abs=0.02)


def test_one_odd_run_is_not_a_step():
    assert find_steps([1.0, 1.0, 1.0, 1.0, 1.5, 1.0, 1.0, 1.0]) == []
    # A change in the last two runs may not last: both sides need 3 runs.
    assert find_steps([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.5, 1.5]) == []


def test_a_shift_below_the_threshold_or_within_the_scatter_is_not_a_step():
    assert find_steps([1.0, 1.0, 1.0, 1.0, 1.05, 1.05, 1.05, 1.05]) == []
    noisy = [1.0, 1.4, 0.8, 1.3, 1.5, 1.1, 1.6, 1.2]
    assert find_steps(noisy) == []


def test_two_steps_are_both_found():
    series = [1.0] * 4 + [1.5] * 4 + [1.0] * 4
    steps = find_steps(series)
    assert [s.index for s in steps] == [4, 8]
    assert steps[0].change > 0 > steps[1].change


def write_history(folder, values, drift=None, config="synthetic"):
    """One run per value (the median of backend `other`; numpy stays at 1 ms), a day apart."""
    for i, value in enumerate(values):
        env = {**ENVIRONMENT, "created_utc": f"2026-01-{i + 1:02d}T00:00:00+00:00",
               "git": {"commit": f"{i:02d}abcdef", "dirty": False}}
        factor = drift[i] if drift else 1.0
        write_run(folder / f"run{9 - i}", {("numpy", 256): 1e-3 * factor,
                                           ("other", 256): value * factor},
                  seed=i, environment=env, config=config)


def test_history_finds_the_step_and_writes_the_table(tmp_path, capsys):
    runs = tmp_path / "results"
    write_history(runs, [2e-3] * 4 + [2.6e-3] * 4)
    out = tmp_path / "hist"
    assert main(["history", str(runs), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1 lasting change(s)" in text and "other float32 n=256" in text
    assert "% (slower) from run run5" in text and "2 ms → 2.6 ms" in text
    assert "commit 04abcdef" in text
    table = pd.read_csv(out / "history.csv")
    # Ordered by time, not by folder name (the folders are named in reverse).
    assert list(table[table["backend"] == "other"]["commit"].str[:2]) == [
        f"{i:02d}" for i in range(8)]
    stepped = table[table["step"]]
    assert list(stepped["backend"]) == ["other"] and list(stepped["commit"].str[:2]) == ["04"]
    pytest.importorskip("matplotlib")
    assert len(list(out.glob("*.png"))) == 2


def test_normalised_history_ignores_a_faster_machine(tmp_path, capsys):
    runs = tmp_path / "results"
    # From run 4 on, a new machine makes everything 40% faster; the code did not change.
    drift = [1.0] * 4 + [0.6] * 4
    write_history(runs, [2e-3] * 8, drift=drift)
    assert main(["history", str(runs), "--out", str(tmp_path / "raw"), "--no-plots"]) == 0
    assert "2 lasting change(s)" in capsys.readouterr().out
    assert main(["history", str(runs), "--out", str(tmp_path / "n"), "--no-plots",
                 "--normalize-by", "numpy"]) == 0
    assert "no lasting change found" in capsys.readouterr().out


def test_runs_of_other_configs_are_kept_apart(tmp_path, capsys):
    write_history(tmp_path / "a", [2e-3] * 4 + [2.6e-3] * 4, config="one")
    write_history(tmp_path / "b", [2e-3] * 8, config="two")
    assert main(["history", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                 str(tmp_path / "h"), "--no-plots"]) == 0
    text = capsys.readouterr().out
    assert "config one: 8 run(s)" in text and "config two: 8 run(s)" in text
    assert "1 lasting change(s)" in text
    assert main(["history", str(tmp_path / "a"), str(tmp_path / "b"), "--config", "two",
                 "--out", str(tmp_path / "h2"), "--no-plots"]) == 0
    assert "no lasting change found" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["history", "{missing}"], "not a directory"),
    (["history", "{empty}"], "neither a run directory"),
    (["history", "{runs}", "--config", "nosuch"], "nosuch"),
    (["history", "{runs}", "--threshold", "x"], "not a number"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    write_history(tmp_path / "runs", [1e-3] * 3)
    (tmp_path / "empty").mkdir()
    places = {"missing": tmp_path / "missing", "empty": tmp_path / "empty",
              "runs": tmp_path / "runs"}
    assert main([a.format(**places) for a in args] + ["--out", str(tmp_path / "h")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
