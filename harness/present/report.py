"""Step 8: run directories → one self-contained HTML report, and a Markdown summary for CI.

The HTML file needs nothing but itself: styles are inline, figures are embedded as base64 PNG,
no script, no font or stylesheet from the network, so it can be mailed, archived as a CI
artifact or opened years later. The Markdown summary is what fits a CI job summary or a pull
request comment: the machine, a compact table, what failed.

Times are stored in seconds; here, as on the console, they are printed in a unit that suits them.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

import qkbench
from qkbench.present import plots
from qkbench.present.console import format_seconds
from qkbench.errors import UsageError
from qkbench.records.results import FAILED_STATUSES, write_atomically

# The columns a cell is matched on between a baseline run and a candidate run.
MATCH_KEY = ["backend", "dtype", "n", "m", "d_k", "phase", "cache", "threads_key"]
MARKDOWN_MAX_ROWS = 60  # a PR comment is read, not scrolled; the HTML report has every row


@dataclass
class Report:
    runs: plots.RunSet
    figures: plots.Figures
    baseline: plots.RunSet | None  # --baseline RUN, compared cell by cell
    comparison: pd.DataFrame  # empty without a baseline
    created: str


def build(folders: list[Path | str], baseline: Path | str | None = None,
          baseline_backend: str | None = None) -> Report:
    """Load the runs (and the baseline run), draw the figures, match cells against the baseline."""
    runs = plots.load_runs(list(folders))
    base = plots.load_runs([baseline]) if baseline is not None else None
    figures = plots.make_figures(runs, baseline_backend)
    comparison = compare(base, runs) if base is not None else pd.DataFrame()
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return Report(runs, figures, base, comparison, created)


def compare(baseline: plots.RunSet, runs: plots.RunSet) -> pd.DataFrame:
    """Per cell that is ok in both the baseline and a run: the ratio of medians (run / baseline;
    above 1 = slower now) and whether the two 95% intervals are disjoint.

    A deliberately simple reading: disjoint intervals say the difference is larger than the
    noise of either measurement; `qkbench compare` is where regression verdicts are made.
    """
    base = baseline.ok[MATCH_KEY + ["median_s", "ci_low_s", "ci_high_s"]].rename(
        columns={"median_s": "baseline_s", "ci_low_s": "baseline_low_s",
                 "ci_high_s": "baseline_high_s"})
    merged = runs.ok.merge(base, on=MATCH_KEY, how="inner")
    merged["ratio"] = merged["median_s"] / merged["baseline_s"]
    slower = merged["ci_low_s"] > merged["baseline_high_s"]
    faster = merged["ci_high_s"] < merged["baseline_low_s"]
    merged["verdict"] = "within noise"
    merged.loc[slower, "verdict"] = "slower"
    merged.loc[faster, "verdict"] = "faster"
    return merged.sort_values(["machine", "dtype", "d_k", "n", "m", "backend"], kind="stable")


def write(folders: list[Path | str], baseline: Path | str | None = None,
          out: Path | str | None = None,
          baseline_backend: str | None = None) -> tuple[Path, Path]:
    """`qkbench report`: report.html (default: in the first run directory) and report.md next
    to it. Returns both paths."""
    paths = [Path(f) for f in folders]
    if not paths:
        raise UsageError("no run directory given")
    target = Path(out) if out is not None else paths[0] / "report.html"
    if target.is_dir():
        raise UsageError(f"--out {target} is a directory; give a file name such as report.html")
    report = build(paths, baseline, baseline_backend)
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


# ---------------------------------------------------------------------------------------------
# Facts shared by both renderings

def counts(summary: pd.DataFrame) -> dict[str, int]:
    return {status: int(count) for status, count in summary["status"].value_counts().items()}


def counts_text(summary: pd.DataFrame) -> str:
    found = counts(summary)
    order = ["ok", *FAILED_STATUSES, "skipped"]
    parts = [f"{found[s]} {s}" for s in order if found.get(s)]
    parts += [f"{c} {s}" for s, c in found.items() if s not in order]
    return f"{len(summary)} cells: " + " · ".join(parts) if parts else "no cells"


def fastest(runs: plots.RunSet) -> pd.DataFrame:
    """Per machine, dtype and variant: the fastest backend at the largest shape measured (the
    one the sweep was most likely made for)."""
    ok = runs.ok
    if ok.empty:
        return ok
    rows = []
    for _, group in ok.groupby(["machine", "dtype", "phase", "cache", "threads_key"],
                               sort=False):
        flops = group["flops"].max()
        largest = group[group["flops"] == flops]
        rows.append(largest.loc[largest["median_s"].idxmin()])
    order = {m: i for i, m in enumerate(runs.machines)}
    frame = _ranked(pd.DataFrame(rows))
    frame["_m"] = frame["machine"].map(order)
    return frame.sort_values(["_m", *_RANKS], kind="stable")


def variant_words(row: Any) -> str:
    words = plots._variant_words(row, ("phase", "cache", "threads_key", "precision"),
                                 all_words=False)
    return ", ".join(words)


def shape_text(row: Any) -> str:
    return f"n={row['n']} m={row['m']} d_k={row['d_k']}"


def format_ci(row: Any) -> str:
    if pd.isna(row["ci_low_s"]) or pd.isna(row["ci_high_s"]):
        return "-"
    return f"{format_seconds(row['ci_low_s'])} – {format_seconds(row['ci_high_s'])}"


def format_rel(value: Any) -> str:
    return "-" if pd.isna(value) else f"±{100 * value:.1f}%"


def format_number(value: Any, digits: int = 3) -> str:
    if value is None or pd.isna(value):
        return "-"
    if not math.isfinite(value):
        return "∞"
    return f"{value:,.0f}" if abs(value) >= 10 ** digits else f"{value:.{digits}g}"


def _ranked(frame: pd.DataFrame) -> pd.DataFrame:
    """Sort keys that put defaults first: float16 < … < float64, kernel before end-to-end, warm
    before cold, the library's own thread count before explicit ones."""
    return frame.assign(
        _t=frame["dtype"].map(plots._dtype_rank),
        _p=frame["phase"].map(lambda p: (p != "kernel", p)),
        _c=frame["cache"].map(lambda c: (c != "warm", c)),
        _h=frame["threads_key"].map(lambda t: (t != "", int(t) if t.isdigit() else 0)))


_RANKS = ["_t", "d_k", "_p", "_c", "_h"]


def sort_cells(frame: pd.DataFrame, machines: list[str]) -> pd.DataFrame:
    order = {m: i for i, m in enumerate(machines)}
    backends = {b: i for i, b in enumerate(dict.fromkeys(frame["backend"]))}
    ranked = _ranked(frame).assign(_m=frame["machine"].map(order),
                                   _b=frame["backend"].map(backends))
    return ranked.sort_values(["_m", *_RANKS, "n", "m", "_b"], kind="stable").drop(
        columns=["_m", "_b", *[c for c in _RANKS if c.startswith("_")]])


def problems(runs: plots.RunSet) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(failed cells, one by one; skipped cells grouped by machine, backend and reason)."""
    summary = runs.summary
    failed = sort_cells(summary[summary["status"].isin(FAILED_STATUSES)], runs.machines)
    skipped = summary[summary["status"] == "skipped"]
    groups = []
    for (machine, backend, reason), group in skipped.groupby(["machine", "backend", "reason"],
                                                             sort=False):
        groups.append({"machine": machine, "backend": backend, "reason": reason,
                       "cells": len(group), "which": _which(group)})
    return failed, pd.DataFrame(groups)


def _which(group: pd.DataFrame) -> str:
    """'float64 · n 16–1024 · d_k 16, 64': which cells a group covers, briefly."""
    parts = [", ".join(sorted(set(group["dtype"]), key=plots._dtype_rank))]
    for column in ("n", "d_k"):
        values = sorted({int(v) for v in group[column].dropna()})
        if len(values) > 3:
            parts.append(f"{column} {values[0]}–{values[-1]}")
        elif values:
            parts.append(f"{column} {', '.join(map(str, values))}")
    return " · ".join(parts)


def machine_facts(run: plots.RunInfo) -> dict[str, str]:
    """The fingerprint of one run's machine as label → text, for the machines table."""
    env = run.environment
    cpu = env.get("cpu") if isinstance(env.get("cpu"), dict) else {}
    facts: dict[str, str] = {"host": str(env.get("hostname") or "unknown")}
    cores = cpu.get("logical_cores")
    usable = cpu.get("usable_cores")
    core_text = f"{cores} logical cores" if cores else ""
    if usable and cores and usable != cores:
        core_text += f" ({usable} usable)"
    cpu_text = ", ".join(p for p in (str(cpu.get("model") or ""), core_text) if p)
    if cpu_text:
        facts["CPU"] = cpu_text
    if cpu.get("flags"):
        facts["CPU features"] = " ".join(map(str, cpu["flags"]))
    if env.get("memory_gib") is not None:
        facts["memory"] = f"{env['memory_gib']} GiB"
    gpus = [g for g in env.get("gpus") or [] if isinstance(g, dict)]
    facts["GPUs"] = "; ".join(
        ", ".join(str(x) for x in (g.get("name"), f"{g['memory_gib']} GiB"
                                   if g.get("memory_gib") is not None else None,
                                   f"driver {g['driver']}" if g.get("driver") else None) if x)
        for g in gpus) or "none recorded"
    peaks = env.get("peaks") if isinstance(env.get("peaks"), dict) else {}
    nested = [(d, peaks[d]) for d in ("cpu", "gpu") if isinstance(peaks.get(d), dict)]
    for device, record in nested or ([("", peaks)] if peaks else []):
        text = _peaks_text(record)
        if text:
            facts[f"peaks{' ' + device.upper() if device else ''}"] = text
    for key, label in (("os", "OS"), ("python", "Python")):
        if env.get(key):
            facts[label] = str(env[key])
    blas = [b for b in env.get("blas") or [] if isinstance(b, dict)]
    if blas:
        facts["NumPy's BLAS"] = "; ".join(
            f"{b.get('library')} {b.get('version') or ''} ({b.get('threads')} threads"
            + (f", {b['architecture']}" if b.get("architecture") else "") + ")" for b in blas)
    libraries = env.get("libraries") if isinstance(env.get("libraries"), dict) else {}
    if libraries:
        facts["libraries"] = ", ".join(f"{k} {v}" for k, v in libraries.items())
    git = env.get("git") if isinstance(env.get("git"), dict) else {}
    if env.get("qkbench_version"):
        version = f"qkbench {env['qkbench_version']}"
        if git.get("commit"):
            version += f" @ {str(git['commit'])[:10]}" + (" (uncommitted changes)"
                                                           if git.get("dirty") else "")
        facts["qkbench"] = version
    for key in ("hardware_key", "comparability_key"):
        if env.get(key):
            facts[key.replace("_", " ")] = str(env[key])
    meta = run.meta
    run_text = f"{run.folder.name}"
    if run.config_name:
        run_text += f" · sweep '{run.config_name}'"
    if env.get("created_utc"):
        run_text += f" · started {env['created_utc']}"
    if meta.get("state"):
        run_text += f" · {meta['state']}"
    if isinstance(meta.get("wall_s"), (int, float)):
        run_text += f" in {format_seconds(float(meta['wall_s']))}"
    facts["run"] = run_text
    return facts


def _peaks_text(record: dict[str, Any]) -> str:
    parts = [f"memory {format_number(v)} GB/s" if k == "bandwidth_gbs"
             else f"{k} {format_number(v)} GFLOP/s" for k, v in record.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if parts and record.get("source"):
        parts.append(f"source: {record['source']}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# HTML

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
  color:#1d2330;margin:0;background:#f6f7f9}
main{max-width:1380px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:26px;margin:4px 0 2px}h2{font-size:20px;margin:34px 0 8px;padding-top:6px;
  border-top:1px solid #e3e6eb}h3{font-size:16px;margin:20px 0 6px}
.sub{color:#5b6373;margin:0 0 14px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:14px 0}
.card{border:1px solid #dde1e7;border-radius:8px;padding:10px 14px;min-width:220px;flex:1}
.card b{display:block;font-size:13px;color:#5b6373;font-weight:600}
.card span{font-size:18px}
.alert{border-left:4px solid #c62828;background:#fdecea;padding:8px 12px;border-radius:4px}
.note{border-left:4px solid #9aa3b2;background:#f1f3f6;padding:8px 12px;border-radius:4px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{padding:3px 7px;border-bottom:1px solid #eceef2;text-align:left;vertical-align:top;
  white-space:nowrap}
td.wrap{white-space:normal;min-width:18em}
th{background:#f1f3f6;position:sticky;top:0}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.failed td{background:#fdecea}tr.skipped td{color:#8a93a3}
tr.slower td.verdict{color:#c62828;font-weight:600}tr.faster td.verdict{color:#2e7d32;font-weight:600}
.best{font-weight:700}
figure{margin:18px 0 26px}figure img{max-width:100%;height:auto;border:1px solid #eceef2}
figcaption{color:#3d4452;font-size:14px;margin-top:4px}
.machines th{position:static}.machines td{white-space:normal}
.scroll{overflow-x:auto}
code{background:#f1f3f6;padding:0 3px;border-radius:3px}
footer{color:#7a8291;font-size:12px;margin-top:40px}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table(headers: list[tuple[str, bool]], rows: list[tuple[str, list[tuple[str, str]]]],
           css: str = "") -> str:
    """headers: (text, numeric?); rows: (row class, [(cell html, cell class)])."""
    head = "".join(f'<th class="num">{_e(h)}</th>' if num else f"<th>{_e(h)}</th>"
                   for h, num in headers)
    body = []
    for row_class, cells in rows:
        tds = "".join(f'<td class="{c}">{v}</td>' if c else f"<td>{v}</td>" for v, c in cells)
        body.append(f'<tr class="{row_class}">{tds}</tr>' if row_class else f"<tr>{tds}</tr>")
    cls = f' class="{css}"' if css else ""
    return (f'<div class="scroll"><table{cls}><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def render_html(report: Report) -> str:
    runs = report.runs
    names = sorted({run.config_name for run in runs.runs if run.config_name})
    title = f"qkbench report: {', '.join(names) or 'run'}"
    machines = ", ".join(run.label for run in runs.runs)
    parts = [f"<h1>{_e(title)}</h1>",
             f'<p class="sub">S = Q·Kᵀ on {_e(machines)} · {_e(counts_text(runs.summary))}</p>']
    parts.append(_glance_html(report))
    parts.append(_machines_html(runs))
    parts.append(_figures_html(report))
    if report.baseline is not None:
        parts.append(_comparison_html(report))
    parts.append(_problems_html(runs))
    parts.append(_summary_html(runs))
    folders = ", ".join(str(run.folder) for run in runs.runs)
    parts.append(f"<footer>Made by qkbench {_e(qkbench.__version__)} on {_e(report.created)} "
                 f"from {_e(folders)}"
                 + (f", baseline {_e(report.baseline.runs[0].folder)}" if report.baseline else "")
                 + ". Times are medians of many calls with the 95% confidence interval of the "
                 "median (order statistics). Self-contained: no network needed.</footer>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
            + "\n".join(parts) + "\n</main>\n</body>\n</html>\n")


def _glance_html(report: Report) -> str:
    runs = report.runs
    out = ['<section id="at-a-glance"><h2>At a glance</h2>']
    failed = runs.summary[runs.summary["status"].isin(FAILED_STATUSES)]
    if len(failed):
        out.append(f'<p class="alert"><b>{len(failed)} cell(s) failed</b> '
                   f"({_e(counts_text(failed).split(': ', 1)[1])}): see "
                   '<a href="#problems">failed and skipped cells</a>. Their backends computed '
                   "a wrong S or did not finish; no time is reported for them.</p>")
    unconverged = runs.ok[~runs.ok["converged"]]
    if len(unconverged):
        out.append(f'<p class="note">{len(unconverged)} of {len(runs.ok)} ok cells stopped '
                   "before reaching the precision target (time budget or sample limit): their "
                   "intervals are wider than asked. The noisiest are shown below.</p>")
    best = fastest(runs)
    cards = []
    for _, row in best.iterrows():
        where = f" on {row['machine']}" if len(runs.runs) > 1 else ""
        words = variant_words(row)
        cards.append(
            f'<div class="card"><b>fastest at {_e(shape_text(row))} · {_e(row["dtype"])}'
            f"{_e(' · ' + words if words else '')}{_e(where)}</b>"
            f"<span>{_e(row['backend'])}: {_e(format_seconds(row['median_s']))}</span> "
            f"({_e(format_number(row['gflops']))} GFLOP/s"
            + (f", {_e(format_number(100 * row['gflops'] / row['peak_gflops'], 2))}% of peak"
               if row["peak_gflops"] > 0 else "") + ")</div>")
    if cards:
        out.append('<div class="cards">' + "".join(cards[:12]) + "</div>")
    crossing = plots.crossovers(plots.gpu_cpu_speedup(runs))
    if not crossing.empty:
        items = []
        for _, row in crossing.iterrows():
            items.append(f"<li>{_e(row['group'])} · {_e(row['dtype'])} · d_k={row['d_k']}"
                         + (f" · {_e(row['m_rule'])}" if row["m_rule"] != "m=n" else "")
                         + f" · {_e(plots._PHASE_WORDS.get(row['phase'], row['phase']))}"
                         + (f" · {_e(row['cache'])} cache" if row["cache"] != "warm" else "")
                         + f": <b>{_e(plots.crossover_words(row))}</b> "
                         f"({format_number(row['speedup_largest'])}× at n = "
                         f"{int(row['largest_n'])})</li>")
        out.append("<h3>GPU over CPU: crossover</h3><p>The smallest n from which the best GPU "
                   "backend is faster than the best CPU backend at every larger size too.</p>"
                   "<ul>" + "".join(items) + "</ul>")
    out.append("</section>")
    return "\n".join(out)


def _machines_html(runs: plots.RunSet) -> str:
    facts = [machine_facts(run) for run in runs.runs]
    labels = list(dict.fromkeys(label for f in facts for label in f))
    headers = [("", False)] + [(run.host, False) for run in runs.runs]
    rows = [("", [(f"<b>{_e(label)}</b>", "")] + [(_e(f.get(label, "-")), "") for f in facts])
            for label in labels]
    heading = "Machine" if len(runs.runs) == 1 else "Machines"
    return (f'<section id="machines"><h2>{heading}</h2>'
            + _table(headers, rows, css="machines") + "</section>")


def _figures_html(report: Report) -> str:
    figures = report.figures
    out = ['<section id="figures"><h2>Figures</h2>']
    for name, fig in figures.figures.items():
        data = base64.b64encode(plots.render(fig, "png")).decode("ascii")
        caption = figures.caption(name)
        out.append(f'<figure id="figure-{_e(name)}"><img alt="{_e(caption)}" '
                   f'src="data:image/png;base64,{data}"><figcaption>{_e(caption)}'
                   "</figcaption></figure>")
    if figures.skipped:
        items = "".join(f"<li><code>{_e(name)}</code>: {_e(why)}</li>"
                        for name, why in figures.skipped.items())
        out.append(f'<p class="note">Not drawn, because the data does not allow it:</p>'
                   f"<ul>{items}</ul>")
    out.append("</section>")
    return "\n".join(out)


def _summary_html(runs: plots.RunSet) -> str:
    out = ['<section id="summary"><h2>All cells</h2>',
           ("<p>Median time per call with its 95% confidence interval; the fastest backend of "
            "each shape is in bold. ‡: stopped before reaching the precision target.</p>")]
    summary = runs.summary
    variants = plots._Variants.of(summary) if len(summary) else None
    show_variant = bool(variants and variants.columns)
    peak = (summary["peak_gflops"] > 0).any()
    headers = [("backend", False), ("device", False), ("dtype", False), ("n", True),
               ("m", True), ("d_k", True)]
    headers += [("variant", False)] if show_variant else []
    headers += [("status", False), ("median", True), ("95% CI", True), ("±", True),
                ("GFLOP/s", True)]
    headers += [("% of peak", True)] if peak else []
    headers += [("first call", True), ("samples × calls", True), ("max err / bound", True)]
    for run in runs.runs:
        frame = sort_cells(summary[summary["machine"] == run.host], runs.machines)
        best = _best_index(frame)
        rows = []
        for index, row in frame.iterrows():
            ok = row["status"] == "ok"
            median = _e(format_seconds(row["median_s"])) + ("" if row["converged"] or not ok
                                                          else " ‡")
            cells = [(_e(row["backend"]), ""), (_e(row["device"]), ""), (_e(row["dtype"]), ""),
                     (_e(row["n"]), "num"), (_e(row["m"]), "num"), (_e(row["d_k"]), "num")]
            cells += [(_e(", ".join(plots._variant_words(row, variants.columns,
                                                         all_words=True)) or "-"), "")] \
                if show_variant and variants is not None else []
            cells += [(_e(row["status"]), ""),
                      (median, "num best" if index in best else "num"),
                      (_e(format_ci(row)), "num"), (_e(format_rel(row["rel_ci"])), "num"),
                      (_e(format_number(row["gflops"])) if ok else "-", "num")]
            if peak:
                cells.append((_e(format_number(100 * row["gflops"] / row["peak_gflops"], 2))
                              if ok and row["peak_gflops"] > 0 else "-", "num"))
            samples = (f"{int(row['samples'])} × {int(row['calls_per_sample'])}"
                       if ok and pd.notna(row["samples"]) and pd.notna(row["calls_per_sample"])
                       else "-")
            error = ("-" if pd.isna(row["max_err"]) or pd.isna(row["err_bound"])
                     or row["err_bound"] == 0 else f"{row['max_err'] / row['err_bound']:.2g}")
            cells += [(_e(format_seconds(row["first_call_s"])), "num"), (_e(samples), "num"),
                      (_e(error), "num")]
            css = "failed" if row["status"] in FAILED_STATUSES else \
                "skipped" if row["status"] == "skipped" else ""
            rows.append((css, cells))
        if len(runs.runs) > 1:
            out.append(f"<h3>{_e(run.label)}</h3>")
        out.append(_table(headers, rows))
    out.append("</section>")
    return "\n".join(out)


def _best_index(frame: pd.DataFrame) -> set[Any]:
    ok = frame[(frame["status"] == "ok") & (frame["median_s"] > 0)]
    if ok.empty:
        return set()
    keys = ["machine", "dtype", "n", "m", "d_k", "phase", "cache", "threads_key"]
    return set(ok.groupby(keys, sort=False)["median_s"].idxmin())


def _problems_html(runs: plots.RunSet) -> str:
    failed, skipped = problems(runs)
    out = ['<section id="problems"><h2>Failed and skipped cells</h2>']
    many = len(runs.runs) > 1
    if failed.empty and skipped.empty:
        out.append("<p>None: every cell ran and agreed with the float64 reference.</p>")
    if not failed.empty:
        out.append(f"<h3>Failed ({len(failed)})</h3><p>The run's exit code was 1 because of "
                   "these. <code>mismatch</code>: the backend's S disagreed with the float64 "
                   "reference beyond the error bound (the reason names which answer: first "
                   "call, timed call or fresh inputs); <code>tampered</code>: it changed its "
                   "inputs in place; <code>unsynced</code>: its work was not inside the timed "
                   "call and sync(); <code>implausible</code>: its median was faster than the "
                   "machine can compute or move the data. None of these cells' times is shown "
                   "(docs/correctness.md).</p>")
        headers = ([("machine", False)] if many else []) + [
            ("backend", False), ("dtype", False), ("shape", False), ("status", False),
            ("reason", False)]
        rows = [("failed", ([(_e(r["machine"]), "")] if many else []) + [
            (_e(r["backend"]), ""), (_e(r["dtype"]) + _e(" · " + variant_words(r)
                                                          if variant_words(r) else ""), ""),
            (_e(shape_text(r)), ""), (f"<b>{_e(r['status'])}</b>", ""),
            (_e(r["reason"]), "wrap")])
            for _, r in failed.iterrows()]
        out.append(_table(headers, rows))
    if not skipped.empty:
        out.append(f"<h3>Skipped ({int(skipped['cells'].sum())})</h3><p>Could not run on this "
                   "machine; not a failure.</p>")
        headers = ([("machine", False)] if many else []) + [
            ("backend", False), ("cells", True), ("which", False), ("reason", False)]
        rows = [("skipped", ([(_e(r["machine"]), "")] if many else []) + [
            (_e(r["backend"]), ""), (_e(r["cells"]), "num"), (_e(r["which"]), ""),
            (_e(r["reason"]), "wrap")]) for _, r in skipped.iterrows()]
        out.append(_table(headers, rows))
    out.append("</section>")
    return "\n".join(out)


def _comparison_html(report: Report) -> str:
    assert report.baseline is not None
    base = report.baseline.runs[0]
    table = report.comparison
    out = ['<section id="comparison"><h2>Compared with the baseline</h2>',
           (f"<p>Baseline: <code>{_e(base.folder)}</code> on {_e(base.label)}. Ratio = this "
            "run's median / the baseline's (above 1: slower now). <i>slower</i> / <i>faster</i> "
            "when the two 95% intervals do not overlap; a regression verdict with thresholds is "
            "<code>qkbench compare</code>'s job.</p>")]
    if table.empty:
        out.append('<p class="note">No cell is ok in both the baseline and the run(s): '
                   "nothing to compare (different backends, shapes or dtypes?).</p>")
        out.append("</section>")
        return "\n".join(out)
    verdicts = table["verdict"].value_counts()
    out.append("<p>" + " · ".join(f"{int(verdicts.get(v, 0))} {v}"
                                  for v in ("slower", "within noise", "faster")) + "</p>")
    many = len(report.runs.runs) > 1
    headers = ([("machine", False)] if many else []) + [
        ("backend", False), ("dtype", False), ("shape", False), ("baseline", True),
        ("this run", True), ("ratio", True), ("", False)]
    rows = []
    for _, r in table.iterrows():
        words = variant_words(r)
        rows.append((r["verdict"].replace(" ", "-"), ([(_e(r["machine"]), "")] if many else [])
                     + [(_e(r["backend"]), ""),
                        (_e(r["dtype"]) + _e(" · " + words if words else ""), ""),
                        (_e(shape_text(r)), ""),
                        (_e(format_seconds(r["baseline_s"])), "num"),
                        (_e(format_seconds(r["median_s"])), "num"),
                        (_e(f"{r['ratio']:.3g}×"), "num"), (_e(r["verdict"]), "verdict")]))
    out.append(_table(headers, rows))
    out.append("</section>")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Markdown

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
    lines += _markdown_problems(runs)
    lines += ["", (f"<sub>qkbench {qkbench.__version__} · medians with 95% CIs · full report "
                   "with figures: report.html</sub>"), ""]
    return "\n".join(lines)


def _markdown_table(runs: plots.RunSet) -> list[str]:
    """Median per cell: backends as columns for one machine; machines as columns (best backend
    and its time) for several."""
    ok = runs.ok
    if ok.empty:
        return ["No cell finished with status ok.", ""]
    keys = ["dtype", "d_k", "n", "m", "phase", "cache", "threads_key"]
    variant = plots._Variants.of(ok)
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
    groups = list(_ranked(ok).sort_values([*_RANKS, "n", "m"], kind="stable")
                  .groupby(keys, sort=False))
    for key, group in groups[:MARKDOWN_MAX_ROWS]:
        row = group.iloc[0]
        best_time = group["median_s"].min()
        cells = [row["dtype"], str(row["d_k"]), str(row["n"]), str(row["m"])]
        if show_variant:
            cells.append(", ".join(plots._variant_words(row, variant.columns, all_words=True)))
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
    lines += [" · ".join(f"{int(verdicts.get(v, 0))} {v}"
                         for v in ("slower", "within noise", "faster"))
              + " (slower/faster: the 95% intervals do not overlap)", ""]
    many = len(report.runs.runs) > 1
    header = (["machine"] if many else []) + ["backend", "dtype", "shape", "baseline",
                                              "this run", "ratio", ""]
    lines += ["| " + " | ".join(header) + " |",
              "|" + "|".join("---:" if h in ("baseline", "this run", "ratio") else "---"
                             for h in header) + "|"]
    # The cells that moved first: that is what a reviewer is looking for.
    ordered = table.assign(_moved=table["verdict"] != "within noise",
                           _size=(table["ratio"].apply(lambda r: abs(math.log(r)))))
    ordered = ordered.sort_values(["_moved", "_size"], ascending=False, kind="stable")
    for _, r in ordered.head(MARKDOWN_MAX_ROWS).iterrows():
        words = variant_words(r)
        cells = ([r["machine"]] if many else []) + [
            f"`{r['backend']}`", r["dtype"] + (f" · {words}" if words else ""), shape_text(r),
            format_seconds(r["baseline_s"]), format_seconds(r["median_s"]),
            f"{r['ratio']:.3g}×", f"**{r['verdict']}**" if r["verdict"] != "within noise"
            else r["verdict"]]
        lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
    if len(table) > MARKDOWN_MAX_ROWS:
        lines.append(f"\n… {len(table) - MARKDOWN_MAX_ROWS} more cells in report.html")
    lines.append("")
    return lines
