"""Presentation, the report's Markdown summary: what fits a CI job summary or a pull request
comment — the machine, a compact table, what failed, what moved against the baseline."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from qkbench.version import __version__
from qkbench.present import plots
from qkbench.present.figures import style
from qkbench.present.report_facts import (
    RANK_COLUMNS,
    VERDICTS,
    rank_rows,
    counts_text,
    machine_facts,
    problems,
    shape_text,
    variant_words,
)
from qkbench.records.record import FAILED_STATUSES
from qkbench.units import format_seconds

MARKDOWN_MAX_ROWS = 60  # a PR comment is read, not scrolled; the HTML report has every row

if TYPE_CHECKING:
    from qkbench.present.report_facts import Report


def _md(value: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report) -> str:
    runs = report.runs
    names = sorted({run.config_name for run in runs.runs if run.config_name})
    lines = [f"## qkbench: {', '.join(names) or 'run'}", ""]
    for run in runs.runs:
        facts = machine_facts(run)
        summary = runs.summary[runs.summary["machine"] == run.host]
        detail = [facts.get("CPU", "")]
        if facts.get("GPUs", "none recorded") != "none recorded":
            detail.append(facts["GPUs"])
        if facts.get("memory"):
            detail.append(facts["memory"])
        detail.append(facts.get("qkbench", ""))
        text = " · ".join(d for d in detail if d)
        lines.append(f"- **{_md(run.host)}**" + (f": {_md(text)}" if text else "")
                     + f" — {_md(counts_text(summary))}")
    lines.append("")
    failed = runs.summary[runs.summary["status"].isin(FAILED_STATUSES)]
    if len(failed):
        lines += [f"> **{len(failed)} cell(s) failed** — see below.", ""]
    lines += _markdown_table(runs)
    if report.baseline is not None:
        lines += _markdown_comparison(report)
    if report.paired is not None:  # compare --between's own Markdown, one rendering
        lines += ["", *report.paired.to_markdown().replace("### ", "#### ", 1).splitlines()]
    lines += _markdown_problems(runs)
    lines += ["", (f"<sub>qkbench {__version__} · medians with 95% CIs · full report "
                   "with figures: report.html</sub>"), ""]
    return "\n".join(lines)


def _markdown_table(runs: plots.RunSet) -> list[str]:
    """Median per cell: backends as columns for one machine; machines as columns (best backend
    and its time) for several."""
    ok = runs.ok
    if ok.empty:
        return ["No cell finished with status ok.", ""]
    keys = ["dtype", "d_k", "n", "m", "phase", "cache", "threads_key"]
    variant = style.Variants.of(ok)
    show_variant = bool(set(variant.columns) - {"precision"})
    many = len(runs.runs) > 1
    columns = runs.machines if many else [b for b in runs.colors if b in set(ok["backend"])]
    columns = [c for c in columns if c in set(ok["machine" if many else "backend"])]
    header = ["dtype", "d_k", "n", "m"] + (["variant"] if show_variant else []) + columns
    lines = ["### Median time per call (fastest in bold)" if not many else
             "### Fastest backend per machine (median time per call)", "",
             "| " + " | ".join(_md(h) for h in header) + " |",
             "|" + "|".join("---" if i < 1 or (show_variant and i == 4) else "---:"
                            for i in range(len(header))) + "|"]
    groups = list(rank_rows(ok).sort_values([*RANK_COLUMNS, "n", "m"], kind="stable")
                  .groupby(keys, sort=False))
    for key, group in groups[:MARKDOWN_MAX_ROWS]:
        row = group.iloc[0]
        best_time = group["median_s"].min()
        cells = [row["dtype"], str(row["d_k"]), str(row["n"]), str(row["m"])]
        if show_variant:
            cells.append(", ".join(style.variant_word_list(row, variant.columns, all_words=True)))
        for column in columns:
            pick = group[group["machine" if many else "backend"] == column]
            if pick.empty:
                cells.append("–")
                continue
            best = pick.loc[pick["median_s"].idxmin()]
            text = format_seconds(best["median_s"])
            if many:
                text += f" ({best['backend']})"
            cells.append(f"**{text}**" if best["median_s"] == best_time else text)
        lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
    if len(groups) > MARKDOWN_MAX_ROWS:
        lines.append(f"\n… {len(groups) - MARKDOWN_MAX_ROWS} more rows in report.html")
    lines.append("")
    return lines


def _markdown_problems(runs: plots.RunSet) -> list[str]:
    failed, skipped = problems(runs)
    lines: list[str] = []
    many = len(runs.runs) > 1
    if not failed.empty:
        lines += [f"### Failed ({len(failed)})", ""]
        for _, r in failed.head(MARKDOWN_MAX_ROWS).iterrows():
            where = f" @ {r['machine']}" if many else ""
            lines.append(f"- `{r['backend']}` {r['dtype']} {shape_text(r)}{where}: "
                         f"**{r['status']}** — {_md(r['reason'])}")
        if len(failed) > MARKDOWN_MAX_ROWS:
            lines.append(f"- … {len(failed) - MARKDOWN_MAX_ROWS} more in report.html")
        lines.append("")
    if not skipped.empty:
        lines += [f"### Skipped ({int(skipped['cells'].sum())}, not failures)", ""]
        for _, r in skipped.iterrows():
            where = f" @ {r['machine']}" if many else ""
            lines.append(f"- `{r['backend']}`{where}, {r['cells']} cell(s) ({r['which']}): "
                         f"{_md(r['reason'])}")
        lines.append("")
    return lines


def _markdown_comparison(report: Report) -> list[str]:
    assert report.baseline is not None
    base = report.baseline.runs[0]
    table = report.comparison
    lines = [f"### Compared with baseline `{base.folder.name}` ({_md(base.label)})", ""]
    if table.empty:
        return lines + ["No cell is ok in both runs: nothing to compare.", ""]
    verdicts = table["verdict"].value_counts()
    lines += [" · ".join(f"{int(verdicts.get(v, 0))} {v}" for v in VERDICTS)
              + f" ({report.rule.describe()}; as `qkbench compare` decides)", ""]
    many = len(report.runs.runs) > 1
    header = (["machine"] if many else []) + ["backend", "dtype", "shape", "baseline",
                                              "this run", "ratio", ""]
    lines += ["| " + " | ".join(header) + " |",
              "|" + "|".join("---:" if h in ("baseline", "this run", "ratio") else "---"
                             for h in header) + "|"]
    # The cells that moved first: that is what a reviewer is looking for.
    ordered = table.assign(_moved=table["verdict"].isin(("slower", "faster")),
                           _size=(table["ratio"].apply(lambda r: abs(math.log(r)))))
    ordered = ordered.sort_values(["_moved", "_size"], ascending=False, kind="stable")
    for _, r in ordered.head(MARKDOWN_MAX_ROWS).iterrows():
        words = variant_words(r)
        cells = ([r["machine"]] if many else []) + [
            f"`{r['backend']}`", r["dtype"] + (f" · {words}" if words else ""), shape_text(r),
            format_seconds(r["baseline_s"]), format_seconds(r["median_s"]),
            f"{r['ratio']:.3g}×", f"**{r['verdict']}**" if r["verdict"] in ("slower", "faster")
            else r["verdict"]]
        lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
    if len(table) > MARKDOWN_MAX_ROWS:
        lines.append(f"\n… {len(table) - MARKDOWN_MAX_ROWS} more cells in report.html")
    lines.append("")
    return lines
