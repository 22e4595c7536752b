"""Run directories → one self-contained HTML report, and a Markdown summary for CI.

This module gathers what a report shows (the runs, their figures, the comparison with a
baseline); report_html.py and report_markdown.py render it, report_facts.py holds what both
renderings say. Times are stored in seconds and printed in a unit that suits them.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from qkbench.analysis.verdicts import Comparison, Rule
from qkbench.analysis.compare import compare_runs, read_run
from qkbench.analysis.paired import compare_between
from qkbench.errors import UsageError
from qkbench.present import plots
from qkbench.present.report_facts import Report
from qkbench.present.report_html import render_html
from qkbench.present.report_markdown import render_markdown
from qkbench.cell_key import CellKey
from qkbench.records.results import write_atomically
from qkbench.records.run import Run


def build(folders: list[Path | str], baseline: Path | str | None = None,
          baseline_backend: str | None = None,
          between: tuple[str, str] | None = None) -> Report:
    """Load the runs (and the baseline run), draw the figures, compare with the baseline, and
    compare the first run's environments (`between`, else its first two) round by round.
    Each run directory is read once: the verdicts come from the runs the figures drew."""
    runs = plots.load_runs(list(folders))
    base = plots.load_runs([baseline]) if baseline is not None else None
    figures = plots.make_figures(runs, baseline_backend)
    rule = Rule()
    comparison = (compare(base.runs[0].run, runs, rule) if base is not None
                  else pd.DataFrame())
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return Report(runs, figures, base, comparison, created, rule,
                  paired_comparison(runs.runs[0].run, between))


def paired_comparison(run: Path | Run, between: tuple[str, str] | None
                      ) -> Comparison | None:
    run = read_run(run)
    names = list(run.about.environments)
    if between is None and len(names) < 2:
        return None
    return compare_between(run, *(between or names[:2]))


def compare(baseline: Path | Run, runs: plots.RunSet, rule: Rule | None = None
            ) -> pd.DataFrame:
    """Per cell that is ok in both the baseline and a run: `qkbench compare`'s verdict (the
    bootstrap interval of the ratio of medians against the threshold, analysis/compare.py), so
    a report and compare never give one pair of runs two verdicts. The report shows runs of
    other machines on purpose, so a change of machine does not stop it (the verdict then says
    how the machines differ, not the code)."""
    rule = rule or Rule()
    base = read_run(baseline)
    precision = dict(zip(zip(runs.summary["machine"], runs.summary["_cell"]),
                         runs.summary["precision"]))
    rows = []
    for run in runs.runs:
        comparison = compare_runs(base, run.run, rule, allow_different_machines=True)
        for cell in comparison.cells:
            if cell.baseline_status != "ok" or cell.candidate_status != "ok":
                continue
            key = CellKey.of(cell.key)
            rows.append({**cell.key, "machine": run.host, "threads_key": key.threads_text,
                         "precision": precision.get((run.host, key), cell.key["dtype"]),
                         "baseline_s": cell.baseline, "median_s": cell.candidate,
                         "ratio": cell.ratio, "ratio_low": cell.ci_low,
                         "ratio_high": cell.ci_high, "verdict": cell.verdict, "note": cell.note})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.sort_values(["machine", "dtype", "d_k", "n", "m", "backend"], kind="stable")


def write(folders: list[Path | str], baseline: Path | str | None = None,
          out: Path | str | None = None,
          baseline_backend: str | None = None,
          between: tuple[str, str] | None = None) -> tuple[Path, Path]:
    """`qkbench report`: report.html (default: in the first run directory) and report.md next
    to it. Returns both paths."""
    paths = [Path(f) for f in folders]
    if not paths:
        raise UsageError("no run directory given")
    target = Path(out) if out is not None else paths[0] / "report.html"
    if target.is_dir():
        raise UsageError(f"--out {target} is a directory; give a file name such as report.html")
    report = build(paths, baseline, baseline_backend, between)
    markdown_path = target.with_suffix(".md")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, lambda tmp: tmp.write_text(render_html(report),
                                                            encoding="utf-8"))
        write_atomically(markdown_path, lambda tmp: tmp.write_text(render_markdown(report),
                                                                   encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot write the report to {target}: {exc.strerror}") from None
    return target, markdown_path
