"""compare --between: a verdict per cell from the paired rounds of one run of two environments.

The run directories here are written through the real writer from samples whose sizes the test
sets (a timing verdict between two real runs would test the machine, not the rule): rounds
drift together by up to 2x, as a shared machine's do, and the candidate is a known factor off.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qkbench.measure.cell import CellFigures
from qkbench.analysis.verdicts import Rule
from qkbench.analysis.paired import PAIRED_THRESHOLD, compare_between
from qkbench.errors import UsageError
from qkbench.measure.timing import Sample, SamplingResult
from qkbench.plan.sweep import Cell, Shape, Variant
from qkbench.records.meta import SCHEMA_VERSION
from qkbench.records.results import RunWriter, sample_rows, summary_row
from tests.conftest import run_cli

import qkbench

BACKENDS = ("numpy", "subject")


def write_paired_run(folder: Path, factor: dict[str, float], rounds: int = 30,
                     processes: int = 3, seed: int = 0, drift: float = 1.0,
                     status: dict[tuple[str, str], str] | None = None,
                     environments=("base", "pr")) -> Path:
    """A run directory of two environments: in round r every member's time is the machine's
    level that round (a random walk spanning up to `drift` x) × the backend's own cost × its
    slot's process effect × 1% noise; the candidate's `factor[backend]` more."""
    rng = np.random.default_rng(seed)
    level = np.exp(np.cumsum(rng.normal(0, math.log(drift) / 6, rounds))) if drift > 1 \
        else np.ones(rounds)
    writer = RunWriter(folder)
    for backend, cost in zip(BACKENDS, (1e-4, 2e-4)):
        for environment in environments:
            cell = Cell.of(backend, Shape(64, 64, 16), Variant("float32"), environment)
            slot_effect = rng.normal(1.0, 0.005, processes)
            extra = factor.get(backend, 1.0) if environment == environments[1] else 1.0
            samples = [Sample(r, float(r), cost * extra * level[r] * slot_effect[r % processes]
                              * rng.normal(1.0, 0.01), 1)
                       for r in range(rounds) for _ in range(2)]
            state = (status or {}).get((backend, environment), "ok")
            result = SamplingResult(samples=samples, stopped_by="budget", min_samples=6)
            if state == "ok":
                row = summary_row(cell, "cpu", "ok", "", CellFigures(processes=processes), result)
                writer.append(row, sample_rows(cell, "cpu", "float32", result))
            else:
                writer.append(summary_row(cell, "cpu", state, "why not"), [])
    writer.write_meta({"schema_version": SCHEMA_VERSION, "state": "finished",
                       "config": {"name": "paired"}, "environment": {},
                       "environments": {name: {"python": f"/venv-{name}/bin/python",
                                               "variables": {}, "fingerprint": {}}
                                        for name in environments}})
    writer.finish()
    return folder


def _verdicts(comparison):
    return {cell.key["backend"]: cell for cell in comparison.cells}


@settings(max_examples=12, deadline=None)
@given(st.floats(1.0, 2.0), st.sampled_from([1.0, 1.1, 1.25, 0.8]), st.integers(0, 10**6))
def test_pairing_cancels_drift_and_finds_the_candidates_factor(tmp_path_factory, drift, factor,
                                                               seed):
    folder = write_paired_run(tmp_path_factory.mktemp("run") / "run", {"subject": factor},
                              drift=drift, seed=seed)
    cells = _verdicts(compare_between(folder, "base", "pr"))
    assert cells["numpy"].verdict == "same"  # unchanged, whatever the machine did
    expected = {1.0: "same", 1.1: "slower", 1.25: "slower", 0.8: "faster"}[factor]
    assert cells["subject"].verdict == expected
    assert cells["subject"].ci_low <= factor * 1.01 and cells["subject"].ci_high >= factor / 1.01
    assert cells["subject"].key["environment"] is None  # one row per cell, both sides in it
    # Swapping the sides swaps slower and faster, and inverts the ratio.
    swapped = _verdicts(compare_between(folder, "pr", "base"))["subject"]
    assert swapped.verdict == {"same": "same", "slower": "faster", "faster": "slower"}[expected]
    assert swapped.ratio == pytest.approx(1 / cells["subject"].ratio, rel=0.02)


def test_the_rule_is_compares_at_the_paired_threshold(tmp_path):
    folder = write_paired_run(tmp_path / "run", {"subject": 1.1})
    default = compare_between(folder, "base", "pr")
    assert default.rule.threshold == PAIRED_THRESHOLD < Rule().threshold
    cell = _verdicts(default)["subject"]
    assert default.rule.decide(cell.ci_low, cell.ci_high, cell.threshold) == cell.verdict
    # At a threshold beyond the change, the same interval says "same".
    wide = _verdicts(compare_between(folder, "base", "pr", Rule(threshold=0.5)))["subject"]
    assert wide.verdict == "same" and wide.ci_low == cell.ci_low
    per = _verdicts(compare_between(folder, "base", "pr",
                                    Rule(threshold=0.01, per_backend={"subject": 0.5})))
    assert per["subject"].verdict == "same" and per["subject"].threshold == 0.5


def test_a_cell_that_failed_on_a_side_is_not_comparable(tmp_path):
    folder = write_paired_run(tmp_path / "run", {}, status={("subject", "pr"): "skipped"})
    cells = _verdicts(compare_between(folder, "base", "pr"))
    assert cells["subject"].verdict == "not comparable"
    assert cells["subject"].candidate_status == "skipped" and "why not" in cells["subject"].note
    assert cells["numpy"].verdict == "same"


def test_too_few_shared_rounds_are_not_comparable(tmp_path):
    folder = write_paired_run(tmp_path / "run", {}, rounds=3)
    assert {c.verdict for c in compare_between(folder, "base", "pr").cells} == {"not comparable"}


def test_through_the_api_and_the_cli_with_compares_outputs_and_exit_codes(tmp_path):
    folder = write_paired_run(tmp_path / "run", {"subject": 1.25})
    comparison = qkbench.compare(folder, between=("base", "pr"))
    assert comparison.exit_code == 1 and comparison.counts()["slower"] == 1
    assert [c.key["backend"] for c in comparison.regressions] == ["subject"]
    result = run_cli("compare", str(folder), "--between", "base", "pr", "--markdown",
                     str(tmp_path / "s.md"), "--json", str(tmp_path / "c.json"))
    assert result.returncode == 1, result.stderr
    assert "environment base of" in result.stdout and "1 slower" in result.stdout
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["between"] == ["base", "pr"] and data["rule"]["threshold"] == PAIRED_THRESHOLD
    assert {c["backend"]: c["verdict"] for c in data["cells"]} == {"subject": "slower",
                                                                   "numpy": "same"}
    assert "| subject |" in (tmp_path / "s.md").read_text()
    quiet = write_paired_run(tmp_path / "quiet", {})
    assert run_cli("compare", str(quiet), "--between", "base", "pr").returncode == 0


@pytest.mark.parametrize("args, words", [
    (["--between", "base", "nope"], "no environment 'nope'"),
    (["--between", "base", "base"], "two different environments"),
    (["OTHER", "--between", "base", "pr"], "one run directory"),
    (["--between", "base", "pr", "--normalize-by", "numpy"], "does not apply"),
    (["--between", "base", "pr", "--threshold-for", "torch=0.1"], "torch"),
])
def test_bad_requests_are_one_line_exit_2(tmp_path, args, words):
    folder = write_paired_run(tmp_path / "run", {})
    args = [str(tmp_path) if a == "OTHER" else a for a in args]
    result = run_cli("compare", str(folder), *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_run_without_environments_is_refused_by_between(tmp_path):
    folder = write_paired_run(tmp_path / "run", {}, environments=("base", "pr"))
    meta = json.loads((folder / "meta.json").read_text())
    del meta["environments"]
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(UsageError, match="run without --env"):
        compare_between(folder, "base", "pr")


def test_the_report_shows_the_paired_verdicts(tmp_path):
    folder = write_paired_run(tmp_path / "run", {"subject": 1.25})
    result = run_cli("report", str(folder), "--out", str(tmp_path / "r.html"))
    assert result.returncode == 0, result.stderr
    markdown = (tmp_path / "r.md").read_text()
    assert "qkbench compare: 1 slower" in markdown and "environment pr of" in markdown
    assert 'id="paired"' in (tmp_path / "r.html").read_text()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.5, 2.0), min_size=2, max_size=6), st.integers(0, 10**6))
def test_slots_that_disagree_widen_the_interval(levels, seed):
    """bootstrap_median resamples the groups first: groups whose levels differ get an interval
    that spans their spread, where pooling their values as one group would not."""
    from qkbench.analysis.bootstrap import bootstrap_median

    rng = np.random.default_rng(seed)
    groups = [level * rng.normal(1.0, 0.01, 20) for level in levels]
    median, low, high = bootstrap_median(groups, rng=np.random.default_rng(0))
    assert low <= median <= high
    _, pooled_low, pooled_high = bootstrap_median([np.concatenate(groups)],
                                                  rng=np.random.default_rng(0))
    assert high - low >= 0.9 * (pooled_high - pooled_low)
    if max(levels) / min(levels) > 1.2:
        assert high - low > pooled_high - pooled_low


def test_the_help_names_the_paired_default_threshold(capsys):
    from qkbench.analysis.paired import PAIRED_THRESHOLD
    from qkbench.cli import main

    for command in (["compare", "--help"], ["find", "--help"]):
        with pytest.raises(SystemExit):
            main(command)
        assert f"{PAIRED_THRESHOLD:g}" in " ".join(capsys.readouterr().out.split())
